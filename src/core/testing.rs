//! Test helpers (feature `test-utils`; not part of the stable API): an
//! in-memory network of [`Engine`]s with fake time, command builders, and
//! [`skip_or_fail`] for tests that need something the machine may lack.
//!
//! [`Net`] is a [`Runtime`]: every engine is driven through
//! [`Engine::drive`], so the driver contract (persist first; on a failed
//! persist skip the rest and feed the failure back) is the one the node and
//! the simulator run. Like the rest of the core it is sans-IO: time is
//! [`Net::now`], which only the test moves, and nothing is random — a test
//! that wants a shuffled delivery order picks the indices itself.
//!
//! Every [`Runtime::publish`] becomes one in-flight gossip message per other
//! engine; requests and responses are routed point to point under a
//! network-chosen request id. Messages wait in [`Net::queue`] until
//! delivered, so a test can deliver them in any order
//! ([`Net::deliver_nth`]), duplicate ([`Net::duplicate_nth`]) or drop them
//! ([`Net::drop_nth`], [`Net::drop_all`]), or cut links ([`Net::block`],
//! [`Net::isolate`], [`Net::heal`]); [`Net::run`] delivers everything FIFO.
//! Persist batches are applied to a [`MemoryStore`] per engine, or refused
//! once for an engine in [`Net::fail_persist`].
//!
//! ```
//! use starling::core::testing::{self, Net};
//! use starling::core::{Config, Key, Namespace};
//!
//! let mut net = Net::new(3, Config::default(), 1_000);
//! net.isolate(&[2]);
//! net.cmd(0, testing::put("prod", "db/url", "pg://a")).unwrap();
//! net.run();
//! let (ns, key) = (Namespace::new("prod").unwrap(), Key::new("db/url").unwrap());
//! assert!(net.engines[1].kv_get(&ns, &key).is_some());
//! assert!(net.engines[2].kv_get(&ns, &key).is_none(), "the partition held");
//! net.heal();
//! net.sync(2, 0);
//! assert_eq!(net.engines[2].digest(), net.engines[0].digest());
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::canary::CanaryTarget;
use super::config::Config;
use super::crypto::{SharedKeys, SimulatedKeys};
use super::engine::{Action, Command, CommandError, CommandOutput, Engine, Expect, Input, Topic};
use super::ids::{InstanceId, Key, Namespace, NodeId, ServiceName, StateKey};
use super::membership::NodeInfo;
use super::persist::{MemoryStore, PersistBatch};
use super::registry::{HealthStatus, ServiceSpec};
use super::runtime::{RequestRefused, Runtime};
use super::state::VersionId;
use super::watch::WatchEvent;
use super::wire::{self, MessageKind, WireError};

/// One message on the in-memory wire.
#[derive(Clone, Debug)]
pub enum Msg {
    /// A published gossip message on its way to `to`.
    Gossip {
        /// Sending engine's index.
        from: usize,
        /// Receiving engine's index.
        to: usize,
        /// The topic it was published on.
        topic: Topic,
        /// The encoded message.
        bytes: Vec<u8>,
    },
    /// A request; `net_id` maps back to the requester's own id.
    Request {
        /// Requesting engine's index.
        from: usize,
        /// Responding engine's index.
        to: usize,
        /// The id the responder sees (and answers).
        net_id: u64,
        /// The encoded message.
        bytes: Vec<u8>,
    },
    /// A response to the requester's request `id`.
    Response {
        /// Responding engine's index.
        from: usize,
        /// Requesting engine's index.
        to: usize,
        /// The requester's own request id.
        id: u64,
        /// The encoded message.
        bytes: Vec<u8>,
    },
}

impl Msg {
    /// The receiving engine's index.
    pub fn to(&self) -> usize {
        match self {
            Msg::Gossip { to, .. } | Msg::Request { to, .. } | Msg::Response { to, .. } => *to,
        }
    }

    /// The sending engine's index.
    pub fn from(&self) -> usize {
        match self {
            Msg::Gossip { from, .. } | Msg::Request { from, .. } | Msg::Response { from, .. } => *from,
        }
    }
}

