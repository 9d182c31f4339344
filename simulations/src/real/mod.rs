//! Real-node mode (`starling-sim swarm-real`): the scenario files of the
//! deterministic simulator drive 3–20 real libp2p Starling nodes in this
//! process — tokio, loopback TCP, bootstrap peers (mDNS off), one temporary
//! data directory per node.
//!
//! Not deterministic: the seed fixes the workload's choices and the
//! scenario's random draws, not the interleaving. Assertions are "eventually,
//! within the scenario's deadline".
//!
//! # Mapping
//! * **Partitions** (groups, modes, swizzle-clogging) become
//!   [`NodeHandle::set_blocked_peers`] on every running node: two nodes are
//!   blocked from each other when no group holds both. Blocking refuses
//!   connections, so a cut is always two-way: a **one-way** partition is
//!   applied as a two-way cut between its senders and receivers (reported as
//!   approximated). Gossip relayed by a third node still crosses, exactly as
//!   mesh relays do in the simulator (bridge and ring modes rely on it).
//! * **Crash**: `stop_without_leave`, then `Node::start` again on the same
//!   data directory (state kept, same identity) or on a fresh one (state
//!   lost, new identity).
//! * **Mass restart**: each node's stop and restart of the plan's schedule,
//!   as crashes and restarts above.
//! * **Pause**: approximated by isolating the node (it keeps its timers
//!   running, so it suspects everyone; every node counts as disturbed).
//! * **Overload**: not supported (a real node's inputs cannot be delayed
//!   from outside it): a scenario with one is refused when it is prepared.
//! * **Join / leave**: start a spare slot / graceful `shutdown`.
//! * **Clock** offsets, drift and jumps: not applicable (every node reads
//!   the host clock); reported as skipped, never silently.
//! * The **network model** (latency, loss, duplication, reordering, per-link
//!   overrides, mesh degree) is not applied: nodes talk over loopback TCP
//!   through gossipsub with its own parameters.
//!
//! # Time scale
//! Every scenario time (fault times, phases, workload rates and service
//! TTLs/heartbeats) and every protocol timer (heartbeat, suspicion, sync,
//! GC, tombstone TTL) is multiplied by one factor, so a scenario keeps its
//! shape: the same number of heartbeats, sync rounds and writes per phase.
//! By default the factor caps the timeline at [`RealOptions::max_real_ms`]
//! (60 s): `min(1, 60 s / deadline)`; `--time-scale` sets it. Timers have
//! floors (heartbeat ≥ 50 ms, sync ≥ 100 ms, tombstone TTL ≥ 1 s), and the
//! cluster's formation before the timeline starts is not counted. Figures
//! are reported in real milliseconds; `[expect]` thresholds are scaled.
//!
//! # Checks while the run goes
//! Every read that a watch event triggers is checked against the same
//! node's earlier reads (see [`Watchdog`]): no value nobody wrote, a
//! superseded version never live again, the newest version never goes
//! back, nothing back after its key was collected, history within its
//! limit; the membership sampler checks that no node holds itself suspect
//! or dead.
//!
//! # Checks (after the deadline)
//! A settle window of at most one (scaled) sync interval lets in-flight
//! messages land (the workload stops at the deadline), then: equal state
//! digests, kv listings and service tables on every running node; accurate
//! membership; no acknowledged write lost ([`lost_writes`]); services of
//! dead owners not healthy; no value nobody wrote. A write's causal context
//! is not visible through the node API, so the harness keeps a lower bound
//! of it (what the writer held for the key just before and after the
//! write): a write counts as superseded only when that is certain. A
//! write's dot (origin and sequence number) is the one the writer's own
//! version list shows for the acknowledged id.
//!
//! # Rooms
//! This module holds the harness and the run's timeline (the shared
//! [`crate::plan::FaultPlan`]); `cluster` launches nodes (kept alone so it
//! can move to a shared launcher), `clients` issues the shared
//! [`crate::workload`], `tracker` follows writes around the cluster,
//! `faults` maps faults onto real nodes, `watchdog` and `ledger` hold the
//! checks, `prepare` sizes and scales a scenario, and `judge` gives the
//! verdict into the shared [`crate::summary::RunSummary`].

