//! The discrete-event simulator: many real `starling::core::Engine`s in
//! virtual time on one thread.
//!
//! Events are ordered by `(time, seq)`; every random draw comes from streams
//! of the run's one seed; every map whose iteration order matters is a
//! `BTreeMap`. So a seed replays byte for byte, and [`RunResult::trace_hash`]
//! (a hash of every event processed) proves it.
//!
//! # Driver contract
//! Exactly the node driver's: after each input every action is executed in
//! order — `Persist` first (into the node's [`MemoryStore`], which never
//! fails here), then publishes, requests, responses and replies — and the
//! next `Tick` is scheduled at [`Engine::poll_timeout`].
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
//!   lost from nothing under a new identity. **Pause** holds a node's
//!   inputs and timers until it resumes. **Clocks**: node time is
//!   `start + offset + t·(1 + drift)`; jumps change the offset.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::rc::Rc;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use starling::core::{
    Action, Command, CommandError, CommandOutput, Config, Engine, HealthStatus, Input, InstanceId, Key,
    MemberStatus, MemoryStore, Namespace, NodeId, NodeInfo, ServiceName, ServiceQuery, ServiceSpec, StateKey,
    Topic,
};
use xxhash_rust::xxh3::Xxh3;

use crate::net::{Cut, Fate, Network};
use crate::oracle::{value_for, Histo, Oracle};
use crate::rng::{splitmix, stream};
use crate::scenario::{FaultSpec, Scenario};

/// Virtual epoch: node clocks start here (ms since the Unix epoch).
pub const START_MS: i64 = 1_700_000_000_000;

/// The verdict of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check passed.
    Valid,
    /// A safety check failed, or liveness failed although the cluster
    /// could have recovered.
    Invalid,
    /// Liveness failed, but faults were still in force (or the run ended
    /// too soon after the last one) for recovery to be required.
    Unknown,
}

impl Verdict {
    /// Process exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Valid => 0,
            Verdict::Invalid => 1,
            Verdict::Unknown => 2,
        }
    }
}

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
    /// The resolved scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// The verdict.
    pub verdict: Verdict,
    /// Why it is not valid (liveness failures, threshold misses).
    pub reasons: Vec<String>,
    /// Safety and liveness violations.
    pub violations: Vec<crate::oracle::Violation>,
    /// Hash of every event processed.
    pub trace_hash: u64,
    /// Events processed.
    pub events: u64,
    /// Virtual time simulated (ms).
    pub sim_ms: u64,
    /// Named scalar metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Per-write time to reach every core node (ms), acked writes that did.
    pub write_reach_ms: Vec<u64>,
    /// Periodic samples.
    pub samples: Vec<Sample>,
    /// Fault periods: (start ms, end ms, label).
    pub fault_periods: Vec<(u64, u64, String)>,
    /// Membership heatmap: subject slots × samples, fraction of running
    /// observers holding the subject alive (NaN: subject not running and
    /// nobody to judge).
    pub heatmap: Vec<Vec<f32>>,
    /// Heatmap subjects (slots).
    pub heatmap_subjects: Vec<usize>,
    /// history.jsonl lines.
    pub history: Vec<String>,
    /// events.jsonl lines.
    pub event_log: Vec<String>,
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
    engine: Option<Engine>,
    store: MemoryStore,
    state: NodeState,
    paused: bool,
    deferred: Vec<Ev>,
    offset_ms: i64,
    drift: f64,
    timer_at: u64,
    down_since_ms: u64,
    crashed_counters: BTreeMap<String, u64>,
    bytes_base: BTreeMap<String, u64>,
    msgs_base: BTreeMap<String, u64>,
}

struct GossipMsg {
    author: NodeId,
    author_slot: usize,
    topic: Topic,
    bytes: Vec<u8>,
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
    Stop {
        node: usize,
    },
    End,
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
    seed: u64,
    cfg: Config,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    nodes: Vec<Node>,
    net: Network,
    mesh: Vec<BTreeSet<usize>>,
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
    heal_ms: u64,
    converge_ref_ms: u64,
    end_ms: u64,
    opts: RunOptions,
    // Flood scratch space.
    dist: Vec<u64>,
    parent: Vec<usize>,
    flood_heap: BinaryHeap<Reverse<(u64, usize)>>,
    flood_reached: Vec<usize>,
    keep_disk: bool,
}