/// The node id of engine `i` in a [`Net`].
pub fn node(i: usize) -> NodeId {
    NodeId::from_index(i as u64 + 1)
}

/// The secret of the simulated world the test engines sign in.
pub const TEST_WORLD: u64 = 0x5354_4152_4c49_4e47;

/// The keys of the node with id `id` in the test world (a test that plays
/// a liar signs with the liar's own keys).
pub fn keys_of(id: NodeId) -> SharedKeys {
    Arc::new(SimulatedKeys::new(id, TEST_WORLD))
}

/// The keys of engine `i` ([`node`]`(i)`).
pub fn keys(i: usize) -> SharedKeys {
    keys_of(node(i))
}

/// An in-memory network of engines (see the module docs).
pub struct Net {
    /// The engines, by index; engine `i` is [`node`]`(i)`.
    pub engines: Vec<Engine>,
    /// What each engine persisted.
    pub stores: Vec<MemoryStore>,
    /// The current time in ms; only the test (and [`Net::tick`]) moves it.
    pub now: u64,
    /// Messages in flight, oldest first.
    pub queue: Vec<Msg>,
    /// Unordered pairs `(low, high)` that cannot talk (a partition):
    /// messages between them are dropped and requests fail at once.
    pub blocked: BTreeSet<(usize, usize)>,
    /// Engines whose next persist the "disk" refuses (once each).
    pub fail_persist: BTreeSet<usize>,
    /// Replies to commands: (engine, command id) -> result.
    pub replies: BTreeMap<(usize, u64), Result<CommandOutput, CommandError>>,
    /// Watch events per engine.
    pub events: Vec<Vec<WatchEvent>>,
    /// Every persisted batch per engine, in order.
    pub batches: Vec<Vec<PersistBatch>>,
    ids: Vec<NodeId>,
    /// Network request id -> (requester, the requester's own id).
    requests: BTreeMap<u64, (usize, u64)>,
    next_net_id: u64,
    next_cmd_id: u64,
}

/// The [`Runtime`] of engine `at` while it is driven: the engines are out
/// of the net for that time, so the runtime can borrow the rest.
struct Port<'a> {
    net: &'a mut Net,
    at: usize,
}

impl Runtime for Port<'_> {
    fn persist(&mut self, batch: PersistBatch) -> Result<(), String> {
        let i = self.at;
        if self.net.fail_persist.remove(&i) {
            return Err("disk full".into());
        }
        self.net.stores[i].apply(&batch);
        self.net.batches[i].push(batch);
        Ok(())
    }

    fn publish(&mut self, topic: Topic, bytes: Vec<u8>) {
        let from = self.at;
        for to in 0..self.net.ids.len() {
            if to != from && !self.net.is_blocked(from, to) {
                self.net.queue.push(Msg::Gossip {
                    from,
                    to,
                    topic,
                    bytes: bytes.clone(),
                });
            }
        }
    }

    fn send_request(&mut self, to: NodeId, id: u64, bytes: Vec<u8>) -> Result<(), RequestRefused> {
        let from = self.at;
        // A node no longer in the net (it restarted under a new identity)
        // is unreachable.
        let Some(to) = self.net.ids.iter().position(|n| *n == to) else {
            return Err(RequestRefused);
        };
        if self.net.is_blocked(from, to) {
            return Err(RequestRefused);
        }
        let net_id = self.net.next_net_id;
        self.net.next_net_id += 1;
        self.net.requests.insert(net_id, (from, id));
        self.net.queue.push(Msg::Request {
            from,
            to,
            net_id,
            bytes,
        });
        Ok(())
    }

    fn respond(&mut self, id: u64, bytes: Vec<u8>) {
        // Kept, not removed: a duplicated request is answered twice, and
        // the requester judges the second answer.
        let (requester, req_id) = *self
            .net
            .requests
            .get(&id)
            .expect("respond to a request this net delivered");
        if !self.net.is_blocked(self.at, requester) {
            self.net.queue.push(Msg::Response {
                from: self.at,
                to: requester,
                id: req_id,
                bytes,
            });
        }
    }

    fn notify(&mut self, event: WatchEvent) {
        self.net.events[self.at].push(event);
    }

    fn reply(&mut self, id: u64, result: Result<CommandOutput, CommandError>) {
        self.net.replies.insert((self.at, id), result);
    }
}