mod clients;
mod cluster;
mod faults;
mod judge;
mod ledger;
mod prepare;
#[cfg(test)]
mod tests;
mod tracker;
mod watchdog;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use starling::core::{
    Config, Context, Dot, Hlc, InstanceId, Key, MemberStatus, NodeId, ServiceQuery, VersionId, VersionInfo,
};
use starling::node::{NodeError, NodeHandle};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::oracle::{parse_value_op, value_for, Violation};
use crate::plan::{FaultAction, FaultPlan, Step};
use crate::rng::stream;
use crate::scenario::Scenario;
use crate::summary::{RunSummary, Verdict};
use crate::workload::{api, ns_kv, ns_svc, NS_KV, NS_SVC, SERVICE};

pub use crate::report::real::{repro_line, results_json, summary_md, write_run};
use clients::read_held;
use cluster::{stop_all, subscribe};
use faults::RealCut;
use judge::{judge, snapshot_node, state_differences};
pub use ledger::{
    lost_writes, phantom_values, AckedWrite, FinalState, Held, Ledger, LostWrite, NodeSnapshot, TrackedKey,
};
pub use prepare::{prepare, scaled_protocol, Prepared};
use starling::node::testing::{launch, loopback_config, wait_formed, Bootstrap, ScratchDir};
pub use watchdog::Watchdog;

/// The most nodes (initial plus spare) real mode runs.
pub const MAX_NODES: usize = 20;

/// Options of a real-node run.
#[derive(Clone, Debug)]
pub struct RealOptions {
    /// Override the scenario's `cluster.size` (1..=[`MAX_NODES`]).
    pub nodes: Option<usize>,
    /// Multiply every scenario and protocol time by this; default
    /// `min(1, max_real_ms / deadline_ms)`.
    pub time_scale: Option<f64>,
    /// The timeline's real-time cap when `time_scale` is not given.
    pub max_real_ms: u64,
    /// Print progress lines on stderr.
    pub progress: bool,
}

impl Default for RealOptions {
    fn default() -> Self {
        RealOptions {
            nodes: None,
            time_scale: None,
            max_real_ms: 60_000,
            progress: false,
        }
    }
}

// ----- results --------------------------------------------------------------

/// Everything a real-node run produced.
pub struct RealResult {
    /// What every run reports (times in real ms; the scenario in scenario
    /// ms).
    pub summary: RunSummary,
    /// Real ms per scenario ms.
    pub time_scale: f64,
    /// Scenario features not run.
    pub skipped: Vec<String>,
    /// Scenario features run differently from the simulator.
    pub approximated: Vec<String>,
    /// Per-write time to reach every node running at the ack, for writes
    /// acknowledged and spread with no fault in force (real ms), sorted.
    pub write_reach_calm_ms: Vec<u64>,
    /// metrics.csv rows (t_ms, up, digests, missing).
    pub samples: Vec<(u64, usize, usize, u64)>,
    /// Every acknowledged write.
    pub ledger: Ledger,
    /// The running nodes' state after the deadline.
    pub final_state: FinalState,
    /// Real tombstone TTL (ms), for re-checking [`lost_writes`].
    pub tombstone_ttl_ms: u64,
    /// Acknowledged writes missing at the end (explained or not).
    pub lost: Vec<LostWrite>,
    /// Wall time of the whole run, cluster formation included.
    pub wall_ms: u64,
}

// ----- the harness ------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    NotStarted,
    Up,
    Down,
    Gone,
}

struct Slot {
    state: SlotState,
    handle: Option<NodeHandle>,
    id: Option<NodeId>,
    peer: String,
    addr: Option<String>,
    dir: Option<ScratchDir>,
    life: u32,
    down_since_ms: u64,
    /// Identities replaced by a restart with a blank disk: (id, peer, down ms).
    old: Vec<(NodeId, String, u64)>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: SlotState::NotStarted,
            handle: None,
            id: None,
            peer: String::new(),
            addr: None,
            dir: None,
            life: 0,
            down_since_ms: 0,
            old: Vec::new(),
        }
    }
}

struct CrashEp {
    slot: usize,
    peer: String,
    down_ms: u64,
    up_ms: Option<u64>,
    dead_at: BTreeMap<usize, u64>,
}

struct Svc {
    owner: usize,
    instance: String,
    registered: Option<NodeId>,
}

