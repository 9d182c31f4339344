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
//! The contract is executed once, for every driver, by [`Engine::drive`]
//! (in `src/core/runtime.rs`): a driver implements
//! [`Runtime`](crate::core::Runtime) (persist, publish, send_request,
//! respond, notify, reply) and calls `drive`, `drive_gossip` or `execute`;
//! `handle` stays as the low-level API for tests that inspect the actions.
//!
//! `now_ms` is milliseconds since the Unix epoch on the driver's clock (the
//! simulator passes virtual time). The engine never reads a clock and draws
//! randomness only from the seeded RNG it was built with.
//!
//! # Rooms
//! * `io`: the inputs, commands and actions crossing the boundary;
//! * `views`: read views and read-only accessors;
//! * `commands`: local commands, owned instance TTLs, undoing a failed batch;
//! * `merge`: validating and merging versions from peers;
//! * `acl`: the writer rules in force and purging what they refuse;
//! * `sync`: the anti-entropy exchange and its `SyncState`;
//! * `liveness`: heartbeats, member merge and failure detection;
//! * `timers`: the timer table behind [`Engine::poll_timeout`];
//! * `limits`: named limits and the validation of remote versions;
//! * `counters`: [`Counters`] and the typed [`RejectReason`].
//!
//! This module holds the [`Engine`] itself: construction, dispatch of every
//! input to its room, the timers' schedule, and the flush that turns one
//! input's changes into a persist batch and watch events.

mod acl;
mod commands;
mod counters;
mod io;
mod limits;
mod liveness;
mod merge;
mod sync;
mod timers;
mod views;

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use counters::{Counters, RejectReason};
pub use io::{Action, Command, CommandError, CommandOutput, Expect, Input, Topic};
pub use views::{CanaryView, KvEntry, ServiceView, VersionInfo};

use super::config::{Config, ConfigError};
use super::crypto::SharedKeys;
use super::dots::Dot;
use super::hlc::HlcClock;
use super::ids::{IdMap, NodeId, StateKey};
use super::membership::{MemberStatus, Membership, NodeInfo};
use super::persist::{PersistBatch, PersistedMeta, Snapshot};
use super::state::ReplicatedState;
use super::watch::{WatchChange, WatchEvent, WatchLog};
use super::wire::{self, Message, WireError};
use liveness::Liveness;
use sync::SyncState;
use timers::{Timer, TimerTable};

/// One node's protocol state machine. See the module docs for the driver
/// contract and [`crate::core`] for the protocol.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    cluster_id: u64,
    me: NodeId,
    /// Signs this node's records, checks its peers'.
    keys: SharedKeys,
    info: std::sync::Arc<NodeInfo>,
    /// Canary keys to re-announce to watchers after this node's tags
    /// changed.
    retargeted: Vec<StateKey>,
    incarnation: u64,
    left: bool,
    clock: HlcClock,
    rng: ChaCha8Rng,
    state: ReplicatedState,
    members: Membership,
    /// Peers' failure detectors and this node's announcements.
    liveness: Liveness,
    /// Anti-entropy bookkeeping.
    sync: SyncState,
    timers: TimerTable,
    connected: BTreeSet<NodeId>,
    /// Owned service instances, with when their client last heartbeated.
    owned_heartbeats: BTreeMap<StateKey, u64>,
    watch: WatchLog,
    next_batch_id: u64,
    /// The last persist batch emitted, until the next input: what to undo
    /// if the driver reports it failed.
    last_batch: Option<(u64, PendingBatch)>,
    /// What the current input did that a failed persist must undo.
    pending: PendingBatch,
    /// Actions of the current input, after its persist batch.
    out: Vec<Action>,
    /// What failed batches held, written again with the next batch (not
    /// the one answering the failure, so a disk that keeps failing costs
    /// one failed batch per input, not a loop).
    unpersisted: Unpersisted,
    /// Set while handling a persist failure: its flush does not retry.
    persist_failing: bool,
    counters: Counters,
    /// Per origin heard from since the start, the highest sequence number
    /// it has been seen to sign (its own heartbeat, or a version verified
    /// here): claims about a live origin's writes beyond this are not
    /// taken ([`Engine::context_signed`], knowledge adoption).
    /// A hash map: looked up for every heartbeat and every dot of every
    /// causal context merged; its order is never used (the one reader
    /// of every key, `rule_for`, builds an ordered rule from them).
    signed_high: IdMap<u64>,
    /// Verified versions whose context is ahead of `signed_high`.
    deferred: merge::Deferred,
    /// The writer rules in force ([`crate::core::acl`]).
    acl: super::acl::Acl,
    now_ms: u64,
}

