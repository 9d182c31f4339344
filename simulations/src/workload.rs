//! The client workload both modes issue: which keys, which nodes, puts or
//! deletes, service heartbeats and health flaps, every choice drawn from a
//! stream of the run's seed in one fixed order (so a seed issues the same
//! operations in the simulator and, timing aside, on real nodes).

use rand::Rng;
use starling::core::{HealthStatus, Key, Namespace, ServiceName, ServiceSpec};

use crate::scenario::WorkloadSpec;

/// Namespace of the config writes.
pub const NS_KV: &str = "app";
/// Namespace of the service registrations.
pub const NS_SVC: &str = "svc";
/// The one service registered.
pub const SERVICE: &str = "api";

/// The config-write namespace.
pub fn ns_kv() -> Namespace {
    Namespace::new(NS_KV).expect("valid namespace")
}

/// The service namespace.
pub fn ns_svc() -> Namespace {
    Namespace::new(NS_SVC).expect("valid namespace")
}

/// The service name.
pub fn api() -> ServiceName {
    ServiceName::new(SERVICE).expect("valid service name")
}

/// Name of config key `k`.
pub fn key_name(k: usize) -> String {
    format!("k/{k}")
}

/// Every config key the workload may write.
pub fn key_names(w: &WorkloadSpec) -> impl Iterator<Item = String> {
    (0..w.keys.max(1)).map(key_name)
}

/// Name of service instance `s`.
pub fn instance_name(s: usize) -> String {
    format!("i{s}")
}

/// The node that owns service instance `s` among `initial` nodes.
pub fn service_owner(s: usize, initial: usize) -> usize {
    s % initial
}

/// The registration of an instance owned by node slot `owner`.
pub fn service_spec(owner: usize, ttl_ms: u64) -> ServiceSpec {
    ServiceSpec {
        address: format!("10.0.{}.{}", owner / 250, owner % 250 + 1),
        port: 8080,
        tags: Default::default(),
        metadata: Default::default(),
        weight: 100,
        ttl_ms: Some(ttl_ms),
    }
}

/// Seconds to the next operation of a Poisson stream of `rate` per second.
pub fn gap_s(rng: &mut impl Rng, rate: f64) -> f64 {
    -rng.gen_range(f64::EPSILON..1.0f64).ln() / rate
}

/// A config key: hot keys with probability `hot_fraction`, else the rest.
pub fn pick_key(w: &WorkloadSpec, rng: &mut impl Rng) -> Key {
    let keys = w.keys.max(1);
    let hot = w.hot_keys.min(keys);
    let k = if hot > 0 && rng.gen_bool(w.hot_fraction.clamp(0.0, 1.0)) {
        rng.gen_range(0..hot)
    } else {
        rng.gen_range(hot.min(keys - 1)..keys)
    };
    Key::new(key_name(k)).expect("valid key")
}

/// One of `candidates` (the nodes a client can use), if any.
pub fn pick_node(rng: &mut impl Rng, candidates: &[usize]) -> Option<usize> {
    if candidates.is_empty() {
        None
    } else {
        Some(candidates[rng.gen_range(0..candidates.len())])
    }
}

/// One config write: a key, the nodes that write it at the same instant,
/// and whether it is a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteDraw {
    /// The key.
    pub key: Key,
    /// Issued on 2–3 nodes at once (concurrent writes make siblings).
    pub concurrent: bool,
    /// The nodes, distinct.
    pub targets: Vec<usize>,
    /// A delete (never concurrent).
    pub delete: bool,
}

/// Draw one config write among `candidates`.
pub fn draw_write(w: &WorkloadSpec, rng: &mut impl Rng, candidates: &[usize]) -> WriteDraw {
    let key = pick_key(w, rng);
    let concurrent = rng.gen_bool(w.concurrent.clamp(0.0, 1.0));
    let k = if concurrent { rng.gen_range(2..=3) } else { 1 };
    let mut targets = Vec::new();
    for _ in 0..k {
        if let Some(n) = pick_node(rng, candidates) {
            if !targets.contains(&n) {
                targets.push(n);
            }
        }
    }
    let delete = !concurrent && rng.gen_bool(w.delete_fraction.clamp(0.0, 1.0));
    WriteDraw {
        key,
        concurrent,
        targets,
        delete,
    }
}

/// Time to an instance's next heartbeat, in the unit of `period`: the
/// period with a jitter of -5 %..+5 %.
pub fn beat_delay(rng: &mut impl Rng, period: u64) -> u64 {
    let jitter = rng.gen_range(0..=period / 10);
    period - period / 20 + jitter
}

/// The health a heartbeat reports: passing, or (while `may_flap`, with
/// probability `health_flap`) warning or critical.
pub fn beat_health(w: &WorkloadSpec, rng: &mut impl Rng, may_flap: bool) -> HealthStatus {
    let flap = may_flap && rng.gen_bool(w.health_flap.clamp(0.0, 1.0));
    if flap {
        [HealthStatus::Warning, HealthStatus::Critical][rng.gen_range(0..2)]
    } else {
        HealthStatus::Passing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    #[test]
    fn a_seed_draws_the_same_writes_and_concurrent_writes_never_delete() {
        let w = WorkloadSpec {
            concurrent: 0.5,
            delete_fraction: 0.5,
            ..WorkloadSpec::default()
        };
        let nodes = [0, 2, 4, 6];
        let draw = |seed| {
            let mut rng = stream(seed, 1, 0);
            (0..200)
                .map(|_| draw_write(&w, &mut rng, &nodes))
                .collect::<Vec<_>>()
        };
        let a = draw(5);
        assert_eq!(a, draw(5));
        assert_ne!(a, draw(6));
        assert!(a.iter().any(|d| d.concurrent) && a.iter().any(|d| d.delete));
        for d in &a {
            assert!(!(d.concurrent && d.delete));
            assert!(d.targets.iter().all(|t| nodes.contains(t)));
            let mut t = d.targets.clone();
            t.dedup();
            assert_eq!(t.len(), d.targets.len());
        }
        let mut rng = stream(5, 1, 0);
        assert!(draw_write(&w, &mut rng, &[]).targets.is_empty());
    }

    #[test]
    fn heartbeats_come_within_five_percent_of_the_period() {
        let mut rng = stream(1, 3, 0);
        for _ in 0..100 {
            let d = beat_delay(&mut rng, 1_000);
            assert!((950..=1_050).contains(&d), "{d}");
        }
        let w = WorkloadSpec::default();
        assert!((0..100).all(|_| beat_health(&w, &mut rng, false) == HealthStatus::Passing));
    }
}