struct Inner {
    slots: Vec<Slot>,
    ledger: Ledger,
    cuts: BTreeMap<usize, RealCut>,
    paused: BTreeSet<usize>,
    /// Nodes a mass restart stopped and has not brought back: (fault, node).
    bounced: BTreeSet<(usize, usize)>,
    disturbed_until: Vec<u64>,
    history: Vec<String>,
    events: Vec<String>,
    next_op: u64,
    false_suspicions: BTreeSet<(String, u64)>,
    false_deaths: BTreeSet<(String, u64)>,
    crashes: Vec<CrashEp>,
    converged_at: Option<u64>,
    converge_after_ms: Option<u64>,
    last_heal_ms: u64,
    services: Vec<Svc>,
    samples: Vec<(u64, usize, usize, u64)>,
    fault_periods: Vec<(u64, u64, String)>,
    /// When each fault that can delay a write started (real ms).
    fault_starts: Vec<u64>,
    /// (slot, key) reads in flight → re-read when done.
    inflight: BTreeMap<(usize, TrackedKey), bool>,
    /// Safety checks on every read.
    watchdog: Watchdog,
}

impl Inner {
    fn up(&self, i: usize) -> bool {
        self.slots[i].state == SlotState::Up && self.slots[i].handle.is_some()
    }

    /// Running, not paused: clients use it, the checks judge it.
    fn core(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.up(i) && !self.paused.contains(&i))
            .collect()
    }

    fn blocked(&self, a: usize, b: usize) -> bool {
        self.paused.contains(&a) || self.paused.contains(&b) || self.cuts.values().any(|c| c.blocks(a, b))
    }

    fn handle(&self, i: usize) -> Option<(NodeHandle, u32)> {
        if self.up(i) {
            self.slots[i].handle.clone().map(|h| (h, self.slots[i].life))
        } else {
            None
        }
    }

    /// (slot, key) pairs where an acknowledged write has not been seen yet.
    fn pending(&self, only: Option<&[usize]>) -> BTreeSet<(usize, TrackedKey)> {
        let mut out = BTreeSet::new();
        let slots: Vec<usize> = match only {
            Some(s) => s.to_vec(),
            None => (0..self.slots.len()).filter(|&i| self.up(i)).collect(),
        };
        for w in &self.ledger.writes {
            for &s in &slots {
                if w.arrivals[s].is_none() {
                    out.insert((s, w.key.clone()));
                }
            }
        }
        out
    }

    fn missing(&self, core: &[usize]) -> u64 {
        self.ledger
            .writes
            .iter()
            .filter(|w| !w.orphaned)
            .map(|w| core.iter().filter(|&&s| w.arrivals[s].is_none()).count() as u64)
            .sum()
    }
}

struct Harness {
    sc: Scenario,
    plan: FaultPlan,
    scale: f64,
    cfg: Config,
    t0: Instant,
    inner: Mutex<Inner>,
    track_tx: mpsc::UnboundedSender<(usize, TrackedKey)>,
    /// How long after a node stops every peer should hold it dead (real ms).
    window_ms: u64,
    tombstone_ttl_ms: u64,
    progress: bool,
}

impl Harness {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("harness lock is never poisoned")
    }

    fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// Real ms of a scenario time.
    fn real(&self, scenario_ms: u64) -> u64 {
        (scenario_ms as f64 * self.scale).round() as u64
    }

    fn at(&self, real_ms: u64) -> Instant {
        self.t0 + Duration::from_millis(real_ms)
    }

    fn event(&self, kind: &str, detail: serde_json::Value) {
        let t = self.now_ms();
        let line = serde_json::json!({
            "t_ms": t, "scenario_ms": (t as f64 / self.scale).round() as u64, "event": kind, "detail": detail,
        });
        self.lock().events.push(line.to_string());
    }

    fn history(&self, op: u64, node: usize, kind: &str, key: &str, extra: serde_json::Value, result: &str) {
        let mut line = serde_json::json!({
            "op": op, "t_ms": self.now_ms(), "node": node, "type": kind, "key": key, "result": result,
        });
        if let (Some(o), serde_json::Value::Object(e)) = (line.as_object_mut(), extra) {
            o.extend(e);
        }
        self.lock().history.push(line.to_string());
    }

    fn all_slots(&self) -> Vec<usize> {
        (0..self.sc.slots()).collect()
    }

    /// Read every running node's state.
    async fn snapshot(&self) -> FinalState {
        let nodes: Vec<(usize, NodeHandle)> = {
            let g = self.lock();
            g.core()
                .into_iter()
                .filter_map(|i| g.handle(i).map(|(h, _)| (i, h)))
                .collect()
        };
        let keys: Vec<TrackedKey> = (0..self.sc.workload.keys.max(1))
            .map(|k| TrackedKey::Kv(format!("k/{k}")))
            .chain((0..self.sc.workload.services).map(|s| TrackedKey::Instance(format!("i{s}"))))
            .collect();
        let snaps = futures::future::join_all(nodes.iter().map(|(slot, h)| {
            let keys = keys.clone();
            async move { snapshot_node(*slot, h, &keys).await }
        }))
        .await;
        FinalState {
            t_ms: self.now_ms(),
            nodes: snaps.into_iter().flatten().collect(),
        }
    }
}