impl Net {
    /// `n` engines with the same config, all starting at `now`; engine `i`
    /// is named `n{i}` and seeded with `100 + i`.
    pub fn new(n: usize, cfg: Config, now: u64) -> Net {
        let engines: Vec<Engine> = (0..n)
            .map(|i| {
                let info = NodeInfo {
                    name: format!("n{i}"),
                    ..NodeInfo::default()
                };
                Engine::new(cfg.clone(), keys(i), info, now, 100 + i as u64, None).expect("valid config")
            })
            .collect();
        Net {
            ids: engines.iter().map(|e| e.node_id()).collect(),
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

    /// Engine `i` loses its disk and starts again under a new identity
    /// `id` (a fresh store, no state), at the current time.
    pub fn restart_as(&mut self, i: usize, id: NodeId, cfg: Config) {
        let info = NodeInfo {
            name: format!("n{i}"),
            ..NodeInfo::default()
        };
        self.engines[i] =
            Engine::new(cfg, keys_of(id), info, self.now, 100 + i as u64, None).expect("valid config");
        self.stores[i] = MemoryStore::new();
        self.ids[i] = id;
    }

    /// The index of the engine with this node id.
    pub fn index_of(&self, id: NodeId) -> usize {
        self.ids
            .iter()
            .position(|n| *n == id)
            .expect("a node of this net")
    }

    /// Whether `a` and `b` are cut off from each other.
    pub fn is_blocked(&self, a: usize, b: usize) -> bool {
        self.blocked.contains(&(a.min(b), a.max(b)))
    }

    /// Cut the link between `a` and `b`.
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

    /// Restore every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Feed one input to engine `i` at the current time and execute what
    /// it decides through this net ([`Engine::drive`]).
    pub fn input(&mut self, i: usize, input: Input) {
        let mut engines = std::mem::take(&mut self.engines);
        let now = self.now;
        engines[i].drive(now, input, &mut Port { net: self, at: i });
        self.engines = engines;
    }

    /// Hand engine `to` a request as if engine `from` had sent it (a
    /// crafted one: a hostile peer's). The answer is queued for `from`
    /// like any other, under a request id its engine never issued.
    pub fn request_from(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let net_id = self.next_net_id;
        self.next_net_id += 1;
        self.requests.insert(net_id, (from, u64::MAX - net_id));
        self.deliver(Msg::Request {
            from,
            to,
            net_id,
            bytes,
        });
    }

    /// Deliver one message (callers take it out of [`Net::queue`]
    /// themselves); dropped if its link is cut.
    pub fn deliver(&mut self, msg: Msg) {
        if self.is_blocked(msg.from(), msg.to()) {
            return;
        }
        let from = self.ids[msg.from()];
        match msg {
            Msg::Gossip { to, bytes, .. } => self.input(to, Input::Gossip { from, bytes }),
            Msg::Request {
                to, net_id, bytes, ..
            } => self.input(
                to,
                Input::Request {
                    from,
                    id: net_id,
                    bytes,
                },
            ),
            Msg::Response { to, id, bytes, .. } => self.input(to, Input::Response { from, id, bytes }),
        }
    }

    /// Take the queued message at `pick % queue.len()` out and deliver it
    /// (a reordering when `pick` is not 0). False if nothing is queued.
    pub fn deliver_nth(&mut self, pick: usize) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        let msg = self.queue.remove(pick % self.queue.len());
        self.deliver(msg);
        true
    }

    /// Deliver a copy of the queued message at `pick % queue.len()`,
    /// leaving it queued (so it arrives twice). False if nothing is queued.
    pub fn duplicate_nth(&mut self, pick: usize) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        let msg = self.queue[pick % self.queue.len()].clone();
        self.deliver(msg);
        true
    }

