//! Picking one instance of a service for a request: which instances are
//! eligible, and four ways to choose among them.
//!
//! Pure code: no clock, no ambient randomness. The random strategies draw
//! from an RNG passed in; the state that must outlive one pick (the smooth
//! round-robin weights, the requests in flight per instance) is a
//! [`PickState`] the caller keeps — the node keeps one per service beside
//! its `NodeHandle` (`NodeHandle::pick`), never in the protocol engine,
//! because it is local to this node and not replicated.
//!
//! # Eligibility ([`candidates`])
//! 1. An instance with weight 0 never gets traffic (drained), nor does a
//!    critical one.
//! 2. It must carry every tag asked for.
//! 3. **Health first**: if any instance is passing, only passing instances
//!    are candidates; warning instances are used only when none passes.
//! 4. **Locality second**: within that health tier, instances in the
//!    caller's zone are preferred; if none is in it, the whole tier is used.
//!    An instance's zone is its `zone` metadata entry, or else a tag of the
//!    form `zone=<name>`.
//!
//! # Strategies ([`Strategy`])
//! * **Weighted random**: probability `weight / total weight`.
//! * **Round robin**: smooth weighted round robin as nginx does it — each
//!   pick adds every candidate's weight to its current weight, takes the
//!   highest and subtracts the total from it. Weights 5, 1, 1 give
//!   `a a b a c a a`: every window of `total weight` consecutive picks holds
//!   each instance exactly `weight` times, and the heavy one is spread out
//!   rather than sent a burst.
//! * **Least outstanding**: the smallest `(in flight + 1) / weight`, ties
//!   broken by weighted random. In-flight counts are what the embedding
//!   program reports ([`PickState::begin`] / [`PickState::end`]).
//! * **Hash**: weighted rendezvous hashing of a key: each candidate scores
//!   `weight / -ln(u)` with `u` in (0, 1) from a hash of (key, instance id),
//!   the highest wins. The same key goes to the same instance while the
//!   candidates stay the same; when one of N equal instances goes, only the
//!   keys it had move (about 1/N); when one comes, about 1/(N+1) move, all to
//!   it.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, RngCore};

use super::engine::ServiceView;
use super::ids::InstanceId;
use super::registry::HealthStatus;

/// How to choose among the eligible instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Probability proportional to weight.
    #[default]
    WeightedRandom,
    /// Smooth weighted round robin (nginx's), per service on this node.
    RoundRobin,
    /// Fewest requests in flight per unit of weight.
    LeastOutstanding,
    /// Weighted rendezvous hashing of `key`: a key sticks to one instance.
    Hash {
        /// What to hash: a user id, a session, a cache key.
        key: String,
    },
}

impl Strategy {
    /// The name used in the HTTP API (`?pick=`).
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::WeightedRandom => "random",
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastOutstanding => "least_outstanding",
            Strategy::Hash { .. } => "hash",
        }
    }

    /// Parse an HTTP API name (`random`, `round_robin`,
    /// `least_outstanding`, `hash`); `hash` needs a non-empty `key`.
    pub fn parse(name: &str, key: Option<&str>) -> Result<Self, PickError> {
        match name {
            "random" => Ok(Strategy::WeightedRandom),
            "round_robin" => Ok(Strategy::RoundRobin),
            "least_outstanding" => Ok(Strategy::LeastOutstanding),
            "hash" => match key {
                Some(k) if !k.is_empty() => Ok(Strategy::Hash { key: k.to_string() }),
                _ => Err(PickError::MissingKey),
            },
            other => Err(PickError::UnknownStrategy(other.to_string())),
        }
    }
}

/// A pick request that cannot be understood. Nothing was picked and no
/// state changed; fix the request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickError {
    /// The strategy name is not one of the four.
    #[error("unknown pick strategy {0:?}: use random, round_robin, least_outstanding or hash")]
    UnknownStrategy(String),
    /// `hash` was asked for without a key.
    #[error("pick=hash needs a non-empty key (&key=...)")]
    MissingKey,
}

/// Which zone to prefer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZonePreference {
    /// The picking node's own `zone` tag (none if it has no such tag).
    #[default]
    Local,
    /// This zone.
    Zone(String),
    /// No preference.
    Any,
}