/// The undo record of one input: versions applied and commands to fail if
/// its batch cannot be made durable, and the keys written locally.
#[derive(Clone, Debug, Default)]
struct PendingBatch {
    applied: Vec<(StateKey, Dot)>,
    commands: Vec<u64>,
    local_keys: BTreeSet<StateKey>,
    /// What the batch wrote, to write again if it fails (what it held
    /// besides the undone local writes — versions merged from peers,
    /// knowledge, graves, member records — stays in memory and must reach
    /// the disk with a later batch).
    written: Unpersisted,
}

/// Keys, knowledge origins and member records a failed batch held.
#[derive(Clone, Debug, Default)]
struct Unpersisted {
    keys: BTreeSet<StateKey>,
    origins: BTreeSet<NodeId>,
    members: BTreeSet<NodeId>,
}

impl Engine {
    /// The node whose keys are `keys` (its id is their public key)
    /// starting at `now_ms`, restoring `snapshot` if it has one. Every
    /// start raises the incarnation, so a restarted node refutes whatever
    /// the cluster concluded while it was down.
    pub fn new(
        config: Config,
        keys: SharedKeys,
        info: NodeInfo,
        now_ms: u64,
        seed: u64,
        snapshot: Option<Snapshot>,
    ) -> Result<Engine, ConfigError> {
        let cfg = config.validated()?;
        let me = keys.id();
        let snapshot = snapshot.unwrap_or_default();
        let mut clock = HlcClock::new(cfg.max_clock_drift_ms);
        clock.restore(snapshot.meta.hlc);
        let mut state = ReplicatedState::new(cfg.history_limit);
        state.set_max_siblings(cfg.max_siblings);
        state.set_local_origin(me);
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
        incarnation = incarnation.saturating_add(1);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let first_hb = now_ms + rng.gen_range(0..=cfg.heartbeat_interval_ms / 4);
        let mut timers = TimerTable::default();
        timers.set(Timer::Heartbeat, first_hb);
        timers.set(Timer::Sync, now_ms + cfg.sync_interval_ms);
        timers.set(Timer::Gc, now_ms + cfg.gc_interval_ms);
        timers.set(Timer::Check, now_ms);
        timers.set(Timer::FailureCheck, now_ms);
        let mut engine = Engine {
            cluster_id: wire::cluster_id(&cfg.cluster),
            watch: WatchLog::new(cfg.watch_log_capacity, snapshot.meta.revision),
            timers,
            cfg,
            me,
            keys,
            info: std::sync::Arc::new(info),
            retargeted: Vec::new(),
            incarnation,
            left: false,
            clock,
            rng,
            state,
            members,
            liveness: Liveness::default(),
            sync: SyncState::new(),
            connected: BTreeSet::new(),
            owned_heartbeats: BTreeMap::new(),
            next_batch_id: 1,
            last_batch: None,
            pending: PendingBatch::default(),
            out: Vec::new(),
            unpersisted: Unpersisted::default(),
            persist_failing: false,
            counters: Counters::default(),
            signed_high: IdMap::default(),
            deferred: merge::Deferred::default(),
            acl: super::acl::Acl::default(),
            now_ms,
        };
        engine.rebuild_acl();

        let own = engine.own_record(MemberStatus::Alive);
        engine.members.merge(own);
        let peers: Vec<(NodeId, u64, MemberStatus)> = engine
            .members
            .iter()
            .filter(|m| m.node != me)
            .map(|m| (m.node, m.incarnation, m.status))
            .collect();
        for (p, incarnation, status) in peers {
            engine.hold_peer(p, (incarnation, status), now_ms);
        }
        // Owned instances with a TTL get one TTL of grace after a restart.
        let owned: Vec<StateKey> = engine
            .state
            .iter()
            .filter(|(k, _)| matches!(k, StateKey::Service { .. }))
            .map(|(k, _)| k.clone())
            .filter(|k| engine.own_registration(k).is_some())
            .collect();
        for k in owned {
            engine.owned_heartbeats.insert(k, now_ms);
        }
        Ok(engine)
    }

