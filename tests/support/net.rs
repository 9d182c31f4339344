//! A tiny in-test network for driving several [`Engine`]s with fake time.
//!
//! Every `Action::Publish` becomes one in-flight gossip message per other
//! engine; `SendRequest`/`Respond` pairs are routed point to point with a
//! network-chosen request id. Messages wait in `queue` until delivered, so a
//! test can deliver them in any order, duplicate them or drop them; `run()`
//! delivers everything FIFO. `Persist` batches are applied to a
//! [`MemoryStore`] per engine (or refused, see `fail_persist`).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use starling::core::{
    Action, Command, CommandError, CommandOutput, Config, Engine, Input, MemoryStore, NodeId, NodeInfo,
    PersistBatch, Topic, WatchEvent,
};

/// One message on the wire.
#[derive(Clone, Debug)]
pub enum Msg {
    /// A published gossip message on its way to `to`.
    Gossip {
        from: usize,
        to: usize,
        topic: Topic,
        bytes: Vec<u8>,
    },
    /// A request; `net_id` maps back to the requester's own id.
    Request {
        from: usize,
        to: usize,
        net_id: u64,
        bytes: Vec<u8>,
    },
    /// A response to the requester's request `id`.
    Response {
        from: usize,
        to: usize,
        id: u64,
        bytes: Vec<u8>,
    },
}

impl Msg {
    pub fn to(&self) -> usize {
        match self {
            Msg::Gossip { to, .. } | Msg::Request { to, .. } | Msg::Response { to, .. } => *to,
        }
    }
    pub fn from(&self) -> usize {
        match self {
            Msg::Gossip { from, .. } | Msg::Request { from, .. } | Msg::Response { from, .. } => *from,
        }
    }
}

pub struct Net {
    pub engines: Vec<Engine>,
    pub stores: Vec<MemoryStore>,
    pub now: u64,
    /// In flight, oldest first.
    pub queue: Vec<Msg>,
    /// Unordered pairs that cannot talk (partition): messages are dropped
    /// and requests fail.
    pub blocked: BTreeSet<(usize, usize)>,
    /// Engines whose next Persist the "disk" refuses.
    pub fail_persist: BTreeSet<usize>,
    /// Replies to commands: (engine, command id) -> result.
    pub replies: BTreeMap<(usize, u64), Result<CommandOutput, CommandError>>,
    /// Watch events per engine.
    pub events: Vec<Vec<WatchEvent>>,
    /// Every persist batch per engine, in order.
    pub batches: Vec<Vec<PersistBatch>>,
    requests: BTreeMap<u64, (usize, u64)>,
    next_net_id: u64,
    next_cmd_id: u64,
}

pub fn node(i: usize) -> NodeId {
    NodeId::from_index(i as u64 + 1)
}

impl Net {
    /// `n` engines with the same config, all starting at `now`.
    pub fn new(n: usize, cfg: Config, now: u64) -> Net {
        let engines = (0..n)
            .map(|i| {
                let info = NodeInfo {
                    name: format!("n{i}"),
                    ..NodeInfo::default()
                };
                Engine::new(cfg.clone(), node(i), info, now, 100 + i as u64, None).expect("valid config")
            })
            .collect();
        Net {
            engines,
            stores: vec![MemoryStore::new(); n],
            now,
            queue: Vec::new(),
            blocked: BTreeSet::new(),
            fail_persist: BTreeSet::new(),
            replies: BTreeMap::new(),
            events: vec![Vec::new(); n],
            batches: vec![Vec::new(); n],
            requests: BTreeMap::new(),
            next_net_id: 1,
            next_cmd_id: 1,
        }
    }

    pub fn index_of(&self, id: NodeId) -> usize {
        self.engines
            .iter()
            .position(|e| e.node_id() == id)
            .expect("request to a node in this net")
    }

    fn is_blocked(&self, a: usize, b: usize) -> bool {
        self.blocked.contains(&(a.min(b), a.max(b)))
    }

    /// Cut (or heal) the link between `a` and `b`.
    pub fn block(&mut self, a: usize, b: usize) {
        self.blocked.insert((a.min(b), a.max(b)));
    }

