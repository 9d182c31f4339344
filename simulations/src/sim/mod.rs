//! The discrete-event simulator: many real `starling::core::Engine`s in
//! virtual time on one thread.
//!
//! Events are ordered by `(time, seq)`; every random draw comes from streams
//! of the run's one seed; every map whose iteration order matters is a
//! `BTreeMap`. So a seed replays byte for byte, and [`RunResult::trace_hash`]
//! (a hash of every event processed) proves it.
//!
//! # Driver contract
//! The simulator is a [`starling::core::Runtime`] (see [`driver`]): each
//! input goes through [`Engine::drive`], which persists first (into the
//! node's [`MemoryStore`], which never fails here), then publishes, sends
//! requests, responds and replies; the next `Tick` is scheduled at
//! [`Engine::poll_timeout`].
//!
//! # Rooms
//! This module holds the run (the event queue and its loop); `nodes`
//! starts and stops engines, [`driver`] executes their actions, `mesh`
//! models gossip, `clients` issues the workload, `faults` applies the
//! [`FaultPlan`], `sampling` samples the cluster and `judge` checks the end
//! and gives the verdict.
//!
//! # Model
//! * **Gossip** (`Action::Publish`) floods a mesh of degree D: each hop has
//!   the link's latency and loss, cut links carry nothing, crashed nodes do
//!   not relay. A push lost on a link is repaired by lazy gossip
//!   (IHAVE/IWANT) after the next gossip heartbeat if the repair survives the
//!   link too. The flood is computed when published (shortest arrival times
//!   over the mesh), so a cut that starts during a flood's few milliseconds
//!   does not stop it. The mesh is maintained every gossip interval: links
//!   to crashed or unreachable peers are pruned and new peers grafted
//!   (a graft is a new connection: `PeerConnected` on both sides).
//! * **Requests** (anti-entropy) are direct messages under the same link
//!   model; a request or response that is cut or lost makes the request
//!   fail after the request timeout, like the libp2p request-response
//!   behaviour.
//! * **Crash** drops the engine and everything in flight to it; a restart
//!   with state kept rebuilds the engine from `store.snapshot()`, with state
//!   lost from nothing under a new identity; a **mass restart** is many
//!   such crashes and restarts on a schedule. **Pause** holds a node's
//!   inputs and timers until it resumes. **Overload** delivers each input
//!   of a node late (a drawn delay, in order per source; see `overload`).
//!   **Clocks**: node time is `start + offset + t·(1 + drift)`; jumps
//!   change the offset.

mod byzantine;
mod clients;
pub mod driver;
mod faults;
mod judge;
mod mesh;
mod nodes;
mod overload;
mod sampling;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::rc::Rc;

use rand_chacha::ChaCha8Rng;
use starling::core::{
    CommandError, CommandOutput, Config, Engine, Input, MemoryStore, NodeId, StateKey, Topic,
};
use xxhash_rust::xxh3::Xxh3;

use crate::net::Network;
use crate::oracle::{Histo, Oracle};
use crate::plan::{FaultPlan, Step};
use crate::rng::stream;
use crate::scenario::Scenario;
use crate::workload::{instance_name, ns_svc, service_owner};

pub use crate::summary::Verdict;

/// How long digests may still differ after the last delete because each
/// node collects on its own clock: the longest TTL that expires within the
/// run (graves, else tombstones), a collection interval, and the spread of
/// the nodes' clock offsets. 0 without deletes or when nothing expires
/// before the deadline (the defaults: a day and 30 days).
pub fn collection_settle_ms(sc: &Scenario) -> u64 {
    let p = &sc.protocol;
    if sc.workload.delete_fraction <= 0.0 || sc.workload.writes_per_sec <= 0.0 {
        return 0;
    }
    let ttl = [p.grave_ttl_ms, p.tombstone_ttl_ms]
        .into_iter()
        .find(|t| *t < sc.phases.deadline_ms);
    let Some(ttl) = ttl else { return 0 };
    ttl + p.gc_interval_ms + clock_spread_ms(sc)
}

