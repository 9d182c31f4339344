//! What picks remember on this node (a leaf: it uses the core alone).
//!
//! A [`Picker`] holds, per `(namespace, service)`, a [`PickState`]: the
//! smooth round-robin weights and the requests in flight per instance.
//! It is local to this node and never replicated, so it lives beside the
//! handle behind a mutex rather than in the protocol engine. A [`Picked`]
//! counts as a request in flight to its instance until it is dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::core::{
    candidates, InstanceId, Namespace, PickOptions, PickState, ServiceName, ServiceView, ZonePreference,
};

/// Most services whose pick state is kept; past it, the state of services
/// with no request in flight is dropped (their round-robin cycles restart).
pub(crate) const MAX_PICK_SERVICES: usize = 4096;

/// One instance chosen for a request, counted as in flight to it (for
/// [`Strategy::LeastOutstanding`](crate::core::Strategy::LeastOutstanding))
/// until this value is dropped: hold it while the request runs.
pub struct Picked {
    view: ServiceView,
    eligible: usize,
    local: bool,
    _in_flight: InFlight,
}

impl Picked {
    /// The instance.
    pub fn instance(&self) -> &ServiceView {
        &self.view
    }

    /// `address:port` to send the request to.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.view.spec.address, self.view.spec.port)
    }

    /// How many instances it was chosen among.
    pub fn eligible(&self) -> usize {
        self.eligible
    }

    /// Whether it was chosen among the instances of the preferred zone.
    pub fn in_preferred_zone(&self) -> bool {
        self.local
    }

    /// The instance, ending the request now.
    pub fn into_instance(self) -> ServiceView {
        self.view
    }
}

impl std::fmt::Debug for Picked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picked")
            .field("instance", &self.view.instance)
            .field("addr", &self.addr())
            .field("eligible", &self.eligible)
            .field("local", &self.local)
            .finish()
    }
}

/// Pick state of every service picked from on this node.
#[derive(Debug)]
pub(crate) struct Picker {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    services: BTreeMap<(Namespace, ServiceName), PickState>,
    rng: ChaCha8Rng,
}

impl Picker {
    /// A picker whose random draws are seeded from the OS (or, if it has
    /// no random source, from `fallback_seed`).
    pub(crate) fn new(fallback_seed: u64) -> Self {
        Self::with_seed(getrandom::u64().unwrap_or(fallback_seed))
    }