const NS_KV: &str = "app";
const NS_SVC: &str = "svc";

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
                deferred: Vec::new(),
                offset_ms: clock.map_or(0, |c| c.offset_ms),
                drift: clock.map_or(0.0, |c| c.drift_ppm) * 1e-6,
                timer_at: u64::MAX,
                down_since_ms: 0,
                crashed_counters: BTreeMap::new(),
                bytes_base: BTreeMap::new(),
                msgs_base: BTreeMap::new(),
            });
        }
        let net = Network::new(&sc.network, slots, sc.cluster.regions, stream(seed, 0, 0));
        let heal_ms = sc.phases.heal_at_ms.unwrap_or(u64::MAX);
        // Without a heal, convergence is measured from the workload's end.
        let converge_ref_ms = sc
            .phases
            .heal_at_ms
            .or(sc.workload.stop_ms)
            .unwrap_or(sc.phases.deadline_ms)
            .min(sc.phases.deadline_ms);
        let end_ms = sc.phases.deadline_ms;
        let heat_subjects: Vec<usize> = (0..slots.min(64)).collect();
        Sim {
            oracle: Oracle::new(slots, cfg.history_limit),
            cfg,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            net,
            mesh: vec![BTreeSet::new(); slots],
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
            heal_ms,
            converge_ref_ms,
            end_ms,
            opts,
            dist: vec![u64::MAX; slots],
            parent: vec![usize::MAX; slots],
            flood_heap: BinaryHeap::new(),
            flood_reached: Vec::new(),
            keep_disk: sc.faults.iter().any(|f| f.kind == "crash"),
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
        for (fi, f) in self.sc.faults.clone().iter().enumerate() {
            self.push(f.at_ms * 1000, Ev::FaultStart { fault: fi });
            if let Some(end) = self.fault_end(f) {
                self.push(end * 1000, Ev::FaultEnd { fault: fi });
            }
            let label = match &f.kind[..] {
                "clock-jump" | "join" | "leave" => continue,
                _ => f.label(),
            };
            let end = self.fault_end(f).unwrap_or(self.end_ms);
            self.fault_periods.push((f.at_ms, end.min(self.end_ms), label));
        }
        if self.heal_ms < self.end_ms {
            self.push(self.heal_ms * 1000, Ev::Heal);
        }
        let w = self.sc.workload.clone();
        if w.writes_per_sec > 0.0 {
            self.push(w.start_ms * 1000, Ev::Write);
        }
        if w.reads_per_sec > 0.0 {
            self.push(w.start_ms * 1000 + 1, Ev::Read);
        }
        for s in 0..w.services {
            let owner = s % n0;
            self.services.push(Service {
                owner,
                key: StateKey::Service {
                    namespace: Namespace::new(NS_SVC).expect("valid"),
                    service: ServiceName::new("api").expect("valid"),
                    instance: InstanceId::new(format!("i{s}")).expect("valid"),
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
            if let Ev::End = q.ev {
                break;
            }
            self.dispatch(q.ev);
        }
        if tty {
            eprintln!();
        }
        self.finish()
    }

    fn fault_end(&self, f: &FaultSpec) -> Option<u64> {
        match f.kind.as_str() {
            "clock-jump" | "join" | "leave" => None,
            "crash" if f.permanent => None,
            _ => f
                .duration_ms
                .map(|d| f.at_ms + d)
                .or(if self.heal_ms < u64::MAX {
                    Some(self.heal_ms)
                } else {
                    None
                })
                .map(|e| e.min(self.heal_ms)),
        }
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
                self.handle(
                    to,
                    Input::Request {
                        from,
                        id: req,
                        bytes: (*bytes).clone(),
                    },
                );
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
                let (eid, from) = (r.engine_id, self.nodes[r.to].id);
                self.trace_ev(4, to, req);
                self.handle(
                    to,
                    Input::Response {
                        from,
                        id: eid,
                        bytes: (*bytes).clone(),
                    },
                );
            }
            Ev::ReqTimeout { req } => {
                let Some(r) = self.reqs.remove(&req) else { return };
                if r.done || self.nodes[r.from].life != r.from_life || !self.runnable(r.from) {
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
            Ev::Stop { node } => {
                if self.nodes[node].state == NodeState::Up {
                    self.stop_node(node, NodeState::Gone);
                }
            }
            Ev::End => {}
        }
    }

    // ----- nodes -------------------------------------------------------

    fn start_node(&mut self, i: usize, lost: bool) {
        if lost {
            self.nodes[i].identity += 1;
            self.nodes[i].store = MemoryStore::new();
            self.nodes[i].id = NodeId::from_index(((self.nodes[i].identity) << 32) | (i as u64 + 1));
        }
        let id = self.nodes[i].id;
        let fresh = !self.oracle.identities.contains(&id);
        if fresh {
            self.oracle.new_identity(i, id);
        }
        self.oracle.current[i] = Some(id);
        let snapshot = if self.nodes[i].store.batches() > 0 {
            Some(self.nodes[i].store.snapshot())
        } else {
            None
        };
        let life = self.nodes[i].life + 1;
        let engine_seed = splitmix(self.seed ^ splitmix((i as u64) << 20 | life as u64));
        let info = NodeInfo {
            name: format!("n{i}"),
            addrs: vec![format!("/sim/{i}")],
            tags: [("region".to_string(), self.net.region(i).to_string())]
                .into_iter()
                .collect(),
        };
        let local = self.local_ms(i);
        let engine = Engine::new(self.cfg.clone(), id, info, local, engine_seed, snapshot)
            .expect("the scenario's [protocol] section was validated when it was parsed");
        let n = &mut self.nodes[i];
        n.engine = Some(engine);
        n.life = life;
        n.state = NodeState::Up;
        n.paused = false;
        n.deferred.clear();
        n.timer_at = u64::MAX;
        n.bytes_base.clear();
        n.msgs_base.clear();
        self.oracle.truth[i].up = true;
        self.oracle.truth[i].paused = false;
        self.trace_ev(10, i, id.0[24..].iter().fold(0u64, |a, b| a << 8 | *b as u64));
        self.schedule_timer(i);
    }

    fn stop_node(&mut self, i: usize, state: NodeState) {
        let now_ms = self.now_ms();
        if let Some(e) = self.nodes[i].engine.take() {
            for (k, v) in &e.counters().bytes_out {
                *self.nodes[i].crashed_counters.entry(k.clone()).or_default() += v;
            }
        }
        let n = &mut self.nodes[i];
        n.state = state;
        n.paused = false;
        n.deferred.clear();
        n.timer_at = u64::MAX;
        n.down_since_ms = now_ms;
        self.oracle.truth[i].up = false;
        self.oracle.truth[i].paused = false;
        for p in std::mem::take(&mut self.mesh[i]) {
            self.mesh[p].remove(&i);
        }
        self.trace_ev(11, i, state as u64);
    }

    fn crash(&mut self, i: usize) {
        if self.nodes[i].state != NodeState::Up {
            return;
        }
        let id = self.nodes[i].id;
        self.stop_node(i, NodeState::Down);
        self.oracle.crashes.push(crate::oracle::CrashEpisode {
            slot: i,
            id,
            down_ms: self.now_ms(),
            up_ms: None,
            first_suspect_ms: None,
            dead_at: BTreeMap::new(),
        });
        self.log_event("crash", serde_json::json!({"node": i, "id": id.short()}));
    }

    fn restart(&mut self, i: usize, lost: bool) {
        if self.nodes[i].state != NodeState::Down {
            return;
        }
        if lost {
            self.oracle.disk_lost(i);
        }
        let old = self.nodes[i].id;
        self.start_node(i, lost);
        if !lost {
            let now = self.now_ms();
            for ep in self.oracle.crashes.iter_mut().rev() {
                if ep.id == old && ep.up_ms.is_none() {
                    ep.up_ms = Some(now);
                }
            }
        }
        self.disturb(&[i], 0);
        self.graft(i, true);
        let id = self.nodes[i].id;
        self.log_event(
            "restart",
            serde_json::json!({"node": i, "state": if lost {"lost"} else {"kept"}, "id": id.short()}),
        );
    }

    fn schedule_timer(&mut self, i: usize) {
        let Some(e) = &self.nodes[i].engine else { return };
        let local_deadline = e.poll_timeout();
        let local_now = self.local_ms(i);
        let mut t = if local_deadline <= local_now {
            self.now
        } else {
            self.to_virtual_us(i, local_deadline)
        };
        t = t.max(self.now + 1000);
        if t >= self.nodes[i].timer_at || t > self.end_ms * 1000 + 1 {
            return;
        }
        self.nodes[i].timer_at = t;
        let life = self.nodes[i].life;
        self.push(t, Ev::Timer { node: i, life });
    }

    /// Feed one input to node `i` and execute every action it returns.
    fn handle(&mut self, i: usize, input: Input) {
        let local = self.local_ms(i);
        let Some(engine) = self.nodes[i].engine.as_mut() else {
            return;
        };
        let actions = engine.handle(local, input);
        self.execute(i, actions);
    }

    /// Deliver a gossip message to node `i` (the bytes are shared by every
    /// delivery of the message, not copied).
    fn deliver_gossip(&mut self, i: usize, msg: &GossipMsg) {
        let local = self.local_ms(i);
        let Some(engine) = self.nodes[i].engine.as_mut() else {
            return;
        };
        let actions = engine.handle_gossip(local, msg.author, &msg.bytes);
        self.execute(i, actions);
    }

    /// Execute the actions one input of node `i` caused.
    fn execute(&mut self, i: usize, actions: Vec<Action>) {
        self.trace_ev(20, i, actions.len() as u64);
        for (k, action) in actions.into_iter().enumerate() {
            match action {
                Action::Persist(batch) => {
                    debug_assert_eq!(k, 0, "driver contract: a Persist comes before every other action");
                    // The store is read only to restart a crashed node
                    // with its disk: without crashes, keeping a second copy
                    // of every node's state is wasted time and memory.
                    if self.keep_disk {
                        self.nodes[i].store.apply(&batch);
                    }
                    let me = self.nodes[i].id;
                    self.oracle.on_batch(self.now_ms(), i, me, &batch);
                }
                Action::Publish { topic, bytes } => self.flood(i, topic, bytes),
                Action::SendRequest { to, id, bytes } => self.send_request(i, to, id, bytes),
                Action::Respond { id, bytes } => self.respond(i, id, bytes),
                Action::Reply { id, result } => self.replies.push((id, result)),
                _ => {}
            }
        }
        if let Some(e) = &self.nodes[i].engine {
            if e.inflight_syncs() > self.cfg.max_inflight_syncs {
                let detail = format!(
                    "{} syncs in flight (limit {})",
                    e.inflight_syncs(),
                    self.cfg.max_inflight_syncs
                );
                self.oracle.violate(self.now_ms(), "limits", Some(i), detail);
            }
        }
        self.schedule_timer(i);
    }

    // ----- gossip mesh ---------------------------------------------------

    fn build_initial_mesh(&mut self) {
        let n0 = self.sc.cluster.size;
        let d = self.sc.cluster.mesh_degree.min(n0.saturating_sub(1));
        let mut rng = stream(self.seed, 3, 0);
        let regional = self.sc.cluster.bootstrap == "region";
        // A ring first, so the mesh is connected, then random links.
        let mut order: Vec<usize> = (0..n0).collect();
        order.shuffle(&mut rng);
        if n0 > 1 {
            for k in 0..n0 {
                let (a, b) = (order[k], order[(k + 1) % n0]);
                if a != b {
                    self.mesh[a].insert(b);
                    self.mesh[b].insert(a);
                }
            }
        }
        for a in 0..n0 {
            let mut tries = 0;
            while self.mesh[a].len() < d && tries < 20 * d {
                tries += 1;
                let b = rng.gen_range(0..n0);
                if b == a || (regional && tries < 10 * d && self.net.region(a) != self.net.region(b)) {
                    continue;
                }
                if self.mesh[b].len() >= 2 * d {
                    continue;
                }
                self.mesh[a].insert(b);
                self.mesh[b].insert(a);
            }
        }
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[b].state == NodeState::Up && !self.net.blocked(a, b) && !self.net.blocked(b, a)
    }

    /// Graft node `i` up to degree D; `connect` announces the new links.
    fn graft(&mut self, i: usize, connect: bool) {
        let slots = self.nodes.len();
        let d = self.sc.cluster.mesh_degree;
        let mut tries = 0;
        let mut added = Vec::new();
        while self.mesh[i].len() < d && tries < 8 * d {
            tries += 1;
            let b = self.net.rng().gen_range(0..slots);
            if b == i || self.mesh[i].contains(&b) || !self.reachable(i, b) || self.mesh[b].len() >= 2 * d {
                continue;
            }
            self.mesh[i].insert(b);
            self.mesh[b].insert(i);
            added.push(b);
        }
        if connect {
            for b in added {
                let (ib, bi) = (self.nodes[b].id, self.nodes[i].id);
                if !self.nodes[i].paused {
                    self.handle(i, Input::PeerConnected(ib));
                }
                if !self.nodes[b].paused {
                    self.handle(b, Input::PeerConnected(bi));
                }
            }
        }
    }

    /// After a cut is lifted: every running node opens one more link, to
    /// a random reachable peer (beyond degree D if need be). The node
    /// driver re-dials every member it is not connected to once a partition
    /// heals; without this the mesh stays two islands (each side grafted
    /// its own peers while cut off) and the sides never hear each other's
    /// heartbeats again (found at 100+ nodes).
    fn rewire(&mut self) {
        let slots = self.nodes.len();
        for i in 0..slots {
            if !self.runnable(i) {
                continue;
            }
            let mut pick = None;
            for _ in 0..8 {
                let b = self.net.rng().gen_range(0..slots);
                if b != i && !self.mesh[i].contains(&b) && self.reachable(i, b) {
                    pick = Some(b);
                    break;
                }
            }
            let Some(b) = pick else { continue };
            self.mesh[i].insert(b);
            self.mesh[b].insert(i);
            let (ib, bi) = (self.nodes[b].id, self.nodes[i].id);
            if !self.nodes[i].paused {
                self.handle(i, Input::PeerConnected(ib));
            }
            if !self.nodes[b].paused {
                self.handle(b, Input::PeerConnected(bi));
            }
        }
    }

    fn maintain_mesh(&mut self) {
        let slots = self.nodes.len();
        let d = self.sc.cluster.mesh_degree;
        for i in 0..slots {
            if self.nodes[i].state != NodeState::Up {
                continue;
            }
            let dead: Vec<usize> = self.mesh[i]
                .iter()
                .copied()
                .filter(|&p| !self.reachable(i, p))
                .collect();
            for p in dead {
                self.mesh[i].remove(&p);
                self.mesh[p].remove(&i);
                let pid = self.nodes[p].id;
                if !self.nodes[i].paused && self.runnable(i) {
                    self.handle(i, Input::PeerDisconnected(pid));
                }
            }
            if self.mesh[i].len() < d {
                self.graft(i, true);
            }
        }
    }

    /// Flood a publish over the mesh: compute each node's first arrival.
    fn flood(&mut self, src: usize, topic: Topic, bytes: Vec<u8>) {
        let len = bytes.len() as u64;
        let msg = Rc::new(GossipMsg {
            author: self.nodes[src].id,
            author_slot: src,
            topic,
            hash: xxhash_rust::xxh3::xxh3_64(&bytes),
            bytes,
            sent_us: self.now,
        });
        let lazy = self.sc.cluster.lazy_gossip;
        let gossip_us = self.sc.cluster.gossip_interval_ms * 1000;
        let mut reached = std::mem::take(&mut self.flood_reached);
        let mut heap = std::mem::take(&mut self.flood_heap);
        reached.clear();
        heap.clear();
        self.dist[src] = 0;
        heap.push(Reverse((0, src)));
        while let Some(Reverse((d, u))) = heap.pop() {
            if d > self.dist[u] {
                continue;
            }
            reached.push(u);
            if self.nodes[u].paused && u != src {
                continue; // a paused node relays nothing
            }
            for &v in &self.mesh[u] {
                if v == self.parent[u] {
                    continue;
                }
                self.wire_bytes += len;
                if self.nodes[v].state != NodeState::Up || self.net.blocked(u, v) {
                    continue;
                }
                let mut arrival = d + self.net.latency_us(u, v);
                if self.net.lost(u, v) {
                    if !lazy || self.net.lost(u, v) {
                        continue;
                    }
                    // IHAVE at the next gossip heartbeat, IWANT, the message.
                    arrival += self.net.rng().gen_range(0..gossip_us.max(1))
                        + self.net.latency_us(v, u)
                        + self.net.latency_us(u, v);
                }
                if arrival < self.dist[v] {
                    self.dist[v] = arrival;
                    self.parent[v] = u;
                    heap.push(Reverse((arrival, v)));
                }
            }
        }
        for &v in &reached {
            let d = self.dist[v];
            self.dist[v] = u64::MAX;
            self.parent[v] = usize::MAX;
            if v != src {
                let life = self.nodes[v].life;
                self.push(
                    self.now + d,
                    Ev::Gossip {
                        to: v,
                        life,
                        msg: msg.clone(),
                    },
                );
            }
        }
        self.flood_reached = reached;
        self.flood_heap = heap;
    }

    // ----- requests --------------------------------------------------

    fn send_request(&mut self, from: usize, to: NodeId, engine_id: u64, bytes: Vec<u8>) {
        let req = self.next_req;
        self.next_req += 1;
        let timeout = self.now + self.net.request_timeout_us();
        self.push(timeout, Ev::ReqTimeout { req });
        let from_life = self.nodes[from].life;
        let target = self.oracle.slot_of.get(&to).copied();
        let Some(t) = target.filter(|t| self.nodes[*t].id == to) else {
            // An identity that no longer exists: the dial fails.
            self.reqs.insert(
                req,
                Req {
                    from,
                    from_life,
                    engine_id,
                    to: from,
                    done: false,
                },
            );
            return;
        };
        self.reqs.insert(
            req,
            Req {
                from,
                from_life,
                engine_id,
                to: t,
                done: false,
            },
        );
        self.wire_bytes += bytes.len() as u64;
        if self.nodes[t].state != NodeState::Up {
            return;
        }
        if let Fate::Delivered(delays) = self.net.send(from, t) {
            let bytes = Rc::new(bytes);
            let life = self.nodes[t].life;
            for d in delays.into_iter().flatten() {
                self.push(
                    self.now + d,
                    Ev::Request {
                        to: t,
                        life,
                        req,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
    }

    fn respond(&mut self, responder: usize, req: u64, bytes: Vec<u8>) {
        let Some(r) = self.reqs.get(&req) else { return };
        if r.done {
            return;
        }
        let (to, life) = (r.from, r.from_life);
        self.wire_bytes += bytes.len() as u64;
        if self.nodes[to].life != life || self.nodes[to].state != NodeState::Up {
            return;
        }
        if let Fate::Delivered(delays) = self.net.send(responder, to) {
            let bytes = Rc::new(bytes);
            for d in delays.into_iter().flatten() {
                self.push(
                    self.now + d,
                    Ev::Response {
                        to,
                        life,
                        req,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
    }

    // ----- workload ----------------------------------------------------

    fn workload_on(&self) -> bool {
        self.now_ms() < self.sc.workload.stop_ms.unwrap_or(u64::MAX)
    }

    fn pick_up_node(&mut self) -> Option<usize> {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.runnable(i) && !self.nodes[i].paused)
            .collect();
        if up.is_empty() {
            None
        } else {
            Some(up[self.wl.gen_range(0..up.len())])
        }
    }

    fn pick_key(&mut self) -> Key {
        let w = &self.sc.workload;
        let keys = w.keys.max(1);
        let hot = w.hot_keys.min(keys);
        let k = if hot > 0 && self.wl.gen_bool(w.hot_fraction.clamp(0.0, 1.0)) {
            self.wl.gen_range(0..hot)
        } else {
            self.wl.gen_range(hot.min(keys - 1)..keys)
        };
        Key::new(format!("k/{k}")).expect("valid key")
    }

    fn command(
        &mut self,
        i: usize,
        op: u64,
        command: Command,
    ) -> Option<Result<CommandOutput, CommandError>> {
        self.replies.clear();
        self.handle(i, Input::Command { id: op, command });
        let r = self
            .replies
            .iter()
            .find(|(id, _)| *id == op)
            .map(|(_, r)| r.clone());
        self.replies.clear();
        r
    }

    fn record(
        &mut self,
        op: u64,
        node: usize,
        kind: &str,
        key: &str,
        extra: serde_json::Value,
        result: &str,
    ) {
        self.trace_ev(30, node, op);
        if self.opts.logs {
            let mut line = serde_json::json!({
                "op": op, "t_ms": self.now_ms(), "node": node, "type": kind, "key": key, "result": result,
            });
            if let (Some(o), serde_json::Value::Object(e)) = (line.as_object_mut(), extra) {
                o.extend(e);
            }
            self.history.push(line.to_string());
        }
    }

    fn on_write(&mut self) {
        if !self.workload_on() {
            return;
        }
        let rate = self.sc.workload.writes_per_sec;
        let gap = (-self.wl.gen_range(f64::EPSILON..1.0f64).ln() / rate * 1e6) as u64;
        self.push(self.now + gap.max(1), Ev::Write);
        let key = self.pick_key();
        let concurrent = self.wl.gen_bool(self.sc.workload.concurrent.clamp(0.0, 1.0));
        let targets: Vec<usize> = if concurrent {
            let k = self.wl.gen_range(2..=3);
            let mut v = Vec::new();
            for _ in 0..k {
                if let Some(n) = self.pick_up_node() {
                    if !v.contains(&n) {
                        v.push(n);
                    }
                }
            }
            v
        } else {
            self.pick_up_node().into_iter().collect()
        };
        let delete = !concurrent && self.wl.gen_bool(self.sc.workload.delete_fraction.clamp(0.0, 1.0));
        let ns = Namespace::new(NS_KV).expect("valid");
        for node in targets {
            let op = self.next_op;
            self.next_op += 1;
            let sk = StateKey::Kv {
                namespace: ns.clone(),
                key: key.clone(),
            };
            let (kind, cmd, value) = if delete {
                (
                    "delete",
                    Command::Delete {
                        namespace: ns.clone(),
                        key: key.clone(),
                        expect: None,
                    },
                    None,
                )
            } else {
                let value = value_for(op, self.sc.workload.value_bytes);
                self.oracle.put_ops.insert(op);
                (
                    "put",
                    Command::Put {
                        namespace: ns.clone(),
                        key: key.clone(),
                        value: value.clone(),
                        expect: None,
                    },
                    Some(value),
                )
            };
            let res = self.command(node, op, cmd);
            self.after_write(op, node, kind, &sk, key.as_str(), res, value, concurrent);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn after_write(
        &mut self,
        op: u64,
        node: usize,
        kind: &str,
        sk: &StateKey,
        key: &str,
        res: Option<Result<CommandOutput, CommandError>>,
        value: Option<Vec<u8>>,
        concurrent: bool,
    ) {
        let value_json = value.map(|v| String::from_utf8_lossy(&v).into_owned());
        match res {
            Some(Ok(CommandOutput::Written { version, hlc })) => {
                let v = self.nodes[node]
                    .engine
                    .as_ref()
                    .and_then(|e| e.state().get(sk))
                    .and_then(|ks| ks.all().find(|v| v.id() == version))
                    .cloned();
                if let Some(v) = v {
                    self.oracle.write_acked(op, sk.clone(), &v, node, self.now_ms());
                }
                self.record(
                    op,
                    node,
                    kind,
                    key,
                    serde_json::json!({"value": value_json, "version": version.to_string(),
                        "hlc": [hlc.wall_ms, hlc.logical], "concurrent": concurrent}),
                    "ok",
                );
            }
            Some(Ok(_)) => self.record(op, node, kind, key, serde_json::json!({}), "ok"),
            Some(Err(e)) => self.record(
                op,
                node,
                kind,
                key,
                serde_json::json!({"value": value_json, "error": e.to_string()}),
                "fail",
            ),
            None => self.record(op, node, kind, key, serde_json::json!({}), "no-reply"),
        }
    }

    fn on_read(&mut self) {
        if !self.workload_on() {
            return;
        }
        let rate = self.sc.workload.reads_per_sec;
        let gap = (-self.wl.gen_range(f64::EPSILON..1.0f64).ln() / rate * 1e6) as u64;
        self.push(self.now + gap.max(1), Ev::Read);
        let Some(node) = self.pick_up_node() else { return };
        let key = self.pick_key();
        let ns = Namespace::new(NS_KV).expect("valid");
        let op = self.next_op;
        self.next_op += 1;
        let got = self.nodes[node].engine.as_ref().and_then(|e| e.kv_get(&ns, &key));
        let sk = StateKey::Kv {
            namespace: ns,
            key: key.clone(),
        };
        let stale = self.oracle.read(self.now_ms(), node, &sk);
        let (value, version, siblings) = match &got {
            Some(e) => (
                Some(String::from_utf8_lossy(&e.value).into_owned()),
                Some(e.version.id.to_string()),
                e.siblings.len(),
            ),
            None => (None, None, 0),
        };
        self.record(
            op,
            node,
            "read",
            key.as_str(),
            serde_json::json!({"value": value, "version": version, "siblings": siblings, "stale": stale}),
            "ok",
        );
    }

    fn on_service_beat(&mut self, svc: usize) {
        let period = self.sc.workload.service_heartbeat_ms * 1000;
        let jitter = self.wl.gen_range(0..=period / 10);
        self.push(self.now + period - period / 20 + jitter, Ev::ServiceBeat { svc });
        let owner = self.services[svc].owner;
        if !self.runnable(owner) || self.nodes[owner].paused {
            return;
        }
        let StateKey::Service {
            namespace,
            service,
            instance,
        } = self.services[svc].key.clone()
        else {
            unreachable!("services are service keys")
        };
        let op = self.next_op;
        self.next_op += 1;
        let id = self.nodes[owner].id;
        let key_text = format!("{service}/{instance}");
        let sk = self.services[svc].key.clone();
        if self.services[svc].registered_identity != Some(id) {
            let spec = ServiceSpec {
                address: format!("10.0.{}.{}", owner / 250, owner % 250 + 1),
                port: 8080,
                tags: Default::default(),
                metadata: Default::default(),
                weight: 100,
                ttl_ms: Some(self.sc.workload.service_ttl_ms),
            };
            let res = self.command(
                owner,
                op,
                Command::RegisterService {
                    namespace,
                    service,
                    instance,
                    spec,
                },
            );
            if matches!(res, Some(Ok(_))) {
                self.services[svc].registered_identity = Some(id);
            }
            self.after_write(op, owner, "register", &sk, &key_text, res, None, false);
            return;
        }
        let flap = self.workload_on() && self.wl.gen_bool(self.sc.workload.health_flap.clamp(0.0, 1.0));
        let health = if flap {
            [HealthStatus::Warning, HealthStatus::Critical][self.wl.gen_range(0..2)]
        } else {
            HealthStatus::Passing
        };
        let res = self.command(
            owner,
            op,
            Command::HeartbeatService {
                namespace,
                service,
                instance,
                health: Some(health),
            },
        );
        if matches!(res, Some(Err(CommandError::NotFound))) {
            self.services[svc].registered_identity = None;
        }
        self.after_write(op, owner, health.as_str(), &sk, &key_text, res, None, false);
    }

    // ----- faults ------------------------------------------------------

    fn disturb(&mut self, nodes: &[usize], until_ms: u64) {
        // Suspicions of a disturbed node are expected until it has been
        // back for a detection window.
        let grace = self.detection_window_ms();
        for &n in nodes {
            let t = &mut self.oracle.truth[n];
            t.disturbed_until = t.disturbed_until.max(until_ms.max(self.now / 1000) + grace);
        }
    }

    /// How long after a node stops every peer should hold it dead.
    pub fn detection_window_ms(&self) -> u64 {
        let n = self.sc.slots() as u64;
        let interval = self.cfg.heartbeat_interval_ms * n.div_ceil(self.cfg.heartbeat_fanin as u64).max(1);
        6 * interval + self.cfg.suspect_timeout_ms + 2 * self.cfg.sync_interval_ms
    }

    fn fault_start(&mut self, fi: usize) {
        let f = self.sc.faults[fi].clone();
        let end = self.fault_end(&f).unwrap_or(u64::MAX);
        self.trace_ev(40, fi, 0);
        self.log_event(
            "fault-start",
            serde_json::json!({"fault": fi, "kind": f.kind, "nodes": f.nodes, "groups": f.groups, "to": f.to}),
        );
        let slots = self.nodes.len();
        let cut_id = fi as u64;
        match f.kind.as_str() {
            "partition" => {
                let cut = Cut::groups(slots, &f.groups);
                self.net.add_cut(cut_id, cut);
                let all: Vec<usize> = (0..slots).collect();
                self.disturb(&all, end);
            }
            "one-way" => {
                let from: BTreeSet<usize> = f.nodes.iter().copied().collect();
                let to: BTreeSet<usize> = if f.to.is_empty() {
                    (0..slots).filter(|i| !from.contains(i)).collect()
                } else {
                    f.to.iter().copied().collect()
                };
                self.net.add_cut(cut_id, Cut::OneWay { from, to });
                let all: Vec<usize> = (0..slots).collect();
                self.disturb(&all, end);
            }
            "swizzle" => {
                self.net.add_cut(
                    cut_id,
                    Cut::Clog {
                        nodes: BTreeSet::new(),
                    },
                );
                self.swizzle_cuts.insert(fi, cut_id);
                let all: Vec<usize> = (0..slots).collect();
                self.disturb(&all, end);
                self.swizzle_step(fi, 0);
            }
            "crash" => {
                for &n in &f.nodes {
                    self.crash(n);
                }
            }
            "pause" => {
                for &n in &f.nodes {
                    if self.nodes[n].state == NodeState::Up {
                        self.nodes[n].paused = true;
                        self.oracle.truth[n].paused = true;
                    }
                }
                self.disturb(&f.nodes, end);
            }
            "clock-jump" => {
                let j = f.jump_ms.unwrap_or(0);
                for &n in &f.nodes {
                    self.nodes[n].offset_ms += j;
                    if self.runnable(n) {
                        self.nodes[n].timer_at = u64::MAX;
                        self.schedule_timer(n);
                    }
                }
                self.disturb(&f.nodes, 0);
            }
            "join" => {
                for &n in &f.nodes {
                    if self.nodes[n].state == NodeState::NotStarted {
                        self.start_node(n, false);
                        let seeds: Vec<usize> = (0..self.sc.cluster.seeds.max(1).min(slots))
                            .filter(|&s| s != n && self.reachable(n, s))
                            .collect();
                        for s in seeds {
                            let sid = self.nodes[s].id;
                            self.handle(n, Input::PeerConnected(sid));
                        }
                        self.graft(n, true);
                    }
                }
            }
            "leave" => {
                for &n in &f.nodes {
                    if self.runnable(n) {
                        let op = self.next_op;
                        self.next_op += 1;
                        let res = self.command(n, op, Command::Leave);
                        let r = if matches!(res, Some(Ok(_))) { "ok" } else { "fail" };
                        self.record(op, n, "leave", "", serde_json::json!({}), r);
                        self.push(self.now + 2_000_000, Ev::Stop { node: n });
                    }
                }
            }
            _ => {}
        }
    }

    fn swizzle_step(&mut self, fi: usize, step: usize) {
        let f = &self.sc.faults[fi];
        let Some(&cut_id) = self.swizzle_cuts.get(&fi) else {
            return;
        };
        let step_us = f.step_ms.unwrap_or(2_000) * 1000;
        let n = f.nodes.len();
        let end = self.fault_end(f).map(|e| e * 1000).unwrap_or(u64::MAX);
        // Steps 0..n clog nodes one by one; then, from the end time minus
        // n steps, restore in `restore_order`.
        let (node, clog) = if step < n {
            (f.nodes[step], true)
        } else if step < 2 * n {
            (f.restore_order[step - n], false)
        } else {
            return;
        };
        if let Some(Cut::Clog { nodes }) = self.net.cut_mut(cut_id) {
            if clog {
                nodes.insert(node);
            } else {
                nodes.remove(&node);
            }
        }
        self.trace_ev(41, node, clog as u64);
        self.log_event(
            if clog { "swizzle-clog" } else { "swizzle-restore" },
            serde_json::json!({"node": node}),
        );
        let next = step + 1;
        if next < n {
            self.push(
                self.now + step_us,
                Ev::Swizzle {
                    fault: fi,
                    step: next,
                },
            );
        } else if next < 2 * n {
            let restore_start = end.saturating_sub(n as u64 * step_us).max(self.now + step_us);
            let t = if next == n {
                restore_start
            } else {
                self.now + step_us
            };
            if t < end {
                self.push(
                    t,
                    Ev::Swizzle {
                        fault: fi,
                        step: next,
                    },
                );
            }
        }
    }

    fn fault_end_ev(&mut self, fi: usize) {
        let f = self.sc.faults[fi].clone();
        self.trace_ev(42, fi, 0);
        self.log_event("fault-end", serde_json::json!({"fault": fi, "kind": f.kind}));
        self.last_heal_ms = self.last_heal_ms.max(self.now_ms());
        match f.kind.as_str() {
            "partition" | "one-way" | "swizzle" => {
                self.net.remove_cut(fi as u64);
                self.swizzle_cuts.remove(&fi);
                self.rewire();
            }
            "crash" => {
                let lost = f.state.as_deref() == Some("lost");
                for &n in &f.nodes {
                    self.restart(n, lost);
                }
            }
            "pause" => {
                for &n in &f.nodes {
                    self.resume(n);
                }
            }
            _ => {}
        }
    }

    fn resume(&mut self, n: usize) {
        if !self.nodes[n].paused {
            return;
        }
        self.nodes[n].paused = false;
        self.oracle.truth[n].paused = false;
        let deferred = std::mem::take(&mut self.nodes[n].deferred);
        self.nodes[n].timer_at = u64::MAX;
        if self.runnable(n) {
            self.handle(n, Input::Tick);
        }
        for ev in deferred {
            self.dispatch(ev);
        }
    }

    fn heal(&mut self) {
        self.log_event("heal", serde_json::json!({}));
        self.trace_ev(43, 0, 0);
        self.last_heal_ms = self.last_heal_ms.max(self.now_ms());
        let had_cuts = self.net.any_cut();
        self.net.heal();
        self.swizzle_cuts.clear();
        if had_cuts {
            self.rewire();
        }
        if self.sc.phases.heal_clears_loss {
            self.net.loss_on = false;
        }
        for n in 0..self.nodes.len() {
            self.resume(n);
        }
        // Crashed nodes whose fault has no own end restart now.
        let faults = self.sc.faults.clone();
        for f in &faults {
            if f.kind == "crash" && !f.permanent {
                let lost = f.state.as_deref() == Some("lost");
                for &n in &f.nodes {
                    self.restart(n, lost);
                }
            }
        }
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.disturb(&all, 0);
    }

    // ----- sampling ----------------------------------------------------

    fn sample(&mut self) {
        let t = self.now_ms();
        let period_s = self.sc.phases.sample_ms as f64 / 1000.0;
        let mut s = Sample {
            t_ms: t,
            ..Sample::default()
        };
        let mut digests: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.runnable(i)).collect();
        s.up = up.len();
        for &i in &up {
            let node = &mut self.nodes[i];
            let e = node.engine.as_ref().expect("runnable");
            let d = e.digest();
            *digests.entry((d.hash, d.keys)).or_default() += 1;
            for (k, v) in &e.counters().bytes_out {
                let base = node.bytes_base.get(k).copied().unwrap_or(0);
                *s.bytes_out.entry(k.clone()).or_default() += (v - base) as f64;
                node.bytes_base.insert(k.clone(), *v);
            }
            for (k, v) in &e.counters().messages_out {
                let base = node.msgs_base.get(k).copied().unwrap_or(0);
                *s.msgs_out.entry(k.clone()).or_default() += (v - base) as f64;
                node.msgs_base.insert(k.clone(), *v);
            }
        }
        let denom = (up.len().max(1) as f64) * period_s;
        for v in s.bytes_out.values_mut().chain(s.msgs_out.values_mut()) {
            *v /= denom;
        }
        s.wire_bytes = (self.wire_bytes - self.wire_base) as f64 / denom;
        self.wire_base = self.wire_bytes;
        s.digests = digests.len();
        let mode = digests.values().copied().max().unwrap_or(0);
        s.off_mode = up.len() - mode;
        let acked = self.oracle.writes.len() as u64;
        s.missing = (acked * up.len() as u64).saturating_sub(self.oracle.arrivals_total);
        s.gossip_p50_ms = self.gossip_lat.quantile(0.5) as f64;
        s.gossip_p99_ms = self.gossip_lat.quantile(0.99) as f64;
        self.gossip_lat = Histo::default();
        // Membership views: a bounded set of observers for large clusters.
        let observers: Vec<usize> = up.iter().copied().step_by((up.len() / 64).max(1)).collect();
        for (row, &subj) in self.heat_subjects.clone().iter().enumerate() {
            let sid = self.nodes[subj].id;
            let (mut alive, mut total) = (0u32, 0u32);
            for &o in &observers {
                if o == subj {
                    continue;
                }
                let e = self.nodes[o].engine.as_ref().expect("runnable");
                total += 1;
                if e.member(&sid).is_some_and(|m| m.status == MemberStatus::Alive) {
                    alive += 1;
                }
            }
            let v = if total == 0 {
                f32::NAN
            } else {
                alive as f32 / total as f32
            };
            let v = if self.nodes[subj].state == NodeState::NotStarted {
                f32::NAN
            } else {
                v
            };
            self.heatmap[row].push(v);
        }
        for &o in &observers {
            let e = self.nodes[o].engine.as_ref().expect("runnable");
            for m in e.member_records() {
                match m.status {
                    MemberStatus::Suspect => s.suspect_views += 1,
                    MemberStatus::Dead => s.dead_views += 1,
                    _ => {}
                }
            }
        }
        // Convergence after heal: first sample with one digest on the core.
        let after = self.converge_ref_ms.max(self.last_heal_ms);
        if self.converged_at.is_none()
            && t >= after
            && s.digests <= 1
            && s.missing == 0
            && !self.net.any_cut()
        {
            self.converged_at = Some(t);
            self.log_event("converged", serde_json::json!({"after_heal_ms": t - after}));
        }
        self.trace_ev(50, s.digests, s.missing);
        self.samples.push(s);
    }

    // ----- the end -------------------------------------------------------

    fn finish(mut self) -> RunResult {
        let t_end = self.now_ms();
        let core: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.runnable(i) && !self.nodes[i].paused)
            .filter(|&i| !self.nodes[i].engine.as_ref().is_some_and(|e| e.has_left()))
            .collect();
        let window = self.detection_window_ms();
        let mut liveness: Vec<String> = Vec::new();
        // 1. Equal digests on the core.
        let digests: BTreeSet<(u64, u64)> = core
            .iter()
            .map(|&i| {
                let d = self.nodes[i].engine.as_ref().expect("core").digest();
                (d.hash, d.keys)
            })
            .collect();
        if digests.len() > 1 {
            liveness.push(format!(
                "{} distinct state digests on the core of {} nodes",
                digests.len(),
                core.len()
            ));
        }
        // 2. Membership accurate.
        let mut wrong_views = 0usize;
        let mut example = String::new();
        for &o in &core {
            let e = self.nodes[o].engine.as_ref().expect("core");
            for (j, nj) in self.nodes.iter().enumerate() {
                if j == o || nj.state == NodeState::NotStarted {
                    continue;
                }
                let want = if core.contains(&j) {
                    Some(MemberStatus::Alive)
                } else if nj.state == NodeState::Gone {
                    Some(MemberStatus::Left)
                } else if t_end.saturating_sub(nj.down_since_ms) >= window {
                    Some(MemberStatus::Dead)
                } else {
                    None
                };
                let got = e.member(&nj.id).map(|m| m.status);
                let ok = match want {
                    None => true,
                    Some(MemberStatus::Dead) => matches!(got, Some(MemberStatus::Dead | MemberStatus::Left)),
                    Some(w) => got == Some(w),
                };
                if !ok {
                    wrong_views += 1;
                    if example.is_empty() {
                        example = format!("node {o} holds node {j} as {got:?}, expected {want:?}");
                    }
                }
            }
        }
        if wrong_views > 0 {
            liveness.push(format!(
                "{wrong_views} inaccurate membership views (e.g. {example})"
            ));
        }
        // 3. No acknowledged write lost.
        let (mut lost, mut lost_explained) = (0u64, 0u64);
        let mut lost_example = String::new();
        for (wi, w) in self.oracle.writes.iter().enumerate() {
            let mut missing_on = None;
            for &i in &core {
                let e = self.nodes[i].engine.as_ref().expect("core");
                if !self.oracle.accounted(e, wi) {
                    missing_on = Some(i);
                    break;
                }
            }
            if let Some(i) = missing_on {
                if w.orphaned {
                    lost_explained += 1;
                } else {
                    lost += 1;
                    if lost_example.is_empty() {
                        lost_example = format!("op {} ({:?} {:?}) missing on node {i}", w.op, w.key, w.dot);
                    }
                }
            }
        }
        if lost > 0 {
            liveness.push(format!("{lost} acknowledged writes lost (e.g. {lost_example})"));
        }
        // 4. Services of dead owners are unhealthy.
        let mut bad_services = 0;
        let ns = Namespace::new(NS_SVC).expect("valid");
        let api = ServiceName::new("api").expect("valid");
        let gone: BTreeSet<NodeId> = self
            .oracle
            .identities
            .iter()
            .copied()
            .filter(|id| {
                let slot = self.oracle.slot_of[id];
                let n = &self.nodes[slot];
                n.id != *id || (n.state != NodeState::Up && t_end.saturating_sub(n.down_since_ms) >= window)
            })
            .collect();
        for &i in &core {
            let e = self.nodes[i].engine.as_ref().expect("core");
            for v in e.services(&ns, &api, &ServiceQuery::default()) {
                if gone.contains(&v.owner) && v.health.is_healthy() {
                    bad_services += 1;
                }
            }
        }
        if bad_services > 0 {
            liveness.push(format!(
                "{bad_services} service views of dead owners still healthy"
            ));
        }

        // Metrics.
        let mut m: BTreeMap<String, f64> = BTreeMap::new();
        let mut reach = Vec::new();
        let mut unreached = 0u64;
        for w in &self.oracle.writes {
            let mut worst = 0u64;
            let mut all = true;
            for &i in &core {
                let a = w.arrivals[i];
                if a == u32::MAX {
                    all = false;
                    break;
                }
                worst = worst.max(a as u64);
            }
            if all {
                reach.push(worst);
            } else {
                unreached += 1;
            }
        }
        reach.sort_unstable();
        let q = |v: &[u64], p: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let idx = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
            v[idx] as f64
        };
        m.insert("nodes".into(), self.sc.cluster.size as f64);
        m.insert("core_nodes".into(), core.len() as f64);
        m.insert("writes_acked".into(), self.oracle.writes.len() as f64);
        m.insert("write_reach_p50_ms".into(), q(&reach, 0.5));
        m.insert("write_reach_p99_ms".into(), q(&reach, 0.99));
        m.insert(
            "write_reach_max_ms".into(),
            reach.last().copied().unwrap_or(0) as f64,
        );
        m.insert("writes_unreached_at_end".into(), unreached as f64);
        m.insert("lost_writes".into(), lost as f64);
        m.insert("lost_writes_explained".into(), lost_explained as f64);
        m.insert("misses_unexplained".into(), lost as f64);
        m.insert("misses_explained".into(), lost_explained as f64);
        m.insert("reads".into(), self.oracle.reads as f64);
        m.insert("stale_reads".into(), self.oracle.stale_reads as f64);
        let heal_ref = self.converge_ref_ms.max(self.last_heal_ms);
        if let Some(c) = self.converged_at {
            m.insert("converge_after_heal_ms".into(), c.saturating_sub(heal_ref) as f64);
        } else {
            m.insert("converge_after_heal_ms".into(), -1.0);
        }
        m.insert(
            "false_suspicions".into(),
            self.oracle.false_suspicions.len() as f64,
        );
        m.insert("false_deaths".into(), self.oracle.false_deaths.len() as f64);
        m.insert("refutations".into(), self.oracle.refutations as f64);
        // Failure detection.
        let mut first = Vec::new();
        let mut all_obs = Vec::new();
        for ep in &self.oracle.crashes {
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
        m.insert("crashes".into(), self.oracle.crashes.len() as f64);
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
        // Traffic: whole-run averages per running node per second.
        let mut per_node_bytes = Vec::new();
        let secs = (t_end.max(1) as f64) / 1000.0;
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        let mut msg_totals: BTreeMap<String, u64> = BTreeMap::new();
        let mut syncs = (0u64, 0u64, 0u64);
        for n in &self.nodes {
            let mut b = n.crashed_counters.clone();
            if let Some(e) = &n.engine {
                for (k, v) in &e.counters().bytes_out {
                    *b.entry(k.clone()).or_default() += v;
                }
                for (k, v) in &e.counters().messages_out {
                    *msg_totals.entry(k.clone()).or_default() += v;
                }
                let c = e.counters();
                syncs.0 += c.syncs_started;
                syncs.1 += c.syncs_completed;
                syncs.2 += c.syncs_failed;
            }
            for (k, v) in &b {
                *totals.entry(k.clone()).or_default() += v;
            }
            per_node_bytes.push(b);
        }
        let started = self
            .nodes
            .iter()
            .filter(|n| n.state != NodeState::NotStarted)
            .count()
            .max(1) as f64;
        for (k, v) in &totals {
            m.insert(format!("bytes_out_per_node_s.{k}"), *v as f64 / started / secs);
        }
        for (k, v) in &msg_totals {
            m.insert(format!("msgs_out_per_node_s.{k}"), *v as f64 / started / secs);
        }
        m.insert(
            "wire_bytes_per_node_s".into(),
            self.wire_bytes as f64 / started / secs,
        );
        m.insert("syncs_started".into(), syncs.0 as f64);
        m.insert("syncs_completed".into(), syncs.1 as f64);
        m.insert("syncs_failed".into(), syncs.2 as f64);
        m.insert("events".into(), self.events as f64);

        // Verdict.
        let mut reasons = Vec::new();
        for v in &self.oracle.violations {
            reasons.push(format!(
                "safety: {} at {} ms on node {:?}: {}",
                v.invariant, v.t_ms, v.node, v.detail
            ));
        }
        let could_recover = !self.net.any_cut()
            && self.nodes.iter().all(|n| !n.paused)
            && t_end.saturating_sub(self.last_heal_ms)
                >= 2 * self.cfg.sync_interval_ms + self.sc.network.request_timeout_ms;
        let safety_ok = self.oracle.violations.is_empty();
        let mut thresholds_ok = true;
        let e = &self.sc.expect;
        let mut check = |name: &str, got: f64, limit: Option<u64>| {
            if let Some(l) = limit {
                if got < 0.0 || got > l as f64 {
                    thresholds_ok = false;
                    reasons.push(format!("expect: {name} = {got} exceeds {l}"));
                }
            }
        };
        check(
            "convergence_p99_ms",
            m["write_reach_p99_ms"],
            e.convergence_p99_ms,
        );
        check(
            "converge_after_heal_ms",
            m["converge_after_heal_ms"],
            e.converge_after_heal_ms,
        );
        check("false_deaths", m["false_deaths"], e.max_false_deaths);
        check("stale_reads", m["stale_reads"], e.max_stale_reads);
        if !self.oracle.crashes.is_empty() {
            check("detect_all_ms", m["detect_all_ms"], e.detection_all_ms);
        }
        for l in &liveness {
            reasons.push(format!("liveness: {l}"));
        }
        let verdict = if !safety_ok || (!liveness.is_empty() && could_recover) || !thresholds_ok {
            Verdict::Invalid
        } else if !liveness.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Valid
        };
        for v in &self.oracle.violations {
            if self.opts.logs {
                self.event_log
                    .push(serde_json::json!({"t_ms": v.t_ms, "event": "violation", "detail": v}).to_string());
            }
        }
        if self.oracle.member_log.len() < 200_000 && self.opts.logs {
            for (t, o, s, st) in &self.oracle.member_log {
                self.event_log.push(
                    serde_json::json!({"t_ms": t, "event": "member", "observer": o, "subject": s, "status": st.as_str()})
                        .to_string(),
                );
            }
        }
        self.event_log.sort_by_key(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["t_ms"].as_u64())
                .unwrap_or(0)
        });
        RunResult {
            trace_hash: self.trace.digest(),
            events: self.events,
            sim_ms: t_end,
            verdict,
            reasons,
            violations: self.oracle.violations.clone(),
            metrics: m,
            write_reach_ms: reach,
            samples: self.samples,
            fault_periods: self.fault_periods,
            heatmap: self.heatmap,
            heatmap_subjects: self.heat_subjects,
            history: self.history,
            event_log: self.event_log,
            per_node_bytes,
            scenario: self.sc,
            seed: self.seed,
        }
    }
}