/// How far apart two nodes' clocks may ever be in the run: each node's
/// configured offset moved by every clock jump it takes (jumps last), the
/// highest any node reaches less the lowest. A node behind the others
/// collects that much later (swarm seed 5139: jumps of +4.7 s and +4.8 s
/// on one node and −5 s on the other put them 14.5 s apart).
fn clock_spread_ms(sc: &Scenario) -> u64 {
    let slots = sc.slots();
    let mut now: Vec<i64> = vec![0; slots];
    for c in &sc.clock.nodes {
        if let Some(o) = now.get_mut(c.node) {
            *o = c.offset_ms;
        }
    }
    let (mut high, mut low) = (
        now.iter().copied().max().unwrap_or(0).max(0),
        now.iter().copied().min().unwrap_or(0).min(0),
    );
    let mut jumps: Vec<_> = sc
        .faults
        .iter()
        .filter(|f| f.kind == crate::scenario::FaultKind::ClockJump)
        .collect();
    jumps.sort_by_key(|f| f.at_ms);
    for f in jumps {
        for &n in &f.nodes {
            if let Some(o) = now.get_mut(n) {
                *o = o.saturating_add(f.jump_ms.unwrap_or(0));
                high = high.max(*o);
                low = low.min(*o);
            }
        }
    }
    high.saturating_sub(low).max(0) as u64
}

/// The bytes of a delivery, copied only if another delivery of the same
/// message (a duplicate) still holds them.
fn owned(bytes: Rc<Vec<u8>>) -> Vec<u8> {
    Rc::try_unwrap(bytes).unwrap_or_else(|shared| (*shared).clone())
}

/// Virtual epoch: node clocks start here (ms since the Unix epoch).
pub const START_MS: i64 = 1_700_000_000_000;

/// One periodic sample of the whole cluster.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Sample {
    /// Virtual time (ms).
    pub t_ms: u64,
    /// Nodes running.
    pub up: usize,
    /// Distinct state digests among running nodes.
    pub digests: usize,
    /// Running nodes whose digest differs from the most common one.
    pub off_mode: usize,
    /// (acked write, running node) pairs not yet arrived.
    pub missing: u64,
    /// Engine bytes out per running node per second, by message kind.
    pub bytes_out: BTreeMap<String, f64>,
    /// Messages out per running node per second, by kind.
    pub msgs_out: BTreeMap<String, f64>,
    /// Bytes on the wire per running node per second, mesh relays included.
    pub wire_bytes: f64,
    /// Gossip delivery latency in this window (p50, p99), ms.
    pub gossip_p50_ms: f64,
    /// p99.
    pub gossip_p99_ms: f64,
    /// Members held suspect / dead by running observers, summed.
    pub suspect_views: u64,
    /// Summed over observers.
    pub dead_views: u64,
}

