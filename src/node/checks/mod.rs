//! Active health checks, run by the node that owns the instance.
//!
//! Every check is one tokio task: it sleeps for its interval, runs its
//! probe (`probe`: HTTP, TCP or a command, bounded by the timeout), moves
//! its status through the thresholds (`state`) and, when the worst status
//! of the instance's checks changes, writes the instance's health through
//! the owner-only health write (the same command as a TTL heartbeat with a
//! health), so the change replicates and watchers see it. Nothing is
//! written while the health stays the same. The tasks never touch the
//! engine but through the node's request queue, like any client; a
//! sleeping check costs one timer.
//!
//! Check state (status, counts, last output) stays on this node: it is
//! shown by `GET /v1/checks/{ns}` and in the owner's instance views, and
//! is not replicated (that would change the signed instance record, the
//! wire format and the store schema for what is the owner's business).
//! Check *definitions* are kept in the data directory (`local`) so that a
//! restarted node re-arms the checks of the instances it still owns.
//!
//! Modules: `spec` (the definition, a leaf), `state` (the status machine,
//! a leaf), `probe` (one run; uses both), `local` (the remembered
//! definitions; uses `spec`), `metrics`; this file arms, disarms and
//! runs them.

mod local;
pub(crate) mod metrics;
mod probe;
mod spec;
mod state;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::core::{Command, CommandError, HealthStatus, Namespace, Payload, ServiceSpec, StateKey};

pub(crate) use local::{InstanceKey, LocalEntry};
pub use spec::{CheckSpec, MAX_CHECKS_PER_INSTANCE};
pub use state::CheckStatus;

use super::clock::wall_ms;
use super::error::NodeError;
use super::handle::NodeHandle;
use super::types::WriteResult;
use local::LocalStore;
use metrics::CheckMetrics;
use spec::Probe;
use state::{CheckState, Thresholds};

/// Most checks armed on one node.
pub const MAX_CHECKS_PER_NODE: usize = 4096;

/// The checks of this node's instances, and what it remembers of its
/// registrations. Shared by every clone of a [`NodeHandle`].
#[derive(Debug)]
pub(crate) struct Checks {
    armed: Mutex<BTreeMap<InstanceKey, Armed>>,
    local: Mutex<LocalStore>,
    /// Serialises registrations and deregistrations that change the
    /// armed checks or the local file, so saves never reorder.
    changes: tokio::sync::Mutex<()>,
    /// Counters for `/metrics`.
    pub(crate) metrics: CheckMetrics,
    /// Whether HTTP registrations may carry command checks.
    pub(crate) http_command_checks: bool,
}

/// An instance's armed checks: their shared state and their tasks.
#[derive(Debug)]
struct Armed {
    shared: Arc<InstanceChecks>,
    tasks: Vec<AbortHandle>,
}

/// What an instance's check tasks share.
#[derive(Debug)]
struct InstanceChecks {
    key: InstanceKey,
    specs: Vec<CheckSpec>,
    checks: Vec<(String, Probe)>,
    state: Mutex<SharedState>,
}

#[derive(Debug)]
struct SharedState {
    checks: Vec<CheckState>,
    /// The health this node last wrote for the instance from its checks.
    reported: Option<HealthStatus>,
}

/// What one run changed.
struct RunEffect {
    /// The check's new status, if it changed.
    changed: Option<HealthStatus>,
    /// The instance health to write, if it changed.
    report: Option<HealthStatus>,
    /// The check has been critical for its deregistration delay.
    deregister: bool,
}

fn invalid(msg: impl Into<String>) -> NodeError {
    NodeError::Command(CommandError::Invalid(msg.into()))
}

impl Checks {
    /// The checks of a node whose data directory is `data_dir` (reads what
    /// it remembers; nothing is armed until [`Checks::restore`]).
    pub(crate) fn open(data_dir: &Path, http_command_checks: bool) -> Checks {
        Checks {
            http_command_checks,
            armed: Mutex::new(BTreeMap::new()),
            local: Mutex::new(LocalStore::open(data_dir)),
            changes: tokio::sync::Mutex::new(()),
            metrics: CheckMetrics::new(),
        }
    }