    /// Lose the queued message at `pick % queue.len()`. False if nothing
    /// is queued.
    pub fn drop_nth(&mut self, pick: usize) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        self.queue.remove(pick % self.queue.len());
        true
    }

    /// Lose the queued message at `pick % queue.len()` the way a broken
    /// connection does: a lost request or response fails the request at
    /// the requester ([`Input::RequestFailed`]), so no sync waits for an
    /// answer that will never come; lost gossip is just gone. False if
    /// nothing is queued.
    pub fn fail_nth(&mut self, pick: usize) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        let failed = match self.queue.remove(pick % self.queue.len()) {
            Msg::Gossip { .. } => None,
            Msg::Request { net_id, .. } => self.requests.get(&net_id).copied(),
            Msg::Response { to, id, .. } => Some((to, id)),
        };
        if let Some((requester, id)) = failed {
            self.input(requester, Input::RequestFailed { id });
        }
        true
    }

    /// [`Net::fail_nth`] for everything queued, oldest first (including
    /// what failing causes): afterwards nothing is in flight.
    pub fn fail_all(&mut self) {
        while self.fail_nth(0) {}
    }

    /// Deliver every queued message (and what they cause) FIFO, until the
    /// network is quiet.
    pub fn run(&mut self) {
        let mut steps = 0;
        while !self.queue.is_empty() {
            let msg = self.queue.remove(0);
            self.deliver(msg);
            steps += 1;
            assert!(steps < 100_000, "network did not go quiet");
        }
    }

    /// Lose every queued message.
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
    /// everything queued runs to the end.
    pub fn sync(&mut self, a: usize, b: usize) {
        let peer = self.ids[b];
        self.input(a, Input::PeerConnected(peer));
        self.run();
    }

    /// Sync every ordered pair, `rounds` times, advancing time past the
    /// per-peer rate limit before each round.
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

// ----- command builders -----------------------------------------------------
//
// Names are parsed with `expect`: these are for tests, which pass valid
// literals. Build a `Command` by hand to test name validation.

fn ns(namespace: &str) -> Namespace {
    Namespace::new(namespace).expect("a valid namespace")
}

fn key(k: &str) -> Key {
    Key::new(k).expect("a valid key")
}

fn service(name: &str) -> ServiceName {
    ServiceName::new(name).expect("a valid service name")
}

fn instance(id: &str) -> InstanceId {
    InstanceId::new(id).expect("a valid instance id")
}

/// The [`StateKey`] of config key `k` in `namespace`.
pub fn kv_key(namespace: &str, k: &str) -> StateKey {
    StateKey::Kv {
        namespace: ns(namespace),
        key: key(k),
    }
}

/// `Put` without a condition.
pub fn put(namespace: &str, k: &str, value: impl AsRef<[u8]>) -> Command {
    Command::Put {
        namespace: ns(namespace),
        key: key(k),
        value: value.as_ref().to_vec(),
        expect: None,
    }
}

/// `Put` under a condition (compare-and-set).
pub fn put_if(namespace: &str, k: &str, value: impl AsRef<[u8]>, expect: Expect) -> Command {
    Command::Put {
        namespace: ns(namespace),
        key: key(k),
        value: value.as_ref().to_vec(),
        expect: Some(expect),
    }
}

/// `Delete` without a condition.
pub fn delete(namespace: &str, k: &str) -> Command {
    Command::Delete {
        namespace: ns(namespace),
        key: key(k),
        expect: None,
    }
}

/// `Delete` under a condition.
pub fn delete_if(namespace: &str, k: &str, expect: Expect) -> Command {
    Command::Delete {
        namespace: ns(namespace),
        key: key(k),
        expect: Some(expect),
    }
}

/// `Rollback` of a key to an earlier version's content.
pub fn rollback(namespace: &str, k: &str, to: VersionId) -> Command {
    Command::Rollback {
        namespace: ns(namespace),
        key: key(k),
        to,
    }
}

/// `Resolve` a key's siblings, keeping one.
pub fn resolve(namespace: &str, k: &str, keep: VersionId) -> Command {
    Command::Resolve {
        namespace: ns(namespace),
        key: key(k),
        keep,
    }
}