/// Everything a run produced.
pub struct RunResult {
    /// What every run reports (the verdict, metrics, logs).
    pub summary: crate::summary::RunSummary,
    /// Hash of every event processed.
    pub trace_hash: u64,
    /// Events processed.
    pub events: u64,
    /// Virtual time simulated (ms).
    pub sim_ms: u64,
    /// Periodic samples.
    pub samples: Vec<Sample>,
    /// Membership heatmap: subject slots × samples, fraction of running
    /// observers holding the subject alive (NaN: subject not running and
    /// nobody to judge).
    pub heatmap: Vec<Vec<f32>>,
    /// Heatmap subjects (slots).
    pub heatmap_subjects: Vec<usize>,
    /// Per node slot: engine counters at the end (or at its last crash).
    pub per_node_bytes: Vec<BTreeMap<String, u64>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeState {
    NotStarted,
    Up,
    Down,
    Gone,
}

struct Node {
    id: NodeId,
    identity: u64,
    life: u32,
    /// Boxed: the engine is taken out of its node for every input it
    /// handles (see `driver`), and moving it by value copied the whole
    /// struct twice per delivery.
    engine: Option<Box<Engine>>,
    store: MemoryStore,
    state: NodeState,
    paused: bool,
    /// When it was last paused (µs).
    paused_at: u64,
    deferred: Vec<Ev>,
    offset_ms: i64,
    drift: f64,
    timer_at: u64,
    down_since_ms: u64,
    crashed_counters: BTreeMap<String, u64>,
    crashed_rejected: BTreeMap<String, u64>,
    bytes_base: BTreeMap<String, u64>,
    msgs_base: BTreeMap<String, u64>,
    /// Inputs reach the node late (an overload fault), if set.
    overload: Option<overload::Overload>,
}

struct GossipMsg {
    author: NodeId,
    author_slot: usize,
    topic: Topic,
    bytes: Vec<u8>,
    /// The bytes decoded once for every engine they are delivered to.
    decoded: starling::core::wire::SharedDecode,
    hash: u64,
    sent_us: u64,
}

#[derive(Clone)]
enum Ev {
    Timer {
        node: usize,
        life: u32,
    },
    Gossip {
        to: usize,
        life: u32,
        msg: Rc<GossipMsg>,
    },
    Request {
        to: usize,
        life: u32,
        req: u64,
        bytes: Rc<Vec<u8>>,
    },
    Response {
        to: usize,
        life: u32,
        req: u64,
        bytes: Rc<Vec<u8>>,
    },
    ReqTimeout {
        req: u64,
    },
    Write,
    Read,
    ServiceBeat {
        svc: usize,
    },
    FaultStart {
        fault: usize,
    },
    FaultEnd {
        fault: usize,
    },
    Swizzle {
        fault: usize,
        step: usize,
    },
    Heal,
    Sample,
    Mesh,
    Byzantine {
        fault: usize,
        node: usize,
    },
    Stop {
        node: usize,
    },
    /// A mass restart stops a node or brings it back.
    Bounce {
        fault: usize,
        node: usize,
        up: bool,
    },
    /// An input an overloaded node takes late: delivered as is, not
    /// delayed again.
    Late(Box<Ev>),
    /// The deliveries of one published message still to come, queued as
    /// one entry under the key of the next one (see [`Flood`]).
    Flood(Box<Flood>),
    End,
}

/// The deliveries of one published message, in `(time, seq)` order, each
/// with the sequence number it was given when the message was published.
/// The queue holds one entry per flood, keyed by its next delivery, rather
/// than one per delivery: the run pops exactly the same `(time, seq)` keys
/// in the same order (keys are unique), from a queue a thousand times
/// smaller at a thousand nodes.
#[derive(Clone)]
struct Flood {
    msg: Rc<GossipMsg>,
    /// `(time, seq, to, life)`, sorted.
    deliveries: Vec<(u64, u64, usize, u32)>,
    next: usize,
}

impl Flood {
    /// The queue key of the next delivery.
    fn head(&self) -> Option<(u64, u64)> {
        self.deliveries.get(self.next).map(|&(t, s, _, _)| (t, s))
    }
}

struct Queued {
    time: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq) == (o.time, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.time, self.seq).cmp(&(o.time, o.seq))
    }
}

struct Req {
    from: usize,
    from_life: u32,
    engine_id: u64,
    to: usize,
    done: bool,
    /// Sent by a liar's attack, not by its engine.
    byz: Option<byzantine::ByzReq>,
}

struct Service {
    owner: usize,
    key: StateKey,
    registered_identity: Option<NodeId>,
}

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Print a progress line on stderr.
    pub progress: bool,
    /// Keep history and event logs (off for benchmarks).
    pub logs: bool,
}

