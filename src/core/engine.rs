//! The protocol engine: one node's replicated state and every decision about
//! what to send, as a pure state machine.
//!
//! # Driver contract
//! `Engine::handle(now_ms, input)` returns every action the input caused, in
//! order. The driver must execute them in that order, and:
//! * a [`Action::Persist`] comes first whenever state changed; the driver
//!   makes it durable before executing the actions after it. If it cannot,
//!   it skips the rest and calls `handle(now, Input::PersistFailed { .. })`,
//!   which undoes the batch's new versions and fails its commands;
//! * after draining the actions, the driver sleeps at most until
//!   [`Engine::poll_timeout`] and then sends [`Input::Tick`].
//!
//! `now_ms` is milliseconds since the Unix epoch on the driver's clock (the
//! simulator passes virtual time). The engine never reads a clock and draws
//! randomness only from the seeded RNG it was built with.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::canary::{CanarySpec, CanaryTarget};
use super::config::{Config, ConfigError};
use super::dots::{knowledge_bucket_count, valid_knowledge_bucket_count, Dot, Knowledge, PeerKnowledge};
use super::hlc::{Hlc, HlcClock};
use super::ids::IdMap;
use super::ids::{InstanceId, Key, Namespace, NodeId, ServiceName, StateKey};
use super::membership::{
    member_bucket_count, valid_member_bucket_count, Member, MemberStatus, Membership, NodeInfo,
};
use super::persist::{PersistBatch, PersistedMeta, Snapshot};
use super::phi::PhiDetector;
use super::registry::{HealthStatus, ServiceInstance, ServiceQuery, ServiceSpec};
use super::state::{Digest, KeyState, MergeOutcome, Payload, ReplicatedState, Version, VersionId, BUCKETS};
use super::watch::{SnapshotRequired, WatchChange, WatchEvent, WatchLog};
use super::wire::{
    self, Delta, Hashes, Heartbeat, KnowledgeSummary, Message, SyncAck, SyncPush, SyncRequest, SyncResponse,
    WireError, ANNOUNCE_HEARTBEATS,
};

/// Highest dot sequence accepted from a peer (in a version or in knowledge
/// we adopt). No node writes 2^63 times; a larger seq is junk, and adopting
/// it would overflow this node's own counter (`next_seq`).
const MAX_REMOTE_SEQ: u64 = u64::MAX / 2;

/// The two gossip topics of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Topic {
    /// Heartbeats.
    Heartbeat,
    /// State deltas.
    Delta,
}

/// Something that happened to the node.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Input {
    /// Time passed; run timers.
    Tick,
    /// A gossip message authored by `from`.
    Gossip {
        /// The author (not the relaying peer).
        from: NodeId,
        /// The message bytes.
        bytes: Vec<u8>,
    },
    /// A point-to-point request from a peer; answer with [`Action::Respond`]
    /// carrying the same `id`.
    Request {
        /// The requesting peer.
        from: NodeId,
        /// Driver-chosen id for the reply channel.
        id: u64,
        /// The request bytes.
        bytes: Vec<u8>,
    },
    /// The answer to an [`Action::SendRequest`].
    Response {
        /// The answering peer.
        from: NodeId,
        /// The id of the request.
        id: u64,
        /// The response bytes.
        bytes: Vec<u8>,
    },
    /// An [`Action::SendRequest`] failed (unreachable, timeout, refused).
    RequestFailed {
        /// The id of the request.
        id: u64,
    },
    /// A connection to a peer opened.
    PeerConnected(NodeId),
    /// The last connection to a peer closed.
    PeerDisconnected(NodeId),
    /// A local client command; answered by [`Action::Reply`] with the same id.
    Command {
        /// Caller-chosen id, echoed in the reply.
        id: u64,
        /// What to do.
        command: Command,
    },
    /// The driver could not make a [`PersistBatch`] durable.
    PersistFailed {
        /// The batch id.
        batch: u64,
        /// Why (shown to the clients whose commands fail).
        reason: String,
    },
}

/// A precondition on a write (compare-and-set).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// The key must read as absent (never written, or deleted).
    Absent,
    /// The key's winning version must be this one.
    Version(VersionId),
}

/// A local client command.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// Write a config value.
    Put {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
        /// Value bytes.
        value: Vec<u8>,
        /// Optional precondition.
        expect: Option<Expect>,
    },
    /// Delete a config key.
    Delete {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
        /// Optional precondition.
        expect: Option<Expect>,
    },
    /// Write, as a new version, the content of an earlier version.
    Rollback {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
        /// The version whose content to restore.
        to: VersionId,
    },
    /// Settle concurrent writes: write the content of the live sibling
    /// `keep` as a new version, superseding every sibling.
    Resolve {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
        /// The live version whose content wins.
        keep: VersionId,
    },
    /// Register (or re-register) a service instance owned by this node.
    RegisterService {
        /// Namespace.
        namespace: Namespace,
        /// Service.
        service: ServiceName,
        /// Instance.
        instance: InstanceId,
        /// Address, tags, TTL...
        spec: ServiceSpec,
    },
    /// Refresh an owned instance's TTL, optionally reporting its health.
    HeartbeatService {
        /// Namespace.
        namespace: Namespace,
        /// Service.
        service: ServiceName,
        /// Instance.
        instance: InstanceId,
        /// Health to report (default passing).
        health: Option<HealthStatus>,
    },
    /// Remove a service instance.
    DeregisterService {
        /// Namespace.
        namespace: Namespace,
        /// Service.
        service: ServiceName,
        /// Instance.
        instance: InstanceId,
    },
    /// Start (or replace) a canary for a config key: `value` is read by
    /// the nodes `target` selects, the stable value by every other node.
    SetCanary {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
        /// The candidate value.
        value: Vec<u8>,
        /// Which nodes read it.
        target: CanaryTarget,
    },
    /// Make a key's canary value its stable value everywhere and end the
    /// canary.
    PromoteCanary {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
    },
    /// End a key's canary; every node reads the stable value again.
    AbortCanary {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
    },
    /// Change this node's advertised addresses, name or tags.
    SetInfo(NodeInfo),
    /// Leave the cluster gracefully (final for this incarnation).
    Leave,
}

/// A successful command's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CommandOutput {
    /// A version was written (and is durable).
    Written {
        /// Its id.
        version: VersionId,
        /// Its stamp.
        hlc: Hlc,
    },
    /// Done; nothing to report.
    Done,
}

/// Why a command failed. State is unchanged unless the variant says so.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CommandError {
    /// The precondition did not hold; `current` is the winning version now.
    #[error("version conflict: current version is {current:?}")]
    Conflict {
        /// The current winner, if any.
        current: Option<VersionId>,
    },
    /// Key, version or instance not found.
    #[error("not found")]
    NotFound,
    /// Invalid argument.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Value over the size limit.
    #[error("value of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Given size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Only the owner node may do this.
    #[error("instance is owned by node {0}")]
    NotOwner(String),
    /// The node has left the cluster.
    #[error("node has left the cluster")]
    Left,
    /// The write could not be made durable; it was undone.
    #[error("not durable: {0}")]
    NotDurable(String),
}

/// Something the driver must do.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Action {
    /// Make this durable before executing the actions after it.
    Persist(PersistBatch),
    /// Publish on a gossip topic.
    Publish {
        /// Which topic.
        topic: Topic,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Send a point-to-point request; answer comes as [`Input::Response`]
    /// or [`Input::RequestFailed`] with the same id.
    SendRequest {
        /// The peer.
        to: NodeId,
        /// Engine-chosen id.
        id: u64,
        /// The request.
        bytes: Vec<u8>,
    },
    /// Answer an [`Input::Request`].
    Respond {
        /// The request's id.
        id: u64,
        /// The response.
        bytes: Vec<u8>,
    },
    /// Tell watchers.
    Notify(WatchEvent),
    /// Answer an [`Input::Command`].
    Reply {
        /// The command's id.
        id: u64,
        /// Its result.
        result: Result<CommandOutput, CommandError>,
    },
}

/// A version as shown to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Short id (CAS, rollback).
    pub id: VersionId,
    /// HLC stamp.
    pub hlc: Hlc,
    /// Node that wrote it.
    pub origin: NodeId,
    /// Origin's sequence number.
    pub seq: u64,
    /// Content checksum.
    pub checksum: u64,
    /// Content size in bytes.
    pub size: usize,
    /// Whether it is a deletion.
    pub deleted: bool,
}

impl VersionInfo {
    fn of(v: &Version) -> Self {
        VersionInfo {
            id: v.id(),
            hlc: v.hlc,
            origin: v.dot.node,
            seq: v.dot.seq,
            checksum: v.checksum,
            size: match &v.payload {
                Payload::Value(b) => b.len(),
                Payload::Canary(c) => c.value.len(),
                _ => 0,
            },
            deleted: v.payload.is_tombstone(),
        }
    }
}