    /// Share immutable decoded data (member self-descriptions, causal
    /// contexts) with the
    /// other engines of this process through `pool`: a driver running many
    /// engines in one process (the simulator) gives them all one pool.
    /// Nothing the engine checks, decides or sends changes; only the
    /// memory its view takes does (see [`SharedPool`](crate::core::SharedPool)).
    pub fn share_pool(&mut self, pool: super::pool::SharedPool) {
        self.state.share_through(pool.clone());
        self.members.share_through(pool);
    }

    /// [`Input::Gossip`] without handing over the bytes: a driver that
    /// delivers one published message to many engines (the simulator)
    /// need not copy it for each.
    pub fn handle_gossip(&mut self, now_ms: u64, from: NodeId, bytes: &[u8]) -> Vec<Action> {
        self.handle_gossip_shared(now_ms, from, bytes, None)
    }

    /// [`Engine::handle_gossip`] with the message's decoding shared by the
    /// engines it is delivered to (see [`wire::SharedDecode`]): what the
    /// engine sees and does is the same; the decoding is done once.
    pub fn handle_gossip_shared(
        &mut self,
        now_ms: u64,
        from: NodeId,
        bytes: &[u8],
        shared: Option<&wire::SharedDecode>,
    ) -> Vec<Action> {
        self.now_ms = now_ms.max(self.now_ms);
        self.on_gossip(from, bytes, shared);
        self.merge_deferred();
        self.refresh_acl();
        self.note_changes();
        self.flush()
    }

