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
//! * **Pause**: approximated by isolating the node (it keeps its timers
//!   running, so it suspects everyone; every node counts as disturbed).
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
//! write): a write counts as superseded only when that is certain.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use starling::core::{
    Config, Context, Dot, HealthStatus, Hlc, InstanceId, Key, MemberStatus, Namespace, NodeId, ServiceName,
    ServiceQuery, ServiceSpec, VersionId, VersionInfo,
};
use starling::node::{Node, NodeConfig, NodeError, NodeHandle, WatchFilter, WatchItem};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::oracle::{parse_value_op, value_for, Violation};
use crate::report::{convergence_cdf_svg, timeline_svg, Provenance};
use crate::rng::stream;
use crate::scenario::{FaultSpec, Scenario};
use crate::sim::Verdict;

/// libp2p gossipsub's default mesh degree (`mesh_n`), which the node keeps:
/// the fanout of the analytic curve behind the real convergence plot.
const GOSSIPSUB_MESH_DEGREE: usize = 6;

/// One gossip hop between nodes of one process on loopback, for the
/// analytic curve: the cluster benchmark's write→all p50 at five nodes
/// (5 ms, docs/PERFORMANCE.md) over the curve's two rounds at that size.
const LOOPBACK_HOP_MS: f64 = 2.5;

/// The most nodes (initial plus spare) real mode runs.
pub const MAX_NODES: usize = 20;

const NS_KV: &str = "app";
const NS_SVC: &str = "svc";
const SERVICE: &str = "api";

fn ns_kv() -> Namespace {
    Namespace::new(NS_KV).expect("valid namespace")
}

fn ns_svc() -> Namespace {
    Namespace::new(NS_SVC).expect("valid namespace")
}

fn api() -> ServiceName {
    ServiceName::new(SERVICE).expect("valid service name")
}

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

// ----- the ledger and the checker -------------------------------------------

/// A config key or service instance the workload writes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrackedKey {
    /// A key of namespace `app`.
    Kv(String),
    /// An instance of service `api` in namespace `svc`.
    Instance(String),
}

impl std::fmt::Display for TrackedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrackedKey::Kv(k) => write!(f, "{NS_KV}/{k}"),
            TrackedKey::Instance(i) => write!(f, "{NS_SVC}/{SERVICE}/{i}"),
        }
    }
}

/// One version a node holds for a tracked key, as the node API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Version id.
    pub id: VersionId,
    /// Its dot.
    pub dot: Dot,
    /// Its HLC stamp.
    pub hlc: Hlc,
    /// A deletion.
    pub deleted: bool,
    /// Live (not superseded) on that node.
    pub live: bool,
    /// The value, for config keys.
    pub value: Option<Vec<u8>>,
}

impl Held {
    fn of(v: &VersionInfo, value: Option<Vec<u8>>, live: bool) -> Held {
        Held {
            id: v.id,
            dot: Dot {
                node: v.origin,
                seq: v.seq,
            },
            hlc: v.hlc,
            deleted: v.deleted,
            live,
            value,
        }
    }
}

/// An acknowledged write, followed around the cluster.
#[derive(Clone, Debug)]
pub struct AckedWrite {
    /// Client operation id.
    pub op: u64,
    /// The key.
    pub key: TrackedKey,
    /// Its version id.
    pub id: VersionId,
    /// Its dot.
    pub dot: Dot,
    /// Its HLC stamp.
    pub hlc: Hlc,
    /// A delete.
    pub tombstone: bool,
    /// Node slot that acknowledged it.
    pub origin: usize,
    /// When it was acknowledged (real ms since the timeline started).
    pub ack_ms: u64,
    /// A lower bound of its causal context (what it certainly supersedes).
    pub ctx: Context,
    /// Per node slot: ms after the ack at which the node was seen holding
    /// it or something superseding it.
    pub arrivals: Vec<Option<u64>>,
    /// Its only holder lost its disk before anyone else had it.
    pub orphaned: bool,
    /// Acknowledged while a cut, pause or crash was in force.
    pub during_fault: bool,
    /// Per node slot: running when it was acknowledged.
    pub up_at_ack: Vec<bool>,
    /// ms after the ack at which every node running at the ack had it.
    pub reached_up_ms: Option<u64>,
}

impl AckedWrite {
    /// Node `slot` was seen holding it (or something superseding it)
    /// `after_ms` after the ack.
    pub fn arrived(&mut self, slot: usize, after_ms: u64) {
        if self.arrivals[slot].is_some() {
            return;
        }
        self.arrivals[slot] = Some(after_ms);
        if self.reached_up_ms.is_none() {
            let all: Option<Vec<u64>> = (0..self.arrivals.len())
                .filter(|&s| self.up_at_ack[s])
                .map(|s| self.arrivals[s])
                .collect();
            self.reached_up_ms = all.map(|a| a.into_iter().max().unwrap_or(0));
        }
    }
}

/// Every acknowledged write of a run, and every value ever sent.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// Acknowledged writes, in acknowledgement order.
    pub writes: Vec<AckedWrite>,
    /// Operation ids of every put issued (acknowledged or not): values
    /// carry them, so any other value is a phantom.
    pub issued_puts: BTreeSet<u64>,
    by_id: HashMap<VersionId, usize>,
    by_key: BTreeMap<TrackedKey, Vec<usize>>,
}

impl Ledger {
    /// Add an acknowledged write; returns its index.
    pub fn push(&mut self, w: AckedWrite) -> usize {
        let i = self.writes.len();
        self.by_id.insert(w.id, i);
        self.by_key.entry(w.key.clone()).or_default().push(i);
        self.writes.push(w);
        i
    }

    /// The acknowledged write with this version id.
    pub fn get(&self, id: VersionId) -> Option<&AckedWrite> {
        self.by_id.get(&id).map(|&i| &self.writes[i])
    }

    /// Indices of the acknowledged writes to `key`.
    pub fn on_key(&self, key: &TrackedKey) -> &[usize] {
        self.by_key.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// What certainly lies in the causal context of a held version: its
    /// recorded context if it is a known write, else its own dot.
    fn ctx_of(&self, h: &Held) -> Context {
        match self.get(h.id) {
            Some(w) => w.ctx.clone(),
            None => {
                let mut c = Context::default();
                c.add(h.dot);
                c
            }
        }
    }

    /// Whether a node holding `held` for the write's key accounts for
    /// acknowledged write `wi`: it holds it, or a version that certainly
    /// supersedes it (a later write of the same origin to the key, or a
    /// write whose recorded context covers it), or a delete superseding it
    /// was old enough to be collected (`now_ms`, `tombstone_ttl_ms`: real
    /// ms).
    pub fn accounted(&self, wi: usize, held: &[Held], now_ms: u64, tombstone_ttl_ms: u64) -> bool {
        let w = &self.writes[wi];
        if held.iter().any(|h| h.id == w.id) {
            return true;
        }
        // An origin's writes to one key are ordered: each one's context
        // includes everything the previous one's did.
        if held
            .iter()
            .any(|h| h.dot.node == w.dot.node && h.dot.seq > w.dot.seq)
        {
            return true;
        }
        if held
            .iter()
            .any(|h| self.get(h.id).is_some_and(|o| o.ctx.covers(&w.dot)))
        {
            return true;
        }
        let collectable = |o: &AckedWrite| {
            o.tombstone && o.ack_ms + tombstone_ttl_ms <= now_ms && !held.iter().any(|h| h.id == o.id)
        };
        if self.on_key(&w.key).iter().any(|&j| {
            let o = &self.writes[j];
            j != wi && o.ctx.covers(&w.dot) && collectable(o)
        }) {
            return true;
        }
        // A collected key (nothing held). The engine then judges by its
        // knowledge, which the node API does not show: here, a delete old
        // enough to be collected that is the write, covers it or outranks
        // it (collection drops a winning tombstone's concurrent siblings)
        // explains the absence. Reads see the same either way, and a node
        // that never had the key would differ from the others' digest.
        if held.is_empty()
            && self.on_key(&w.key).iter().any(|&j| {
                let o = &self.writes[j];
                collectable(o)
                    && (j == wi || o.ctx.covers(&w.dot) || (o.hlc, o.dot.node) > (w.hlc, w.dot.node))
            })
        {
            return true;
        }
        // The service API shows one version per instance (the winner): a
        // registration hidden behind a winner that outranks it is as much
        // as a reader can see.
        if matches!(w.key, TrackedKey::Instance(_))
            && held.iter().any(|h| (h.hlc, h.dot.node) >= (w.hlc, w.dot.node))
        {
            return true;
        }
        // A collected delete whose concurrent sibling outranks it reads as
        // it would had the tombstone been kept.
        w.tombstone
            && collectable(w)
            && held
                .iter()
                .filter(|h| h.live)
                .map(|h| (h.hlc, h.dot.node))
                .max()
                .is_some_and(|rank| rank > (w.hlc, w.dot.node))
    }
}

/// What one node held at the end.
#[derive(Clone, Debug, Default)]
pub struct NodeSnapshot {
    /// Node slot.
    pub slot: usize,
    /// Its peer id.
    pub peer: String,
    /// Its state digest.
    pub digest: String,
    /// Versions held per tracked key (every workload key and instance).
    pub held: BTreeMap<TrackedKey, Vec<Held>>,
    /// The kv listing: one line per live key (winner and siblings).
    pub listing: Vec<String>,
    /// The service table: one line per instance (version, owner, reported
    /// health).
    pub services: Vec<String>,
    /// Instances: (instance, owner, effective health healthy).
    pub service_health: Vec<(String, NodeId, bool)>,
    /// Members by peer id.
    pub members: BTreeMap<String, MemberStatus>,
}

/// The running nodes' state after the deadline.
#[derive(Clone, Debug, Default)]
pub struct FinalState {
    /// When it was read (real ms since the timeline started).
    pub t_ms: u64,
    /// One entry per running node.
    pub nodes: Vec<NodeSnapshot>,
}

/// An acknowledged write missing on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrite {
    /// Index in the ledger.
    pub write: usize,
    /// Its operation id.
    pub op: u64,
    /// The first node slot it is missing on.
    pub node: usize,
    /// Explained by a fault (its only holder lost its disk).
    pub explained: bool,
}

/// Every acknowledged write not accounted for on some node of `fin`.
pub fn lost_writes(ledger: &Ledger, fin: &FinalState, tombstone_ttl_ms: u64) -> Vec<LostWrite> {
    let mut out = Vec::new();
    for (wi, w) in ledger.writes.iter().enumerate() {
        let missing = fin.nodes.iter().find(|n| {
            let held = n.held.get(&w.key).map(Vec::as_slice).unwrap_or(&[]);
            !ledger.accounted(wi, held, fin.t_ms, tombstone_ttl_ms)
        });
        if let Some(n) = missing {
            out.push(LostWrite {
                write: wi,
                op: w.op,
                node: n.slot,
                explained: w.orphaned,
            });
        }
    }
    out
}