    /// Put `group` on one side of a partition from everyone else.
    pub fn isolate(&mut self, group: &[usize]) {
        for &a in group {
            for b in 0..self.engines.len() {
                if !group.contains(&b) {
                    self.block(a, b);
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Feed one input to engine `i` at the current time and execute its
    /// actions in order, as the driver contract says.
    pub fn input(&mut self, i: usize, input: Input) {
        let actions = self.engines[i].handle(self.now, input);
        self.execute(i, actions);
    }

    fn execute(&mut self, i: usize, actions: Vec<Action>) {
        let mut iter = actions.into_iter();
        while let Some(action) = iter.next() {
            match action {
                Action::Persist(batch) => {
                    if self.fail_persist.remove(&i) {
                        // The driver skips everything after a failed persist
                        // and reports it.
                        drop(iter);
                        let again = self.engines[i].handle(
                            self.now,
                            Input::PersistFailed {
                                batch: batch.id,
                                reason: "disk full".into(),
                            },
                        );
                        self.execute(i, again);
                        return;
                    }
                    self.stores[i].apply(&batch);
                    self.batches[i].push(batch);
                }
                Action::Publish { topic, bytes } => {
                    for to in 0..self.engines.len() {
                        if to != i && !self.is_blocked(i, to) {
                            self.queue.push(Msg::Gossip {
                                from: i,
                                to,
                                topic,
                                bytes: bytes.clone(),
                            });
                        }
                    }
                }
                Action::SendRequest { to, id, bytes } => {
                    let to = self.index_of(to);
                    if self.is_blocked(i, to) {
                        let again = self.engines[i].handle(self.now, Input::RequestFailed { id });
                        self.execute(i, again);
                        continue;
                    }
                    let net_id = self.next_net_id;
                    self.next_net_id += 1;
                    self.requests.insert(net_id, (i, id));
                    self.queue.push(Msg::Request {
                        from: i,
                        to,
                        net_id,
                        bytes,
                    });
                }
                Action::Respond { id, bytes } => {
                    let (requester, req_id) = self.requests.remove(&id).expect("respond to a known request");
                    if !self.is_blocked(i, requester) {
                        self.queue.push(Msg::Response {
                            from: i,
                            to: requester,
                            id: req_id,
                            bytes,
                        });
                    }
                }
                Action::Notify(ev) => self.events[i].push(ev),
                Action::Reply { id, result } => {
                    self.replies.insert((i, id), result);
                }
                other => panic!("unexpected action {other:?}"),
            }
        }
    }

    /// Deliver one message (it is not removed from anywhere: callers pick
    /// it out of `queue` themselves).
    pub fn deliver(&mut self, msg: Msg) {
        if self.is_blocked(msg.from(), msg.to()) {
            return;
        }
        let from_id = self.engines[msg.from()].node_id();
        match msg {
            Msg::Gossip { to, bytes, .. } => self.input(to, Input::Gossip { from: from_id, bytes }),
            Msg::Request {
                to, net_id, bytes, ..
            } => self.input(
                to,
                Input::Request {
                    from: from_id,
                    id: net_id,
                    bytes,
                },
            ),
            Msg::Response { to, id, bytes, .. } => self.input(
                to,
                Input::Response {
                    from: from_id,
                    id,
                    bytes,
                },
            ),
        }
    }

    /// Deliver every queued message (and what they cause) FIFO.
    pub fn run(&mut self) {
        let mut steps = 0;
        while !self.queue.is_empty() {
            let msg = self.queue.remove(0);
            self.deliver(msg);
            steps += 1;
            assert!(steps < 100_000, "network did not go quiet");
        }
    }

    /// Drop every queued message.
    pub fn drop_all(&mut self) {
        self.queue.clear();
        self.requests.clear();
    }

    /// Run a command on engine `i` and return its reply.
    pub fn cmd(&mut self, i: usize, command: Command) -> Result<CommandOutput, CommandError> {
        let id = self.next_cmd_id;
        self.next_cmd_id += 1;
        self.input(i, Input::Command { id, command });
        self.replies.remove(&(i, id)).expect("every command gets a reply")
    }

    /// Advance time by `dt` ms and tick every engine (in index order).
    pub fn tick(&mut self, dt: u64) {
        self.now += dt;
        for i in 0..self.engines.len() {
            self.input(i, Input::Tick);
        }
    }

    /// Advance time in `step` ms increments for `total` ms, ticking every
    /// engine and delivering everything after each step.
    pub fn run_for(&mut self, total: u64, step: u64) {
        let end = self.now + total;
        while self.now < end {
            self.tick(step);
            self.run();
        }
    }

    /// Anti-entropy by hand: `a` starts a sync with `b` (as on connect) and
    /// the exchange runs to the end.
    pub fn sync(&mut self, a: usize, b: usize) {
        let peer = self.engines[b].node_id();
        self.input(a, Input::PeerConnected(peer));
        self.run();
    }

    /// Sync every ordered pair, `rounds` times, advancing time past the
    /// per-peer rate limit between rounds.
    pub fn sync_all(&mut self, rounds: usize) {
        let n = self.engines.len();
        for _ in 0..rounds {
            self.now += self.engines[0].config().sync_min_interval_ms + 1;
            for a in 0..n {
                for b in 0..n {
                    if a != b {
                        self.sync(a, b);
                    }
                }
            }
        }
    }
}