    /// Feed one input; returns the actions it caused, in execution order.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Action> {
        self.now_ms = now_ms.max(self.now_ms);
        match input {
            Input::Tick => self.on_tick(),
            Input::Gossip { from, bytes } => self.on_gossip(from, &bytes, None),
            Input::Request { from, id, bytes } => self.on_request(from, id, &bytes),
            Input::Response { from, id, bytes } => self.on_response(from, id, &bytes),
            Input::RequestFailed { id } => self.on_request_failed(id),
            Input::PeerConnected(peer) => {
                self.connected.insert(peer);
                self.reached(&peer);
                self.want_sync(peer);
                self.announce_soon();
            }
            Input::PeerDisconnected(peer) => {
                self.connected.remove(&peer);
            }
            Input::PeerUnreachable(peer) => {
                self.connected.remove(&peer);
                self.on_unreachable(peer);
            }
            Input::Command { id, command } => self.on_command(id, command),
            Input::PersistFailed { batch, reason } => self.on_persist_failed(batch, reason),
        }
        self.merge_deferred();
        self.refresh_acl();
        self.note_changes();
        self.flush()
    }

    /// When the driver must send the next [`Input::Tick`] at the latest:
    /// the earliest armed timer (the heartbeat, housekeeping check, sync and
    /// tombstone collection timers; the failure check runs within the
    /// housekeeping check and never sets this on its own). The collection
    /// timer is always armed, even once the node has left.
    pub fn poll_timeout(&self) -> u64 {
        let next = self.timers.next_timeout();
        debug_assert!(next.is_some(), "the gc timer is always armed");
        next.unwrap_or(u64::MAX)
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
        fixed("max_siblings", cfg.max_siblings == self.cfg.max_siblings)?;
        fixed("max_members", cfg.max_members == self.cfg.max_members)?;
        self.clock.set_max_drift(cfg.max_clock_drift_ms);
        self.state.set_history_limit(cfg.history_limit);
        self.timers
            .set_earlier(Timer::Heartbeat, self.now_ms + cfg.heartbeat_interval_ms);
        let threshold_changed = cfg.phi_threshold != self.cfg.phi_threshold;
        let admins_changed = cfg.admins() != self.acl.admins;
        self.cfg = cfg;
        if admins_changed {
            self.rebuild_acl();
        }
        if threshold_changed {
            self.liveness.rearm_deadlines(self.cfg.phi_threshold);
        }
        Ok(())
    }

    /// Run the timers that are due, in a fixed order: heartbeat, check
    /// (with the failure check when due too), sync, then the syncs waiting
    /// for the limits, then tombstone collection. A node that has left
    /// disarms its heartbeat, check and sync timers and runs nothing.
    fn on_tick(&mut self) {
        let now = self.now_ms;
        if self.left {
            self.timers.clear(Timer::Heartbeat);
            self.timers.clear(Timer::Sync);
            self.timers.clear(Timer::Check);
            return;
        }
        // No handler re-arms another's timer: what is due is known up front.
        let due = self.timers.expired(now);
        if due.contains(Timer::Heartbeat) {
            self.on_heartbeat_timer(now);
        }
        if due.contains(Timer::Check) {
            if due.contains(Timer::FailureCheck) {
                self.on_failure_check_timer(now);
            }
            self.check_ttls();
            self.expire_syncs();
            self.ask_ahead_origins();
            self.timers.set(
                Timer::Check,
                now + (self.cfg.heartbeat_interval_ms / 4).max(limits::MIN_CHECK_INTERVAL_MS),
            );
        }
        if due.contains(Timer::Sync) {
            self.on_sync_timer(now);
        }
        self.serve_wanted_syncs();
        self.try_digest_sync();
        if due.contains(Timer::Gc) {
            self.collect_garbage(now);
        }
    }

    fn on_gossip(&mut self, from: NodeId, bytes: &[u8], shared: Option<&wire::SharedDecode>) {
        if from == self.me {
            return;
        }
        let Some(msg) = self.decode_shared(bytes, shared) else {
            return;
        };
        match msg {
            Message::Heartbeat(hb) => self.on_heartbeat(from, hb),
            Message::Delta(d) => {
                for (k, v) in d.versions {
                    // Counted either way; a delta has no one to answer.
                    let _ = self.merge_remote(k, v);
                }
                for m in d.members {
                    self.merge_member(m);
                }
            }
            other => self.reject(RejectReason::UnexpectedOnGossip(other.kind())),
        }
    }

    /// Collect tombstones past their TTL (and graves past theirs), and
    /// re-arm.
    fn collect_garbage(&mut self, now: u64) {
        let horizon = now.saturating_sub(self.cfg.tombstone_ttl_ms);
        let graves = now.saturating_sub(self.cfg.grave_ttl_ms);
        let collected = self.state.collect_tombstones(horizon, graves);
        self.counters.tombstones_collected += collected.len() as u64;
        for k in collected {
            self.owned_heartbeats.remove(&k);
        }
        self.reap_members(now);
        self.timers.set(Timer::Gc, now + self.cfg.gc_interval_ms);
    }

    fn encode(&mut self, msg: &Message) -> Vec<u8> {
        let bytes = wire::encode(msg, self.cluster_id);
        self.counters.count_out(msg.kind().as_str(), bytes.len());
        bytes
    }

    fn decode(&mut self, bytes: &[u8]) -> Option<Message> {
        self.decode_shared(bytes, None)
    }

    /// [`Engine::decode`], through `shared` when given.
    fn decode_shared(&mut self, bytes: &[u8], shared: Option<&wire::SharedDecode>) -> Option<Message> {
        let kind = wire::peek_kind(bytes).map_or("unknown", |k| k.as_str());
        self.counters.count_in(kind, bytes.len());
        let decoded = match shared {
            Some(shared) => shared.decode(bytes, self.cluster_id, self.cfg.max_message_bytes),
            None => wire::decode(bytes, self.cluster_id, self.cfg.max_message_bytes),
        };
        match decoded {
            Ok(m) => Some(m),
            Err(e) => {
                self.reject_wire(&e);
                None
            }
        }
    }

    fn reject_wire(&mut self, e: &WireError) {
        tracing::debug!(error = %e, "dropped message");
        self.reject(RejectReason::from(e));
    }

    fn reject(&mut self, reason: RejectReason) {
        self.counters.reject(reason);
    }

    /// Emit the persist batch (first) and watch events for this input.
    fn flush(&mut self) -> Vec<Action> {
        if !std::mem::take(&mut self.persist_failing) {
            let retry = std::mem::take(&mut self.unpersisted);
            self.state.mark_dirty(retry.keys, retry.origins);
            self.members.mark_dirty(retry.members);
        }
        let dirty = self.state.take_dirty();
        let member_dirty = self.members.take_dirty();
        let mut pending = std::mem::take(&mut self.pending);
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
                removed_members: member_dirty
                    .iter()
                    .filter(|n| self.members.get(n).is_none())
                    .copied()
                    .collect(),
                meta: PersistedMeta {
                    incarnation: self.incarnation,
                    revision: self.watch.revision(),
                    hlc: self.clock.last(),
                    left: self.left,
                },
            };
            // Moved, not copied: nothing below reads them.
            pending.written = Unpersisted {
                keys: dirty.keys,
                origins: dirty.origins,
                members: member_dirty,
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