/// Values held anywhere that no client wrote: (node slot, key, value).
pub fn phantom_values(ledger: &Ledger, fin: &FinalState) -> Vec<(usize, TrackedKey, String)> {
    let mut out = Vec::new();
    for n in &fin.nodes {
        for (k, held) in &n.held {
            for h in held {
                let Some(b) = &h.value else { continue };
                let ok = parse_value_op(b)
                    .is_some_and(|op| ledger.issued_puts.contains(&op) && value_for(op, b.len()) == *b);
                if !ok {
                    out.push((n.slot, k.clone(), String::from_utf8_lossy(b).into_owned()));
                }
            }
        }
    }
    out
}

/// How many nodes disagree with the first on digest, listing or service
/// table, with an example.
fn state_differences(fin: &FinalState) -> (usize, usize, String) {
    let digests: BTreeSet<&str> = fin.nodes.iter().map(|n| n.digest.as_str()).collect();
    let Some(first) = fin.nodes.first() else {
        return (0, 0, String::new());
    };
    let mut differing = 0;
    let mut example = String::new();
    for n in &fin.nodes[1..] {
        let what = if n.listing != first.listing {
            "kv listing"
        } else if n.services != first.services {
            "service table"
        } else {
            continue;
        };
        differing += 1;
        if example.is_empty() {
            example = format!("node {} and node {}: {what} differs", first.slot, n.slot);
        }
    }
    (digests.len(), differing, example)
}

// ----- safety as the run goes ---------------------------------------------------

/// What one node (in one life) was last seen holding for one key.
#[derive(Clone, Debug, Default)]
struct KeySeen {
    /// Dots held at the last read.
    held: BTreeSet<Dot>,
    /// The highest HLC held at the last read (config keys).
    max_hlc: Option<Hlc>,
    /// Dots once seen superseded (not live).
    superseded: BTreeSet<Dot>,
    /// Dots dropped when the whole key was collected.
    collected: BTreeSet<Dot>,
}

/// Safety checks on every read of a tracked key while the run goes, the
/// real-node counterpart of the simulator's per-batch checks. A node's
/// reads are compared with its own earlier reads (in the same life: a
/// restart starts afresh):
/// * **no-phantom-values**: every value held was written by a client;
/// * **winner-monotonic**: a version once superseded is never live again;
/// * **versions-monotonic**: the newest version of a config key never
///   disappears while the key is held (trimming drops the oldest,
///   collection drops all);
/// * **no-resurrection**: a version dropped with its collected key never
///   comes back;
/// * **limits**: a key keeps at most `history_limit` superseded versions;
/// * **never-self-dead** (from the membership sampler): a node never holds
///   itself suspect or dead.
#[derive(Debug, Default)]
pub struct Watchdog {
    /// Superseded versions a config key may keep (`Config::history_limit`).
    pub history_limit: usize,
    seen: HashMap<(usize, u32, TrackedKey), KeySeen>,
    checked_values: BTreeSet<Dot>,
    /// Reads checked.
    pub reads: u64,
    /// Violations found, in order.
    pub violations: Vec<Violation>,
}

impl Watchdog {
    /// Check one read of `key` on node `slot` (in life `life`) at `t_ms`.
    pub fn on_read(
        &mut self,
        t_ms: u64,
        slot: usize,
        life: u32,
        key: &TrackedKey,
        held: &[Held],
        issued_puts: &BTreeSet<u64>,
    ) {
        let history_limit = self.history_limit;
        self.reads += 1;
        let mut found: Vec<(&'static str, String)> = Vec::new();
        for h in held {
            let Some(b) = &h.value else { continue };
            if !self.checked_values.insert(h.dot) {
                continue;
            }
            let ok =
                parse_value_op(b).is_some_and(|op| issued_puts.contains(&op) && value_for(op, b.len()) == *b);
            if !ok {
                found.push((
                    "no-phantom-values",
                    format!(
                        "{key} holds a value no client wrote: {:?}",
                        String::from_utf8_lossy(b)
                    ),
                ));
            }
        }
        let seen = self.seen.entry((slot, life, key.clone())).or_default();
        for h in held {
            if h.live && seen.superseded.contains(&h.dot) {
                found.push((
                    "winner-monotonic",
                    format!("{key}: version {:?} was superseded and is live again", h.dot),
                ));
            }
            if seen.collected.contains(&h.dot) {
                found.push((
                    "no-resurrection",
                    format!("{key}: version {:?} came back after the key was collected", h.dot),
                ));
            }
        }
        if let TrackedKey::Kv(_) = key {
            let old = held.iter().filter(|h| !h.live).count();
            if old > history_limit {
                found.push((
                    "limits",
                    format!("{key} keeps {old} superseded versions (limit {history_limit})"),
                ));
            }
            let max = held.iter().map(|h| h.hlc).max();
            match (seen.max_hlc, max) {
                (Some(before), Some(now)) if now < before => found.push((
                    "versions-monotonic",
                    format!("{key}: the newest version went back from {before:?} to {now:?}"),
                )),
                (Some(_), None) => {
                    let dropped = std::mem::take(&mut seen.held);
                    seen.collected.extend(dropped);
                }
                _ => {}
            }
            seen.max_hlc = max;
        }
        seen.superseded
            .extend(held.iter().filter(|h| !h.live).map(|h| h.dot));
        seen.held = held.iter().map(|h| h.dot).collect();
        for (invariant, detail) in found {
            self.violations.push(Violation {
                t_ms,
                invariant,
                node: Some(slot),
                detail,
            });
        }
    }

    /// Check a node's view of itself.
    pub fn on_self_view(&mut self, t_ms: u64, slot: usize, status: MemberStatus) {
        if matches!(status, MemberStatus::Suspect | MemberStatus::Dead) {
            self.violations.push(Violation {
                t_ms,
                invariant: "never-self-dead",
                node: Some(slot),
                detail: format!("the node holds itself {}", status.as_str()),
            });
        }
    }
}

// ----- preparing a scenario ----------------------------------------------------

/// A scenario made ready for real nodes.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Resolved (every random draw explicit), sized, in scenario ms.
    pub scenario: Scenario,
    /// Real ms per scenario ms.
    pub scale: f64,
    /// The node's protocol settings, timers scaled.
    pub protocol: Config,
    /// What the scenario asks for that real mode does not do.
    pub skipped: Vec<String>,
    /// What real mode does differently from the simulator.
    pub approximated: Vec<String>,
}

/// Scale a protocol config's timers by `s`, with floors.
pub fn scaled_protocol(p: &Config, s: f64) -> Config {
    let f = |v: u64, min: u64| ((v as f64 * s).round() as u64).max(min);
    let mut c = p.clone();
    c.heartbeat_interval_ms = f(p.heartbeat_interval_ms, 50);
    c.suspect_timeout_ms = f(p.suspect_timeout_ms, 100).max(c.heartbeat_interval_ms);
    c.sync_interval_ms = f(p.sync_interval_ms, 100);
    c.sync_min_interval_ms = f(p.sync_min_interval_ms, 50);
    c.sync_timeout_ms = f(p.sync_timeout_ms, 500);
    c.gc_interval_ms = f(p.gc_interval_ms, 100);
    c.tombstone_ttl_ms = f(p.tombstone_ttl_ms, 1_000);
    c
}

/// Resolve `sc` for `seed`, size it for real nodes, pick the time scale and
/// list what cannot run.
pub fn prepare(sc: &Scenario, seed: u64, opts: &RealOptions) -> Result<Prepared, String> {
    let mut s = sc.clone();
    let mut skipped = Vec::new();
    let mut approximated = Vec::new();
    if let Some(n) = opts.nodes {
        if n == 0 || n > MAX_NODES {
            return Err(format!("--nodes {n}: real mode runs 1..={MAX_NODES} nodes"));
        }
        s.cluster.size = n;
    } else if s.cluster.size > MAX_NODES {
        skipped.push(format!(
            "cluster.size {} capped to {MAX_NODES} (real mode runs at most {MAX_NODES} nodes; --nodes sets it)",
            s.cluster.size
        ));
        s.cluster.size = MAX_NODES;
    }
    if s.cluster.size + s.cluster.spare > MAX_NODES {
        let spare = MAX_NODES - s.cluster.size;
        skipped.push(format!(
            "cluster.spare {} reduced to {spare} (at most {MAX_NODES} nodes in all)",
            s.cluster.spare
        ));
        s.cluster.spare = spare;
    }
    let mut r = s.resolve(seed);
    let slots = r.slots();
    for (i, f) in r.faults.iter_mut().enumerate() {
        let before = (f.nodes.len(), f.to.len(), f.groups.concat().len());
        f.nodes.retain(|&n| n < slots);
        f.to.retain(|&n| n < slots);
        f.restore_order.retain(|&n| n < slots);
        for g in &mut f.groups {
            g.retain(|&n| n < slots);
        }
        f.groups.retain(|g| !g.is_empty());
        if before != (f.nodes.len(), f.to.len(), f.groups.concat().len()) {
            skipped.push(format!(
                "fault #{i} ({} at {} ms): node indices ≥ {slots} dropped",
                f.kind, f.at_ms
            ));
        }
        match f.kind.as_str() {
            "clock-jump" => skipped.push(format!(
                "fault #{i} clock-jump {:+} ms at {} ms on nodes {:?}: skipped (real nodes share the host clock)",
                f.jump_ms.unwrap_or(0),
                f.at_ms,
                f.nodes
            )),
            "one-way" => approximated.push(format!(
                "fault #{i} one-way at {} ms from {:?}: applied as a two-way cut (blocking refuses connections, \
                 so one direction cannot be dropped alone)",
                f.at_ms, f.nodes
            )),
            "pause" => approximated.push(format!(
                "fault #{i} pause at {} ms of {:?}: the node is isolated (blocked from every peer) but keeps running",
                f.at_ms, f.nodes
            )),
            _ => {}
        }
    }
    if r.clock
        .nodes
        .iter()
        .any(|c| c.offset_ms != 0 || c.drift_ppm != 0.0)
    {
        skipped.push("[clock] per-node offsets and drift: skipped (real nodes share the host clock)".into());
    }
    approximated.push(
        "[network] latency, loss, duplication, reordering and link overrides are not applied: nodes talk over \
         loopback TCP; gossip uses gossipsub's own mesh (mesh_degree, lazy_gossip, gossip_interval_ms unused)"
            .into(),
    );
    if r.cluster.regions > 1 {
        skipped.push(format!("[cluster] regions = {}: ignored", r.cluster.regions));
    }
    if r.workload.reads_per_sec > 0.0 {
        skipped.push(format!(
            "[workload] reads ({}/s): not issued (propagation is measured directly by watching every node)",
            r.workload.reads_per_sec
        ));
    }
    if r.expect.max_stale_reads.is_some() {
        skipped.push("[expect] max_stale_reads: not checked (no reads)".into());
    }
    let scale = match opts.time_scale {
        Some(f) => f,
        None => (opts.max_real_ms as f64 / r.phases.deadline_ms.max(1) as f64).min(1.0),
    };
    if !(scale.is_finite() && scale > 0.0 && scale <= 100.0) {
        return Err(format!("time scale {scale}: use a number in (0, 100]"));
    }
    let protocol = scaled_protocol(&r.protocol, scale)
        .validated()
        .map_err(|e| format!("[protocol] scaled by {scale}: {e}"))?;
    // The resolved scenario keeps scenario ms; the scale applies at run time.
    r.name = if r.name.is_empty() {
        "scenario".into()
    } else {
        r.name
    };
    Ok(Prepared {
        scenario: r,
        scale,
        protocol,
        skipped,
        approximated,
    })
}