/// A config key as read: the winner and any concurrent siblings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    /// Namespace.
    pub namespace: Namespace,
    /// Key.
    pub key: Key,
    /// The winning value.
    pub value: Vec<u8>,
    /// The winning version.
    pub version: VersionInfo,
    /// Every live version including the winner (more than one after
    /// concurrent writes), highest rank first; `None` value for deletions.
    pub siblings: Vec<(VersionInfo, Option<Vec<u8>>)>,
    /// The key's canary, if one is running. When it targets this node,
    /// `value` is the canary's value (and `version` stays the stable
    /// winner, the one conditional writes compare against); a key that
    /// exists only as a canary reads here with the canary's version.
    pub canary: Option<CanaryView>,
}

impl KvEntry {
    /// Whether `value` comes from a canary targeting this node.
    pub fn served_from_canary(&self) -> bool {
        self.canary.as_ref().is_some_and(|c| c.active)
    }
}

/// A running canary as read on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryView {
    /// Namespace.
    pub namespace: Namespace,
    /// Key.
    pub key: Key,
    /// The candidate value.
    pub value: Vec<u8>,
    /// Which nodes read it.
    pub target: CanaryTarget,
    /// The canary's version.
    pub version: VersionInfo,
    /// Whether this node reads it.
    pub active: bool,
}

/// A service instance as read, with its effective health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Namespace.
    pub namespace: Namespace,
    /// Service.
    pub service: ServiceName,
    /// Instance id.
    pub instance: InstanceId,
    /// What was registered.
    pub spec: ServiceSpec,
    /// Owner node.
    pub owner: NodeId,
    /// Health as written by the owner.
    pub reported_health: HealthStatus,
    /// Health to route by: critical if the owner is dead or left.
    pub health: HealthStatus,
    /// The version.
    pub version: VersionInfo,
}

/// Counters the engine keeps (exported as metrics by the node).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Local writes applied.
    pub writes: u64,
    /// Remote versions merged (new).
    pub merged: u64,
    /// Remote versions already held.
    pub duplicates: u64,
    /// Remote versions seen before and since dropped (not taken back).
    pub obsolete: u64,
    /// Versions dropped because a peer showed it had superseded them.
    pub dropped_obsolete: u64,
    /// Deltas published.
    pub deltas_sent: u64,
    /// Sync rounds started.
    pub syncs_started: u64,
    /// Sync rounds that completed.
    pub syncs_completed: u64,
    /// Sync rounds that failed or timed out.
    pub syncs_failed: u64,
    /// Sync requests served.
    pub syncs_served: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Heartbeats received.
    pub heartbeats_received: u64,
    /// Tombstoned keys collected.
    pub tombstones_collected: u64,
    /// Writes undone because they could not be persisted.
    pub persist_failures: u64,
    /// Messages received, by kind.
    pub messages_in: BTreeMap<String, u64>,
    /// Bytes received, by kind.
    pub bytes_in: BTreeMap<String, u64>,
    /// Messages sent, by kind.
    pub messages_out: BTreeMap<String, u64>,
    /// Bytes sent, by kind.
    pub bytes_out: BTreeMap<String, u64>,
    /// Input rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
}

#[derive(Clone, Debug)]
enum SyncPhase {
    Pull,
    Push(Box<AfterAck>),
}

#[derive(Clone, Debug)]
struct InflightSync {
    peer: NodeId,
    started_ms: u64,
    phase: SyncPhase,
}

/// What a requester does once the responder acknowledges its push (and
/// sends what the requester lacks).
#[derive(Clone, Debug)]
struct AfterAck {
    /// Versions the responder had seen and dropped, as of its response.
    doomed: Vec<(StateKey, Dot)>,
    /// The responder's shipped knowledge, adopted when the exchange is complete.
    adopt: Knowledge,
}

#[derive(Clone, Debug)]
struct Peer {
    detector: PhiDetector,
    /// When phi crosses the threshold if no heartbeat arrives: recomputed
    /// whenever the detector changes, so the periodic failure check over
    /// every member is a comparison per member.
    deadline: Option<u64>,
    /// `(incarnation, status)` of the record held for it, once one is.
    held: Option<(u64, MemberStatus)>,
}

#[derive(Clone, Debug, Default)]
struct PendingBatch {
    applied: Vec<(StateKey, Dot)>,
    commands: Vec<u64>,
    local_keys: BTreeSet<StateKey>,
}

/// One node's protocol state machine. See the module docs for the driver
/// contract and [`crate::core`] for the protocol.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    cluster_id: u64,
    me: NodeId,
    info: NodeInfo,
    /// Canary keys to re-announce to watchers after this node's tags
    /// changed.
    retargeted: Vec<StateKey>,
    incarnation: u64,
    left: bool,
    clock: HlcClock,
    rng: ChaCha8Rng,
    state: ReplicatedState,
    members: Membership,
    /// Per peer: its failure detector and the precedence of the record
    /// held for it (so a heartbeat is judged with one lookup).
    peers: IdMap<Peer>,
    /// `(incarnation, heartbeats left)`: the own incarnation last
    /// announced in full in heartbeats, and how many more will carry it.
    announced: (u64, u32),
    suspect_since: BTreeMap<NodeId, u64>,
    connected: BTreeSet<NodeId>,
    owned_heartbeats: BTreeMap<StateKey, u64>,
    watch: WatchLog,
    heartbeat_seq: u64,
    next_heartbeat_ms: u64,
    next_sync_ms: u64,
    next_gc_ms: u64,
    next_check_ms: u64,
    next_failure_check_ms: u64,
    syncs: BTreeMap<u64, InflightSync>,
    last_sync_with: BTreeMap<NodeId, u64>,
    sync_wanted: BTreeSet<NodeId>,
    /// The latest peer whose heartbeat digest differed from ours, to sync
    /// with once the node-wide limit allows (see `try_digest_sync`).
    digest_sync: Option<NodeId>,
    /// When the last digest-triggered sync started.
    last_digest_sync_ms: Option<u64>,
    last_converged: IdMap<u64>,
    next_request_id: u64,
    next_batch_id: u64,
    last_batch: Option<(u64, PendingBatch)>,
    pending: PendingBatch,
    out: Vec<Action>,
    counters: Counters,
    now_ms: u64,
    last_merge_ok: bool,
}