/// What to pick and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PickOptions {
    /// The strategy.
    pub strategy: Strategy,
    /// Only instances carrying all of these tags.
    pub tags: BTreeSet<String>,
    /// Which instances to prefer by zone.
    pub zone: ZonePreference,
}

impl PickOptions {
    /// Options with this strategy, no tag required, the local zone preferred.
    pub fn new(strategy: Strategy) -> Self {
        PickOptions {
            strategy,
            ..PickOptions::default()
        }
    }

    /// Require a tag as well.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.insert(tag.into());
        self
    }

    /// Set the zone preference.
    pub fn with_zone(mut self, zone: ZonePreference) -> Self {
        self.zone = zone;
        self
    }
}

/// The instances a pick chooses among, and which tier they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidates<'a> {
    /// The eligible instances, in the order given (the engine's: by id).
    pub instances: Vec<&'a ServiceView>,
    /// Passing, or warning when no instance passes.
    pub health: HealthStatus,
    /// Whether they are all in the preferred zone.
    pub local: bool,
}

/// An instance's zone: its `zone` metadata entry, else a `zone=<name>` tag.
pub fn instance_zone(view: &ServiceView) -> Option<&str> {
    if let Some(z) = view.spec.metadata.get("zone") {
        return Some(z.as_str());
    }
    view.spec.tags.iter().find_map(|t| t.strip_prefix("zone="))
}

/// The eligible instances of `instances` (see the module docs for the
/// rules), preferring `zone` if given; `None` if no instance is eligible.
pub fn candidates<'a>(
    instances: &'a [ServiceView],
    tags: &BTreeSet<String>,
    zone: Option<&str>,
) -> Option<Candidates<'a>> {
    let usable = |v: &&'a ServiceView| {
        v.spec.weight > 0 && v.health.is_healthy() && tags.iter().all(|t| v.spec.tags.contains(t))
    };
    let usable: Vec<&'a ServiceView> = instances.iter().filter(usable).collect();
    let health = if usable.iter().any(|v| v.health == HealthStatus::Passing) {
        HealthStatus::Passing
    } else {
        HealthStatus::Warning
    };
    let tier: Vec<&'a ServiceView> = usable.into_iter().filter(|v| v.health == health).collect();
    if tier.is_empty() {
        return None;
    }
    if let Some(zone) = zone {
        let local: Vec<&'a ServiceView> = tier
            .iter()
            .copied()
            .filter(|v| instance_zone(v) == Some(zone))
            .collect();
        if !local.is_empty() {
            return Some(Candidates {
                instances: local,
                health,
                local: true,
            });
        }
    }
    Some(Candidates {
        instances: tier,
        health,
        local: false,
    })
}

/// What one service's picks remember on this node: the smooth round-robin
/// current weights and the requests in flight per instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PickState {
    current: BTreeMap<InstanceId, i64>,
    outstanding: BTreeMap<InstanceId, u32>,
}