    /// Register (or update) an owned instance with `checks` (none: no
    /// checks, and any it had stop). `file` names the service file that
    /// declares it. The definitions are saved before the registration is
    /// written; the checks start once it is.
    pub(crate) async fn register(
        &self,
        h: &NodeHandle,
        key: InstanceKey,
        spec: ServiceSpec,
        checks: Vec<CheckSpec>,
        file: Option<String>,
    ) -> Result<WriteResult, NodeError> {
        validate_checks(&spec, &checks).map_err(invalid)?;
        let named = spec::named_checks(&checks).map_err(invalid)?;
        let _serial = self.changes.lock().await;
        let others: usize = self
            .lock_armed()
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(_, a)| a.shared.checks.len())
            .sum();
        if others + named.len() > MAX_CHECKS_PER_NODE {
            return Err(invalid(format!(
                "this node runs {others} checks; at most {MAX_CHECKS_PER_NODE} in all"
            )));
        }
        let entry = LocalEntry {
            checks: checks.clone(),
            file,
        };
        let previous = self.remember(key.clone(), entry).await?;
        // Identical checks keep running (and keep their state); others stop
        // before the new registration is written.
        let kept = {
            let mut armed = self.lock_armed();
            match armed.get(&key) {
                Some(a) if a.shared.specs == checks => Some(a.shared.clone()),
                _ => {
                    if let Some(a) = armed.remove(&key) {
                        a.tasks.iter().for_each(AbortHandle::abort);
                    }
                    None
                }
            }
        };
        let written = h
            .command_write(Command::RegisterService {
                namespace: key.0.clone(),
                service: key.1.clone(),
                instance: key.2.clone(),
                spec,
            })
            .await;
        match written {
            Ok(w) => {
                match kept {
                    // A registration writes `passing`: say again what the
                    // checks found.
                    Some(shared) => {
                        let health = shared.lock_state().reported;
                        if let Some(health) = health.filter(|h| *h != HealthStatus::Passing) {
                            let _ = h.set_health_from_checks(&key, health).await;
                        }
                    }
                    None if !named.is_empty() => self.arm(h, key, checks, named),
                    None => {}
                }
                Ok(w)
            }
            Err(e) => {
                // Nothing was registered: the previous registration (if
                // any) stands, with its checks.
                let previous = previous.unwrap_or_default();
                let _ = self.remember(key.clone(), previous.clone()).await;
                if kept.is_none() && !previous.checks.is_empty() {
                    if let Ok(named) = spec::named_checks(&previous.checks) {
                        self.arm(h, key, previous.checks, named);
                    }
                }
                Err(e)
            }
        }
    }

    /// Deregister an instance and stop its checks.
    pub(crate) async fn deregister(
        &self,
        h: &NodeHandle,
        key: InstanceKey,
    ) -> Result<WriteResult, NodeError> {
        let _serial = self.changes.lock().await;
        let written = h
            .command_write(Command::DeregisterService {
                namespace: key.0.clone(),
                service: key.1.clone(),
                instance: key.2.clone(),
            })
            .await;
        if matches!(&written, Ok(_) | Err(NodeError::Command(CommandError::NotFound))) {
            self.disarm(&key);
            self.remember(key, LocalEntry::default()).await?;
        }
        written
    }

    /// Re-arm, at start, the checks of the instances this node still owns;
    /// forget the others (unless a service file declares them: the
    /// service directory decides about those).
    pub(crate) async fn restore(&self, h: &NodeHandle) -> Result<(), NodeError> {
        let _serial = self.changes.lock().await;
        let entries: Vec<(InstanceKey, LocalEntry)> = self
            .lock_local()
            .entries()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        let mut armed = 0;
        for (key, entry) in entries {
            let mine = owned_spec(h, &key).await?.is_some();
            if mine && !entry.checks.is_empty() {
                match spec::named_checks(&entry.checks) {
                    Ok(named) => {
                        armed += named.len();
                        self.arm(h, key, entry.checks, named);
                    }
                    Err(e) => {
                        tracing::error!(instance = %key.2, error = %e, "remembered checks are invalid: not re-armed")
                    }
                }
            } else if !mine && entry.file.is_none() {
                self.remember(key, LocalEntry::default()).await?;
            }
        }
        if armed > 0 {
            tracing::info!(checks = armed, "health checks re-armed");
        }
        Ok(())
    }

    /// Whether `key` has checks on this node.
    pub(crate) fn has_checks(&self, key: &InstanceKey) -> bool {
        self.lock_armed().contains_key(key)
    }

    /// The statuses of this node's checks, of one namespace or all, in
    /// instance then check order.
    pub(crate) fn statuses(&self, namespace: Option<&Namespace>) -> Vec<CheckStatus> {
        let armed = self.lock_armed();
        let mut out = Vec::new();
        for (key, a) in armed.iter() {
            if namespace.is_some_and(|n| *n != key.0) {
                continue;
            }
            let st = a.shared.lock_state();
            for (((name, _), spec), s) in a.shared.checks.iter().zip(&a.shared.specs).zip(&st.checks) {
                out.push(CheckStatus {
                    namespace: key.0.as_str().to_string(),
                    service: key.1.as_str().to_string(),
                    instance: key.2.as_str().to_string(),
                    name: name.clone(),
                    kind: spec.kind().to_string(),
                    target: spec.target(),
                    status: s.status,
                    output: s.output.clone(),
                    last_error: s.last_error.clone(),
                    last_run_ms: s.last_run_ms,
                    consecutive_successes: s.consecutive_successes,
                    consecutive_failures: s.consecutive_failures,
                    runs: s.runs,
                    interval_ms: spec.interval_ms,
                    timeout_ms: spec.timeout_ms,
                });
            }
        }
        out
    }

    /// Checks armed by status: passing, warning, critical, not run yet.
    pub(crate) fn counts(&self) -> [u64; 4] {
        let mut counts = [0u64; 4];
        for a in self.lock_armed().values() {
            for s in &a.shared.lock_state().checks {
                let i = match s.status {
                    Some(HealthStatus::Passing) => 0,
                    Some(HealthStatus::Warning) => 1,
                    Some(HealthStatus::Critical) => 2,
                    _ => 3,
                };
                counts[i] += 1;
            }
        }
        counts
    }

    /// The remembered entries (for the service directory at start).
    pub(crate) fn remembered(&self) -> Vec<(InstanceKey, LocalEntry)> {
        self.lock_local()
            .entries()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    /// Stop every check (the node is stopping).
    pub(crate) fn stop_all(&self) {
        for (_, a) in std::mem::take(&mut *self.lock_armed()) {
            a.tasks.iter().for_each(AbortHandle::abort);
        }
    }

    fn arm(&self, h: &NodeHandle, key: InstanceKey, specs: Vec<CheckSpec>, checks: Vec<(String, Probe)>) {
        let shared = Arc::new(InstanceChecks {
            key: key.clone(),
            state: Mutex::new(SharedState {
                checks: checks.iter().map(|_| CheckState::new()).collect(),
                reported: None,
            }),
            specs,
            checks,
        });
        let tasks = (0..shared.checks.len())
            .map(|i| tokio::spawn(run_check(h.clone(), shared.clone(), i)).abort_handle())
            .collect();
        if let Some(old) = self.lock_armed().insert(key, Armed { shared, tasks }) {
            old.tasks.iter().for_each(AbortHandle::abort);
        }
    }

    fn disarm(&self, key: &InstanceKey) {
        if let Some(a) = self.lock_armed().remove(key) {
            a.tasks.iter().for_each(AbortHandle::abort);
        }
    }

    /// Stop `shared`'s checks if they are still the armed ones for its
    /// instance (the instance went away or changed owner), and forget them.
    fn forget(h: &NodeHandle, shared: &Arc<InstanceChecks>) {
        let key = shared.key.clone();
        let removed = {
            let mut armed = h.checks.lock_armed();
            match armed.get(&key) {
                Some(a) if Arc::ptr_eq(&a.shared, shared) => armed.remove(&key),
                _ => None,
            }
        };
        let Some(removed) = removed else { return };
        tracing::info!(instance = %key.2, service = %key.1, "instance no longer registered by this node: its checks stop");
        // A task of its own: this one is among those aborted.
        let h2 = h.clone();
        tokio::spawn(async move {
            let _serial = h2.checks.changes.lock().await;
            let file = h2.checks.lock_local().get(&key).and_then(|e| e.file.clone());
            let _ = h2
                .checks
                .remember(
                    key,
                    LocalEntry {
                        checks: Vec::new(),
                        file,
                    },
                )
                .await;
        });
        removed.tasks.iter().for_each(AbortHandle::abort);
    }

    /// Set `key`'s remembered entry and save the file if it changed;
    /// returns the previous entry. Called with `changes` held.
    async fn remember(&self, key: InstanceKey, entry: LocalEntry) -> Result<Option<LocalEntry>, NodeError> {
        let (previous, bytes, path) = {
            let mut local = self.lock_local();
            if local.get(&key).cloned().unwrap_or_default() == entry {
                return Ok(local.get(&key).cloned());
            }
            let previous = local.set(key.clone(), entry);
            (previous, local.encode(), local.path().to_path_buf())
        };
        let saved = tokio::task::spawn_blocking(move || local::write_durably(&path, &bytes))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(e) = saved {
            // Undo in memory: the file still holds the previous entry.
            self.lock_local().set(key, previous.clone().unwrap_or_default());
            return Err(NodeError::Command(CommandError::NotDurable(format!(
                "cannot save this node's check definitions: {e}"
            ))));
        }
        Ok(previous)
    }

    fn lock_armed(&self) -> std::sync::MutexGuard<'_, BTreeMap<InstanceKey, Armed>> {
        self.armed.lock().expect("armed checks lock is never poisoned")
    }

    fn lock_local(&self) -> std::sync::MutexGuard<'_, LocalStore> {
        self.local
            .lock()
            .expect("local registrations lock is never poisoned")
    }
}