/// One simulation run.
pub struct Sim {
    sc: Scenario,
    plan: FaultPlan,
    seed: u64,
    cfg: Config,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    nodes: Vec<Node>,
    net: Network,
    mesh: Vec<BTreeSet<usize>>,
    /// Requests sent to a peer outside the sender's links: as the libp2p
    /// driver dials for them, each opens a link at the next mesh
    /// maintenance (if the peer can still be reached).
    dialed: Vec<(usize, usize)>,
    wl: ChaCha8Rng,
    reqs: BTreeMap<u64, Req>,
    next_req: u64,
    next_op: u64,
    oracle: Oracle,
    trace: Xxh3,
    events: u64,
    replies: Vec<(u64, Result<CommandOutput, CommandError>)>,
    services: Vec<Service>,
    history: Vec<String>,
    event_log: Vec<String>,
    samples: Vec<Sample>,
    heatmap: Vec<Vec<f32>>,
    heat_subjects: Vec<usize>,
    fault_periods: Vec<(u64, u64, String)>,
    swizzle_cuts: BTreeMap<usize, u64>,
    wire_bytes: u64,
    wire_base: u64,
    gossip_lat: Histo,
    last_heal_ms: u64,
    converged_at: Option<u64>,
    converge_ref_ms: u64,
    end_ms: u64,
    opts: RunOptions,
    // Flood scratch space.
    dist: Vec<u64>,
    parent: Vec<usize>,
    flood_heap: BinaryHeap<Reverse<(u64, usize)>>,
    flood_reached: Vec<usize>,
    keep_disk: bool,
    /// Shared by every engine: equal member self-descriptions are held
    /// once in the process, not once per engine.
    pool: starling::core::SharedPool,
    liars: byzantine::Liars,
    /// Nodes a mass restart stopped and has not brought back yet:
    /// (fault, node).
    bounced: BTreeSet<(usize, usize)>,
    /// Nodes mass restarts stopped, in all.
    mass_restarts: u64,
    /// Draws of overload delays (a stream of their own: runs without
    /// overload draw nothing from it).
    overload_rng: ChaCha8Rng,
    /// Inputs delivered late by overload, and their delays summed (µs).
    overload_late: (u64, u64),
    /// Nodes with an overload state (in force or draining).
    overloaded: BTreeSet<usize>,
    /// When the last fault step ran (ms): a start, an end, a restart, a
    /// swizzle step, the heal. Merging again is measured from here.
    last_fault_ms: u64,
    /// The first sample after the last fault where the cluster was
    /// merged again (see `sampling`).
    merged_at: Option<u64>,
    /// What was not merged at the first sample past the bound.
    unmerged_at_bound: Option<String>,
    /// How long after the last fault the cluster must be merged again
    /// (0: not checked).
    merged_within_ms: u64,
}