/// A service spec at `address:port` with no tags or metadata, the default
/// weight (100) and no TTL.
pub fn instance_spec(address: &str, port: u16) -> ServiceSpec {
    ServiceSpec {
        address: address.into(),
        port,
        tags: BTreeSet::new(),
        metadata: BTreeMap::new(),
        weight: 100,
        ttl_ms: None,
    }
}

/// `RegisterService` of one instance.
pub fn register_instance(namespace: &str, svc: &str, id: &str, spec: ServiceSpec) -> Command {
    Command::RegisterService {
        namespace: ns(namespace),
        service: service(svc),
        instance: instance(id),
        spec,
    }
}

/// `HeartbeatService` for one instance, optionally reporting its health.
pub fn heartbeat_instance(namespace: &str, svc: &str, id: &str, health: Option<HealthStatus>) -> Command {
    Command::HeartbeatService {
        namespace: ns(namespace),
        service: service(svc),
        instance: instance(id),
        health,
    }
}

/// `DeregisterService` of one instance.
pub fn deregister_instance(namespace: &str, svc: &str, id: &str) -> Command {
    Command::DeregisterService {
        namespace: ns(namespace),
        service: service(svc),
        instance: instance(id),
    }
}

/// `SetCanary`: `value` for the nodes `target` selects.
pub fn set_canary(namespace: &str, k: &str, value: impl AsRef<[u8]>, target: CanaryTarget) -> Command {
    Command::SetCanary {
        namespace: ns(namespace),
        key: key(k),
        value: value.as_ref().to_vec(),
        target,
    }
}

/// `PromoteCanary`: the canary value becomes the stable one.
pub fn promote_canary(namespace: &str, k: &str) -> Command {
    Command::PromoteCanary {
        namespace: ns(namespace),
        key: key(k),
    }
}

/// `AbortCanary`: drop the canary, keep the stable value.
pub fn abort_canary(namespace: &str, k: &str) -> Command {
    Command::AbortCanary {
        namespace: ns(namespace),
        key: key(k),
    }
}

// ----- untrusted bytes in every role ------------------------------------------

/// The role in which a [`Feeder`] hands bytes to its engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// As [`Input::Gossip`] from a peer.
    Gossip,
    /// As an [`Input::Request`] from a peer (where a `SyncRequest` or a
    /// `SyncPush` is expected).
    Request,
    /// As the [`Input::Response`] to a sync the engine has just started
    /// (where a `SyncResponse` is expected).
    PullResponse,
    /// As the [`Input::Response`] to the push of a sync in its second half
    /// (where a `SyncAck` is expected): the engine has pulled from a real
    /// peer and pushed its half first.
    PushResponse,
}

/// What one delivery of the bytes was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The role it was delivered in.
    pub role: Role,
    /// What the wire decoder makes of the bytes: the kind, or the error the
    /// engine must have counted.
    pub decoded: Result<MessageKind, WireError>,
}

/// Hands untrusted bytes to an [`Engine`] in every role the network can
/// deliver them in ([`Role`]), and checks that the engine's counters
/// account for each delivery. Used by the `engine_input` fuzz target and
/// `tests/wire_fuzz_smoke.rs`, so both reach the same paths.
///
/// The engine is node 1 with one local write; node 2 is a real engine with
/// another write (so a sync with it has a second half); node 3 is only a
/// name. Every [`Feeder::feed`] moves time past the per-peer sync rate
/// limit and fails every request still in flight at its end, so each
/// round reaches every role again.
pub struct Feeder {
    engine: Engine,
    peer: Engine,
    now: u64,
}

fn message_total<K>(map: &BTreeMap<K, u64>) -> u64 {
    map.values().sum()
}