// ----- results --------------------------------------------------------------

/// Everything a real-node run produced.
pub struct RealResult {
    /// The resolved scenario (scenario ms).
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// Real ms per scenario ms.
    pub time_scale: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// Why it is not valid.
    pub reasons: Vec<String>,
    /// Safety and liveness violations.
    pub violations: Vec<Violation>,
    /// Scenario features not run.
    pub skipped: Vec<String>,
    /// Scenario features run differently from the simulator.
    pub approximated: Vec<String>,
    /// Named scalar metrics (times in real ms).
    pub metrics: BTreeMap<String, f64>,
    /// Per-write time to reach every running node (real ms), sorted.
    pub write_reach_ms: Vec<u64>,
    /// The same for writes acknowledged and spread with no fault in force,
    /// sorted.
    pub write_reach_calm_ms: Vec<u64>,
    /// Faults as applied: (start, end real ms, label).
    pub fault_periods: Vec<(u64, u64, String)>,
    /// history.jsonl lines.
    pub history: Vec<String>,
    /// events.jsonl lines.
    pub event_log: Vec<String>,
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
    dir: Option<tempfile::TempDir>,
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

/// A cut in force; always two-way.
enum RealCut {
    /// Nodes reach each other only within a common group (nodes in no
    /// group form one more).
    Groups(Vec<Vec<u32>>),
    /// No link between the two sets.
    Between(BTreeSet<usize>, BTreeSet<usize>),
    /// Every link of these nodes is cut.
    Clog(BTreeSet<usize>),
}

impl RealCut {
    fn groups(slots: usize, groups: &[Vec<usize>]) -> RealCut {
        let mut member_of = vec![Vec::new(); slots];
        for (g, nodes) in groups.iter().enumerate() {
            for &n in nodes {
                member_of[n].push(g as u32);
            }
        }
        RealCut::Groups(member_of)
    }