impl Sim {
    /// Build a run of a *resolved* scenario.
    pub fn new(sc: Scenario, seed: u64, opts: RunOptions) -> Sim {
        let slots = sc.slots();
        let cfg = sc.protocol.clone();
        let mut nodes = Vec::with_capacity(slots);
        for i in 0..slots {
            let clock = sc.clock.nodes.iter().find(|c| c.node == i);
            nodes.push(Node {
                id: NodeId::from_index(i as u64 + 1),
                identity: 0,
                life: 0,
                engine: None,
                store: MemoryStore::new(),
                state: NodeState::NotStarted,
                paused: false,
                paused_at: 0,
                deferred: Vec::new(),
                offset_ms: clock.map_or(0, |c| c.offset_ms),
                drift: clock.map_or(0.0, |c| c.drift_ppm) * 1e-6,
                timer_at: u64::MAX,
                down_since_ms: 0,
                crashed_counters: BTreeMap::new(),
                crashed_rejected: BTreeMap::new(),
                bytes_base: BTreeMap::new(),
                msgs_base: BTreeMap::new(),
                overload: None,
            });
        }
        let net = Network::new(&sc.network, slots, sc.cluster.regions, stream(seed, 0, 0));
        let plan = FaultPlan::new(&sc);
        // Without a heal, convergence is measured from the workload's end.
        let converge_ref_ms = plan.converge_ref_ms;
        let end_ms = sc.phases.deadline_ms;
        let heat_subjects: Vec<usize> = (0..slots.min(64)).collect();
        let mut oracle = Oracle::new(slots, cfg.history_limit);
        oracle.liars = plan.liars();
        oracle.graves_outlived = plan.cuts_past_ttls(&sc).1 > 0;
        let liars = byzantine::Liars::new(plan.liars());
        let merged_within_ms = sc.expect.merged_within_ms.unwrap_or_else(|| {
            crate::scenario::ExpectSpec::default_merged_within_ms(
                &sc.protocol,
                slots,
                sc.network.request_timeout_ms,
            ) + collection_settle_ms(&sc)
        });
        Sim {
            bounced: BTreeSet::new(),
            mass_restarts: 0,
            overload_rng: stream(seed, overload::STREAM_OVERLOAD, 0),
            overload_late: (0, 0),
            overloaded: BTreeSet::new(),
            last_fault_ms: 0,
            merged_at: None,
            unmerged_at_bound: None,
            merged_within_ms,
            oracle,
            liars,
            cfg,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            net,
            mesh: vec![BTreeSet::new(); slots],
            dialed: Vec::new(),
            wl: stream(seed, 1, 0),
            reqs: BTreeMap::new(),
            next_req: 1,
            next_op: 1,
            trace: Xxh3::new(),
            events: 0,
            replies: Vec::new(),
            services: Vec::new(),
            history: Vec::new(),
            event_log: Vec::new(),
            samples: Vec::new(),
            heatmap: vec![Vec::new(); heat_subjects.len()],
            heat_subjects,
            fault_periods: Vec::new(),
            swizzle_cuts: BTreeMap::new(),
            wire_bytes: 0,
            wire_base: 0,
            gossip_lat: Histo::default(),
            last_heal_ms: 0,
            converged_at: None,
            converge_ref_ms,
            end_ms,
            opts,
            dist: vec![u64::MAX; slots],
            parent: vec![usize::MAX; slots],
            flood_heap: BinaryHeap::new(),
            flood_reached: Vec::new(),
            keep_disk: plan.has_crash(),
            pool: starling::core::SharedPool::new(),
            plan,
            sc,
            seed,
        }
    }