impl PickState {
    /// Choose one of `candidates` (non-empty for a pick) by `strategy`.
    /// Changes only the round-robin weights; in-flight counts change by
    /// [`begin`](Self::begin) and [`end`](Self::end) alone.
    pub fn pick<'a, R: RngCore + ?Sized>(
        &mut self,
        candidates: &[&'a ServiceView],
        strategy: &Strategy,
        rng: &mut R,
    ) -> Option<&'a ServiceView> {
        if candidates.is_empty() {
            return None;
        }
        let i = match strategy {
            Strategy::WeightedRandom => weighted_random(candidates.iter().map(|v| weight(v)), rng),
            Strategy::RoundRobin => self.smooth_round_robin(candidates),
            Strategy::LeastOutstanding => self.least_outstanding(candidates, rng),
            Strategy::Hash { key } => rendezvous(key.as_bytes(), candidates),
        };
        Some(candidates[i])
    }

    /// A request to `instance` started.
    pub fn begin(&mut self, instance: &InstanceId) {
        let n = self.outstanding.entry(instance.clone()).or_insert(0);
        *n = n.saturating_add(1);
    }

    /// A request to `instance` ended (an end without a begin is ignored).
    pub fn end(&mut self, instance: &InstanceId) {
        if let Some(n) = self.outstanding.get_mut(instance) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.outstanding.remove(instance);
            }
        }
    }

    /// Requests in flight to `instance`.
    pub fn outstanding(&self, instance: &InstanceId) -> u32 {
        self.outstanding.get(instance).copied().unwrap_or(0)
    }

    /// Forget the round-robin weights of instances not in `registered`
    /// once more weights are held than instances are registered (so at
    /// most that many are kept, and the common case costs nothing).
    /// In-flight counts stay until their requests end.
    pub fn retain_registered(&mut self, registered: &[ServiceView]) {
        if self.current.len() <= registered.len() {
            return;
        }
        let ids: BTreeSet<&InstanceId> = registered.iter().map(|v| &v.instance).collect();
        self.current.retain(|id, _| ids.contains(id));
    }

    /// Whether no request is in flight (the state can be dropped at the
    /// cost of restarting the round-robin cycle).
    pub fn is_idle(&self) -> bool {
        self.outstanding.is_empty()
    }

    fn smooth_round_robin(&mut self, candidates: &[&ServiceView]) -> usize {
        let total: i64 = candidates.iter().map(|v| i64::from(weight(v))).sum();
        let mut best: Option<(usize, i64)> = None;
        for (i, v) in candidates.iter().enumerate() {
            let w = i64::from(weight(v));
            // No allocation on the common path: the id is cloned only the
            // first time an instance is seen.
            let cw = match self.current.get_mut(&v.instance) {
                Some(cw) => {
                    *cw += w;
                    *cw
                }
                None => {
                    self.current.insert(v.instance.clone(), w);
                    w
                }
            };
            if best.is_none_or(|(_, b)| cw > b) {
                best = Some((i, cw));
            }
        }
        let (i, _) = best.expect("candidates is not empty");
        *self
            .current
            .get_mut(&candidates[i].instance)
            .expect("every candidate's weight was just set") -= total;
        i
    }

    fn least_outstanding<R: RngCore + ?Sized>(&self, candidates: &[&ServiceView], rng: &mut R) -> usize {
        // Compare (n_a + 1) / w_a < (n_b + 1) / w_b without division.
        let load = |v: &ServiceView| (u64::from(self.outstanding(&v.instance)) + 1, u64::from(weight(v)));
        let mut least: Vec<usize> = Vec::new();
        let mut best: Option<(u64, u64)> = None;
        for (i, v) in candidates.iter().enumerate() {
            let (n, w) = load(v);
            // n < 2^33 and w < 2^8: the products cannot overflow.
            let order = best.map_or(std::cmp::Ordering::Less, |(bn, bw)| (n * bw).cmp(&(bn * w)));
            match order {
                std::cmp::Ordering::Less => {
                    best = Some((n, w));
                    least.clear();
                    least.push(i);
                }
                std::cmp::Ordering::Equal => least.push(i),
                std::cmp::Ordering::Greater => {}
            }
        }
        let tie = weighted_random(least.iter().map(|&i| weight(candidates[i])), rng);
        least[tie]
    }
}

/// An instance's weight as a pick uses it (1..=255; 0 is never a candidate).
fn weight(v: &ServiceView) -> u32 {
    u32::from(v.spec.weight.max(1))
}

/// Index drawn with probability proportional to its weight.
fn weighted_random<R: RngCore + ?Sized>(weights: impl Iterator<Item = u32> + Clone, rng: &mut R) -> usize {
    let total: u64 = weights.clone().map(u64::from).sum();
    let mut x = rng.gen_range(0..total.max(1));
    for (i, w) in weights.enumerate() {
        if x < u64::from(w) {
            return i;
        }
        x -= u64::from(w);
    }
    0
}

/// Index of the candidate with the highest weighted rendezvous score for
/// `key` (first one on a tie).
fn rendezvous(key: &[u8], candidates: &[&ServiceView]) -> usize {
    let seed = xxhash_rust::xxh3::xxh3_64(key);
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in candidates.iter().enumerate() {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(v.instance.as_str().as_bytes(), seed);
        // 53 bits into (0, 1), never 0 or 1.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = f64::from(weight(v)) / -u.ln();
        if score > best.1 {
            best = (i, score);
        }
    }
    best.0
}