impl Engine {
    /// A node with identity `me` starting at `now_ms`, restoring `snapshot`
    /// if it has one. Every start raises the incarnation, so a restarted node
    /// refutes whatever the cluster concluded while it was down.
    pub fn new(
        config: Config,
        me: NodeId,
        info: NodeInfo,
        now_ms: u64,
        seed: u64,
        snapshot: Option<Snapshot>,
    ) -> Result<Engine, ConfigError> {
        let cfg = config.validated()?;
        let snapshot = snapshot.unwrap_or_default();
        let mut clock = HlcClock::new(cfg.max_clock_drift_ms);
        clock.restore(snapshot.meta.hlc);
        let mut state = ReplicatedState::new(cfg.history_limit);
        let knowledge = snapshot.knowledge_set();
        state.restore(snapshot.keys, knowledge);
        let mut members = Membership::new();
        let mut incarnation = snapshot.meta.incarnation;
        for m in snapshot.members {
            if m.node == me {
                incarnation = incarnation.max(m.incarnation);
            }
            members.merge(m);
        }
        incarnation += 1;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let first_hb = now_ms + rng.gen_range(0..=cfg.heartbeat_interval_ms / 4);
        let mut engine = Engine {
            cluster_id: wire::cluster_id(&cfg.cluster),
            watch: WatchLog::new(cfg.watch_log_capacity, snapshot.meta.revision),
            next_sync_ms: now_ms + cfg.sync_interval_ms,
            next_gc_ms: now_ms + cfg.gc_interval_ms,
            next_heartbeat_ms: first_hb,
            next_check_ms: now_ms,
            next_failure_check_ms: now_ms,
            cfg,
            me,
            info,
            retargeted: Vec::new(),
            incarnation,
            left: false,
            clock,
            rng,
            state,
            members,
            peers: IdMap::default(),
            announced: (0, 0),
            suspect_since: BTreeMap::new(),
            connected: BTreeSet::new(),
            owned_heartbeats: BTreeMap::new(),
            heartbeat_seq: 0,
            syncs: BTreeMap::new(),
            last_sync_with: BTreeMap::new(),
            sync_wanted: BTreeSet::new(),
            digest_sync: None,
            last_digest_sync_ms: None,
            last_converged: IdMap::default(),
            next_request_id: 1,
            next_batch_id: 1,
            last_batch: None,
            pending: PendingBatch::default(),
            out: Vec::new(),
            counters: Counters::default(),
            now_ms,
            last_merge_ok: true,
        };
        let own = engine.own_record(MemberStatus::Alive);
        engine.members.merge(own);
        let peers: Vec<(NodeId, u64, MemberStatus)> = engine
            .members
            .iter()
            .filter(|m| m.node != me)
            .map(|m| (m.node, m.incarnation, m.status))
            .collect();
        for (p, incarnation, status) in peers {
            engine.track(p, now_ms).held = Some((incarnation, status));
        }
        // Owned instances with a TTL get one TTL of grace after a restart.
        let owned: Vec<StateKey> = engine
            .state
            .iter()
            .filter(|(k, ks)| {
                matches!(k, StateKey::Service { .. })
                    && matches!(ks.winner().map(|v| &v.payload), Some(Payload::Instance(i)) if i.owner == me)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in owned {
            engine.owned_heartbeats.insert(k, now_ms);
        }
        Ok(engine)
    }

    /// [`Input::Gossip`] without handing over the bytes: a driver that
    /// delivers one published message to many engines (the simulator)
    /// need not copy it for each.
    pub fn handle_gossip(&mut self, now_ms: u64, from: NodeId, bytes: &[u8]) -> Vec<Action> {
        self.now_ms = now_ms.max(self.now_ms);
        self.on_gossip(from, bytes);
        self.flush()
    }

    /// Feed one input; returns the actions it caused, in execution order.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Action> {
        self.now_ms = now_ms.max(self.now_ms);
        match input {
            Input::Tick => self.on_tick(),
            Input::Gossip { from, bytes } => self.on_gossip(from, &bytes),
            Input::Request { from, id, bytes } => self.on_request(from, id, &bytes),
            Input::Response { from, id, bytes } => self.on_response(from, id, &bytes),
            Input::RequestFailed { id } => {
                if let Some(s) = self.syncs.remove(&id) {
                    self.counters.syncs_failed += 1;
                    self.sync_wanted.insert(s.peer);
                }
            }
            Input::PeerConnected(peer) => {
                self.connected.insert(peer);
                self.want_sync(peer);
            }
            Input::PeerDisconnected(peer) => {
                self.connected.remove(&peer);
            }
            Input::Command { id, command } => self.on_command(id, command),
            Input::PersistFailed { batch, reason } => self.on_persist_failed(batch, reason),
        }
        self.flush()
    }

    /// When the driver must send the next [`Input::Tick`] at the latest.
    pub fn poll_timeout(&self) -> u64 {
        let mut t = self.next_heartbeat_ms.min(self.next_sync_ms).min(self.next_gc_ms);
        t = t.min(self.next_check_ms);
        t
    }

    // ----- reads ---------------------------------------------------------

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// The validated config in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The winning value of a key, with its siblings; `None` if absent or
    /// deleted.
    pub fn kv_get(&self, namespace: &Namespace, key: &Key) -> Option<KvEntry> {
        let sk = StateKey::Kv {
            namespace: namespace.clone(),
            key: key.clone(),
        };
        let stable = self.state.get(&sk).and_then(|ks| kv_entry(namespace, key, ks));
        self.with_canary(stable, namespace, key)
    }

    /// The running canary of a key, if any, and whether it targets this
    /// node.
    pub fn kv_canary(&self, namespace: &Namespace, key: &Key) -> Option<CanaryView> {
        let sk = StateKey::Canary {
            namespace: namespace.clone(),
            key: key.clone(),
        };
        self.state
            .get(&sk)
            .and_then(|ks| self.canary_view(namespace, key, ks))
    }

    /// Every running canary in `namespace`, in key order.
    pub fn kv_canaries(&self, namespace: &Namespace) -> Vec<CanaryView> {
        self.state
            .iter()
            .filter_map(|(k, ks)| match k {
                StateKey::Canary { namespace: ns, key } if ns == namespace => self.canary_view(ns, key, ks),
                _ => None,
            })
            .collect()
    }

    /// Whether a change to this key's canary can change what this node
    /// reads: its current or its latest replaced version targets this node.
    /// Nodes outside a canary's target see no change when it starts, moves
    /// or ends.
    pub fn canary_affects_me(&self, namespace: &Namespace, key: &Key) -> bool {
        let sk = StateKey::Canary {
            namespace: namespace.clone(),
            key: key.clone(),
        };
        let Some(ks) = self.state.get(&sk) else {
            return false;
        };
        let targets_me = |v: &Version| match &v.payload {
            Payload::Canary(c) => c.target.matches(&self.me, &self.info.tags),
            _ => false,
        };
        ks.live.iter().any(targets_me) || ks.history.first().is_some_and(targets_me)
    }

    fn canary_view(&self, namespace: &Namespace, key: &Key, ks: &KeyState) -> Option<CanaryView> {
        let w = ks.winner()?;
        let Payload::Canary(spec) = &w.payload else {
            return None;
        };
        Some(CanaryView {
            namespace: namespace.clone(),
            key: key.clone(),
            value: spec.value.clone(),
            target: spec.target.clone(),
            version: VersionInfo::of(w),
            active: spec.target.matches(&self.me, &self.info.tags),
        })
    }

    /// Attach the key's canary to a stable read, serving its value when it
    /// targets this node.
    fn with_canary(&self, stable: Option<KvEntry>, namespace: &Namespace, key: &Key) -> Option<KvEntry> {
        let Some(canary) = self.kv_canary(namespace, key) else {
            return stable;
        };
        match stable {
            Some(mut e) => {
                if canary.active {
                    e.value = canary.value.clone();
                }
                e.canary = Some(canary);
                Some(e)
            }
            None if canary.active => Some(KvEntry {
                namespace: namespace.clone(),
                key: key.clone(),
                value: canary.value.clone(),
                version: canary.version.clone(),
                siblings: Vec::new(),
                canary: Some(canary),
            }),
            None => None,
        }
    }

    /// Keys in `namespace` starting with `prefix`, in key order, skipping
    /// deleted ones; at most `limit`.
    pub fn kv_list(&self, namespace: &Namespace, prefix: &str, limit: usize) -> Vec<KvEntry> {
        let mut out = Vec::new();
        // A prefix that is itself a valid key is where the range starts. The
        // empty prefix and ones like "db/" are not valid keys (and no key
        // made of control characters is either, so there is no sentinel to
        // start from): scan from the beginning, the loop filters.
        let iter: Box<dyn Iterator<Item = (&StateKey, &KeyState)>> = match Key::new(prefix) {
            Ok(start) => Box::new(self.state.range_from(&StateKey::Kv {
                namespace: namespace.clone(),
                key: start,
            })),
            Err(_) => Box::new(self.state.iter()),
        };
        for (k, ks) in iter {
            let StateKey::Kv { namespace: ns, key } = k else {
                if out.is_empty() {
                    continue;
                }
                break;
            };
            if ns != namespace {
                if ns > namespace {
                    break;
                }
                continue;
            }
            if !key.as_str().starts_with(prefix) {
                if key.as_str() > prefix && !out.is_empty() {
                    break;
                }
                continue;
            }
            if let Some(e) = self.with_canary(kv_entry(ns, key, ks), ns, key) {
                out.push(e);
                if out.len() >= limit {
                    break;
                }
            }
        }
        // Keys that exist only as a canary targeting this node read like
        // any other key.
        let only_canary: Vec<KvEntry> = self
            .kv_canaries(namespace)
            .into_iter()
            .filter(|c| c.active && c.key.as_str().starts_with(prefix))
            .filter(|c| {
                let sk = StateKey::Kv {
                    namespace: namespace.clone(),
                    key: c.key.clone(),
                };
                self.state
                    .get(&sk)
                    .and_then(|ks| kv_entry(namespace, &c.key, ks))
                    .is_none()
            })
            .filter_map(|c| self.with_canary(None, namespace, &c.key))
            .collect();
        if !only_canary.is_empty() {
            out.extend(only_canary);
            out.sort_by(|a, b| a.key.cmp(&b.key));
            out.truncate(limit);
        }
        out
    }

    /// Every version held for a key, live first then history, with content.
    pub fn kv_history(&self, namespace: &Namespace, key: &Key) -> Vec<(VersionInfo, Option<Vec<u8>>, bool)> {
        let sk = StateKey::Kv {
            namespace: namespace.clone(),
            key: key.clone(),
        };
        let Some(ks) = self.state.get(&sk) else {
            return Vec::new();
        };
        let live = ks.live.iter().map(|v| (v, true));
        let hist = ks.history.iter().map(|v| (v, false));
        live.chain(hist)
            .map(|(v, is_live)| {
                let value = match &v.payload {
                    Payload::Value(b) => Some(b.clone()),
                    _ => None,
                };
                (VersionInfo::of(v), value, is_live)
            })
            .collect()
    }

    /// Instances of a service matching `query`, by instance id.
    pub fn services(
        &self,
        namespace: &Namespace,
        service: &ServiceName,
        query: &ServiceQuery,
    ) -> Vec<ServiceView> {
        let mut out = Vec::new();
        for (k, ks) in self.state.iter() {
            let StateKey::Service {
                namespace: ns,
                service: svc,
                instance,
            } = k
            else {
                continue;
            };
            if ns != namespace || svc != service {
                continue;
            }
            let Some(view) = self.service_view(ns, svc, instance, ks) else {
                continue;
            };
            if !query.tags.iter().all(|t| view.spec.tags.contains(t)) {
                continue;
            }
            if query.healthy_only && !view.health.is_healthy() {
                continue;
            }
            out.push(view);
        }
        out
    }

    /// Names of services with at least one instance in `namespace`.
    pub fn service_names(&self, namespace: &Namespace) -> Vec<ServiceName> {
        let mut names = BTreeSet::new();
        for (k, ks) in self.state.iter() {
            if let StateKey::Service {
                namespace: ns,
                service,
                ..
            } = k
            {
                if ns == namespace && !ks.is_deleted() {
                    names.insert(service.clone());
                }
            }
        }
        names.into_iter().collect()
    }

    /// Registered instances of every namespace and service, counted by
    /// health as reads report it (an instance of a dead or departed owner
    /// counts as critical). For metrics.
    pub fn instances_by_health(&self) -> BTreeMap<HealthStatus, u64> {
        let mut counts = BTreeMap::new();
        for (k, ks) in self.state.iter() {
            if let StateKey::Service {
                namespace,
                service,
                instance,
            } = k
            {
                if let Some(view) = self.service_view(namespace, service, instance, ks) {
                    *counts.entry(view.health).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    fn service_view(
        &self,
        ns: &Namespace,
        svc: &ServiceName,
        inst: &InstanceId,
        ks: &KeyState,
    ) -> Option<ServiceView> {
        let v = ks.winner()?;
        let Payload::Instance(i) = &v.payload else {
            return None;
        };
        let owner_gone = self
            .members
            .get(&i.owner)
            .is_some_and(|m| matches!(m.status, MemberStatus::Dead | MemberStatus::Left));
        Some(ServiceView {
            namespace: ns.clone(),
            service: svc.clone(),
            instance: inst.clone(),
            spec: i.spec.clone(),
            owner: i.owner,
            reported_health: i.health,
            health: if owner_gone {
                HealthStatus::Critical
            } else {
                i.health
            },
            version: VersionInfo::of(v),
        })
    }

    /// Every member this node knows, by id.
    pub fn members(&self) -> Vec<Member> {
        self.members.iter().cloned().collect()
    }

    /// Every member this node knows, by id, without copying.
    pub fn member_records(&self) -> impl Iterator<Item = &Member> {
        self.members.iter()
    }

    /// One member's record.
    pub fn member(&self, node: &NodeId) -> Option<&Member> {
        self.members.get(node)
    }

    /// This node's own record.
    pub fn local_member(&self) -> Member {
        self.members
            .get(&self.me)
            .cloned()
            .unwrap_or_else(|| self.own_record(MemberStatus::Alive))
    }

    /// Digest of the replicated state.
    pub fn digest(&self) -> Digest {
        self.state.digest()
    }

    /// Digest of the membership view.
    pub fn members_hash(&self) -> u64 {
        self.members.hash()
    }

    /// The replicated state (read-only).
    pub fn state(&self) -> &ReplicatedState {
        &self.state
    }

    /// The latest watch revision.
    pub fn revision(&self) -> u64 {
        self.watch.revision()
    }

    /// Watch events after `since`, or [`SnapshotRequired`] if compacted.
    pub fn watch_since(&self, since: u64) -> Result<Vec<WatchEvent>, SnapshotRequired> {
        self.watch.since(since)
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Current phi of a peer, if tracked.
    pub fn phi(&self, node: &NodeId) -> Option<f64> {
        self.peers.get(node).map(|p| p.detector.phi(self.now_ms))
    }

    /// When this node last saw equal state with each peer (after a sync).
    pub fn last_converged(&self) -> BTreeMap<NodeId, u64> {
        self.last_converged.iter().map(|(n, t)| (*n, *t)).collect()
    }

    /// The heartbeat interval in force (grows with cluster size).
    pub fn heartbeat_interval_ms(&self) -> u64 {
        self.interval_for(self.members_not_gone())
    }

    fn members_not_gone(&self) -> u64 {
        self.members
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .count() as u64
    }

    /// The effective heartbeat interval with `alive` members.
    fn interval_for(&self, alive: u64) -> u64 {
        let fanin = u64::from(self.cfg.heartbeat_fanin);
        self.cfg.heartbeat_interval_ms * alive.div_ceil(fanin).max(1)
    }

    /// Whether this node has left.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Number of syncs in flight.
    pub fn inflight_syncs(&self) -> usize {
        self.syncs.len()
    }

    /// Apply reloadable settings: heartbeat interval, phi threshold, suspect
    /// timeout, sync intervals, drift limit. Other fields must be unchanged.
    pub fn reconfigure(&mut self, config: Config) -> Result<(), ConfigError> {
        let cfg = config.validated()?;
        let fixed = |field: &'static str, same: bool| {
            if same {
                Ok(())
            } else {
                Err(ConfigError {
                    field,
                    reason: "cannot change while running; restart the node".into(),
                })
            }
        };
        fixed("cluster", cfg.cluster == self.cfg.cluster)?;
        fixed("max_value_bytes", cfg.max_value_bytes == self.cfg.max_value_bytes)?;
        fixed(
            "watch_log_capacity",
            cfg.watch_log_capacity == self.cfg.watch_log_capacity,
        )?;
        self.clock.set_max_drift(cfg.max_clock_drift_ms);
        self.state.set_history_limit(cfg.history_limit);
        self.next_heartbeat_ms = self
            .next_heartbeat_ms
            .min(self.now_ms + cfg.heartbeat_interval_ms);
        let threshold_changed = cfg.phi_threshold != self.cfg.phi_threshold;
        self.cfg = cfg;
        if threshold_changed {
            for p in self.peers.values_mut() {
                p.deadline = p.detector.suspect_deadline_ms(self.cfg.phi_threshold);
            }
        }
        Ok(())
    }

    // ----- inputs --------------------------------------------------------

    fn on_tick(&mut self) {
        let now = self.now_ms;
        if self.left {
            self.next_heartbeat_ms = u64::MAX / 2;
            self.next_sync_ms = u64::MAX / 2;
            self.next_check_ms = u64::MAX / 2;
            return;
        }
        if now >= self.next_heartbeat_ms {
            self.send_heartbeat();
            let interval = self.heartbeat_interval_ms();
            let jitter = self.rng.gen_range(0..=interval / 10);
            self.next_heartbeat_ms = now + interval - interval / 20 + jitter;
        }
        if now >= self.next_check_ms {
            if now >= self.next_failure_check_ms {
                self.check_failures();
                // Peers heartbeat once per *effective* interval (it grows
                // with the cluster), so checking a quarter of it is as
                // precise as checking every base quarter, and keeps the
                // O(members) scan flat per node as the cluster grows (the
                // simulator measured it dominating at 1,000 nodes).
                // Jittered (half to one and a half quarters) so that the
                // scans of nodes started together drift apart.
                let quarter = (self.heartbeat_interval_ms() / 4).max(10);
                self.next_failure_check_ms = now + quarter / 2 + self.rng.gen_range(0..=quarter);
            }
            self.check_ttls();
            self.expire_syncs();
            self.next_check_ms = now + (self.cfg.heartbeat_interval_ms / 4).max(10);
        }
        if now >= self.next_sync_ms {
            let candidates: Vec<NodeId> = self
                .members
                .iter()
                .filter(|m| m.node != self.me && m.status == MemberStatus::Alive)
                .map(|m| m.node)
                .collect();
            if !candidates.is_empty() {
                let peer = candidates[self.rng.gen_range(0..candidates.len())];
                self.want_sync(peer);
            }
            let jitter = self.rng.gen_range(0..=self.cfg.sync_interval_ms / 5);
            self.next_sync_ms = now + self.cfg.sync_interval_ms - self.cfg.sync_interval_ms / 10 + jitter;
        }
        // Serve syncs that were wanted but rate-limited.
        let wanted: Vec<NodeId> = self.sync_wanted.iter().copied().collect();
        for peer in wanted {
            if self.syncs.len() >= self.cfg.max_inflight_syncs {
                break;
            }
            if self.sync_allowed(peer) {
                self.sync_wanted.remove(&peer);
                self.start_sync(peer);
            }
        }
        self.try_digest_sync();
        if now >= self.next_gc_ms {
            let horizon = now.saturating_sub(self.cfg.tombstone_ttl_ms);
            let graves = now.saturating_sub(self.cfg.grave_ttl_ms);
            let collected = self.state.collect_tombstones(horizon, graves);
            self.counters.tombstones_collected += collected.len() as u64;
            for k in collected {
                self.owned_heartbeats.remove(&k);
            }
            self.next_gc_ms = now + self.cfg.gc_interval_ms;
        }
    }

    fn on_gossip(&mut self, from: NodeId, bytes: &[u8]) {
        if from == self.me {
            return;
        }
        let Some(msg) = self.decode(bytes) else {
            return;
        };
        match msg {
            Message::Heartbeat(hb) => self.on_heartbeat(from, hb),
            Message::Delta(d) => {
                for (k, v) in d.versions {
                    self.merge_remote(k, v);
                }
                for m in d.members {
                    self.merge_member(m);
                }
            }
            other => self.reject(&format!("unexpected_{}_on_gossip", other.kind().as_str())),
        }
    }

    fn on_heartbeat(&mut self, from: NodeId, hb: Heartbeat) {
        if hb.node != from {
            self.reject("heartbeat_spoofed");
            return;
        }
        if self.clock.observe(hb.hlc, self.now_ms).is_err() {
            self.reject("clock_drift");
            return;
        }
        self.counters.heartbeats_received += 1;
        let now = self.now_ms;
        let interval = hb.interval_ms.clamp(10, 3_600_000);
        let peer = self.peers.entry(from).or_insert_with(|| Peer {
            detector: PhiDetector::new(interval, 100),
            deadline: None,
            held: None,
        });
        let det = &mut peer.detector;
        // The sender's interval changed (cluster grew or shrank): start over.
        let mean = det.mean_ms();
        if (mean - interval as f64).abs() > interval as f64 * 0.5 && det.last_arrival_ms().is_some() {
            *det = PhiDetector::new(interval, 100);
        }
        det.heartbeat(now);
        peer.deadline = det.suspect_deadline_ms(self.cfg.phi_threshold);
        // The sender's record: merged when announced in full; a newer
        // incarnation (or status) than ours without the info means we
        // missed its announcement: anti-entropy brings the record.
        let claimed = (hb.incarnation, hb.status);
        let newer = peer.held.is_none_or(|h| claimed > h);
        let mut behind = false;
        if let Some(m) = hb.member() {
            if peer.held.is_none_or(|h| claimed >= h) {
                self.merge_member(m);
            }
        } else {
            behind = newer;
        }
        let mine = self.state.digest();
        if behind || hb.digest != mine || hb.members_hash != self.members.hash() {
            self.digest_sync = Some(from);
            self.try_digest_sync();
        } else {
            self.last_converged.insert(from, now);
        }
    }

    fn on_request(&mut self, from: NodeId, id: u64, bytes: &[u8]) {
        let Some(msg) = self.decode(bytes) else {
            return;
        };
        match msg {
            Message::SyncRequest(req) => {
                let Some(resp) = self.build_response(&req) else {
                    return;
                };
                self.counters.syncs_served += 1;
                let bytes = self.encode(&Message::SyncResponse(resp));
                self.out.push(Action::Respond { id, bytes });
            }
            Message::SyncPush(push) => {
                let mut applied = 0;
                for (k, v) in push.versions {
                    if self.merge_remote(k, v) {
                        applied += 1;
                    }
                }
                for m in push.members {
                    self.merge_member(m);
                }
                // Their knowledge, judged against ours now (their versions in).
                let k = push.knowledge;
                let theirs =
                    match PeerKnowledge::new(self.state.knowledge(), &k.buckets.0, &k.shipped, k.ranges) {
                        Ok(t) => t,
                        Err(reason) => {
                            self.reject(reason);
                            return;
                        }
                    };
                let doomed = self.state.seen_and_dropped(&push.manifest, &theirs);
                self.counters.dropped_obsolete += self.state.drop_versions(&doomed) as u64;
                // Our half: what they have not seen.
                let (versions, complete) = self.state.missing_for(&theirs, self.cfg.sync_budget_bytes);
                let ack = SyncAck {
                    applied,
                    versions,
                    complete,
                };
                let bytes = self.encode(&Message::SyncAck(ack));
                self.out.push(Action::Respond { id, bytes });
                self.last_converged.insert(from, self.now_ms);
            }
            other => self.reject(&format!("unexpected_{}_as_request", other.kind().as_str())),
        }
    }

    fn on_response(&mut self, from: NodeId, id: u64, bytes: &[u8]) {
        let Some(sync) = self.syncs.remove(&id) else {
            self.reject("unexpected_response");
            return;
        };
        if sync.peer != from {
            self.reject("response_from_wrong_peer");
            return;
        }
        let Some(msg) = self.decode(bytes) else {
            self.counters.syncs_failed += 1;
            return;
        };
        match (sync.phase, msg) {
            (SyncPhase::Pull, Message::SyncResponse(resp)) => self.on_sync_response(from, resp),
            (SyncPhase::Push(after), Message::SyncAck(ack)) => self.on_sync_ack(from, ack, *after),
            (_, other) => {
                self.counters.syncs_failed += 1;
                self.reject(&format!("unexpected_{}_as_response", other.kind().as_str()));
            }
        }
    }

    fn on_sync_response(&mut self, from: NodeId, resp: SyncResponse) {
        if resp.buckets.0.len() != BUCKETS {
            self.counters.syncs_failed += 1;
            self.reject("bad_bucket_count");
            return;
        }
        if resp
            .knowledge
            .ranges
            .iter()
            .any(|(_, r)| r.max() > MAX_REMOTE_SEQ)
        {
            self.counters.syncs_failed += 1;
            self.reject("knowledge_seq_out_of_range");
            return;
        }
        for m in resp.members {
            self.merge_member(m);
        }
        let k = resp.knowledge;
        let theirs = match PeerKnowledge::new(self.state.knowledge(), &k.buckets.0, &k.shipped, k.ranges) {
            Ok(t) => t,
            Err(reason) => {
                self.counters.syncs_failed += 1;
                self.reject(reason);
                return;
            }
        };
        // What they have seen and dropped: dropped once their versions are
        // in (in the ack), so a key never reads as missing in between.
        let doomed = self.state.seen_and_dropped(&resp.manifest, &theirs);
        // Our half: what they have not seen, our knowledge where it differs
        // from theirs, and our manifest where the state still differs.
        let (versions, _complete) = self.state.missing_for(&theirs, self.cfg.sync_budget_bytes);
        let differing_k = theirs.differing();
        let knowledge = KnowledgeSummary {
            buckets: Hashes(self.state.knowledge().bucket_hashes(differing_k.len())),
            shipped: (0..differing_k.len() as u16)
                .filter(|b| differing_k[*b as usize])
                .collect(),
            ranges: self.state.knowledge().restricted(&differing_k),
        };
        let differing: Vec<u16> = self
            .state
            .bucket_hashes()
            .iter()
            .zip(resp.buckets.0.iter())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i as u16)
            .collect();
        let manifest = self.state.manifest(&differing);
        // Our records in the member buckets that still differ from theirs
        // (after taking theirs in, a bucket that differs holds something
        // they lack).
        let n = resp.member_buckets.0.len();
        let members = if valid_member_bucket_count(n) {
            let differing: Vec<bool> = self
                .members
                .bucket_hashes(n)
                .iter()
                .zip(&resp.member_buckets.0)
                .map(|(a, b)| a != b)
                .collect();
            if differing.iter().any(|d| *d) {
                self.members.in_buckets(n, &differing)
            } else {
                Vec::new()
            }
        } else {
            Vec::new()
        };
        if theirs.all_same() && manifest.is_empty() && members.is_empty() {
            // Same knowledge and same state: nothing either way.
            self.counters.syncs_completed += 1;
            self.last_converged.insert(from, self.now_ms);
            return;
        }
        let push = SyncPush {
            versions,
            knowledge,
            manifest,
            members,
        };
        let bytes = self.encode(&Message::SyncPush(push));
        let id = self.next_request_id;
        self.next_request_id += 1;
        let after = AfterAck {
            doomed,
            adopt: theirs.shipped().clone(),
        };
        self.syncs.insert(
            id,
            InflightSync {
                peer: from,
                started_ms: self.now_ms,
                phase: SyncPhase::Push(Box::new(after)),
            },
        );
        self.out.push(Action::SendRequest { to: from, id, bytes });
    }

    fn on_sync_ack(&mut self, from: NodeId, ack: SyncAck, after: AfterAck) {
        let mut clean = true;
        for (k, v) in ack.versions {
            if !self.merge_remote(k, v) && !self.last_merge_ok {
                clean = false;
            }
        }
        if ack.complete && clean && after.adopt.iter().all(|(_, r)| r.max() <= MAX_REMOTE_SEQ) {
            self.counters.dropped_obsolete += self.state.drop_versions(&after.doomed) as u64;
            self.state.union_knowledge(&after.adopt);
        } else {
            // More to fetch: go again as soon as the rate limit allows.
            self.last_sync_with.remove(&from);
            self.sync_wanted.insert(from);
        }
        self.counters.syncs_completed += 1;
        self.last_converged.insert(from, self.now_ms);
    }

    /// The answer to a sync request; `None` (nothing sent) if malformed.
    fn build_response(&mut self, req: &SyncRequest) -> Option<SyncResponse> {
        let n = req.knowledge.buckets.0.len();
        if !valid_knowledge_bucket_count(n) {
            self.reject("bad_knowledge_buckets");
            return None;
        }
        // Our knowledge: hashes, and ranges where they differ.
        let mine = self.state.knowledge().bucket_hashes(n);
        let differing_k: Vec<bool> = mine
            .iter()
            .zip(&req.knowledge.buckets.0)
            .map(|(a, b)| a != b)
            .collect();
        let knowledge = KnowledgeSummary {
            shipped: (0..n as u16).filter(|b| differing_k[*b as usize]).collect(),
            ranges: self.state.knowledge().restricted(&differing_k),
            buckets: Hashes(mine),
        };
        let buckets = self.state.bucket_hashes().to_vec();
        let differing: Vec<u16> = if req.buckets.0.len() == BUCKETS {
            buckets
                .iter()
                .zip(req.buckets.0.iter())
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, _)| i as u16)
                .collect()
        } else {
            Vec::new()
        };
        // Members: only the records of the buckets that differ. A request
        // without valid buckets gets every record.
        let (members, member_buckets) = if req.members_hash == self.members.hash() {
            (Vec::new(), Vec::new())
        } else {
            let n = req.member_buckets.0.len();
            if valid_member_bucket_count(n) {
                let mine = self.members.bucket_hashes(n);
                let differing: Vec<bool> = mine
                    .iter()
                    .zip(&req.member_buckets.0)
                    .map(|(a, b)| a != b)
                    .collect();
                (self.members.in_buckets(n, &differing), mine)
            } else {
                (self.members(), Vec::new())
            }
        };
        Some(SyncResponse {
            knowledge,
            manifest: self.state.manifest(&differing),
            buckets: Hashes(buckets),
            members,
            member_buckets: Hashes(member_buckets),
        })
    }

    fn on_command(&mut self, id: u64, command: Command) {
        let result = self.run_command(command);
        if result.is_ok() {
            self.pending.commands.push(id);
        }
        self.out.push(Action::Reply { id, result });
    }

    fn run_command(&mut self, command: Command) -> Result<CommandOutput, CommandError> {
        if self.left {
            return Err(CommandError::Left);
        }
        match command {
            Command::Put {
                namespace,
                key,
                value,
                expect,
            } => {
                if value.len() > self.cfg.max_value_bytes {
                    return Err(CommandError::TooLarge {
                        size: value.len(),
                        max: self.cfg.max_value_bytes,
                    });
                }
                let sk = StateKey::Kv { namespace, key };
                self.check_expect(&sk, expect.as_ref())?;
                Ok(self.write_local(sk, Payload::Value(value)))
            }
            Command::Delete {
                namespace,
                key,
                expect,
            } => {
                let sk = StateKey::Kv { namespace, key };
                if self.state.get(&sk).is_none_or(|ks| ks.is_deleted()) && expect != Some(Expect::Absent) {
                    return Err(CommandError::NotFound);
                }
                self.check_expect(&sk, expect.as_ref())?;
                Ok(self.write_local(sk, Payload::Tombstone))
            }
            Command::Rollback { namespace, key, to } => {
                let sk = StateKey::Kv { namespace, key };
                let payload = self
                    .state
                    .get(&sk)
                    .and_then(|ks| ks.all().find(|v| v.id() == to))
                    .map(|v| v.payload.clone())
                    .ok_or(CommandError::NotFound)?;
                Ok(self.write_local(sk, payload))
            }
            Command::Resolve { namespace, key, keep } => {
                let sk = StateKey::Kv { namespace, key };
                let payload = self
                    .state
                    .get(&sk)
                    .and_then(|ks| ks.live.iter().find(|v| v.id() == keep))
                    .map(|v| v.payload.clone())
                    .ok_or(CommandError::NotFound)?;
                Ok(self.write_local(sk, payload))
            }
            Command::RegisterService {
                namespace,
                service,
                instance,
                spec,
            } => {
                spec.validate().map_err(CommandError::Invalid)?;
                let sk = StateKey::Service {
                    namespace,
                    service,
                    instance,
                };
                if let Some(Payload::Instance(cur)) =
                    self.state.get(&sk).and_then(|ks| ks.winner()).map(|v| &v.payload)
                {
                    if cur.owner != self.me && !self.owner_gone(&cur.owner) {
                        return Err(CommandError::NotOwner(cur.owner.to_string()));
                    }
                }
                let inst = ServiceInstance {
                    spec,
                    owner: self.me,
                    health: HealthStatus::Passing,
                };
                self.owned_heartbeats.insert(sk.clone(), self.now_ms);
                Ok(self.write_local(sk, Payload::Instance(inst)))
            }
            Command::HeartbeatService {
                namespace,
                service,
                instance,
                health,
            } => {
                let sk = StateKey::Service {
                    namespace,
                    service,
                    instance,
                };
                let cur = match self.state.get(&sk).and_then(|ks| ks.winner()).map(|v| &v.payload) {
                    Some(Payload::Instance(i)) => i.clone(),
                    _ => return Err(CommandError::NotFound),
                };
                if cur.owner != self.me {
                    return Err(CommandError::NotOwner(cur.owner.to_string()));
                }
                self.owned_heartbeats.insert(sk.clone(), self.now_ms);
                let want = health.unwrap_or(HealthStatus::Passing);
                if cur.health == want {
                    return Ok(CommandOutput::Done);
                }
                let inst = ServiceInstance { health: want, ..cur };
                Ok(self.write_local(sk, Payload::Instance(inst)))
            }
            Command::DeregisterService {
                namespace,
                service,
                instance,
            } => {
                let sk = StateKey::Service {
                    namespace,
                    service,
                    instance,
                };
                if self.state.get(&sk).is_none_or(|ks| ks.is_deleted()) {
                    return Err(CommandError::NotFound);
                }
                self.owned_heartbeats.remove(&sk);
                Ok(self.write_local(sk, Payload::Tombstone))
            }
            Command::SetCanary {
                namespace,
                key,
                value,
                target,
            } => {
                if value.len() > self.cfg.max_value_bytes {
                    return Err(CommandError::TooLarge {
                        size: value.len(),
                        max: self.cfg.max_value_bytes,
                    });
                }
                target.validate().map_err(CommandError::Invalid)?;
                let sk = StateKey::Canary { namespace, key };
                Ok(self.write_local(sk, Payload::Canary(CanarySpec { value, target })))
            }
            Command::PromoteCanary { namespace, key } => {
                let canary = self.kv_canary(&namespace, &key).ok_or(CommandError::NotFound)?;
                let out = self.write_local(
                    StateKey::Kv {
                        namespace: namespace.clone(),
                        key: key.clone(),
                    },
                    Payload::Value(canary.value),
                );
                self.write_local(StateKey::Canary { namespace, key }, Payload::Tombstone);
                Ok(out)
            }
            Command::AbortCanary { namespace, key } => {
                if self.kv_canary(&namespace, &key).is_none() {
                    return Err(CommandError::NotFound);
                }
                Ok(self.write_local(StateKey::Canary { namespace, key }, Payload::Tombstone))
            }
            Command::SetInfo(info) => {
                if info.tags != self.info.tags {
                    // Which canaries target this node may change: readers of
                    // those keys hear about it like any other change.
                    self.retargeted = self
                        .state
                        .iter()
                        .filter(|(k, _)| matches!(k, StateKey::Canary { .. }))
                        .map(|(k, _)| k.clone())
                        .collect();
                }
                self.info = info;
                self.incarnation += 1;
                let rec = self.own_record(MemberStatus::Alive);
                self.members.merge(rec.clone());
                self.publish_members(vec![rec]);
                Ok(CommandOutput::Done)
            }
            Command::Leave => {
                let rec = self.own_record(MemberStatus::Left);
                self.members.merge(rec.clone());
                self.publish_members(vec![rec]);
                self.left = true;
                Ok(CommandOutput::Done)
            }
        }
    }

    fn on_persist_failed(&mut self, batch: u64, reason: String) {
        let Some((id, pending)) = self.last_batch.take() else {
            return;
        };
        if id != batch {
            self.last_batch = Some((id, pending));
            return;
        }
        self.counters.persist_failures += 1;
        for (k, dot) in pending.applied.iter().rev() {
            self.state.unapply(k, dot);
        }
        for cmd in pending.commands {
            self.out.push(Action::Reply {
                id: cmd,
                result: Err(CommandError::NotDurable(reason.clone())),
            });
        }
    }

    // ----- helpers -------------------------------------------------------

    fn own_record(&self, status: MemberStatus) -> Member {
        Member {
            node: self.me,
            info: self.info.clone(),
            incarnation: self.incarnation,
            status,
        }
    }

    fn owner_gone(&self, owner: &NodeId) -> bool {
        self.members
            .get(owner)
            .is_some_and(|m| matches!(m.status, MemberStatus::Dead | MemberStatus::Left))
    }

    fn check_expect(&self, sk: &StateKey, expect: Option<&Expect>) -> Result<(), CommandError> {
        let ks = self.state.get(sk);
        let winner = ks.and_then(|ks| ks.winner());
        let current = winner.filter(|v| !v.payload.is_tombstone()).map(|v| v.id());
        match expect {
            None => Ok(()),
            Some(Expect::Absent) if current.is_none() => Ok(()),
            Some(Expect::Version(id)) if winner.is_some_and(|w| w.id() == *id) => Ok(()),
            Some(_) => Err(CommandError::Conflict { current }),
        }
    }

    fn write_local(&mut self, sk: StateKey, payload: Payload) -> CommandOutput {
        let mut ctx = self.state.get(&sk).map(KeyState::context).unwrap_or_default();
        let dot = Dot {
            node: self.me,
            seq: self.state.next_seq(&self.me),
        };
        ctx.add(dot);
        let hlc = self.clock.tick(self.now_ms);
        let checksum = payload.checksum();
        let v = Version {
            dot,
            ctx,
            hlc,
            payload,
            checksum,
            signature: None,
        };
        let outcome = self.state.merge(sk.clone(), v.clone());
        debug_assert_eq!(outcome, MergeOutcome::Applied, "a fresh local dot is always new");
        debug_assert!(
            self.state
                .get(&sk)
                .and_then(|ks| ks.winner())
                .is_some_and(|w| w.dot == dot),
            "a local write supersedes every live version, so it is the winner"
        );
        self.counters.writes += 1;
        self.pending.applied.push((sk.clone(), dot));
        self.pending.local_keys.insert(sk.clone());
        let delta = Delta {
            versions: vec![(sk, v)],
            members: Vec::new(),
        };
        let bytes = self.encode(&Message::Delta(delta));
        self.counters.deltas_sent += 1;
        self.out.push(Action::Publish {
            topic: Topic::Delta,
            bytes,
        });
        CommandOutput::Written {
            version: dot_id(&dot),
            hlc,
        }
    }

    /// Validate and merge a version from a peer. Returns whether it was new.
    fn merge_remote(&mut self, key: StateKey, v: Version) -> bool {
        self.last_merge_ok = true;
        if let Err(reason) = self.validate_version(&key, &v) {
            self.last_merge_ok = false;
            self.reject(reason);
            return false;
        }
        if v.dot.node == self.me && v.dot.seq >= self.state.next_seq(&self.me) {
            // A peer holds our own writes that we do not: our data was lost
            // or restored from an old backup. Taking them back moves our
            // counter past them, so no dot is ever reused.
            tracing::warn!(seq = v.dot.seq, "peer holds own writes newer than local state");
        }
        let _ = self.clock.observe(v.hlc, self.now_ms);
        match self.state.merge(key, v) {
            MergeOutcome::Applied => {
                self.counters.merged += 1;
                true
            }
            MergeOutcome::Duplicate => {
                self.counters.duplicates += 1;
                false
            }
            MergeOutcome::Obsolete => {
                self.counters.obsolete += 1;
                false
            }
        }
    }

    fn validate_version(&self, key: &StateKey, v: &Version) -> Result<(), &'static str> {
        if v.dot.seq == 0 {
            return Err("version_zero_seq");
        }
        if v.dot.seq > MAX_REMOTE_SEQ {
            return Err("version_seq_out_of_range");
        }
        if !v.ctx.is_well_formed() || v.ctx.dots().len() > 4096 {
            return Err("version_bad_context");
        }
        if !v
            .ctx
            .dots()
            .iter()
            .any(|d| d.node == v.dot.node && d.seq == v.dot.seq)
        {
            return Err("version_context_misses_own_dot");
        }
        match (key, &v.payload) {
            (StateKey::Kv { .. }, Payload::Value(b)) if b.len() > self.cfg.max_value_bytes => {
                return Err("version_value_too_large")
            }
            (StateKey::Kv { .. }, Payload::Value(_) | Payload::Tombstone) => {}
            (StateKey::Service { .. }, Payload::Instance(i)) => {
                if i.spec.validate().is_err() {
                    return Err("version_bad_instance");
                }
            }
            (StateKey::Service { .. }, Payload::Tombstone) => {}
            (StateKey::Canary { .. }, Payload::Canary(c)) => {
                if c.value.len() > self.cfg.max_value_bytes {
                    return Err("version_value_too_large");
                }
                if c.target.validate().is_err() {
                    return Err("version_bad_canary");
                }
            }
            (StateKey::Canary { .. }, Payload::Tombstone) => {}
            _ => return Err("version_payload_kind_mismatch"),
        }
        if v.payload.checksum() != v.checksum {
            return Err("version_checksum_mismatch");
        }
        if v.signature.as_ref().is_some_and(|s| s.len() > 256) {
            return Err("version_signature_too_large");
        }
        if self.clock.check(v.hlc, self.now_ms).is_err() {
            return Err("clock_drift");
        }
        Ok(())
    }

    fn merge_member(&mut self, m: Member) {
        if m.node == self.me {
            let mine = self.local_member();
            if !self.left && mine.is_superseded_by(&m) {
                // Someone thinks we are suspect, dead or gone: refute.
                // Saturating: a peer may claim incarnation u64::MAX.
                self.incarnation = self.incarnation.max(m.incarnation).saturating_add(1);
                let rec = self.own_record(MemberStatus::Alive);
                self.members.merge(rec.clone());
                self.publish_members(vec![rec]);
            }
            return;
        }
        let now = self.now_ms;
        let (node, status, incarnation) = (m.node, m.status, m.incarnation);
        if self.members.merge(m).is_some() {
            match status {
                MemberStatus::Suspect => {
                    self.suspect_since.entry(node).or_insert(now);
                }
                _ => {
                    self.suspect_since.remove(&node);
                }
            }
            let threshold = self.cfg.phi_threshold;
            let peer = self.track(node, now);
            // Only a node raises its own incarnation as alive (a refutation,
            // a restart, new info): word from it, as good as a heartbeat.
            // Without this, observers still waiting for its next heartbeat
            // suspect the new incarnation too, and it refutes again.
            if status == MemberStatus::Alive && peer.held.is_some_and(|(i, _)| incarnation > i) {
                peer.detector.reset(now);
                peer.deadline = peer.detector.suspect_deadline_ms(threshold);
            }
            peer.held = Some((incarnation, status));
        }
    }

    /// The peer entry of a member, created (its detector starting now) the
    /// first time.
    fn track(&mut self, node: NodeId, now: u64) -> &mut Peer {
        let interval = self.cfg.heartbeat_interval_ms;
        let threshold = self.cfg.phi_threshold;
        self.peers.entry(node).or_insert_with(|| {
            let mut d = PhiDetector::new(interval, 100);
            d.reset(now);
            Peer {
                deadline: d.suspect_deadline_ms(threshold),
                detector: d,
                held: None,
            }
        })
    }

    /// How long past its own deadline this node waits before declaring
    /// `node` suspect (or dead): a share, fixed per pair of ids, of a
    /// spread that grows with the cluster up to half a heartbeat interval.
    /// Every observer of a silent node reaches its deadline at about the
    /// same time; staggered, the first declarations reach the others
    /// before most of them declare, and they adopt those instead of each
    /// gossiping their own. The first observer's detection time barely
    /// moves (the least of many shares is small).
    fn declaration_delay_ms(&self, node: &NodeId, spread_ms: u64) -> u64 {
        if spread_ms == 0 {
            return 0;
        }
        let mut pair = [0u8; 64];
        pair[..32].copy_from_slice(self.me.as_bytes());
        pair[32..].copy_from_slice(node.as_bytes());
        xxhash_rust::xxh3::xxh3_64(&pair) % spread_ms
    }

    fn check_failures(&mut self) {
        let now = self.now_ms;
        let mut changed = Vec::new();
        let alive = self.members_not_gone();
        let spread = self.interval_for(alive) / 2 * alive.min(16) / 16;
        for (node, peer) in &self.peers {
            let Some((_, status)) = peer.held else {
                continue;
            };
            let delay = self.declaration_delay_ms(node, spread);
            let silent = peer.deadline.is_some_and(|d| now >= d.saturating_add(delay));
            if !silent || !matches!(status, MemberStatus::Alive | MemberStatus::Suspect) || *node == self.me {
                continue;
            }
            let (Some(m), det) = (self.members.get(node), &peer.detector) else {
                continue;
            };
            match m.status {
                MemberStatus::Alive if silent => {
                    tracing::debug!(me = %self.me.short(), peer = %m.node.short(), last = ?det.last_arrival_ms().map(|l| now - l), mean = det.mean_ms(), "suspecting");
                    changed.push(Member {
                        status: MemberStatus::Suspect,
                        ..m.clone()
                    });
                }
                MemberStatus::Suspect if silent => {
                    let since = self.suspect_since.get(&m.node).copied().unwrap_or(now);
                    if now.saturating_sub(since) >= self.cfg.suspect_timeout_ms.saturating_add(delay) {
                        changed.push(Member {
                            status: MemberStatus::Dead,
                            ..m.clone()
                        });
                    }
                }
                _ => {}
            }
        }
        // In id order, whatever the order of the peer table.
        changed.sort_by_key(|m| m.node);
        for rec in &changed {
            debug_assert!(
                rec.node != self.me,
                "a node never declares itself suspect or dead"
            );
            self.merge_member(rec.clone());
        }
        if !changed.is_empty() {
            self.publish_members(changed);
        }
    }

    fn check_ttls(&mut self) {
        let now = self.now_ms;
        let mut lapsed = Vec::new();
        for (sk, last) in &self.owned_heartbeats {
            let Some(Payload::Instance(i)) =
                self.state.get(sk).and_then(|ks| ks.winner()).map(|v| &v.payload)
            else {
                continue;
            };
            if i.owner != self.me || i.health == HealthStatus::Critical {
                continue;
            }
            if let Some(ttl) = i.spec.ttl_ms {
                if now.saturating_sub(*last) > ttl {
                    lapsed.push((sk.clone(), i.clone()));
                }
            }
        }
        for (sk, inst) in lapsed {
            let inst = ServiceInstance {
                health: HealthStatus::Critical,
                ..inst
            };
            self.write_local(sk, Payload::Instance(inst));
        }
    }

    fn expire_syncs(&mut self) {
        let now = self.now_ms;
        let timeout = self.cfg.sync_timeout_ms;
        let expired: Vec<u64> = self
            .syncs
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.started_ms) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.syncs.remove(&id);
            self.counters.syncs_failed += 1;
        }
    }

    fn sync_allowed(&self, peer: NodeId) -> bool {
        if self.syncs.values().any(|s| s.peer == peer) {
            return false;
        }
        match self.last_sync_with.get(&peer) {
            Some(t) => self.now_ms.saturating_sub(*t) >= self.cfg.sync_min_interval_ms,
            None => true,
        }
    }

    /// Start a sync with the latest peer whose heartbeat digest differed,
    /// at most once per `sync_min_interval_ms` for the whole node. At
    /// hundreds of nodes a node hears tens of heartbeats a second and, with
    /// writes in flight, a good share of their digests differ for a few
    /// milliseconds only: one sync per interval repairs real divergence as
    /// fast (any peer that differs will do), while a sync per mismatching
    /// peer kept every node syncing back to back (found by the simulator).
    fn try_digest_sync(&mut self) {
        let Some(peer) = self.digest_sync else {
            return;
        };
        if self.left {
            self.digest_sync = None;
            return;
        }
        let recent = self
            .last_digest_sync_ms
            .is_some_and(|t| self.now_ms.saturating_sub(t) < self.cfg.sync_min_interval_ms);
        if recent || self.syncs.len() >= self.cfg.max_inflight_syncs || !self.sync_allowed(peer) {
            return;
        }
        self.digest_sync = None;
        self.sync_wanted.remove(&peer);
        self.last_digest_sync_ms = Some(self.now_ms);
        self.start_sync(peer);
    }

    fn want_sync(&mut self, peer: NodeId) {
        if peer == self.me || self.left {
            return;
        }
        if self.syncs.len() >= self.cfg.max_inflight_syncs || !self.sync_allowed(peer) {
            self.sync_wanted.insert(peer);
            return;
        }
        self.start_sync(peer);
    }

    fn start_sync(&mut self, peer: NodeId) {
        let knowledge = self.state.knowledge();
        let req = SyncRequest {
            knowledge: KnowledgeSummary {
                buckets: Hashes(knowledge.bucket_hashes(knowledge_bucket_count(knowledge.origins()))),
                shipped: Vec::new(),
                ranges: Knowledge::new(),
            },
            buckets: Hashes(self.state.bucket_hashes().to_vec()),
            members_hash: self.members.hash(),
            member_buckets: Hashes(
                self.members
                    .bucket_hashes(member_bucket_count(self.members.len())),
            ),
        };
        let bytes = self.encode(&Message::SyncRequest(req));
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.syncs.insert(
            id,
            InflightSync {
                peer,
                started_ms: self.now_ms,
                phase: SyncPhase::Pull,
            },
        );
        self.last_sync_with.insert(peer, self.now_ms);
        self.counters.syncs_started += 1;
        self.out.push(Action::SendRequest { to: peer, id, bytes });
    }

    fn send_heartbeat(&mut self) {
        self.heartbeat_seq += 1;
        let me = self.local_member();
        if self.announced.0 != me.incarnation {
            self.announced = (me.incarnation, ANNOUNCE_HEARTBEATS);
        }
        let info = if self.announced.1 > 0 {
            self.announced.1 -= 1;
            Some(me.info)
        } else {
            None
        };
        let hb = Heartbeat {
            seq: self.heartbeat_seq,
            node: me.node,
            incarnation: me.incarnation,
            status: me.status,
            info,
            hlc: self.clock.last(),
            digest: self.state.digest(),
            members_hash: self.members.hash(),
            interval_ms: self.heartbeat_interval_ms(),
        };
        let bytes = self.encode(&Message::Heartbeat(hb));
        self.counters.heartbeats_sent += 1;
        self.out.push(Action::Publish {
            topic: Topic::Heartbeat,
            bytes,
        });
    }

    fn publish_members(&mut self, members: Vec<Member>) {
        let bytes = self.encode(&Message::Delta(Delta {
            versions: Vec::new(),
            members,
        }));
        self.counters.deltas_sent += 1;
        self.out.push(Action::Publish {
            topic: Topic::Delta,
            bytes,
        });
    }

    fn encode(&mut self, msg: &Message) -> Vec<u8> {
        let bytes = wire::encode(msg, self.cluster_id);
        let kind = msg.kind().as_str();
        bump(&mut self.counters.messages_out, kind, 1);
        bump(&mut self.counters.bytes_out, kind, bytes.len() as u64);
        bytes
    }

    fn decode(&mut self, bytes: &[u8]) -> Option<Message> {
        let kind = wire::peek_kind(bytes).map_or("unknown", |k| k.as_str());
        bump(&mut self.counters.messages_in, kind, 1);
        bump(&mut self.counters.bytes_in, kind, bytes.len() as u64);
        match wire::decode(bytes, self.cluster_id, self.cfg.max_message_bytes) {
            Ok(m) => Some(m),
            Err(e) => {
                self.reject_wire(&e);
                None
            }
        }
    }

    fn reject_wire(&mut self, e: &WireError) {
        tracing::debug!(error = %e, "dropped message");
        self.reject(e.reason());
    }

    fn reject(&mut self, reason: &str) {
        bump(&mut self.counters.rejected, reason, 1);
    }

    /// Emit the persist batch (first) and watch events for this input.
    fn flush(&mut self) -> Vec<Action> {
        let dirty = self.state.take_dirty();
        let member_dirty = self.members.take_dirty();
        let pending = std::mem::take(&mut self.pending);
        let mut head = Vec::new();
        if !dirty.keys.is_empty() || !dirty.origins.is_empty() || !member_dirty.is_empty() {
            let mut events = Vec::new();
            for k in &dirty.live {
                let ks = self.state.get(k);
                let winner = ks.and_then(|ks| ks.winner());
                events.push(WatchChange::Key {
                    key: k.clone(),
                    winner: winner.map(|w| w.id()),
                    hlc: winner.map(|w| w.hlc),
                    deleted: ks.is_none_or(|ks| ks.is_deleted()),
                    siblings: ks.map_or(0, |ks| ks.live.len()),
                    local: pending.local_keys.contains(k),
                });
            }
            for k in std::mem::take(&mut self.retargeted) {
                if !dirty.live.contains(&k) {
                    let ks = self.state.get(&k);
                    let winner = ks.and_then(|ks| ks.winner());
                    events.push(WatchChange::Key {
                        key: k,
                        winner: winner.map(|w| w.id()),
                        hlc: winner.map(|w| w.hlc),
                        deleted: ks.is_none_or(|ks| ks.is_deleted()),
                        siblings: ks.map_or(0, |ks| ks.live.len()),
                        local: true,
                    });
                }
            }
            for n in &member_dirty {
                if let Some(m) = self.members.get(n) {
                    events.push(WatchChange::Member {
                        node: *n,
                        status: m.status,
                        incarnation: m.incarnation,
                    });
                }
            }
            let events: Vec<WatchEvent> = events.into_iter().map(|c| self.watch.push(c)).collect();
            let batch = PersistBatch {
                id: self.next_batch_id,
                keys: dirty
                    .keys
                    .iter()
                    .map(|k| (k.clone(), self.state.get(k).cloned()))
                    .collect(),
                knowledge: dirty
                    .origins
                    .iter()
                    .filter_map(|n| self.state.knowledge().range(n).map(|r| (*n, r.clone())))
                    .collect(),
                members: member_dirty
                    .iter()
                    .filter_map(|n| self.members.get(n).cloned())
                    .collect(),
                meta: PersistedMeta {
                    incarnation: self.incarnation,
                    revision: self.watch.revision(),
                    hlc: self.clock.last(),
                    left: self.left,
                },
            };
            self.last_batch = Some((batch.id, pending));
            self.next_batch_id += 1;
            head.push(Action::Persist(batch));
            // Events go out after the rest of the actions, once durable.
            self.out.extend(events.into_iter().map(Action::Notify));
        }
        head.append(&mut self.out);
        head
    }
}

/// Add to a counter by name, allocating the name only the first time.
fn bump(counters: &mut BTreeMap<String, u64>, name: &str, by: u64) {
    match counters.get_mut(name) {
        Some(c) => *c += by,
        None => {
            counters.insert(name.to_string(), by);
        }
    }
}

fn dot_id(dot: &Dot) -> VersionId {
    VersionId::of(dot)
}

fn kv_entry(namespace: &Namespace, key: &Key, ks: &KeyState) -> Option<KvEntry> {
    let w = ks.winner()?;
    let Payload::Value(value) = &w.payload else {
        return None;
    };
    Some(KvEntry {
        namespace: namespace.clone(),
        key: key.clone(),
        value: value.clone(),
        version: VersionInfo::of(w),
        siblings: ks
            .live
            .iter()
            .map(|v| {
                let val = match &v.payload {
                    Payload::Value(b) => Some(b.clone()),
                    _ => None,
                };
                (VersionInfo::of(v), val)
            })
            .collect(),
        canary: None,
    })
}