    fn push(&mut self, time: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            time,
            seq: self.seq,
            ev,
        }));
    }

    fn now_ms(&self) -> u64 {
        self.now / 1000
    }

    fn local_ms(&self, i: usize) -> u64 {
        let n = &self.nodes[i];
        let t = (self.now as f64 * (1.0 + n.drift) / 1000.0).floor() as i64;
        (START_MS + n.offset_ms + t).max(0) as u64
    }

    fn to_virtual_us(&self, i: usize, local: u64) -> u64 {
        let n = &self.nodes[i];
        let rel = local as i64 - START_MS - n.offset_ms;
        if rel <= 0 {
            return self.now;
        }
        let t = (rel as f64 * 1000.0 / (1.0 + n.drift)).ceil();
        if t > 1e15 {
            return u64::MAX;
        }
        t as u64
    }

    fn log_event(&mut self, kind: &str, detail: serde_json::Value) {
        if self.opts.logs {
            let line = serde_json::json!({"t_ms": self.now_ms(), "event": kind, "detail": detail});
            self.event_log.push(line.to_string());
        }
    }

    /// Run to the deadline and judge.
    pub fn run(mut self) -> RunResult {
        let n0 = self.sc.cluster.size;
        for i in 0..n0 {
            self.start_node(i, false);
        }
        self.build_initial_mesh();
        // Initial connections (bootstrap).
        for i in 0..n0 {
            let peers: Vec<usize> = match self.sc.cluster.bootstrap.as_str() {
                "seeds" => (0..self.sc.cluster.seeds.min(n0)).filter(|p| *p != i).collect(),
                _ => self.mesh[i].iter().copied().collect(),
            };
            for p in peers {
                let pid = self.nodes[p].id;
                self.handle(i, Input::PeerConnected(pid));
            }
        }
        // The plan's fixed steps, queued in plan order; swizzle steps
        // chain from the fault's start (see `faults`).
        for (t, step) in self.plan.schedule() {
            let ev = match step {
                Step::FaultStart(fault) => Ev::FaultStart { fault },
                Step::FaultEnd(fault) => Ev::FaultEnd { fault },
                Step::Bounce { fault, node, up } => Ev::Bounce { fault, node, up },
                Step::Heal => Ev::Heal,
                Step::Swizzle { .. } | Step::ConvergeRef | Step::Deadline => continue,
            };
            self.push(t * 1000, ev);
        }
        self.fault_periods = self.plan.periods();
        let w = self.sc.workload.clone();
        if w.writes_per_sec > 0.0 {
            self.push(w.start_ms * 1000, Ev::Write);
        }
        if w.reads_per_sec > 0.0 {
            self.push(w.start_ms * 1000 + 1, Ev::Read);
        }
        for s in 0..w.services {
            let owner = service_owner(s, n0);
            self.services.push(Service {
                owner,
                key: StateKey::Service {
                    namespace: ns_svc(),
                    service: crate::workload::api(),
                    instance: starling::core::InstanceId::new(instance_name(s)).expect("valid"),
                },
                registered_identity: None,
            });
            let at = w.start_ms * 1000 + (s as u64 * 7_919) % 1_000_000;
            self.push(at, Ev::ServiceBeat { svc: s });
        }
        self.push(self.sc.phases.sample_ms * 1000, Ev::Sample);
        self.push(self.sc.cluster.gossip_interval_ms * 1000, Ev::Mesh);
        self.push(self.end_ms * 1000, Ev::End);

        let tty = self.opts.progress;
        let mut next_progress = 0u64;
        while let Some(Reverse(q)) = self.queue.pop() {
            debug_assert!(q.time >= self.now, "events never go back in time");
            self.now = q.time;
            let ev = match q.ev {
                Ev::Flood(mut flood) => {
                    let (_, _, to, life) = flood.deliveries[flood.next];
                    let msg = flood.msg.clone();
                    flood.next += 1;
                    if let Some((time, seq)) = flood.head() {
                        self.queue.push(Reverse(Queued {
                            time,
                            seq,
                            ev: Ev::Flood(flood),
                        }));
                    }
                    Ev::Gossip { to, life, msg }
                }
                ev => ev,
            };
            self.events += 1;
            if tty && self.now >= next_progress {
                eprint!(
                    "\r{} seed {}: {:>6.1}/{} s simulated, {} events",
                    self.sc.name,
                    self.seed,
                    self.now as f64 / 1e6,
                    self.end_ms / 1000,
                    self.events
                );
                next_progress = self.now + 1_000_000 * 5;
            }
            if let Ev::End = ev {
                break;
            }
            self.dispatch(ev);
        }
        if tty {
            eprintln!();
        }
        self.finish()
    }

    fn trace_ev(&mut self, tag: u8, node: usize, extra: u64) {
        let mut buf = [0u8; 25];
        buf[0] = tag;
        buf[1..9].copy_from_slice(&self.now.to_le_bytes());
        buf[9..17].copy_from_slice(&(node as u64).to_le_bytes());
        buf[17..25].copy_from_slice(&extra.to_le_bytes());
        self.trace.update(&buf);
    }

    fn runnable(&self, i: usize) -> bool {
        self.nodes[i].state == NodeState::Up && self.nodes[i].engine.is_some()
    }

    fn dispatch(&mut self, ev: Ev) {
        // An overloaded node takes its inputs late.
        let ev = match self.overload_delay(ev) {
            Some(ev) => ev,
            None => return,
        };
        self.deliver(ev);
    }

    /// Deliver one event now.
    fn deliver(&mut self, ev: Ev) {
        match ev {
            Ev::Timer { node, life } => {
                let n = &self.nodes[node];
                if n.life != life || n.timer_at != self.now || !self.runnable(node) {
                    return;
                }
                if n.paused {
                    return;
                }
                self.nodes[node].timer_at = u64::MAX;
                self.trace_ev(1, node, 0);
                self.handle(node, Input::Tick);
            }
            Ev::Gossip { to, life, msg } => {
                if self.nodes[to].life != life || !self.runnable(to) {
                    return;
                }
                if self.nodes[to].paused {
                    self.nodes[to].deferred.push(Ev::Gossip { to, life, msg });
                    return;
                }
                self.trace_ev(2, to, msg.hash);
                self.gossip_lat.add((self.now - msg.sent_us) / 1000);
                let _ = msg.author_slot;
                let _ = msg.topic;
                self.deliver_gossip(to, &msg);
            }
            Ev::Request { to, life, req, bytes } => {
                if self.nodes[to].life != life || !self.runnable(to) {
                    return;
                }
                if self.nodes[to].paused {
                    self.nodes[to].deferred.push(Ev::Request { to, life, req, bytes });
                    return;
                }
                let Some(r) = self.reqs.get(&req) else { return };
                let from = self.nodes[r.from].id;
                self.trace_ev(3, to, req);
                if self.liars.lying(to) {
                    self.liars.answering = Some((*bytes).clone());
                }
                self.handle(
                    to,
                    Input::Request {
                        from,
                        id: req,
                        bytes: owned(bytes),
                    },
                );
                self.liars.answering = None;
            }
            Ev::Response { to, life, req, bytes } => {
                if self.nodes[to].life != life || !self.runnable(to) {
                    return;
                }
                if self.nodes[to].paused {
                    self.nodes[to]
                        .deferred
                        .push(Ev::Response { to, life, req, bytes });
                    return;
                }
                let Some(r) = self.reqs.get_mut(&req) else { return };
                r.done = true;
                let (eid, from, byz, responder) = (r.engine_id, self.nodes[r.to].id, r.byz, r.to);
                self.trace_ev(4, to, req);
                if let Some(what) = byz {
                    self.byz_response(to, responder, what, &bytes);
                    return;
                }
                self.handle(
                    to,
                    Input::Response {
                        from,
                        id: eid,
                        bytes: owned(bytes),
                    },
                );
            }
            Ev::ReqTimeout { req } => {
                let Some(r) = self.reqs.remove(&req) else { return };
                if r.done
                    || r.byz.is_some()
                    || self.nodes[r.from].life != r.from_life
                    || !self.runnable(r.from)
                {
                    return;
                }
                if self.nodes[r.from].paused {
                    // Delivered when it resumes.
                    self.reqs.insert(req, r);
                    self.push(self.now + 1_000_000, Ev::ReqTimeout { req });
                    return;
                }
                self.trace_ev(5, r.from, req);
                self.handle(r.from, Input::RequestFailed { id: r.engine_id });
            }
            Ev::Write => self.on_write(),
            Ev::Read => self.on_read(),
            Ev::ServiceBeat { svc } => self.on_service_beat(svc),
            Ev::FaultStart { fault } => self.fault_start(fault),
            Ev::FaultEnd { fault } => self.fault_end_ev(fault),
            Ev::Swizzle { fault, step } => self.swizzle_step(fault, step),
            Ev::Heal => self.heal(),
            Ev::Sample => {
                self.sample();
                self.push(self.now + self.sc.phases.sample_ms * 1000, Ev::Sample);
            }
            Ev::Mesh => {
                self.maintain_mesh();
                self.push(self.now + self.sc.cluster.gossip_interval_ms * 1000, Ev::Mesh);
            }
            Ev::Byzantine { fault, node } => self.byz_round(fault, node),
            Ev::Stop { node } => {
                if self.nodes[node].state == NodeState::Up {
                    self.stop_node(node, NodeState::Gone);
                }
            }
            Ev::Bounce { fault, node, up } => self.bounce(fault, node, up),
            Ev::Late(ev) => self.deliver_late(*ev),
            Ev::Flood(_) => unreachable!("the run takes floods apart into their deliveries"),
            Ev::End => {}
        }
    }
}