/// A service instance `prod/api/<id>` for tests.
#[cfg(test)]
pub(crate) fn test_view(id: &str, weight: u8, health: HealthStatus, tags: &[&str]) -> ServiceView {
    ServiceView {
        namespace: crate::core::Namespace::new("prod").unwrap(),
        service: crate::core::ServiceName::new("api").unwrap(),
        instance: InstanceId::new(id).unwrap(),
        spec: crate::core::ServiceSpec {
            address: "10.0.0.1".into(),
            port: 80,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            metadata: BTreeMap::new(),
            weight,
            ttl_ms: None,
        },
        owner: crate::core::NodeId::from_index(1),
        reported_health: health,
        health,
        version: crate::core::engine::VersionInfo {
            id: crate::core::VersionId(0),
            hlc: crate::core::Hlc {
                wall_ms: 0,
                logical: 0,
            },
            origin: crate::core::NodeId::from_index(1),
            seq: 1,
            checksum: 0,
            size: 0,
            deleted: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn view(id: &str, weight: u8, health: HealthStatus, tags: &[&str]) -> ServiceView {
        test_view(id, weight, health, tags)
    }

    fn passing(id: &str, weight: u8) -> ServiceView {
        view(id, weight, HealthStatus::Passing, &[])
    }

    fn refs(vs: &[ServiceView]) -> Vec<&ServiceView> {
        vs.iter().collect()
    }

    fn ids(vs: &[&ServiceView]) -> Vec<String> {
        vs.iter().map(|v| v.instance.as_str().to_string()).collect()
    }

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(7)
    }

    #[test]
    fn strategies_parse_by_name_and_hash_needs_a_key() {
        assert_eq!(Strategy::parse("random", None), Ok(Strategy::WeightedRandom));
        assert_eq!(Strategy::parse("round_robin", None), Ok(Strategy::RoundRobin));
        assert_eq!(
            Strategy::parse("least_outstanding", None),
            Ok(Strategy::LeastOutstanding)
        );
        assert_eq!(
            Strategy::parse("hash", Some("u1")),
            Ok(Strategy::Hash { key: "u1".into() })
        );
        assert_eq!(Strategy::parse("hash", None), Err(PickError::MissingKey));
        assert_eq!(Strategy::parse("hash", Some("")), Err(PickError::MissingKey));
        assert_eq!(
            Strategy::parse("bogus", None),
            Err(PickError::UnknownStrategy("bogus".into()))
        );
        for s in [
            Strategy::WeightedRandom,
            Strategy::RoundRobin,
            Strategy::LeastOutstanding,
            Strategy::Hash { key: "k".into() },
        ] {
            assert_eq!(Strategy::parse(s.name(), Some("k")), Ok(s));
        }
    }

    #[test]
    fn weighted_random_matches_the_weights_within_two_percent_over_20000_picks() {
        let vs = [passing("a", 60), passing("b", 30), passing("c", 10)];
        let (mut st, mut rng) = (PickState::default(), rng());
        let mut counts = BTreeMap::<String, u32>::new();
        let n = 20_000;
        for _ in 0..n {
            let v = st.pick(&refs(&vs), &Strategy::WeightedRandom, &mut rng).unwrap();
            *counts.entry(v.instance.as_str().into()).or_default() += 1;
        }
        for (id, share) in [("a", 0.6), ("b", 0.3), ("c", 0.1)] {
            let got = f64::from(counts[id]) / f64::from(n);
            assert!((got - share).abs() < 0.02, "{id}: {got} vs {share}");
        }
    }

    #[test]
    fn smooth_round_robin_gives_the_nginx_sequence_for_weights_5_1_1() {
        let vs = [passing("a", 5), passing("b", 1), passing("c", 1)];
        let mut st = PickState::default();
        let seq: String = (0..14)
            .map(|_| {
                st.pick(&refs(&vs), &Strategy::RoundRobin, &mut rng())
                    .unwrap()
                    .instance
                    .as_str()
                    .to_string()
            })
            .collect();
        assert_eq!(seq, "aabacaaaabacaa");
    }

    #[test]
    fn smooth_round_robin_gives_every_instance_its_weight_in_every_window() {
        let vs = [
            passing("a", 7),
            passing("b", 3),
            passing("c", 2),
            passing("d", 1),
            passing("e", 1),
        ];
        let total: usize = vs.iter().map(|v| usize::from(v.spec.weight)).sum();
        let mut st = PickState::default();
        let seq: Vec<usize> = (0..total * 5)
            .map(|_| {
                let v = st.pick(&refs(&vs), &Strategy::RoundRobin, &mut rng()).unwrap();
                vs.iter().position(|x| x.instance == v.instance).unwrap()
            })
            .collect();
        for start in 0..=seq.len() - total {
            let window = &seq[start..start + total];
            for (i, v) in vs.iter().enumerate() {
                let n = window.iter().filter(|&&j| j == i).count();
                assert_eq!(n, usize::from(v.spec.weight), "instance {i} in window at {start}");
            }
        }
        // Smooth: the heaviest (7 of 14) is never picked three times running.
        assert!(seq.windows(3).all(|w| !(w[0] == 0 && w[1] == 0 && w[2] == 0)));
    }

    #[test]
    fn hash_sends_a_key_to_the_same_instance_every_time() {
        let vs = [passing("a", 100), passing("b", 100), passing("c", 100)];
        let mut st = PickState::default();
        let strategy = Strategy::Hash {
            key: "user-42".into(),
        };
        let first = st
            .pick(&refs(&vs), &strategy, &mut rng())
            .unwrap()
            .instance
            .clone();
        for seed in 0..20 {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            assert_eq!(st.pick(&refs(&vs), &strategy, &mut r).unwrap().instance, first);
        }
    }

    /// Where each of `keys` keys goes among `vs`.
    fn placement(vs: &[ServiceView], keys: usize) -> Vec<InstanceId> {
        let mut st = PickState::default();
        (0..keys)
            .map(|k| {
                let s = Strategy::Hash {
                    key: format!("key-{k}"),
                };
                st.pick(&refs(vs), &s, &mut rng()).unwrap().instance.clone()
            })
            .collect()
    }

    #[test]
    fn hash_removing_one_of_n_moves_only_its_keys_about_one_nth() {
        let n = 10;
        let keys = 20_000;
        let vs: Vec<ServiceView> = (0..n).map(|i| passing(&format!("i{i}"), 100)).collect();
        let before = placement(&vs, keys);
        let gone = vs[3].instance.clone();
        let fewer: Vec<ServiceView> = vs.iter().filter(|v| v.instance != gone).cloned().collect();
        let after = placement(&fewer, keys);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(b, &gone, "a key moved off an instance that stayed");
                moved += 1;
            }
        }
        // Every key of the removed instance moved, and only those.
        assert_eq!(moved, before.iter().filter(|b| **b == gone).count());
        let share = moved as f64 / keys as f64;
        assert!((share - 1.0 / n as f64).abs() < 0.02, "moved {share}");
    }

    #[test]
    fn hash_adding_one_moves_about_one_in_n_plus_one_keys_all_to_it() {
        let n = 9;
        let keys = 20_000;
        let mut vs: Vec<ServiceView> = (0..n).map(|i| passing(&format!("i{i}"), 100)).collect();
        let before = placement(&vs, keys);
        vs.push(passing("new", 100));
        let after = placement(&vs, keys);
        let moved: Vec<&InstanceId> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a)
            .map(|(_, a)| a)
            .collect();
        assert!(moved.iter().all(|a| a.as_str() == "new"));
        let share = moved.len() as f64 / keys as f64;
        assert!((share - 1.0 / (n + 1) as f64).abs() < 0.02, "moved {share}");
    }

    #[test]
    fn hash_spreads_keys_by_weight() {
        let vs = [passing("a", 75), passing("b", 25)];
        let placed = placement(&vs, 20_000);
        let a = placed.iter().filter(|i| i.as_str() == "a").count() as f64 / 20_000.0;
        assert!((a - 0.75).abs() < 0.02, "a got {a}");
    }

    #[test]
    fn passing_instances_first_warning_only_when_none_passes_critical_never() {
        let vs = [
            view("a", 100, HealthStatus::Warning, &[]),
            view("b", 100, HealthStatus::Passing, &[]),
            view("c", 100, HealthStatus::Critical, &[]),
        ];
        let c = candidates(&vs, &BTreeSet::new(), None).unwrap();
        assert_eq!(
            (ids(&c.instances), c.health),
            (vec!["b".to_string()], HealthStatus::Passing)
        );
        let c = candidates(&vs[..1], &BTreeSet::new(), None).unwrap();
        assert_eq!(
            (ids(&c.instances), c.health),
            (vec!["a".to_string()], HealthStatus::Warning)
        );
        let warn_and_critical = [vs[0].clone(), vs[2].clone()];
        assert_eq!(
            ids(&candidates(&warn_and_critical, &BTreeSet::new(), None)
                .unwrap()
                .instances),
            ["a"]
        );
        assert_eq!(candidates(&vs[2..], &BTreeSet::new(), None), None);
        assert_eq!(candidates(&[], &BTreeSet::new(), None), None);
    }

    #[test]
    fn weight_zero_is_drained_and_required_tags_filter() {
        let vs = [
            view("a", 0, HealthStatus::Passing, &["v2"]),
            view("b", 100, HealthStatus::Passing, &["v1"]),
            view("c", 100, HealthStatus::Passing, &["v2", "eu"]),
        ];
        let all = candidates(&vs, &BTreeSet::new(), None).unwrap();
        assert_eq!(ids(&all.instances), ["b", "c"]);
        let v2: BTreeSet<String> = ["v2".to_string()].into();
        assert_eq!(ids(&candidates(&vs, &v2, None).unwrap().instances), ["c"]);
        let none: BTreeSet<String> = ["v3".to_string()].into();
        assert_eq!(candidates(&vs, &none, None), None);
    }

    #[test]
    fn same_zone_first_then_any_zone_but_health_before_zone() {
        let mut a = passing("a", 100);
        a.spec.metadata.insert("zone".into(), "z1".into());
        let b = view("b", 100, HealthStatus::Passing, &["zone=z2"]);
        let mut c = view("c", 100, HealthStatus::Warning, &[]);
        c.spec.metadata.insert("zone".into(), "z3".into());
        let vs = [a, b, c];
        let z = |zone| candidates(&vs, &BTreeSet::new(), Some(zone)).unwrap();
        assert_eq!(
            (ids(&z("z1").instances), z("z1").local),
            (vec!["a".to_string()], true)
        );
        assert_eq!(ids(&z("z2").instances), ["b"]);
        // Nobody passing in z3 (c only warns): passing instances of any zone.
        assert_eq!(
            (ids(&z("z3").instances), z("z3").local),
            (vec!["a".into(), "b".into()], false)
        );
        assert_eq!(ids(&z("nowhere").instances), ["a", "b"]);
        assert_eq!(instance_zone(&vs[1]), Some("z2"));
    }

    #[test]
    fn least_outstanding_picks_the_least_loaded_per_weight() {
        let vs = [passing("a", 100), passing("b", 100), passing("c", 50)];
        let mut st = PickState::default();
        let (a, b, c) = (&vs[0].instance, &vs[1].instance, &vs[2].instance);
        for _ in 0..3 {
            st.begin(a);
        }
        st.begin(b);
        // a: 4/100, b: 2/100, c: 1/50 = 2/100 -> tie b, c; both get picks.
        let mut seen = BTreeSet::new();
        let mut r = rng();
        for _ in 0..200 {
            seen.insert(
                st.pick(&refs(&vs), &Strategy::LeastOutstanding, &mut r)
                    .unwrap()
                    .instance
                    .clone(),
            );
        }
        assert_eq!(seen, [b.clone(), c.clone()].into());
        st.begin(c);
        // c: 2/50 = 4/100 now: b alone is least loaded.
        for _ in 0..50 {
            assert_eq!(
                &st.pick(&refs(&vs), &Strategy::LeastOutstanding, &mut r)
                    .unwrap()
                    .instance,
                b
            );
        }
        st.end(a);
        st.end(a);
        st.end(a);
        st.end(a); // one end too many: ignored
        assert_eq!(st.outstanding(a), 0);
        assert_eq!(
            &st.pick(&refs(&vs), &Strategy::LeastOutstanding, &mut r)
                .unwrap()
                .instance,
            a
        );
        st.end(b);
        st.end(c);
        assert!(st.is_idle());
    }

    #[test]
    fn round_robin_state_forgets_instances_no_longer_registered() {
        let vs = [passing("a", 2), passing("b", 1)];
        let mut st = PickState::default();
        st.pick(&refs(&vs), &Strategy::RoundRobin, &mut rng());
        assert_eq!(st.current.len(), 2);
        st.retain_registered(&vs[..1]);
        assert_eq!(
            st.current.keys().map(InstanceId::as_str).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(st.pick(&[], &Strategy::RoundRobin, &mut rng()), None);
    }
}