    fn blocks(&self, a: usize, b: usize) -> bool {
        match self {
            RealCut::Groups(member_of) => {
                let (x, y) = (&member_of[a], &member_of[b]);
                if x.is_empty() || y.is_empty() {
                    return !(x.is_empty() && y.is_empty());
                }
                !x.iter().any(|g| y.contains(g))
            }
            RealCut::Between(p, q) => {
                (p.contains(&a) && q.contains(&b)) || (p.contains(&b) && q.contains(&a))
            }
            RealCut::Clog(nodes) => nodes.contains(&a) || nodes.contains(&b),
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
    seq_hint: HashMap<NodeId, u64>,
    services: Vec<Svc>,
    samples: Vec<(u64, usize, usize, u64)>,
    fault_periods: Vec<(u64, u64, String)>,
    /// When each fault that can delay a write started (real ms).
    fault_starts: Vec<u64>,
    /// Acknowledged writes whose dot could not be found (not followed).
    untracked: u64,
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

/// Start one node on loopback (mDNS off, no HTTP) and wait for its address.
async fn launch(
    dir: &Path,
    name: &str,
    cfg: &Config,
    bootstrap: Vec<String>,
) -> Result<(NodeHandle, String), String> {
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    c.http = None;
    c.bootstrap = bootstrap;
    c.name = Some(name.into());
    c.mdns = false;
    c.protocol = cfg.clone();
    let h = Node::start(c)
        .await
        .map_err(|e| format!("starting node {name}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = h.status().await.map_err(|e| format!("node {name}: {e}"))?;
        if let Some(a) = st.listen_addrs.iter().find(|a| a.contains("/ip4/127.0.0.1/")) {
            return Ok((h, a.clone()));
        }
        if Instant::now() > deadline {
            let _ = h.stop_without_leave().await;
            return Err(format!("node {name} never listened"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Forward every change a node reports to the tracker.
async fn subscribe(h: &NodeHandle, slot: usize, tx: &mpsc::UnboundedSender<(usize, TrackedKey)>) {
    let filters = [
        WatchFilter::Kv {
            namespace: ns_kv(),
            prefix: String::new(),
        },
        WatchFilter::Services {
            namespace: ns_svc(),
            service: Some(api()),
        },
    ];
    for filter in filters {
        let Ok(mut stream) = h.watch(filter, None).await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let key = match item {
                    Ok(WatchItem::Kv { key, .. }) => TrackedKey::Kv(key.to_string()),
                    Ok(WatchItem::Service { instance, .. }) => TrackedKey::Instance(instance.to_string()),
                    Ok(_) => continue,
                    Err(_) => break,
                };
                if tx.send((slot, key)).is_err() {
                    break;
                }
            }
        });
    }
}

/// The versions a node holds for a tracked key.
async fn read_held(h: &NodeHandle, key: &TrackedKey) -> Result<Vec<Held>, NodeError> {
    match key {
        TrackedKey::Kv(k) => {
            let key = Key::new(k.as_str()).expect("workload keys are valid");
            Ok(h.history(&ns_kv(), &key)
                .await?
                .iter()
                .map(|(v, value, live)| Held::of(v, value.clone(), *live))
                .collect())
        }
        TrackedKey::Instance(i) => Ok(h
            .services(&ns_svc(), &api(), ServiceQuery::default())
            .await?
            .iter()
            .filter(|v| v.instance.as_str() == i)
            .map(|v| Held::of(&v.version, None, true))
            .collect()),
    }
}

/// The sequence number behind a version id of `origin` (ids hash the dot).
fn find_seq(origin: NodeId, id: VersionId, hint: u64) -> Option<u64> {
    let hit = |seq: u64| VersionId::of(&Dot { node: origin, seq }) == id;
    (hint + 1..hint + 1_000_000)
        .find(|&s| hit(s))
        .or_else(|| (1..=hint).rev().find(|&s| hit(s)))
}

fn quantile(v: &[u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let idx = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[idx] as f64
}

/// Steps of the timeline.
#[derive(Clone, Debug)]
enum Step {
    FaultStart(usize),
    FaultEnd(usize),
    Swizzle { fault: usize, node: usize, clog: bool },
    Heal,
    ConvergeRef,
    Deadline,
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

    /// Suspicions of these nodes are expected until `until` plus a
    /// detection window.
    fn disturb(&self, nodes: &[usize], until: u64) {
        let now = self.now_ms();
        let mut g = self.lock();
        for &n in nodes {
            let d = &mut g.disturbed_until[n];
            *d = (*d).max(until.max(now) + self.window_ms);
        }
    }

    fn all_slots(&self) -> Vec<usize> {
        (0..self.sc.slots()).collect()
    }

    /// Push every running node's blocked set for the cuts in force.
    async fn apply_blocks(&self) {
        let jobs: Vec<(NodeHandle, Vec<NodeId>)> = {
            let g = self.lock();
            (0..g.slots.len())
                .filter_map(|i| {
                    let (h, _) = g.handle(i)?;
                    let peers = (0..g.slots.len())
                        .filter(|&j| j != i && g.blocked(i, j))
                        .filter_map(|j| g.slots[j].id)
                        .collect();
                    Some((h, peers))
                })
                .collect()
        };
        futures::future::join_all(jobs.into_iter().map(|(h, peers)| async move {
            let _ = h.set_blocked_peers(peers).await;
        }))
        .await;
    }

    /// Read a tracked key on a node and mark the writes it shows.
    async fn track(self: &Arc<Self>, slot: usize, key: TrackedKey) {
        loop {
            let got = self.lock().handle(slot);
            let Some((h, life)) = got else {
                self.lock().inflight.remove(&(slot, key.clone()));
                return;
            };
            let held = read_held(&h, &key).await;
            let t = self.now_ms();
            let mut g = self.lock();
            if let Ok(held) = held {
                if g.slots[slot].life == life {
                    let Inner { watchdog, ledger, .. } = &mut *g;
                    watchdog.on_read(t, slot, life, &key, &held, &ledger.issued_puts);
                    let idx: Vec<usize> = g.ledger.on_key(&key).to_vec();
                    for wi in idx {
                        if g.ledger.writes[wi].arrivals[slot].is_some() {
                            continue;
                        }
                        if g.ledger.accounted(wi, &held, t, self.tombstone_ttl_ms) {
                            let w = &mut g.ledger.writes[wi];
                            let after = t.saturating_sub(w.ack_ms);
                            w.arrived(slot, after);
                        }
                    }
                }
            }
            let again = g.inflight.get(&(slot, key.clone())).copied().unwrap_or(false);
            if again {
                g.inflight.insert((slot, key.clone()), false);
            } else {
                g.inflight.remove(&(slot, key.clone()));
                return;
            }
        }
    }

    /// Start a read of (slot, key) unless one is in flight (then it reads
    /// again when done).
    fn schedule_track(self: &Arc<Self>, slot: usize, key: TrackedKey) {
        {
            let mut g = self.lock();
            let pending = g
                .ledger
                .on_key(&key)
                .iter()
                .any(|&wi| g.ledger.writes[wi].arrivals[slot].is_none());
            if !pending || !g.up(slot) {
                return;
            }
            if let Some(again) = g.inflight.get_mut(&(slot, key.clone())) {
                *again = true;
                return;
            }
            g.inflight.insert((slot, key.clone()), false);
        }
        let me = self.clone();
        tokio::spawn(async move { me.track(slot, key).await });
    }

    /// Read every pending (slot, key) pair now and wait for the answers.
    async fn sweep(self: &Arc<Self>, only: Option<&[usize]>) {
        let pairs = self.lock().pending(only);
        futures::future::join_all(pairs.into_iter().map(|(s, k)| {
            let me = self.clone();
            async move {
                let Some((h, life)) = me.lock().handle(s) else {
                    return;
                };
                let Ok(held) = read_held(&h, &k).await else { return };
                let t = me.now_ms();
                let mut g = me.lock();
                if g.slots[s].life != life {
                    return;
                }
                for wi in g.ledger.on_key(&k).to_vec() {
                    if g.ledger.writes[wi].arrivals[s].is_none()
                        && g.ledger.accounted(wi, &held, t, me.tombstone_ttl_ms)
                    {
                        let w = &mut g.ledger.writes[wi];
                        let after = t.saturating_sub(w.ack_ms);
                        w.arrived(s, after);
                    }
                }
            }
        }))
        .await;
    }

    /// Record an acknowledged write; returns its ledger index.
    #[allow(clippy::too_many_arguments)]
    fn record_ack(
        self: &Arc<Self>,
        op: u64,
        slot: usize,
        origin: NodeId,
        key: TrackedKey,
        version: VersionId,
        hlc: Hlc,
        tombstone: bool,
        pre: &[Held],
    ) -> Option<usize> {
        let t = self.now_ms();
        let idx = {
            let mut g = self.lock();
            let hint = pre
                .iter()
                .filter(|h| h.dot.node == origin)
                .map(|h| h.dot.seq)
                .chain(g.seq_hint.get(&origin).copied())
                .max()
                .unwrap_or(0);
            let Some(seq) = find_seq(origin, version, hint) else {
                g.untracked += 1;
                return None;
            };
            let e = g.seq_hint.entry(origin).or_default();
            *e = (*e).max(seq);
            let dot = Dot { node: origin, seq };
            let mut ctx = Context::default();
            for h in pre {
                ctx.join(&g.ledger.ctx_of(h));
            }
            ctx.add(dot);
            let mut arrivals = vec![None; g.slots.len()];
            arrivals[slot] = Some(0);
            let up_at_ack: Vec<bool> = (0..g.slots.len()).map(|i| g.up(i)).collect();
            let reached_up_ms = if up_at_ack.iter().filter(|u| **u).count() <= 1 {
                Some(0)
            } else {
                None
            };
            let during_fault = !g.cuts.is_empty()
                || !g.paused.is_empty()
                || g.slots.iter().any(|s| s.state == SlotState::Down);
            g.ledger.push(AckedWrite {
                op,
                key: key.clone(),
                id: version,
                dot,
                hlc,
                tombstone,
                origin: slot,
                ack_ms: t,
                ctx,
                arrivals,
                orphaned: false,
                during_fault,
                up_at_ack,
                reached_up_ms,
            })
        };
        // Nodes may have it already (gossip can beat the reply here).
        for s in self.all_slots() {
            if s != slot {
                self.schedule_track(s, key.clone());
            }
        }
        Some(idx)
    }

    /// After the write, the writer's view: if the write is its only live
    /// version of the key, it supersedes everything the node holds there.
    fn refine(&self, idx: usize, post: &[Held]) {
        let mut g = self.lock();
        let id = g.ledger.writes[idx].id;
        let live: Vec<&Held> = post.iter().filter(|h| h.live).collect();
        if live.len() == 1 && live[0].id == id {
            let mut ctx = g.ledger.writes[idx].ctx.clone();
            for h in post {
                ctx.join(&g.ledger.ctx_of(h));
            }
            g.ledger.writes[idx].ctx = ctx;
        }
    }

    fn pick_up_node(&self, rng: &mut ChaCha8Rng) -> Option<(usize, NodeHandle)> {
        let g = self.lock();
        let core = g.core();
        if core.is_empty() {
            return None;
        }
        let i = core[rng.gen_range(0..core.len())];
        g.handle(i).map(|(h, _)| (i, h))
    }

    fn pick_key(&self, rng: &mut ChaCha8Rng) -> String {
        let w = &self.sc.workload;
        let keys = w.keys.max(1);
        let hot = w.hot_keys.min(keys);
        let k = if hot > 0 && rng.gen_bool(w.hot_fraction.clamp(0.0, 1.0)) {
            rng.gen_range(0..hot)
        } else {
            rng.gen_range(hot.min(keys - 1)..keys)
        };
        format!("k/{k}")
    }

    fn workload_on(&self) -> bool {
        let stop = self.sc.workload.stop_ms.unwrap_or(self.sc.phases.deadline_ms);
        self.now_ms() < self.real(stop)
    }

    fn next_op(&self) -> u64 {
        let mut g = self.lock();
        g.next_op += 1;
        g.next_op
    }

    /// One client write (put or delete) on node `slot`.
    async fn write_one(
        self: &Arc<Self>,
        slot: usize,
        h: NodeHandle,
        key: String,
        delete: bool,
        concurrent: bool,
    ) {
        let op = self.next_op();
        let tk = TrackedKey::Kv(key.clone());
        let k = Key::new(key.as_str()).expect("workload keys are valid");
        let pre = read_held(&h, &tk).await.unwrap_or_default();
        let (kind, res, value) = if delete {
            ("delete", h.delete(&ns_kv(), &k).await, None)
        } else {
            let value = value_for(op, self.sc.workload.value_bytes);
            self.lock().ledger.issued_puts.insert(op);
            ("put", h.put(&ns_kv(), &k, value.clone()).await, Some(value))
        };
        let value_json = value.map(|v| String::from_utf8_lossy(&v).into_owned());
        match res {
            Ok(wr) => {
                let idx = self.record_ack(
                    op,
                    slot,
                    h.node_id(),
                    tk.clone(),
                    wr.version,
                    wr.hlc,
                    delete,
                    &pre,
                );
                self.history(
                    op,
                    slot,
                    kind,
                    &key,
                    serde_json::json!({"value": value_json, "version": wr.version.to_string(),
                        "hlc": [wr.hlc.wall_ms, wr.hlc.logical], "concurrent": concurrent,
                        "tracked": idx.is_some()}),
                    "ok",
                );
                if let (Some(idx), Ok(post)) = (idx, read_held(&h, &tk).await) {
                    self.refine(idx, &post);
                }
            }
            Err(NodeError::Stopped) => self.history(
                op,
                slot,
                kind,
                &key,
                serde_json::json!({"value": value_json}),
                "no-reply",
            ),
            Err(e) => self.history(
                op,
                slot,
                kind,
                &key,
                serde_json::json!({"value": value_json, "error": e.to_string()}),
                "fail",
            ),
        }
    }

    /// The config-write workload: Poisson arrivals, concurrent writes to
    /// one key on 2–3 nodes at once, deletes.
    async fn writer(self: Arc<Self>, seed: u64, mut stop: watch::Receiver<bool>) {
        let w = self.sc.workload.clone();
        if w.writes_per_sec <= 0.0 {
            return;
        }
        let mut rng = stream(seed, 1, 0);
        let mut t = self.real(w.start_ms) as f64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(self.at(t as u64)) => {}
                _ = stop.changed() => return,
            }
            if !self.workload_on() {
                return;
            }
            let gap_scenario_ms = -rng.gen_range(f64::EPSILON..1.0f64).ln() / w.writes_per_sec * 1000.0;
            t += gap_scenario_ms * self.scale;
            let key = self.pick_key(&mut rng);
            let concurrent = rng.gen_bool(w.concurrent.clamp(0.0, 1.0));
            let mut targets: Vec<(usize, NodeHandle)> = Vec::new();
            let k = if concurrent { rng.gen_range(2..=3) } else { 1 };
            for _ in 0..k {
                if let Some((n, h)) = self.pick_up_node(&mut rng) {
                    if !targets.iter().any(|(m, _)| *m == n) {
                        targets.push((n, h));
                    }
                }
            }
            let delete = !concurrent && rng.gen_bool(w.delete_fraction.clamp(0.0, 1.0));
            futures::future::join_all(
                targets
                    .into_iter()
                    .map(|(n, h)| self.write_one(n, h, key.clone(), delete, concurrent)),
            )
            .await;
        }
    }

    /// One service instance: its owner registers it and heartbeats it.
    async fn service(self: Arc<Self>, seed: u64, svc: usize, mut stop: watch::Receiver<bool>) {
        let w = self.sc.workload.clone();
        let mut rng = stream(seed, 3, svc as u64);
        let period = self.real(w.service_heartbeat_ms).max(10);
        let ttl = self.real(w.service_ttl_ms).max(100);
        let mut t = self.real(w.start_ms) + self.real((svc as u64 * 7_919) % 1_000);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(self.at(t)) => {}
                _ = stop.changed() => return,
            }
            t += period - period / 20 + rng.gen_range(0..=period / 10);
            let (owner, instance, registered) = {
                let g = self.lock();
                let s = &g.services[svc];
                (s.owner, s.instance.clone(), s.registered)
            };
            let Some((h, _)) = ({
                let g = self.lock();
                if g.paused.contains(&owner) {
                    None
                } else {
                    g.handle(owner)
                }
            }) else {
                continue;
            };
            let op = self.next_op();
            let inst = InstanceId::new(instance.as_str()).expect("valid instance id");
            let key_text = format!("{SERVICE}/{instance}");
            let tk = TrackedKey::Instance(instance.clone());
            let id = h.node_id();
            if registered != Some(id) {
                let spec = ServiceSpec {
                    address: format!("10.0.{}.{}", owner / 250, owner % 250 + 1),
                    port: 8080,
                    tags: Default::default(),
                    metadata: Default::default(),
                    weight: 100,
                    ttl_ms: Some(ttl),
                };
                let pre = read_held(&h, &tk).await.unwrap_or_default();
                match h.register_service(&ns_svc(), &api(), &inst, spec).await {
                    Ok(wr) => {
                        self.lock().services[svc].registered = Some(id);
                        let idx = self.record_ack(op, owner, id, tk, wr.version, wr.hlc, false, &pre);
                        self.history(
                            op,
                            owner,
                            "register",
                            &key_text,
                            serde_json::json!({"version": wr.version.to_string(), "tracked": idx.is_some()}),
                            "ok",
                        );
                    }
                    Err(e) => self.history(
                        op,
                        owner,
                        "register",
                        &key_text,
                        serde_json::json!({"error": e.to_string()}),
                        "fail",
                    ),
                }
                continue;
            }
            let flap = self.workload_on() && rng.gen_bool(w.health_flap.clamp(0.0, 1.0));
            let health = if flap {
                [HealthStatus::Warning, HealthStatus::Critical][rng.gen_range(0..2)]
            } else {
                HealthStatus::Passing
            };
            match h.heartbeat_service(&ns_svc(), &api(), &inst, Some(health)).await {
                Ok(()) => self.history(op, owner, health.as_str(), &key_text, serde_json::json!({}), "ok"),
                Err(e) => {
                    if matches!(e, NodeError::Command(starling::core::CommandError::NotFound)) {
                        self.lock().services[svc].registered = None;
                    }
                    self.history(
                        op,
                        owner,
                        health.as_str(),
                        &key_text,
                        serde_json::json!({"error": e.to_string()}),
                        "fail",
                    );
                }
            }
        }
    }

    /// Feed watch notifications and a periodic sweep into reads.
    async fn tracker(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<(usize, TrackedKey)>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                job = rx.recv() => {
                    let Some((s, k)) = job else { return };
                    self.schedule_track(s, k);
                }
                _ = tick.tick() => {
                    let pairs = self.lock().pending(None);
                    for (s, k) in pairs {
                        self.schedule_track(s, k);
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }

    /// Membership views (false suspicions and deaths, crash detection) and
    /// divergence samples.
    async fn sampler(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let period = Duration::from_millis(self.real(self.sc.phases.sample_ms).clamp(100, 500));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let observers: Vec<(usize, NodeHandle)> = {
                let g = self.lock();
                g.core()
                    .into_iter()
                    .filter_map(|i| g.handle(i).map(|(h, _)| (i, h)))
                    .collect()
            };
            let views = futures::future::join_all(observers.iter().map(|(i, h)| async move {
                (
                    *i,
                    h.members().await.ok(),
                    h.status().await.ok().map(|s| s.digest),
                )
            }))
            .await;
            let t = self.now_ms();
            let mut g = self.lock();
            let mut digests = BTreeSet::new();
            for (o, members, digest) in views {
                if let Some(d) = digest {
                    digests.insert(d);
                }
                let Some(members) = members else { continue };
                for m in members {
                    if m.node_id == g.slots[o].peer {
                        g.watchdog.on_self_view(t, o, m.status);
                        continue;
                    }
                    let subject = (0..g.slots.len()).find(|&j| g.slots[j].peer == m.node_id);
                    if matches!(m.status, MemberStatus::Suspect | MemberStatus::Dead) {
                        if let Some(j) = subject {
                            let healthy = g.up(j) && !g.paused.contains(&j) && t > g.disturbed_until[j];
                            if healthy {
                                let k = (m.node_id.clone(), m.incarnation);
                                if m.status == MemberStatus::Suspect {
                                    g.false_suspicions.insert(k);
                                } else {
                                    g.false_deaths.insert(k);
                                }
                            }
                        }
                    }
                    if m.status == MemberStatus::Dead {
                        if let Some(ep) = g
                            .crashes
                            .iter_mut()
                            .rev()
                            .find(|ep| ep.peer == m.node_id && ep.up_ms.is_none())
                        {
                            ep.dead_at.entry(o).or_insert(t);
                        }
                    }
                }
            }
            let core = g.core();
            let missing = g.missing(&core);
            let up = (0..g.slots.len()).filter(|&i| g.up(i)).count();
            g.samples.push((t, up, digests.len(), missing));
        }
    }

    /// From the convergence reference on: the first moment the running
    /// nodes hold one digest and every acknowledged write.
    async fn converge(self: Arc<Self>, ref_ms: u64, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(25)) => {}
                _ = stop.changed() => return,
            }
            let (handles, clean) = {
                let g = self.lock();
                let core = g.core();
                let clean = g.cuts.is_empty() && g.paused.is_empty() && g.missing(&core) == 0;
                (
                    core.iter()
                        .filter_map(|&i| g.handle(i).map(|(h, _)| h))
                        .collect::<Vec<_>>(),
                    clean,
                )
            };
            if !clean || handles.is_empty() {
                continue;
            }
            let digests: Vec<Option<String>> = futures::future::join_all(
                handles
                    .iter()
                    .map(|h| async move { h.status().await.ok().map(|s| s.digest) }),
            )
            .await;
            let first = &digests[0];
            if first.is_some() && digests.iter().all(|d| d == first) {
                let t = self.now_ms();
                let mut g = self.lock();
                let after = t.saturating_sub(g.last_heal_ms.max(ref_ms));
                g.converged_at = Some(t);
                g.converge_after_ms = Some(after);
                drop(g);
                self.event("converged", serde_json::json!({"after_ms": after}));
                return;
            }
        }
    }

    fn bootstrap_for(&self, n: usize) -> Vec<String> {
        let g = self.lock();
        let seeds = self.sc.cluster.seeds.max(1);
        let mut reachable: Vec<usize> = (0..g.slots.len())
            .filter(|&j| j != n && g.up(j) && !g.blocked(n, j) && g.slots[j].addr.is_some())
            .collect();
        if self.sc.cluster.bootstrap == "seeds" {
            let s: Vec<usize> = reachable.iter().copied().filter(|&j| j < seeds).collect();
            if !s.is_empty() {
                reachable = s;
            }
        }
        reachable
            .iter()
            .take(3)
            .filter_map(|&j| g.slots[j].addr.clone())
            .collect()
    }

    async fn crash(self: &Arc<Self>, n: usize) {
        let Some((h, _)) = self.lock().handle(n) else {
            return;
        };
        let t = self.now_ms();
        {
            let mut g = self.lock();
            let s = &mut g.slots[n];
            s.state = SlotState::Down;
            s.handle = None;
            s.down_since_ms = t;
            let peer = s.peer.clone();
            g.crashes.push(CrashEp {
                slot: n,
                peer,
                down_ms: t,
                up_ms: None,
                dead_at: BTreeMap::new(),
            });
        }
        let _ = h.stop_without_leave().await;
        self.event("crash", serde_json::json!({"node": n}));
    }

    /// Start slot `n` (first start, restart, or restart on a blank disk).
    async fn start_slot(self: &Arc<Self>, n: usize, blank: bool) -> Result<(), String> {
        let boot = self.bootstrap_for(n);
        let dir = if blank || self.lock().slots[n].dir.is_none() {
            tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?
        } else {
            self.lock().slots[n].dir.take().expect("checked")
        };
        let started = launch(dir.path(), &format!("n{n}"), &self.cfg, boot).await;
        let (h, addr) = match started {
            Ok(x) => x,
            Err(e) => {
                self.lock().slots[n].dir = Some(dir);
                return Err(e);
            }
        };
        subscribe(&h, n, &self.track_tx).await;
        let t = self.now_ms();
        {
            let mut g = self.lock();
            let s = &mut g.slots[n];
            if let Some(old) = s.id.filter(|id| *id != h.node_id()) {
                let (peer, down) = (s.peer.clone(), s.down_since_ms);
                s.old.push((old, peer, down));
            }
            s.state = SlotState::Up;
            s.id = Some(h.node_id());
            s.peer = h.peer_id();
            s.addr = Some(addr);
            s.handle = Some(h);
            s.dir = Some(dir);
            s.life += 1;
            let peer = s.peer.clone();
            for ep in g.crashes.iter_mut() {
                if ep.slot == n && ep.up_ms.is_none() && ep.peer == peer {
                    ep.up_ms = Some(t);
                }
            }
        }
        self.apply_blocks().await;
        Ok(())
    }

    async fn restart(self: &Arc<Self>, n: usize, lost: bool) {
        if self.lock().slots[n].state != SlotState::Down {
            return;
        }
        if lost {
            // Bring arrivals up to date, then: writes only this node held
            // are lost with its disk (explained by the fault).
            let others: Vec<usize> = (0..self.sc.slots()).filter(|&s| s != n).collect();
            self.sweep(Some(&others)).await;
            let mut g = self.lock();
            for w in &mut g.ledger.writes {
                if w.origin == n && w.arrivals.iter().enumerate().all(|(i, a)| i == n || a.is_none()) {
                    w.orphaned = true;
                }
                w.arrivals[n] = None;
            }
        }
        let started = self.start_slot(n, lost).await;
        // Suspicions of it are expected until it has been back a while.
        self.disturb(&[n], 0);
        match started {
            Ok(()) => self.event(
                "restart",
                serde_json::json!({"node": n, "state": if lost { "lost" } else { "kept" }}),
            ),
            Err(e) => self.event("restart-failed", serde_json::json!({"node": n, "error": e})),
        }
    }

    async fn fault_start(self: &Arc<Self>, fi: usize) {
        let f = self.sc.faults[fi].clone();
        let end = self
            .fault_end_ms(&f)
            .map(|e| self.real(e))
            .unwrap_or(u64::MAX / 2);
        self.event(
            "fault-start",
            serde_json::json!({"fault": fi, "kind": f.kind, "nodes": f.nodes, "groups": f.groups, "to": f.to}),
        );
        let slots = self.sc.slots();
        let all = self.all_slots();
        if f.kind != "join" {
            let t = self.now_ms();
            self.lock().fault_starts.push(t);
        }
        match f.kind.as_str() {
            "partition" => {
                self.lock().cuts.insert(fi, RealCut::groups(slots, &f.groups));
                self.disturb(&all, end);
                self.apply_blocks().await;
            }
            "one-way" => {
                let from: BTreeSet<usize> = f.nodes.iter().copied().collect();
                let to: BTreeSet<usize> = if f.to.is_empty() {
                    (0..slots).filter(|i| !from.contains(i)).collect()
                } else {
                    f.to.iter().copied().collect()
                };
                self.lock().cuts.insert(fi, RealCut::Between(from, to));
                self.disturb(&all, end);
                self.apply_blocks().await;
            }
            "swizzle" => {
                self.lock().cuts.insert(fi, RealCut::Clog(BTreeSet::new()));
                self.disturb(&all, end);
            }
            "crash" => {
                for &n in &f.nodes {
                    self.crash(n).await;
                }
            }
            "pause" => {
                {
                    let mut g = self.lock();
                    for &n in &f.nodes {
                        if g.up(n) {
                            g.paused.insert(n);
                        }
                    }
                }
                self.disturb(&all, end);
                self.apply_blocks().await;
            }
            "join" => {
                for &n in &f.nodes {
                    if self.lock().slots[n].state == SlotState::NotStarted {
                        if let Err(e) = self.start_slot(n, true).await {
                            self.event("join-failed", serde_json::json!({"node": n, "error": e}));
                        }
                    }
                }
            }
            "leave" => {
                for &n in &f.nodes {
                    let Some((h, _)) = self.lock().handle(n) else {
                        continue;
                    };
                    let _ = h.shutdown().await;
                    let t = self.now_ms();
                    let mut g = self.lock();
                    g.slots[n].state = SlotState::Gone;
                    g.slots[n].handle = None;
                    g.slots[n].down_since_ms = t;
                }
            }
            _ => {}
        }
    }

    async fn fault_end(self: &Arc<Self>, fi: usize) {
        let f = self.sc.faults[fi].clone();
        self.event("fault-end", serde_json::json!({"fault": fi, "kind": f.kind}));
        {
            let t = self.now_ms();
            let mut g = self.lock();
            g.last_heal_ms = g.last_heal_ms.max(t);
        }
        match f.kind.as_str() {
            "partition" | "one-way" | "swizzle" => {
                self.lock().cuts.remove(&fi);
                self.apply_blocks().await;
            }
            "crash" => {
                let lost = f.state.as_deref() == Some("lost");
                for &n in &f.nodes {
                    self.restart(n, lost).await;
                }
            }
            "pause" => {
                {
                    let mut g = self.lock();
                    for n in &f.nodes {
                        g.paused.remove(n);
                    }
                }
                self.apply_blocks().await;
            }
            _ => {}
        }
    }

    async fn swizzle(self: &Arc<Self>, fi: usize, node: usize, clog: bool) {
        {
            let mut g = self.lock();
            let Some(RealCut::Clog(nodes)) = g.cuts.get_mut(&fi) else {
                return;
            };
            if clog {
                nodes.insert(node);
            } else {
                nodes.remove(&node);
            }
        }
        self.event(
            if clog { "swizzle-clog" } else { "swizzle-restore" },
            serde_json::json!({"node": node}),
        );
        self.apply_blocks().await;
    }

    async fn heal(self: &Arc<Self>) {
        self.event("heal", serde_json::json!({}));
        {
            let t = self.now_ms();
            let mut g = self.lock();
            g.last_heal_ms = g.last_heal_ms.max(t);
            g.cuts.clear();
            g.paused.clear();
        }
        self.apply_blocks().await;
        for f in self.sc.faults.clone() {
            if f.kind == "crash" && !f.permanent {
                let lost = f.state.as_deref() == Some("lost");
                for &n in &f.nodes {
                    self.restart(n, lost).await;
                }
            }
        }
        self.disturb(&self.all_slots(), 0);
    }

    /// A fault's end in scenario ms (the simulator's rule).
    fn fault_end_ms(&self, f: &FaultSpec) -> Option<u64> {
        let heal = self.sc.phases.heal_at_ms;
        match f.kind.as_str() {
            "clock-jump" | "join" | "leave" => None,
            "crash" if f.permanent => None,
            _ => f
                .duration_ms
                .map(|d| f.at_ms + d)
                .or(heal)
                .map(|e| e.min(heal.unwrap_or(u64::MAX))),
        }
    }

    /// The timeline in scenario ms.
    fn steps(&self) -> Vec<(u64, Step)> {
        let mut v: Vec<(u64, Step)> = Vec::new();
        let deadline = self.sc.phases.deadline_ms;
        for (fi, f) in self.sc.faults.iter().enumerate() {
            if f.at_ms >= deadline {
                continue;
            }
            v.push((f.at_ms, Step::FaultStart(fi)));
            let end = self.fault_end_ms(f);
            if let Some(e) = end.filter(|e| *e < deadline) {
                v.push((e, Step::FaultEnd(fi)));
            }
            if f.kind == "swizzle" {
                let step = f.step_ms.unwrap_or(2_000);
                let n = f.nodes.len() as u64;
                for (k, &node) in f.nodes.iter().enumerate() {
                    v.push((
                        f.at_ms + k as u64 * step,
                        Step::Swizzle {
                            fault: fi,
                            node,
                            clog: true,
                        },
                    ));
                }
                if let Some(e) = end {
                    let start = e.saturating_sub(n * step).max(f.at_ms + n * step);
                    for (k, &node) in f.restore_order.iter().enumerate() {
                        let t = start + k as u64 * step;
                        if t < e {
                            v.push((
                                t,
                                Step::Swizzle {
                                    fault: fi,
                                    node,
                                    clog: false,
                                },
                            ));
                        }
                    }
                }
            }
        }
        if let Some(h) = self.sc.phases.heal_at_ms.filter(|h| *h < deadline) {
            v.push((h, Step::Heal));
        }
        let converge_ref = self
            .sc
            .phases
            .heal_at_ms
            .or(self.sc.workload.stop_ms)
            .unwrap_or(deadline)
            .min(deadline);
        if converge_ref < deadline {
            v.push((converge_ref, Step::ConvergeRef));
        }
        v.push((deadline, Step::Deadline));
        // Stable: at equal times, fault ends before starts as listed; the
        // reference after the heal.
        v.sort_by_key(|(t, s)| {
            let rank = match s {
                Step::FaultEnd(_) => 0,
                Step::Swizzle { .. } => 1,
                Step::FaultStart(_) => 2,
                Step::Heal => 3,
                Step::ConvergeRef => 4,
                Step::Deadline => 5,
            };
            (*t, rank)
        });
        v
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

async fn snapshot_node(slot: usize, h: &NodeHandle, keys: &[TrackedKey]) -> Option<NodeSnapshot> {
    let st = h.status().await.ok()?;
    let mut held = BTreeMap::new();
    for k in keys {
        held.insert(k.clone(), read_held(h, k).await.ok()?);
    }
    let listing = h
        .list(&ns_kv(), "", 1_000_000)
        .await
        .ok()?
        .iter()
        .map(|e| {
            let mut sib: Vec<String> = e.siblings.iter().map(|(v, _)| v.id.to_string()).collect();
            sib.sort();
            format!("{} {} [{}]", e.key, e.version.id, sib.join(","))
        })
        .collect();
    let views = h
        .services(&ns_svc(), &api(), ServiceQuery::default())
        .await
        .ok()?;
    let services = views
        .iter()
        .map(|v| {
            format!(
                "{} {} {} {}",
                v.instance,
                v.version.id,
                v.owner.short(),
                v.reported_health.as_str()
            )
        })
        .collect();
    let service_health = views
        .iter()
        .map(|v| (v.instance.to_string(), v.owner, v.health.is_healthy()))
        .collect();
    let members = h
        .members()
        .await
        .ok()?
        .into_iter()
        .map(|m| (m.node_id, m.status))
        .collect();
    Some(NodeSnapshot {
        slot,
        peer: h.peer_id(),
        digest: st.digest,
        held,
        listing,
        services,
        service_health,
        members,
    })
}

/// Wait until every node sees `n` alive members.
async fn wait_formed(handles: &[NodeHandle], n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let mut ok = true;
        for h in handles {
            let alive = h
                .members()
                .await
                .map(|m| m.iter().filter(|m| m.status == MemberStatus::Alive).count())
                .unwrap_or(0);
            if alive < n {
                ok = false;
                break;
            }
        }
        if ok {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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
        let boot: Vec<String> = if sc.cluster.bootstrap == "seeds" {
            (0..i.min(sc.cluster.seeds.max(1)))
                .filter_map(|j| slots[j].addr.clone())
                .collect()
        } else {
            let mut v: Vec<usize> = vec![0, i.saturating_sub(1)];
            v.dedup();
            v.into_iter()
                .filter(|&j| j < i)
                .filter_map(|j| slots[j].addr.clone())
                .collect()
        };
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let started = launch(dir.path(), &format!("n{i}"), &p.protocol, boot).await;
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
    if !wait_formed(&handles, n0, formation_limit).await {
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
            seq_hint: HashMap::new(),
            services,
            samples: Vec::new(),
            fault_periods: Vec::new(),
            fault_starts: Vec::new(),
            untracked: 0,
            inflight: BTreeMap::new(),
            watchdog: Watchdog {
                history_limit,
                ..Watchdog::default()
            },
        }),
        track_tx,
        window_ms,
        progress,
        sc,
    });
    h.event(
        "formed",
        serde_json::json!({"nodes": n0, "formation_ms": formation_ms, "time_scale": h.scale}),
    );
    // Fault periods for the report.
    {
        let periods: Vec<(u64, u64, String)> =
            h.sc.faults
                .iter()
                .filter(|f| !matches!(f.kind.as_str(), "join" | "leave" | "clock-jump"))
                .map(|f| {
                    let end = h.fault_end_ms(f).unwrap_or(h.sc.phases.deadline_ms);
                    (
                        h.real(f.at_ms),
                        h.real(end.min(h.sc.phases.deadline_ms)),
                        f.label(),
                    )
                })
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
    for (t, step) in h.steps() {
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

async fn stop_all(handles: Vec<NodeHandle>) {
    futures::future::join_all(handles.into_iter().map(|h| async move {
        let _ = h.stop_without_leave().await;
    }))
    .await;
}

/// The checks after the deadline, metrics and verdict.
#[allow(clippy::too_many_arguments)]
fn judge(
    h: &Harness,
    seed: u64,
    p: Prepared,
    fin: FinalState,
    t_deadline: u64,
    settle_ms: u64,
    bounded: u64,
    formation_ms: u64,
    wall_ms: u64,
) -> RealResult {
    let mut g = h.lock();
    let t_end = fin.t_ms;
    let window = h.window_ms;
    let core: Vec<usize> = fin.nodes.iter().map(|n| n.slot).collect();
    let mut liveness: Vec<String> = Vec::new();
    let mut violations: Vec<Violation> = Vec::new();
    // 1. Equal state on every running node.
    let (digests, differing, example) = state_differences(&fin);
    if digests > 1 {
        liveness.push(format!(
            "{digests} distinct state digests on the {} running nodes",
            core.len()
        ));
    }
    if differing > 0 {
        liveness.push(format!(
            "{differing} nodes' kv listing or service table differs ({example})"
        ));
    }
    // 2. Membership accurate.
    let mut wrong_views = 0usize;
    let mut wrong_example = String::new();
    for n in &fin.nodes {
        let o = n.slot;
        let mut subjects: Vec<(usize, String, Option<MemberStatus>)> = Vec::new();
        for (j, s) in g.slots.iter().enumerate() {
            if j == o || s.id.is_none() {
                continue;
            }
            let want = if core.contains(&j) {
                Some(MemberStatus::Alive)
            } else if s.state == SlotState::Gone {
                Some(MemberStatus::Left)
            } else if s.state == SlotState::Down && t_end.saturating_sub(s.down_since_ms) >= window {
                Some(MemberStatus::Dead)
            } else {
                None
            };
            subjects.push((j, s.peer.clone(), want));
            for (_, peer, down) in &s.old {
                if t_end.saturating_sub(*down) >= window {
                    subjects.push((j, peer.clone(), Some(MemberStatus::Dead)));
                }
            }
        }
        for (j, peer, want) in subjects {
            let got = n.members.get(&peer).copied();
            let ok = match want {
                None => true,
                Some(MemberStatus::Dead) => matches!(got, Some(MemberStatus::Dead | MemberStatus::Left)),
                Some(w) => got == Some(w),
            };
            if !ok {
                wrong_views += 1;
                if wrong_example.is_empty() {
                    wrong_example = format!("node {o} holds node {j} ({peer}) as {got:?}, expected {want:?}");
                }
            }
        }
    }
    if wrong_views > 0 {
        liveness.push(format!(
            "{wrong_views} inaccurate membership views (e.g. {wrong_example})"
        ));
    }
    // 3. No acknowledged write lost.
    let lost = lost_writes(&g.ledger, &fin, h.tombstone_ttl_ms);
    let unexplained: Vec<&LostWrite> = lost.iter().filter(|l| !l.explained).collect();
    let explained = lost.len() - unexplained.len();
    if let Some(l) = unexplained.first() {
        let w = &g.ledger.writes[l.write];
        liveness.push(format!(
            "{} acknowledged writes lost (e.g. op {} ({} version {}) missing on node {})",
            unexplained.len(),
            l.op,
            w.key,
            w.id,
            l.node
        ));
    }
    // 4. Services of dead owners are not healthy.
    let mut gone: BTreeSet<NodeId> = BTreeSet::new();
    for s in &g.slots {
        for (id, _, down) in &s.old {
            if t_end.saturating_sub(*down) >= window {
                gone.insert(*id);
            }
        }
        if let Some(id) = s.id {
            if s.state != SlotState::Up && t_end.saturating_sub(s.down_since_ms) >= window {
                gone.insert(id);
            }
        }
    }
    let bad_services: usize = fin
        .nodes
        .iter()
        .map(|n| {
            n.service_health
                .iter()
                .filter(|(_, owner, healthy)| *healthy && gone.contains(owner))
                .count()
        })
        .sum();
    if bad_services > 0 {
        liveness.push(format!(
            "{bad_services} service views of dead owners still healthy"
        ));
    }
    // Safety as the run went, then: no value nobody wrote.
    violations.append(&mut g.watchdog.violations);
    for (slot, key, value) in phantom_values(&g.ledger, &fin) {
        violations.push(Violation {
            t_ms: t_end,
            invariant: "no-phantom-values",
            node: Some(slot),
            detail: format!("{key} holds a value no client wrote: {value:?}"),
        });
    }

    // Metrics (real ms).
    let mut m: BTreeMap<String, f64> = BTreeMap::new();
    let mut reach = Vec::new();
    let mut reach_calm = Vec::new();
    let mut unreached = 0u64;
    for w in &g.ledger.writes {
        let arr: Option<Vec<u64>> = core.iter().map(|&s| w.arrivals[s]).collect();
        match arr {
            Some(a) => reach.push(a.into_iter().max().unwrap_or(0)),
            None => unreached += 1,
        }
        // Calm: no fault in force at the ack, none starting before it had
        // reached every node running at the ack.
        if let Some(r) = w.reached_up_ms.filter(|_| !w.during_fault) {
            if !g.fault_starts.iter().any(|&f| f >= w.ack_ms && f <= w.ack_ms + r) {
                reach_calm.push(r);
            }
        }
    }
    reach.sort_unstable();
    reach_calm.sort_unstable();
    m.insert("nodes".into(), h.sc.cluster.size as f64);
    m.insert("core_nodes".into(), core.len() as f64);
    m.insert("time_scale".into(), h.scale);
    m.insert("writes_acked".into(), g.ledger.writes.len() as f64);
    m.insert("write_reach_p50_ms".into(), quantile(&reach, 0.5));
    m.insert("write_reach_p99_ms".into(), quantile(&reach, 0.99));
    m.insert(
        "write_reach_max_ms".into(),
        reach.last().copied().unwrap_or(0) as f64,
    );
    m.insert("writes_no_fault".into(), reach_calm.len() as f64);
    m.insert("write_reach_no_fault_p50_ms".into(), quantile(&reach_calm, 0.5));
    m.insert("write_reach_no_fault_p99_ms".into(), quantile(&reach_calm, 0.99));
    m.insert(
        "write_reach_no_fault_max_ms".into(),
        reach_calm.last().copied().unwrap_or(0) as f64,
    );
    m.insert("writes_unreached_at_end".into(), unreached as f64);
    m.insert("writes_untracked".into(), g.untracked as f64);
    m.insert("safety_reads_checked".into(), g.watchdog.reads as f64);
    m.insert("arrivals_bounded_by_final_read".into(), bounded as f64);
    m.insert("lost_writes".into(), unexplained.len() as f64);
    m.insert("lost_writes_explained".into(), explained as f64);
    m.insert(
        "converge_after_heal_ms".into(),
        g.converge_after_ms.map_or(-1.0, |v| v as f64),
    );
    m.insert("false_suspicions".into(), g.false_suspicions.len() as f64);
    m.insert("false_deaths".into(), g.false_deaths.len() as f64);
    m.insert("settle_ms".into(), settle_ms as f64);
    m.insert("formation_ms".into(), formation_ms as f64);
    m.insert("timeline_ms".into(), t_deadline as f64);
    let mut first = Vec::new();
    let mut all_obs = Vec::new();
    for ep in &g.crashes {
        let observers: Vec<usize> = core.iter().copied().filter(|&o| o != ep.slot).collect();
        if let Some(f) = ep.dead_at.values().min() {
            first.push(f - ep.down_ms);
        }
        if !observers.is_empty() && observers.iter().all(|o| ep.dead_at.contains_key(o)) {
            let last = observers
                .iter()
                .map(|o| ep.dead_at[o])
                .max()
                .unwrap_or(ep.down_ms);
            all_obs.push(last - ep.down_ms);
        }
    }
    m.insert("crashes".into(), g.crashes.len() as f64);
    m.insert(
        "detect_first_ms".into(),
        if first.is_empty() {
            -1.0
        } else {
            first.iter().sum::<u64>() as f64 / first.len() as f64
        },
    );
    m.insert(
        "detect_all_ms".into(),
        all_obs.iter().copied().max().map_or(-1.0, |v| v as f64),
    );

    // Verdict.
    let mut reasons = Vec::new();
    for v in &violations {
        reasons.push(format!(
            "safety: {} at {} ms on node {:?}: {}",
            v.invariant, v.t_ms, v.node, v.detail
        ));
    }
    let could_recover = g.cuts.is_empty()
        && g.paused.is_empty()
        && t_deadline.saturating_sub(g.last_heal_ms) >= 2 * h.cfg.sync_interval_ms + h.cfg.sync_timeout_ms;
    let mut thresholds_ok = true;
    let e = &h.sc.expect;
    let scale = h.scale;
    let mut check = |name: &str, got: f64, limit: Option<u64>, scaled: bool| {
        if let Some(l) = limit {
            let l = if scaled { l as f64 * scale } else { l as f64 };
            if got < 0.0 || got > l {
                thresholds_ok = false;
                reasons.push(format!("expect: {name} = {got} exceeds {l:.0}"));
            }
        }
    };
    check(
        "convergence_p99_ms",
        m["write_reach_p99_ms"],
        e.convergence_p99_ms,
        true,
    );
    check(
        "converge_after_heal_ms",
        m["converge_after_heal_ms"],
        e.converge_after_heal_ms,
        true,
    );
    check("false_deaths", m["false_deaths"], e.max_false_deaths, false);
    if !g.crashes.is_empty() {
        check("detect_all_ms", m["detect_all_ms"], e.detection_all_ms, true);
    }
    for l in &liveness {
        reasons.push(format!("liveness: {l}"));
    }
    let verdict = if !violations.is_empty() || (!liveness.is_empty() && could_recover) || !thresholds_ok {
        Verdict::Invalid
    } else if !liveness.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    let mut events = std::mem::take(&mut g.events);
    for v in &violations {
        events.push(serde_json::json!({"t_ms": v.t_ms, "event": "violation", "detail": v}).to_string());
    }
    if h.progress {
        eprintln!("{} (real): {:?}", h.sc.name, verdict);
    }
    RealResult {
        scenario: p.scenario,
        seed,
        time_scale: p.scale,
        verdict,
        reasons,
        violations,
        skipped: p.skipped,
        approximated: p.approximated,
        metrics: m,
        write_reach_ms: reach,
        write_reach_calm_ms: reach_calm,
        fault_periods: std::mem::take(&mut g.fault_periods),
        history: std::mem::take(&mut g.history),
        event_log: events,
        samples: std::mem::take(&mut g.samples),
        ledger: g.ledger.clone(),
        final_state: fin,
        tombstone_ttl_ms: h.tombstone_ttl_ms,
        lost: lost.clone(),
        wall_ms,
    }
}

// ----- reports ------------------------------------------------------------------

/// The one line that reproduces a real-node run (the same choices; the
/// interleaving differs).
pub fn repro_line(r: &RealResult, p: &Provenance) -> String {
    format!(
        "cargo run --release -p starling-sim -- swarm-real {} --seed {} --nodes {} --time-scale {}   # git {}",
        p.scenario_path,
        r.seed,
        r.scenario.cluster.size,
        r.time_scale,
        p.git_rev.as_deref().unwrap_or("unknown")
    )
}

/// `results.json` of a real-node run.
pub fn results_json(r: &RealResult, p: &Provenance) -> serde_json::Value {
    serde_json::json!({
        "mode": "real",
        "scenario": r.scenario.name,
        "scenario_path": p.scenario_path,
        "seed": r.seed,
        "git_rev": p.git_rev,
        "verdict": r.verdict,
        "exit_code": r.verdict.exit_code(),
        "reasons": r.reasons,
        "violations": r.violations,
        "time_scale": r.time_scale,
        "wall_ms": p.wall_ms,
        "skipped": r.skipped,
        "approximated": r.approximated,
        "fault_periods": r.fault_periods,
        "lost_writes": r.lost.iter().map(|l| {
            let w = &r.ledger.writes[l.write];
            serde_json::json!({"op": l.op, "key": w.key.to_string(), "version": w.id.to_string(),
                "origin": w.origin, "ack_ms": w.ack_ms, "missing_on": l.node, "explained": l.explained})
        }).collect::<Vec<_>>(),
        "metrics": r.metrics,
        "repro": repro_line(r, p),
    })
}

fn fmt_metric(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e12 {
        format!("{}", v as i64)
    } else {
        format!("{v:.2}")
    }
}

/// `summary.md` of a real-node run.
pub fn summary_md(r: &RealResult, p: &Provenance) -> String {
    let mut s = String::new();
    let m = &r.metrics;
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    let _ = writeln!(s, "# {} — real nodes, seed {}\n", r.scenario.name, r.seed);
    if !r.scenario.description.is_empty() {
        let _ = writeln!(s, "{}\n", r.scenario.description.trim());
    }
    let _ = writeln!(
        s,
        "**Verdict: {:?}** (exit code {})\n",
        r.verdict,
        r.verdict.exit_code()
    );
    for reason in &r.reasons {
        let _ = writeln!(s, "- {reason}");
    }
    if !r.reasons.is_empty() {
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "Re-run (same choices, not the same interleaving): `{}`\n",
        repro_line(r, p)
    );
    let _ = writeln!(
        s,
        "{} real libp2p nodes in one process (loopback TCP, bootstrap peers, mDNS off). Time scale {:.3}: \
         the {:.0} s scenario ran in {:.1} s (cluster formed in {:.1} s before it; protocol timers scaled the same), \
         {:.1} s wall in all. Times below are real milliseconds.\n",
        fmt_metric(get("nodes")),
        r.time_scale,
        r.scenario.phases.deadline_ms as f64 / 1000.0,
        get("timeline_ms") / 1000.0,
        get("formation_ms") / 1000.0,
        p.wall_ms as f64 / 1000.0,
    );
    let _ = writeln!(s, "| metric | value |\n|---|---|");
    let rows = [
        ("acknowledged writes", "writes_acked"),
        ("write reaches every running node, p50 (ms)", "write_reach_p50_ms"),
        ("… p99 (ms)", "write_reach_p99_ms"),
        ("… max (ms)", "write_reach_max_ms"),
        (
            "acknowledged and spread with no fault in force (cut, pause, crash, leave)",
            "writes_no_fault",
        ),
        (
            "… reach every node running at the ack, p50 (ms)",
            "write_reach_no_fault_p50_ms",
        ),
        ("… p99 (ms)", "write_reach_no_fault_p99_ms"),
        ("… max (ms)", "write_reach_no_fault_max_ms"),
        (
            "writes not seen on every node at the end",
            "writes_unreached_at_end",
        ),
        (
            "acknowledged writes not followed (dot not found)",
            "writes_untracked",
        ),
        ("lost acknowledged writes (unexplained)", "lost_writes"),
        (
            "lost writes explained by a fault (disk lost)",
            "lost_writes_explained",
        ),
        (
            "time to equal digests after heal (ms, -1 never)",
            "converge_after_heal_ms",
        ),
        ("settle window used after the deadline (ms)", "settle_ms"),
        ("crashes", "crashes"),
        ("detection, first observer (mean ms)", "detect_first_ms"),
        ("detection, all observers (max ms)", "detect_all_ms"),
        ("false suspicions / false deaths", "false_suspicions"),
        ("reads checked for safety as the run went", "safety_reads_checked"),
    ];
    for (label, key) in rows {
        let v = match key {
            "false_suspicions" => format!("{} / {}", fmt_metric(get(key)), fmt_metric(get("false_deaths"))),
            _ => fmt_metric(get(key)),
        };
        let _ = writeln!(s, "| {label} | {v} |");
    }
    let _ = writeln!(s, "\nFaults applied (real ms):\n");
    if r.fault_periods.is_empty() {
        let _ = writeln!(s, "- none");
    }
    for (a, b, l) in &r.fault_periods {
        let _ = writeln!(s, "- {a}–{b} ms: {l}");
    }
    let _ = writeln!(s, "\nSkipped (not run in real mode):\n");
    if r.skipped.is_empty() {
        let _ = writeln!(s, "- nothing");
    }
    for l in &r.skipped {
        let _ = writeln!(s, "- {l}");
    }
    let _ = writeln!(s, "\nApproximated:\n");
    for l in &r.approximated {
        let _ = writeln!(s, "- {l}");
    }
    let _ = writeln!(
        s,
        "\nChecked on every read of a key while the run went (each node against its own earlier reads): no value \
         nobody wrote, a superseded version never live again, the newest version never goes back, no version back \
         after its key was collected, history within its limit; from the membership samples: a node never holds \
         itself suspect or dead. Checked after the deadline: equal digests, kv listings and service tables on \
         every running node; accurate membership; no acknowledged write lost (present, or superseded by a write \
         that certainly saw it); services of dead owners not healthy; no value nobody wrote. Not checked in real \
         mode: stale reads.\n\n\
         Plots: [convergence](convergence.svg) · [latency](latency.svg) · [divergence](divergence.svg). \
         Data: `results.json`, `history.jsonl`, `events.jsonl`, `metrics.csv`; resolved scenario (scenario ms): \
         `scenario.resolved.toml`."
    );
    s
}

/// Write every output of a real-node run into `dir`.
pub fn write_run(dir: &Path, r: &RealResult, p: &Provenance) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("scenario.resolved.toml"), r.scenario.to_toml())?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&results_json(r, p)).unwrap_or_default(),
    )?;
    let lines = |v: &[String]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
    std::fs::write(dir.join("history.jsonl"), lines(&r.history))?;
    std::fs::write(dir.join("events.jsonl"), lines(&r.event_log))?;
    let mut csv = String::from("t_ms,up,digests,missing\n");
    for (t, up, d, missing) in &r.samples {
        let _ = writeln!(csv, "{t},{up},{d},{missing}");
    }
    std::fs::write(dir.join("metrics.csv"), csv)?;
    std::fs::write(
        dir.join("convergence.svg"),
        convergence_cdf_svg(
            &r.write_reach_calm_ms,
            r.metrics.get("nodes").map_or(1, |n| *n as usize),
            GOSSIPSUB_MESH_DEGREE,
            0.0,
            LOOPBACK_HOP_MS,
            "Write → every running node, no fault in force (CDF, real ms)",
        ),
    )?;
    let reach: Vec<(f64, f64)> = r
        .ledger
        .writes
        .iter()
        .filter_map(|w| Some((w.ack_ms as f64 / 1000.0, w.reached_up_ms? as f64)))
        .collect();
    std::fs::write(
        dir.join("latency.svg"),
        timeline_svg(
            "Write reach by acknowledgement time",
            "real time (s)",
            "ms to reach every node running at the ack",
            vec![("write reach".into(), reach, false, false)],
            &r.fault_periods,
        ),
    )?;
    let at = |f: fn(&(u64, usize, usize, u64)) -> f64| -> Vec<(f64, f64)> {
        r.samples.iter().map(|s| (s.0 as f64 / 1000.0, f(s))).collect()
    };
    std::fs::write(
        dir.join("divergence.svg"),
        timeline_svg(
            "Divergence over time",
            "real time (s)",
            "count",
            vec![
                ("distinct digests".into(), at(|s| s.2 as f64), false, true),
                ("running nodes".into(), at(|s| s.1 as f64), true, true),
                (
                    "missing (write, node) / 10".into(),
                    at(|s| s.3 as f64 / 10.0),
                    true,
                    false,
                ),
            ],
            &r.fault_periods,
        ),
    )?;
    std::fs::write(dir.join("summary.md"), summary_md(r, p))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u64) -> NodeId {
        NodeId::from_index(i)
    }