/// Run `sc` with `seed` on real nodes. A harness error (a node that does
/// not start, a cluster that does not form) is `Err`.
pub fn run(sc: &Scenario, seed: u64, opts: &RealOptions) -> Result<RealResult, String> {
    let p = prepare(sc, seed, opts)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(run_prepared(p, seed, opts.progress))
}

/// Run a prepared scenario (inside a tokio multi-thread runtime).
pub async fn run_prepared(p: Prepared, seed: u64, progress: bool) -> Result<RealResult, String> {
    let wall0 = Instant::now();
    let sc = p.scenario.clone();
    let n0 = sc.cluster.size;
    let slots_n = sc.slots();
    let (track_tx, track_rx) = mpsc::unbounded_channel();
    // Form the cluster before the timeline starts.
    let mut slots: Vec<Slot> = (0..slots_n).map(|_| Slot::new()).collect();
    for i in 0..n0 {
        let rule = if sc.cluster.bootstrap == "seeds" {
            Bootstrap::Seeds(sc.cluster.seeds)
        } else {
            Bootstrap::FirstAndPrevious
        };
        let earlier: Vec<String> = slots[..i]
            .iter()
            .map(|s| s.addr.clone().unwrap_or_default())
            .collect();
        let boot = rule.for_node(i, &earlier);
        let dir = ScratchDir::new().map_err(|e| format!("temp dir: {e}"))?;
        let started = launch(loopback_config(
            dir.path(),
            &format!("n{i}"),
            p.protocol.clone(),
            boot,
        ))
        .await
        .map_err(|e| e.to_string());
        let (h, addr) = match started {
            Ok(x) => x,
            Err(e) => {
                stop_all(slots.iter().filter_map(|s| s.handle.clone()).collect()).await;
                return Err(e);
            }
        };
        subscribe(&h, i, &track_tx).await;
        let s = &mut slots[i];
        s.state = SlotState::Up;
        s.id = Some(h.node_id());
        s.peer = h.peer_id();
        s.addr = Some(addr);
        s.handle = Some(h);
        s.dir = Some(dir);
        s.life = 1;
    }
    let handles: Vec<NodeHandle> = slots.iter().filter_map(|s| s.handle.clone()).collect();
    let formation_limit = Duration::from_secs(20 + n0 as u64);
    if wait_formed(&handles, n0, formation_limit).await.is_err() {
        stop_all(handles).await;
        return Err(format!(
            "the cluster of {n0} nodes did not form within {} s",
            formation_limit.as_secs()
        ));
    }
    let formation_ms = wall0.elapsed().as_millis() as u64;
    let cfg = p.protocol.clone();
    let n_for_window = slots_n as u64;
    let window_ms = 6 * cfg.heartbeat_interval_ms * n_for_window.div_ceil(cfg.heartbeat_fanin as u64).max(1)
        + cfg.suspect_timeout_ms
        + 2 * cfg.sync_interval_ms;
    let services = (0..sc.workload.services)
        .map(|s| Svc {
            owner: s % n0,
            instance: format!("i{s}"),
            registered: None,
        })
        .collect();
    let history_limit = cfg.history_limit;
    let h = Arc::new(Harness {
        scale: p.scale,
        tombstone_ttl_ms: cfg.tombstone_ttl_ms,
        cfg,
        t0: Instant::now(),
        inner: Mutex::new(Inner {
            slots,
            ledger: Ledger::default(),
            cuts: BTreeMap::new(),
            paused: BTreeSet::new(),
            bounced: BTreeSet::new(),
            disturbed_until: vec![0; slots_n],
            history: Vec::new(),
            events: Vec::new(),
            next_op: 0,
            false_suspicions: BTreeSet::new(),
            false_deaths: BTreeSet::new(),
            crashes: Vec::new(),
            converged_at: None,
            converge_after_ms: None,
            last_heal_ms: 0,
            services,
            samples: Vec::new(),
            fault_periods: Vec::new(),
            fault_starts: Vec::new(),
            inflight: BTreeMap::new(),
            watchdog: Watchdog::new(history_limit),
        }),
        track_tx,
        window_ms,
        progress,
        plan: FaultPlan::new(&sc),
        sc,
    });
    h.event(
        "formed",
        serde_json::json!({"nodes": n0, "formation_ms": formation_ms, "time_scale": h.scale}),
    );
    // Fault periods for the report.
    {
        let periods: Vec<(u64, u64, String)> = h
            .plan
            .periods()
            .into_iter()
            .map(|(a, b, label)| (h.real(a), h.real(b), label))
            .collect();
        h.lock().fault_periods = periods;
    }
    let (stop_wl_tx, stop_wl) = watch::channel(false);
    let (stop_bg_tx, stop_bg) = watch::channel(false);
    let mut workers = vec![tokio::spawn(h.clone().writer(seed, stop_wl.clone()))];
    for s in 0..h.sc.workload.services {
        workers.push(tokio::spawn(h.clone().service(seed, s, stop_wl.clone())));
    }
    let background = vec![
        tokio::spawn(h.clone().tracker(track_rx, stop_bg.clone())),
        tokio::spawn(h.clone().sampler(stop_bg.clone())),
    ];
    let mut converge_task = None;
    let deadline_real = h.real(h.sc.phases.deadline_ms);
    let mut next_progress = 0;
    for (t, step) in h.plan.timeline() {
        let target = h.at(h.real(t));
        while progress && Instant::now() < target {
            let now = h.now_ms();
            if now >= next_progress {
                let acked = h.lock().ledger.writes.len();
                eprintln!(
                    "{} (real): {:>5.1}/{:.1} s, {acked} writes acknowledged",
                    h.sc.name,
                    now as f64 / 1000.0,
                    deadline_real as f64 / 1000.0
                );
                next_progress = now + 5_000;
            }
            tokio::time::sleep_until(target.min(Instant::now() + Duration::from_millis(500))).await;
        }
        tokio::time::sleep_until(target).await;
        match step {
            Step::FaultStart(fi) => h.fault_start(fi).await,
            Step::FaultEnd(fi) => h.fault_end(fi).await,
            Step::Swizzle { fault, node, clog } => h.swizzle(fault, node, clog).await,
            Step::Bounce { fault, node, up } => h.bounce(fault, node, up).await,
            Step::Heal => h.heal().await,
            Step::ConvergeRef => {
                let ref_ms = h.real(t);
                converge_task = Some(tokio::spawn(h.clone().converge(ref_ms, stop_bg.clone())));
            }
            Step::Deadline => break,
        }
    }
    // The deadline: stop the workload, let in-flight messages land.
    let _ = stop_wl_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    let t_deadline = h.now_ms();
    let settle_budget = h.cfg.sync_interval_ms.clamp(1_000, 10_000);
    let settle_start = Instant::now();
    let mut fin;
    loop {
        fin = h.snapshot().await;
        let (digests, differing, _) = state_differences(&fin);
        let missing = {
            let g = h.lock();
            g.missing(&g.core())
        };
        if (digests <= 1 && differing == 0 && missing == 0)
            || settle_start.elapsed() >= Duration::from_millis(settle_budget)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settle_ms = settle_start.elapsed().as_millis() as u64;
    // Writes the tracker has not seen arrive but the final state shows:
    // arrival bounded by the snapshot time.
    let mut bounded = 0u64;
    {
        let mut g = h.lock();
        let g = &mut *g;
        for n in &fin.nodes {
            for wi in 0..g.ledger.writes.len() {
                if g.ledger.writes[wi].arrivals[n.slot].is_some() {
                    continue;
                }
                let key = g.ledger.writes[wi].key.clone();
                let held = n.held.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                if g.ledger.accounted(wi, held, fin.t_ms, h.tombstone_ttl_ms) {
                    let w = &mut g.ledger.writes[wi];
                    let after = fin.t_ms.saturating_sub(w.ack_ms);
                    w.arrived(n.slot, after);
                    bounded += 1;
                }
            }
        }
    }
    let _ = stop_bg_tx.send(true);
    for b in background {
        let _ = b.await;
    }
    if let Some(c) = converge_task {
        let _ = c.await;
    }
    let handles: Vec<NodeHandle> = {
        let g = h.lock();
        g.slots.iter().filter_map(|s| s.handle.clone()).collect()
    };
    stop_all(handles).await;
    let wall_ms = wall0.elapsed().as_millis() as u64;
    Ok(judge(
        &h,
        seed,
        p,
        fin,
        t_deadline,
        settle_ms,
        bounded,
        formation_ms,
        wall_ms,
    ))
}