    /// A picker with a fixed seed.
    pub(crate) fn with_seed(seed: u64) -> Self {
        Picker {
            inner: Mutex::new(Inner {
                services: BTreeMap::new(),
                rng: ChaCha8Rng::seed_from_u64(seed),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent at every await-free step: a panic
        // elsewhere while holding it cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Choose among `instances` (every registered instance of the service)
    /// and count the request as in flight; `local_zone` is this node's own
    /// `zone` tag.
    pub(crate) fn pick(
        self: &Arc<Self>,
        namespace: &Namespace,
        service: &ServiceName,
        instances: &[ServiceView],
        options: &PickOptions,
        local_zone: Option<&str>,
    ) -> Option<Picked> {
        let zone = match &options.zone {
            ZonePreference::Local => local_zone,
            ZonePreference::Zone(z) => Some(z.as_str()),
            ZonePreference::Any => None,
            #[allow(unreachable_patterns)]
            _ => None,
        };
        let cands = candidates(instances, &options.tags, zone)?;
        let key = (namespace.clone(), service.clone());
        let mut inner = self.lock();
        if !inner.services.contains_key(&key) && inner.services.len() >= MAX_PICK_SERVICES {
            inner.services.retain(|_, s| !s.is_idle());
        }
        let Inner { services, rng } = &mut *inner;
        let state = services.entry(key.clone()).or_default();
        state.retain_registered(instances);
        let view = state.pick(&cands.instances, &options.strategy, rng)?.clone();
        state.begin(&view.instance);
        drop(inner);
        Some(Picked {
            eligible: cands.instances.len(),
            local: cands.local,
            _in_flight: InFlight {
                picker: self.clone(),
                key,
                instance: view.instance.clone(),
            },
            view,
        })
    }

    /// Requests in flight to an instance.
    pub(crate) fn outstanding(
        &self,
        namespace: &Namespace,
        service: &ServiceName,
        instance: &InstanceId,
    ) -> u32 {
        self.lock()
            .services
            .get(&(namespace.clone(), service.clone()))
            .map_or(0, |s| s.outstanding(instance))
    }

    /// Services with pick state.
    #[cfg(test)]
    pub(crate) fn services(&self) -> usize {
        self.lock().services.len()
    }
}

/// Ends the request of a [`Picked`] when dropped.
struct InFlight {
    picker: Arc<Picker>,
    key: (Namespace, ServiceName),
    instance: InstanceId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = self.picker.lock();
        if let Some(state) = inner.services.get_mut(&self.key) {
            state.end(&self.instance);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{test_view, HealthStatus, Strategy};

    fn api() -> (Namespace, ServiceName) {
        (Namespace::new("prod").unwrap(), ServiceName::new("api").unwrap())
    }

    #[test]
    fn a_pick_is_in_flight_until_dropped_and_least_outstanding_goes_elsewhere() {
        let picker = Arc::new(Picker::with_seed(1));
        let (ns, svc) = api();
        let vs = [
            test_view("a", 100, HealthStatus::Passing, &[]),
            test_view("b", 100, HealthStatus::Passing, &[]),
        ];
        let lo = PickOptions::new(Strategy::LeastOutstanding);
        let first = picker.pick(&ns, &svc, &vs, &lo, None).unwrap();
        assert_eq!(picker.outstanding(&ns, &svc, &first.instance().instance), 1);
        let second = picker.pick(&ns, &svc, &vs, &lo, None).unwrap();
        assert_ne!(first.instance().instance, second.instance().instance);
        let a = first.into_instance().instance;
        assert_eq!(picker.outstanding(&ns, &svc, &a), 0);
        // b is busy, a is free again.
        for _ in 0..10 {
            assert_eq!(
                picker
                    .pick(&ns, &svc, &vs, &lo, None)
                    .unwrap()
                    .instance()
                    .instance,
                a
            );
        }
        drop(second);
        assert_eq!(picker.outstanding(&ns, &svc, &vs[1].instance), 0);
    }

    #[test]
    fn zone_preference_local_uses_the_nodes_zone_and_any_ignores_it() {
        let picker = Arc::new(Picker::with_seed(1));
        let (ns, svc) = api();
        let vs = [
            test_view("a", 100, HealthStatus::Passing, &["zone=z1"]),
            test_view("b", 100, HealthStatus::Passing, &["zone=z2"]),
        ];
        let rr = PickOptions::new(Strategy::RoundRobin);
        for _ in 0..4 {
            let p = picker.pick(&ns, &svc, &vs, &rr, Some("z2")).unwrap();
            assert_eq!(
                (p.instance().instance.as_str(), p.in_preferred_zone()),
                ("b", true)
            );
        }
        let z1 = rr.clone().with_zone(ZonePreference::Zone("z1".into()));
        assert_eq!(
            picker
                .pick(&ns, &svc, &vs, &z1, Some("z2"))
                .unwrap()
                .instance()
                .instance
                .as_str(),
            "a"
        );
        let any = rr.with_zone(ZonePreference::Any);
        let seen: std::collections::BTreeSet<String> = (0..4)
            .map(|_| {
                picker
                    .pick(&ns, &svc, &vs, &any, Some("z2"))
                    .unwrap()
                    .instance()
                    .instance
                    .as_str()
                    .to_string()
            })
            .collect();
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn pick_state_is_bounded_dropping_idle_services_first() {
        let picker = Arc::new(Picker::with_seed(1));
        let ns = Namespace::new("prod").unwrap();
        let vs = [test_view("a", 100, HealthStatus::Passing, &[])];
        let rr = PickOptions::new(Strategy::RoundRobin);
        let held = picker
            .pick(&ns, &ServiceName::new("held").unwrap(), &vs, &rr, None)
            .unwrap();
        for i in 1..MAX_PICK_SERVICES {
            let svc = ServiceName::new(format!("s{i}")).unwrap();
            picker.pick(&ns, &svc, &vs, &rr, None).unwrap();
        }
        assert_eq!(picker.services(), MAX_PICK_SERVICES);
        let svc = ServiceName::new("one-more").unwrap();
        let p = picker.pick(&ns, &svc, &vs, &rr, None).unwrap();
        // Only the service with a request in flight kept its state.
        assert_eq!(picker.services(), 2);
        assert_eq!(
            picker.outstanding(&ns, &ServiceName::new("held").unwrap(), &vs[0].instance),
            1
        );
        drop((held, p));
    }
}