    fn write(ledger: &mut Ledger, op: u64, origin: u64, seq: u64, ctx: &[(u64, u64)]) -> usize {
        let dot = Dot {
            node: node(origin),
            seq,
        };
        let mut c = Context::default();
        for &(n, s) in ctx {
            c.add(Dot {
                node: node(n),
                seq: s,
            });
        }
        c.add(dot);
        ledger.push(AckedWrite {
            op,
            key: TrackedKey::Kv("k/0".into()),
            id: VersionId::of(&dot),
            dot,
            hlc: Hlc {
                wall_ms: op,
                logical: 0,
            },
            tombstone: false,
            origin: origin as usize,
            ack_ms: op,
            ctx: c,
            arrivals: vec![None; 4],
            orphaned: false,
            during_fault: false,
            up_at_ack: vec![true; 4],
            reached_up_ms: None,
        })
    }

    fn held(ledger: &Ledger, i: usize, live: bool) -> Held {
        let w = &ledger.writes[i];
        Held {
            id: w.id,
            dot: w.dot,
            hlc: w.hlc,
            deleted: false,
            live,
            value: None,
        }
    }

    fn version(origin: u64, seq: u64, wall_ms: u64, live: bool, value: Option<&[u8]>) -> Held {
        let dot = Dot {
            node: node(origin),
            seq,
        };
        Held {
            id: VersionId::of(&dot),
            dot,
            hlc: Hlc { wall_ms, logical: 0 },
            deleted: value.is_none(),
            live,
            value: value.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn the_watchdog_flags_a_node_going_back_and_accepts_progress() {
        let key = TrackedKey::Kv("k/0".into());
        let issued: BTreeSet<u64> = [1, 2].into_iter().collect();
        let (v1, v2) = (value_for(1, 16), value_for(2, 16));
        let fresh = || Watchdog {
            history_limit: 2,
            ..Watchdog::default()
        };
        let mut w = fresh();
        let read = |w: &mut Watchdog, t, held: &[Held]| w.on_read(t, 0, 1, &key, held, &issued);
        // Progress: a write, then one superseding it, then a delete, then
        // collection of the whole key.
        read(&mut w, 1, &[version(1, 1, 10, true, Some(&v1))]);
        read(
            &mut w,
            2,
            &[
                version(2, 1, 20, true, Some(&v2)),
                version(1, 1, 10, false, Some(&v1)),
            ],
        );
        read(
            &mut w,
            3,
            &[version(3, 1, 30, true, None), version(2, 1, 20, false, Some(&v2))],
        );
        read(&mut w, 4, &[]);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        // The collected delete's versions come back.
        read(&mut w, 5, &[version(2, 1, 20, true, Some(&v2))]);
        let kinds: Vec<&str> = w.violations.iter().map(|v| v.invariant).collect();
        assert_eq!(kinds, ["winner-monotonic", "no-resurrection"]);

        // Another node: the newest version disappears, a value nobody
        // wrote, too much history.
        let mut w = fresh();
        let other = |w: &mut Watchdog, t, held: &[Held]| w.on_read(t, 1, 1, &key, held, &issued);
        other(
            &mut w,
            1,
            &[
                version(2, 1, 20, true, Some(&v2)),
                version(1, 1, 10, false, Some(&v1)),
            ],
        );
        other(&mut w, 2, &[version(1, 1, 10, false, Some(&v1))]);
        other(&mut w, 3, &[version(4, 1, 40, true, Some(b"w9:forged"))]);
        other(
            &mut w,
            4,
            &[
                version(5, 1, 50, true, None),
                version(4, 1, 40, false, None),
                version(2, 1, 20, false, None),
                version(1, 1, 10, false, None),
            ],
        );
        let kinds: Vec<&str> = w.violations.iter().map(|v| v.invariant).collect();
        assert_eq!(kinds, ["versions-monotonic", "no-phantom-values", "limits"]);
        // A restart (new life) starts afresh; a node never holds itself dead.
        w.on_read(5, 1, 2, &key, &[version(1, 1, 10, true, Some(&v1))], &issued);
        assert_eq!(w.violations.len(), 3);
        w.on_self_view(6, 1, MemberStatus::Alive);
        w.on_self_view(7, 1, MemberStatus::Suspect);
        assert_eq!(w.violations.last().map(|v| v.invariant), Some("never-self-dead"));
        assert_eq!(w.reads, 5);
    }

    #[test]
    fn a_write_is_accounted_only_when_held_or_certainly_superseded() {
        let mut l = Ledger::default();
        let a = write(&mut l, 1, 1, 1, &[]);
        let b = write(&mut l, 2, 2, 1, &[(1, 1)]); // saw a
        let c = write(&mut l, 3, 3, 1, &[]); // concurrent with both
        let a2 = write(&mut l, 4, 1, 2, &[]); // a's origin again
        let hb = [held(&l, b, true)];
        assert!(l.accounted(a, &hb, 10, 1_000), "b supersedes a");
        assert!(
            !l.accounted(c, &hb, 10, 1_000),
            "c is concurrent: it must be held"
        );
        assert!(
            l.accounted(a, &[held(&l, a2, true)], 10, 1_000),
            "a later write of a's origin"
        );
        assert!(!l.accounted(b, &[held(&l, a2, true)], 10, 1_000));
        assert!(!l.accounted(a, &[], 10, 1_000));
    }

    #[test]
    fn a_collected_key_accounts_only_for_writes_an_old_enough_delete_explains() {
        let mut l = Ledger::default();
        let p = write(&mut l, 1, 1, 1, &[]);
        let d = write(&mut l, 2, 2, 1, &[]); // concurrent delete, outranks p
        l.writes[d].tombstone = true;
        let late = write(&mut l, 5_000, 3, 1, &[]); // outranks the delete
        assert!(
            !l.accounted(p, &[], 100, 1_000),
            "the delete is too young to be collected"
        );
        assert!(
            l.accounted(p, &[], 2_000, 1_000),
            "collected behind the winning delete"
        );
        assert!(l.accounted(d, &[], 2_000, 1_000), "the delete itself");
        assert!(
            !l.accounted(late, &[], 9_000, 1_000),
            "nothing explains a later put's absence"
        );
    }
}