impl InstanceChecks {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, SharedState> {
        self.state.lock().expect("check state lock is never poisoned")
    }

    /// Take check `i`'s outcome.
    fn record(&self, i: usize, outcome: state::Outcome, now: Instant) -> RunEffect {
        let spec = &self.specs[i];
        let t = Thresholds {
            failures_before_critical: spec.failures_before_critical,
            successes_before_passing: spec.successes_before_passing,
        };
        let mut st = self.lock_state();
        let changed = st.checks[i].record(outcome, t, now, wall_ms());
        let deregister = spec
            .deregister_critical_after_ms
            .is_some_and(|ms| st.checks[i].critical_for(std::time::Duration::from_millis(ms), now));
        // The worst status of the checks that have run.
        let worst = st.checks.iter().filter_map(|c| c.status).max();
        let report = worst.filter(|w| Some(*w) != st.reported);
        if report.is_some() {
            st.reported = report;
        }
        RunEffect {
            changed,
            report,
            deregister,
        }
    }
}

/// Check an instance's checks: each valid, names unique, at most
/// [`MAX_CHECKS_PER_INSTANCE`], and no TTL beside them.
pub(crate) fn validate_checks(spec: &ServiceSpec, checks: &[CheckSpec]) -> Result<(), String> {
    spec::named_checks(checks)?;
    if !checks.is_empty() && spec.ttl_ms.is_some() {
        return Err(
            "an instance has a TTL (its client heartbeats) or checks (this node probes it), not both".into(),
        );
    }
    Ok(())
}