impl Feeder {
    /// A feeder whose engines start at `now_ms` with the default config.
    pub fn new(now_ms: u64) -> Feeder {
        let cfg = Config::default();
        let mk = |i: u64, seed: u64, key: &str| {
            let mut e = Engine::new(
                cfg.clone(),
                keys_of(NodeId::from_index(i)),
                NodeInfo::default(),
                now_ms,
                seed,
                None,
            )
            .expect("default config is valid");
            let reply = e.handle(
                now_ms,
                Input::Command {
                    id: 1,
                    command: put("prod", key, "v"),
                },
            );
            assert!(reply
                .iter()
                .any(|a| matches!(a, Action::Reply { result: Ok(_), .. })));
            e
        };
        Feeder {
            engine: mk(1, 7, "db/url"),
            peer: mk(2, 8, "peer/key"),
            now: now_ms,
        }
    }

    /// The engine under test.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine under test, to feed it something else.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The time of the last round.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// `body` behind a valid header of this engine's cluster, with `kind`
    /// as the kind byte (valid or not).
    pub fn framed(&self, kind: u8, body: &[u8]) -> Vec<u8> {
        let cluster = wire::cluster_id(&self.engine.config().cluster);
        let mut out = Vec::with_capacity(wire::HEADER_LEN + body.len());
        out.extend_from_slice(&wire::MAGIC);
        out.push(wire::PROTOCOL_VERSION);
        out.push(kind);
        out.extend_from_slice(&cluster.to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    /// One round: `bytes` as the answer to a push, as the answer to a
    /// pull, as gossip and as a request, in that order. Returns each
    /// delivery made (the push role is skipped if the engine had nothing
    /// to push).
    ///
    /// # Panics
    /// If a delivery is not accounted for: each must count one message in
    /// (by the envelope's kind) and its bytes, and bytes the decoder
    /// rejects must count exactly one rejection, under the decoder's
    /// reason. Or if the engine panics.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Delivery> {
        self.now += self.engine.config().sync_min_interval_ms + 1_000;
        let now = self.now;
        let me = self.engine.node_id();
        let (peer, stranger) = (self.peer.node_id(), NodeId::from_index(3));
        let mut sent = Vec::new();
        let mut out = Vec::new();
        // The push role: a real pull from the peer, then our push.
        let acts = self.engine.handle(now, Input::PeerConnected(peer));
        if let Some((id, req)) = first_request(&acts, &mut sent) {
            let resp = self
                .peer
                .handle(
                    now,
                    Input::Request {
                        from: me,
                        id: 1,
                        bytes: req,
                    },
                )
                .into_iter()
                .find_map(|a| match a {
                    Action::Respond { bytes, .. } => Some(bytes),
                    _ => None,
                })
                .expect("the peer answers a sync request");
            let acts = self.engine.handle(
                now,
                Input::Response {
                    from: peer,
                    id,
                    bytes: resp,
                },
            );
            if let Some((push, _)) = first_request(&acts, &mut sent) {
                let input = Input::Response {
                    from: peer,
                    id: push,
                    bytes: bytes.to_vec(),
                };
                out.push(self.deliver(Role::PushResponse, input, bytes, &mut sent));
            }
        }
        // The pull role, with a peer that never answers for itself.
        let acts = self.engine.handle(now, Input::PeerConnected(stranger));
        if let Some((id, _)) = first_request(&acts, &mut sent) {
            let input = Input::Response {
                from: stranger,
                id,
                bytes: bytes.to_vec(),
            };
            out.push(self.deliver(Role::PullResponse, input, bytes, &mut sent));
        }
        let input = Input::Gossip {
            from: peer,
            bytes: bytes.to_vec(),
        };
        out.push(self.deliver(Role::Gossip, input, bytes, &mut sent));
        // The request role, inside a sync the peer opened (a push is
        // taken only as the second half of one): the peer's real request
        // first, answered and set aside.
        let acts = self.peer.handle(now, Input::PeerConnected(me));
        if let Some((peer_id, req)) = acts.into_iter().find_map(|a| match a {
            Action::SendRequest { id, bytes, .. } => Some((id, bytes)),
            _ => None,
        }) {
            self.engine.handle(
                now,
                Input::Request {
                    from: peer,
                    id: 0,
                    bytes: req,
                },
            );
            self.peer.handle(now, Input::RequestFailed { id: peer_id });
        }
        let input = Input::Request {
            from: peer,
            id: 1,
            bytes: bytes.to_vec(),
        };
        out.push(self.deliver(Role::Request, input, bytes, &mut sent));
        // No sync outlives the round.
        for id in sent {
            self.engine.handle(now, Input::RequestFailed { id });
        }
        self.engine.handle(now, Input::PeerDisconnected(peer));
        self.engine.handle(now, Input::PeerDisconnected(stranger));
        out
    }

    fn deliver(&mut self, role: Role, input: Input, bytes: &[u8], sent: &mut Vec<u64>) -> Delivery {
        let cfg = self.engine.config();
        let decoded =
            wire::decode(bytes, wire::cluster_id(&cfg.cluster), cfg.max_message_bytes).map(|m| m.kind());
        let kind = wire::peek_kind(bytes).map_or("unknown", |k| k.as_str());
        let before = self.engine.counters().clone();
        let acts = self.engine.handle(self.now, input);
        sent.extend(acts.iter().filter_map(|a| match a {
            Action::SendRequest { id, .. } => Some(*id),
            _ => None,
        }));
        let after = self.engine.counters();
        let of = |c: &super::engine::Counters, name: &str| -> u64 {
            c.messages_in
                .iter()
                .filter(|(k, _)| k.as_str() == name)
                .map(|(_, n)| *n)
                .sum()
        };
        assert_eq!(
            message_total(&after.messages_in),
            message_total(&before.messages_in) + 1,
            "{role:?}: one message in"
        );
        assert_eq!(
            of(after, kind),
            of(&before, kind) + 1,
            "{role:?}: counted as {kind}"
        );
        assert_eq!(
            message_total(&after.bytes_in),
            message_total(&before.bytes_in) + bytes.len() as u64,
            "{role:?}: its bytes counted"
        );
        if let Err(e) = &decoded {
            let reason = |c: &super::engine::Counters| -> u64 {
                c.rejected
                    .iter()
                    .filter(|(r, _)| r.as_str() == e.reason())
                    .map(|(_, n)| *n)
                    .sum()
            };
            assert_eq!(
                reason(after),
                reason(&before) + 1,
                "{role:?}: rejected as {}",
                e.reason()
            );
            assert_eq!(
                message_total(&after.rejected),
                message_total(&before.rejected) + 1,
                "{role:?}: rejected once"
            );
        }
        Delivery { role, decoded }
    }

    /// Check the engine is still usable: a local write is acknowledged and
    /// a tick a minute later runs.
    ///
    /// # Panics
    /// If the write is refused (or anything panics).
    pub fn check_usable(&mut self) {
        self.now += 1;
        let acts = self.engine.handle(
            self.now,
            Input::Command {
                id: 99,
                command: put("prod", "after/fuzz", "ok"),
            },
        );
        assert!(
            acts.iter().any(|a| matches!(
                a,
                Action::Reply {
                    id: 99,
                    result: Ok(_)
                }
            )),
            "a local write after the input: {acts:?}"
        );
        self.now += 60_000;
        self.engine.handle(self.now, Input::Tick);
    }
}

/// The first request in `acts` (recording every request id in `sent`).
fn first_request(acts: &[Action], sent: &mut Vec<u64>) -> Option<(u64, Vec<u8>)> {
    let mut first = None;
    for a in acts {
        if let Action::SendRequest { id, bytes, .. } = a {
            sent.push(*id);
            first.get_or_insert((*id, bytes.clone()));
        }
    }
    first
}

// ----- tests that need the machine's help ------------------------------------

/// A test that cannot run here (no root, no `ip netns`, no tmpfs) calls
/// this and returns. Outside CI it prints `SKIPPED: <reason>` on stderr,
/// where a person running `cargo test` sees it; under CI (`CI` set to
/// anything but empty, `0` or `false`, as CI services set `CI=true`) it
/// panics, so a skipped test is never reported as passed there.
///
/// Reading the environment is fine here: this is test-utils code, not
/// protocol code, and it decides nothing an engine sees.
pub fn skip_or_fail(reason: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"));
    if ci {
        panic!("cannot run under CI: {reason} (outside CI this test is skipped)");
    }
    eprintln!("SKIPPED: {reason}");
}