/// The spec of `key` if this node owns it and it is registered.
async fn owned_spec(h: &NodeHandle, key: &InstanceKey) -> Result<Option<ServiceSpec>, NodeError> {
    let sk = StateKey::Service {
        namespace: key.0.clone(),
        service: key.1.clone(),
        instance: key.2.clone(),
    };
    h.read(
        move |e, _| match e.state().get(&sk).and_then(|ks| ks.winner()).map(|v| &v.payload) {
            Some(Payload::Instance(i)) if i.owner == e.node_id() => Some(i.spec.clone()),
            _ => None,
        },
    )
    .await
}

/// The spec of `key` if this node owns it (for the service directory).
pub(crate) async fn owned_instance_spec(
    h: &NodeHandle,
    key: &InstanceKey,
) -> Result<Option<ServiceSpec>, NodeError> {
    owned_spec(h, key).await
}

/// One check's task: run, record, report, sleep; until aborted, the node
/// stops, or the instance is no longer this node's.
async fn run_check(h: NodeHandle, shared: Arc<InstanceChecks>, i: usize) {
    let spec = shared.specs[i].clone();
    let (name, probe) = shared.checks[i].clone();
    let key = shared.key.clone();
    let mut ticker = tokio::time::interval(spec.interval());
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match owned_spec(&h, &key).await {
            Ok(Some(_)) => {}
            Ok(None) => return Checks::forget(&h, &shared),
            Err(_) => return, // the node stopped
        }
        let outcome = probe::run(&probe, spec.timeout()).await;
        h.checks.metrics.run(spec.kind(), outcome.status);
        let output = outcome.output.clone();
        let effect = shared.record(i, outcome, Instant::now());
        if let Some(status) = effect.changed {
            h.checks.metrics.status_change(status);
            tracing::info!(
                service = %key.1, instance = %key.2, check = %name,
                status = status.as_str(), output = %output,
                "health check status changed"
            );
        }
        if effect.deregister {
            tracing::warn!(
                service = %key.1, instance = %key.2, check = %name,
                "check critical for its deregister_critical_after_ms: deregistering the instance"
            );
            h.checks.metrics.deregistrations.inc();
            let h2 = h.clone();
            // A task of its own: deregistering aborts this one.
            tokio::spawn(async move {
                if let Err(e) = h2.checks.deregister(&h2, key.clone()).await {
                    tracing::warn!(instance = %key.2, error = %e, "deregistration by check failed");
                }
            });
            return;
        }
        if let Some(health) = effect.report {
            match h.set_health_from_checks(&key, health).await {
                Ok(()) => {}
                Err(NodeError::Stopped) => return,
                Err(NodeError::Command(CommandError::NotFound | CommandError::NotOwner(_))) => {
                    return Checks::forget(&h, &shared)
                }
                Err(e) => {
                    tracing::warn!(instance = %key.2, error = %e, "cannot write the health found by checks; retrying at the next run");
                    shared.lock_state().reported = None;
                }
            }
        }
    }
}
