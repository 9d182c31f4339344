//! Anti-entropy: the pull-push sync exchange that makes the cluster
//! converge whatever gossip lost.
//!
//! A sync runs in two round trips between a requester and a responder:
//! 1. **Pull.** The requester sends a [`SyncRequest`]: hashes of its
//!    knowledge (the dots it has seen), of its state buckets and of its
//!    membership. The responder answers with a [`SyncResponse`]: its own
//!    knowledge where it differs, the dots it holds in the state buckets that
//!    differ (its manifest), and the member records of the buckets that
//!    differ.
//! 2. **Push.** The requester merges the members, works out what the
//!    responder has not seen and sends it in a [`SyncPush`] with its own
//!    knowledge and manifest where they still differ. The responder merges
//!    it, drops what the requester has seen and superseded, and answers with
//!    a [`SyncAck`] carrying what the requester lacks. Only then does the
//!    requester drop what the responder superseded and adopt its knowledge,
//!    so a key never reads as missing in between.
//!
//! Equal state ends the exchange after the pull. Syncs start on a digest
//! mismatch in a heartbeat (at most one per `sync_min_interval_ms` for the
//! whole node, four while the membership grows), on a new connection, and
//! on a jittered periodic timer with a random alive peer; at most
//! `max_inflight_syncs` run at once and at most one per peer per
//! `sync_min_interval_ms`: the rest wait in [`SyncState`]'s wanted set.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;

use super::limits::{validate_version, MAX_MANIFEST_DOTS, MAX_REMOTE_SEQ, MAX_SYNC_GRAVES, MAX_WANTED_BACK};
use super::liveness::QUIET_FACTOR;
use super::timers::Timer;
use super::{Action, Engine, RejectReason};
use crate::core::dots::{
    knowledge_bucket_count, valid_knowledge_bucket_count, Dot, Knowledge, PeerKnowledge,
};
use crate::core::ids::{IdMap, NodeId, StateKey};
use crate::core::membership::{member_bucket_count, valid_member_bucket_count, MemberStatus};
use crate::core::state::{Digest, Grave, ReplicatedState, Version, BUCKETS};
use crate::core::wire::{Hashes, KnowledgeSummary, Message, SyncAck, SyncPush, SyncRequest, SyncResponse};

/// In a quiet cluster, a periodic round opens a connection to the member
/// shown equal least recently only when some alive member has not been
/// (by a sync or a heartbeat) for this many sync intervals, or for this
/// many of its quiet heartbeat intervals if longer: at 50 nodes a member
/// heartbeats every 100 s when quiet, and a window of 60 s opened a
/// connection every fourth round.
const QUIET_BRIDGE_ROUNDS: u64 = 4;
/// See [`QUIET_BRIDGE_ROUNDS`].
const QUIET_BRIDGE_BEATS: u64 = 2;

/// Digest syncs run this many times as often while the membership grows
/// (see [`Engine::try_digest_sync`]).
const GROWING_SYNC_DIVISOR: u64 = 4;

/// The anti-entropy bookkeeping of one node.
#[derive(Clone, Debug)]
pub(super) struct SyncState {
    /// Syncs in flight, by the id of the request awaiting an answer.
    inflight: BTreeMap<u64, InflightSync>,
    /// When the last sync with each peer started (rate limit per peer).
    last_sync_with: BTreeMap<NodeId, u64>,
    /// Peers to sync with as soon as the limits allow.
    wanted: BTreeSet<NodeId>,
    /// The latest peer whose heartbeat digest differed from ours, to sync
    /// with once the node-wide limit allows (see `try_digest_sync`).
    digest_sync: Option<NodeId>,
    /// When the last digest-triggered sync started.
    last_digest_sync_ms: Option<u64>,
    /// When this node last learned of a member it did not hold (a cluster
    /// forming or growing): digest syncs run more often for a while.
    grew_ms: Option<u64>,
    /// When this node last saw equal state with each peer.
    last_converged: IdMap<u64>,
    /// The id of the next request this node sends.
    next_request_id: u64,
    /// Periodic sync rounds so far (0: none yet; the first is drawn at
    /// random so that nodes started together are out of step).
    rounds: u64,
    /// What heartbeats showed since the last periodic round.
    heard: HeardSinceRound,
    /// Peers whose sync request this node answered, with when: a push is
    /// taken only from such a peer, within the sync timeout (one push per
    /// answered request).
    served: BTreeMap<NodeId, u64>,
}

/// Whether a periodic round has anything to repair: the state and
/// membership digests at the last round, and whether the heartbeats heard
/// since showed them equal to ours.
#[derive(Clone, Debug, Default)]
struct HeardSinceRound {
    /// Our `(state digest, members hash)` at the last round.
    mark: Option<(Digest, u64)>,
    /// A heartbeat since showed state equal to ours.
    equal: bool,
    /// A heartbeat since showed state different from ours.
    unequal: bool,
}

#[derive(Clone, Debug)]
struct InflightSync {
    peer: NodeId,
    started_ms: u64,
    phase: SyncPhase,
}

/// Which answer a sync in flight awaits.
#[derive(Clone, Debug)]
enum SyncPhase {
    /// The [`SyncResponse`] to our [`SyncRequest`].
    Pull,
    /// The [`SyncAck`] to our [`SyncPush`].
    Push(Box<AfterAck>),
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

impl SyncState {
    /// No sync yet; request ids start at 1.
    pub(super) fn new() -> Self {
        SyncState {
            inflight: BTreeMap::new(),
            last_sync_with: BTreeMap::new(),
            wanted: BTreeSet::new(),
            digest_sync: None,
            last_digest_sync_ms: None,
            grew_ms: None,
            last_converged: IdMap::default(),
            next_request_id: 1,
            rounds: 0,
            heard: HeardSinceRound::default(),
            served: BTreeMap::new(),
        }
    }

    /// A member this node did not hold was merged.
    pub(super) fn grew(&mut self, now_ms: u64) {
        self.grew_ms = Some(now_ms);
    }

    /// Number of syncs in flight.
    pub(super) fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// When this node last saw equal state with each peer.
    pub(super) fn last_converged(&self) -> BTreeMap<NodeId, u64> {
        self.last_converged.iter().map(|(n, t)| (*n, *t)).collect()
    }

    /// Record that this node and `peer` held equal state at `now_ms`.
    pub(super) fn converged_with(&mut self, peer: NodeId, now_ms: u64) {
        self.last_converged.insert(peer, now_ms);
    }

    /// A heartbeat arrived showing state `equal` to ours or not.
    pub(super) fn heard_state(&mut self, equal: bool) {
        if equal {
            self.heard.equal = true;
        } else {
            self.heard.unequal = true;
        }
    }

    /// Start a periodic round with our digests at `mark`: whether the
    /// cluster was quiet since the last one (our state and membership did
    /// not change, at least one heartbeat arrived and every one showed
    /// them equal to ours).
    fn quiet_round(&mut self, mark: (Digest, u64)) -> bool {
        let h = std::mem::take(&mut self.heard);
        self.heard.mark = Some(mark);
        h.mark == Some(mark) && h.equal && !h.unequal
    }

    fn next_request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }
}

impl Engine {
    /// The sync timer fired: want a sync with a random alive peer — or,
    /// when this node holds no peer alive, with a random suspect or dead
    /// one, so a node that concluded everyone else failed (a long
    /// partition, or its own pause) keeps trying to merge back rather than
    /// depend on its driver re-dialling — and re-arm the timer (jittered).
    /// In a quiet cluster most rounds are skipped (see below).
    pub(super) fn on_sync_timer(&mut self, now: u64) {
        let others = || self.members.iter().filter(|m| m.node != self.me);
        // Connected neighbours first: a sync with one needs no new
        // connection, so the periodic round keeps each node's connections
        // (and its idle cost) bounded. Anything a neighbour lacks spreads
        // hop by hop, and digests in heartbeats start syncs with anyone.
        // Every fourth round goes to the alive member this node synced
        // with least recently: it bridges islands of the connection graph
        // (nodes whose links all stay on one side after a partition and a
        // heal never hear the other side's heartbeats, so they keep
        // suspecting it; found by the simulator). Every fourth, not one in
        // four at random, and to the least recent, not a random member: an
        // island then bridges within four intervals (a random pick left
        // two nodes an island for 37 s at a 7.8 s interval, swarm seed
        // 4506; its members are the ones synced with most recently).
        if self.sync.rounds == 0 {
            self.sync.rounds = self.rng.gen_range(0..4);
        }
        self.sync.rounds += 1;
        let mut anyone = self.sync.rounds.is_multiple_of(4);
        // Quiet since the last round — our state and membership unchanged,
        // and every heartbeat heard showed them equal to ours — there is
        // nothing for a neighbour round to repair (a digest that differs
        // starts a sync of its own): only every fourth round runs, so that
        // knowledge (which digests do not show) still spreads. Its sync
        // needs no new connection unless some alive member has not shown
        // equal state for `QUIET_BRIDGE_ROUNDS` intervals (heartbeats
        // with equal digests count): an island hears no heartbeat from
        // across, so it still bridges.
        let mark = (self.state.digest(), self.members.hash());
        if self.sync.quiet_round(mark) {
            // Long enough for two quiet heartbeats of each member.
            let beats = QUIET_BRIDGE_BEATS
                .saturating_mul(QUIET_FACTOR)
                .saturating_mul(self.interval_for(self.members_not_gone()));
            let window = (QUIET_BRIDGE_ROUNDS * self.cfg.sync_interval_ms).max(beats);
            let stale = others().any(|m| {
                m.status == MemberStatus::Alive
                    && self
                        .sync
                        .last_converged
                        .get(&m.node)
                        .is_none_or(|t| now.saturating_sub(*t) >= window)
            });
            if !anyone {
                self.counters.syncs_skipped_quiet += 1;
                self.arm_sync_timer(now);
                return;
            }
            anyone = stale;
        }
        let mut candidates: Vec<NodeId> = others()
            .filter(|m| m.status == MemberStatus::Alive && (anyone || self.connected.contains(&m.node)))
            .map(|m| m.node)
            .collect();
        if anyone && !candidates.is_empty() {
            let since = |n: &NodeId| self.sync.last_converged.get(n).copied().unwrap_or(0);
            let oldest = candidates.iter().map(since).min().unwrap_or(0);
            candidates.retain(|n| since(n) == oldest);
        }
        if candidates.is_empty() {
            candidates = others()
                .filter(|m| m.status == MemberStatus::Alive)
                .map(|m| m.node)
                .collect();
        }
        if candidates.is_empty() {
            candidates = others()
                .filter(|m| matches!(m.status, MemberStatus::Suspect | MemberStatus::Dead))
                .map(|m| m.node)
                .collect();
        }
        if !candidates.is_empty() {
            let peer = candidates[self.rng.gen_range(0..candidates.len())];
            self.want_sync(peer);
        }
        self.arm_sync_timer(now);
    }

    /// Re-arm the periodic sync timer (jittered).
    fn arm_sync_timer(&mut self, now: u64) {
        let jitter = self.rng.gen_range(0..=self.cfg.sync_interval_ms / 5);
        self.timers.set(
            Timer::Sync,
            now + self.cfg.sync_interval_ms - self.cfg.sync_interval_ms / 10 + jitter,
        );
    }

    /// Start the syncs that were wanted but rate-limited, as far as the
    /// limits now allow.
    pub(super) fn serve_wanted_syncs(&mut self) {
        let wanted: Vec<NodeId> = self.sync.wanted.iter().copied().collect();
        for peer in wanted {
            if self.sync.inflight.len() >= self.cfg.max_inflight_syncs {
                break;
            }
            if self.sync_allowed(peer) {
                self.sync.wanted.remove(&peer);
                self.start_sync(peer);
            }
        }
    }

    /// A heartbeat from `peer` showed state (or membership) that differs
    /// from ours: sync with it when the node-wide limit allows.
    pub(super) fn want_digest_sync(&mut self, peer: NodeId) {
        self.sync.digest_sync = Some(peer);
        self.try_digest_sync();
    }

    /// A request of ours failed: the sync it belonged to failed, and its
    /// peer is wanted again.
    pub(super) fn on_request_failed(&mut self, id: u64) {
        if let Some(s) = self.sync.inflight.remove(&id) {
            self.counters.syncs_failed += 1;
            // Tried again unless the peer is held dead or gone: a failed
            // sync with a member whose process is gone (or whose identity
            // went with its disk) came back every interval, holding a sync
            // slot each time, and four of them starved a node of every
            // other sync for good (swarm seed 3623). A dead member still
            // gets a sync from the timer when no one is held alive.
            let gone = self
                .members
                .get(&s.peer)
                .is_some_and(|m| matches!(m.status, MemberStatus::Dead | MemberStatus::Left));
            if !gone {
                self.sync.wanted.insert(s.peer);
            }
        }
    }

    pub(super) fn on_request(&mut self, from: NodeId, id: u64, bytes: &[u8]) {
        let Some(msg) = self.decode(bytes) else {
            return;
        };
        match msg {
            Message::SyncRequest(req) => {
                self.told_by_origin(from, req.high_seq);
                let Some(resp) = self.build_response(&req) else {
                    return;
                };
                self.counters.syncs_served += 1;
                self.sync.served.insert(from, self.now_ms);
                let bytes = self.encode(&Message::SyncResponse(resp));
                self.out.push(Action::Respond { id, bytes });
            }
            Message::SyncPush(push) => self.on_sync_push(from, id, push),
            other => self.reject(RejectReason::UnexpectedAsRequest(other.kind())),
        }
    }

    /// Serve the requester's half of a sync: take in what it pushed, drop
    /// what it has seen and superseded, and acknowledge with what it lacks.
    fn on_sync_push(&mut self, from: NodeId, id: u64, push: SyncPush) {
        // Only the second half of a sync this node answered: a push out of
        // the blue (which would make it trim history on the pusher's word)
        // is refused — answered with an empty, incomplete ack, so a
        // requester whose sync this node forgot (a restart) or a duplicated
        // push fails fast instead of waiting out its request timeout (the
        // simulator found silent refusals starving syncs, swarm seed 4009).
        let timeout = self.cfg.sync_timeout_ms;
        let now = self.now_ms;
        let answered = self.sync.served.remove(&from);
        if answered.is_none_or(|at| now.saturating_sub(at) > timeout) {
            self.refuse_push(id, RejectReason::UnsolicitedPush);
            return;
        }
        if over_sync_bounds(&push.manifest, &push.graves) || push.wanted.len() > MAX_WANTED_BACK {
            self.refuse_push(id, RejectReason::ManifestTooLarge);
            return;
        }
        let mut applied = 0;
        for (k, v) in push.versions {
            if self.merge_remote(k, v).is_new() {
                applied += 1;
            }
        }
        for m in push.members {
            self.merge_member(m);
        }
        self.adopt_graves(push.graves);
        // Their knowledge, judged against ours now (their versions in).
        let Some(theirs) = self.judge_knowledge(push.knowledge) else {
            return;
        };
        let doomed = self.state.seen_and_dropped(&push.manifest, &theirs);
        self.counters.dropped_obsolete += self.state.drop_versions(&doomed) as u64;
        // Our half: what they have not seen.
        let (versions, complete) = self.state.missing_for(&theirs, self.cfg.sync_budget_bytes);
        // What they have seen, hold nowhere, and we still hold live after
        // taking their push in (a delete they forgot before it reached us).
        let returned = self
            .state
            .live_with_dots(&push.wanted, self.cfg.sync_budget_bytes);
        let ack = SyncAck {
            applied,
            versions,
            complete,
            returned,
        };
        let bytes = self.encode(&Message::SyncAck(ack));
        self.out.push(Action::Respond { id, bytes });
        self.sync.last_converged.insert(from, self.now_ms);
    }

    /// Refuse a push, counted under `reason`, with an empty incomplete
    /// ack: the requester fails fast instead of waiting out its timeout.
    fn refuse_push(&mut self, id: u64, reason: RejectReason) {
        self.reject(reason);
        let ack = SyncAck {
            applied: 0,
            versions: Vec::new(),
            complete: false,
            returned: Vec::new(),
        };
        let bytes = self.encode(&Message::SyncAck(ack));
        self.out.push(Action::Respond { id, bytes });
    }

    pub(super) fn on_response(&mut self, from: NodeId, id: u64, bytes: &[u8]) {
        let Some(sync) = self.sync.inflight.remove(&id) else {
            self.reject(RejectReason::UnexpectedResponse);
            return;
        };
        if sync.peer != from {
            self.reject(RejectReason::ResponseFromWrongPeer);
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
                self.reject(RejectReason::UnexpectedAsResponse(other.kind()));
            }
        }
    }

    fn on_sync_response(&mut self, from: NodeId, resp: SyncResponse) {
        self.told_by_origin(from, resp.high_seq);
        if resp.buckets.0.len() != BUCKETS {
            self.counters.syncs_failed += 1;
            self.reject(RejectReason::BadBucketCount);
            return;
        }
        if over_sync_bounds(&resp.manifest, &resp.graves) {
            self.counters.syncs_failed += 1;
            self.reject(RejectReason::ManifestTooLarge);
            return;
        }
        if resp
            .knowledge
            .ranges
            .iter()
            .any(|(_, r)| r.max() > MAX_REMOTE_SEQ)
        {
            self.counters.syncs_failed += 1;
            self.reject(RejectReason::KnowledgeSeqOutOfRange);
            return;
        }
        for m in resp.members {
            self.merge_member(m);
        }
        self.adopt_graves(resp.graves);
        let Some(theirs) = self.judge_knowledge(resp.knowledge) else {
            self.counters.syncs_failed += 1;
            return;
        };
        // What they have seen and dropped: dropped once their versions are
        // in (in the ack), so a key never reads as missing in between.
        let doomed = self.state.seen_and_dropped(&resp.manifest, &theirs);
        // The buckets where our state still differs from theirs.
        let differing: Vec<u16> = self
            .state
            .bucket_hashes()
            .iter()
            .zip(resp.buckets.0.iter())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i as u16)
            .collect();
        // Our manifest, in one pass over our keys, of those buckets (sent
        // with our push) and of the buckets where they list a dot we have
        // seen: what they list there that we have seen and hold nowhere is
        // asked back (they return only what is still live once our push
        // is in).
        let mut buckets = self.state.buckets_listing_seen(&resp.manifest);
        buckets.extend_from_slice(&differing);
        let mut ours = self.state.manifest(&buckets);
        let wanted = self.state.seen_not_held(&resp.manifest, &ours, MAX_WANTED_BACK);
        ours.retain(|b, _| differing.binary_search(b).is_ok());
        // Our half: what they have not seen, our knowledge where it differs
        // from theirs, and our manifest where the state still differs.
        let manifest = ReplicatedState::cap_manifest(ours, MAX_MANIFEST_DOTS);
        let (versions, _complete) = self.state.missing_for(&theirs, self.cfg.sync_budget_bytes);
        let differing_k = theirs.differing();
        let knowledge = KnowledgeSummary {
            buckets: Hashes(self.state.knowledge().bucket_hashes(differing_k.len())),
            shipped: (0..differing_k.len() as u16)
                .filter(|b| differing_k[*b as usize])
                .collect(),
            ranges: self.state.knowledge().restricted(&differing_k),
        };
        let mut graves = self.state.graves_in(&differing);
        graves.truncate(MAX_SYNC_GRAVES);
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
        if theirs.all_same() && manifest.is_empty() && members.is_empty() && wanted.is_empty() {
            // Same knowledge and same state: nothing either way.
            self.counters.syncs_completed += 1;
            self.sync.last_converged.insert(from, self.now_ms);
            return;
        }
        let push = SyncPush {
            versions,
            knowledge,
            manifest,
            graves,
            members,
            wanted,
        };
        let bytes = self.encode(&Message::SyncPush(push));
        let id = self.sync.next_request_id();
        let after = AfterAck {
            doomed,
            adopt: theirs.shipped().clone(),
        };
        self.sync.inflight.insert(
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
            // Knowledge is adopted only when every version came in: a
            // version held back must not read as seen.
            if !self.merge_remote(k, v).is_settled() {
                clean = false;
            }
        }
        let mut returned: BTreeMap<StateKey, Vec<Version>> = BTreeMap::new();
        for (k, v) in ack.returned {
            returned.entry(k).or_default().push(v);
        }
        for (k, vs) in returned {
            if self.state.wants_back(&k, &vs.iter().collect::<Vec<_>>()) {
                for v in vs {
                    self.take_back_remote(k.clone(), v);
                }
            }
        }
        if ack.complete && clean && after.adopt.iter().all(|(_, r)| r.max() <= MAX_REMOTE_SEQ) {
            self.counters.dropped_obsolete += self.state.drop_versions(&after.doomed) as u64;
            // The peer's word on what it has seen of an origin goes only as
            // far as that origin has been seen to sign.
            let (adopt, cut) = after
                .adopt
                .capped(|origin| self.signed_up_to(origin).unwrap_or(MAX_REMOTE_SEQ));
            if cut {
                self.reject(RejectReason::KnowledgeAhead);
            }
            self.state.union_knowledge(&adopt);
        } else {
            // More to fetch: go again as soon as the rate limit allows.
            self.sync.last_sync_with.remove(&from);
            self.sync.wanted.insert(from);
        }
        self.counters.syncs_completed += 1;
        self.sync.last_converged.insert(from, self.now_ms);
    }

    /// A peer's knowledge summary judged against ours; `None` (rejected
    /// and counted) if malformed.
    fn judge_knowledge(&mut self, k: KnowledgeSummary) -> Option<PeerKnowledge> {
        match PeerKnowledge::new(self.state.knowledge(), &k.buckets.0, &k.shipped, k.ranges) {
            Ok(theirs) => Some(theirs),
            Err(reason) => {
                self.reject(knowledge_rejection(reason));
                None
            }
        }
    }

    /// Take over a peer's collected deletes, each for its whole key at
    /// once (see `ReplicatedState::adopt_grave`). A grave travels as the
    /// collected tombstone: it must be one, pass the checks every version
    /// passes, and carry its origin's signature (checked once per grave
    /// new here), so what it buries is what that origin deleted and never
    /// what the sender says. Anything else is dropped and counted; a grave
    /// already past the grave TTL is ignored (every node forgets it too).
    fn adopt_graves(&mut self, graves: Vec<(StateKey, Version)>) {
        let expired_before = self.now_ms.saturating_sub(self.cfg.grave_ttl_ms);
        for (key, tomb) in graves {
            if !tomb.payload.is_tombstone() {
                self.reject(RejectReason::BadGrave);
                continue;
            }
            if tomb.hlc.wall_ms < expired_before {
                continue;
            }
            if let Err(reason) = validate_version(&self.cfg, &self.clock, self.now_ms, &key, &tomb) {
                self.reject(reason);
                continue;
            }
            let known = self
                .state
                .get(&key)
                .and_then(|ks| ks.grave.as_ref())
                .is_some_and(|g| g.dot == tomb.dot && g.tombstone.is_some());
            if !known {
                if !self.signed_by_origin(&key, &tomb) {
                    self.reject(RejectReason::VersionBadSignature);
                    continue;
                }
                self.saw_signed(tomb.dot);
                // What it buries is what its context covers: no further
                // than the writes their origins have been seen to sign.
                if let Err(reason) = self.context_signed(&tomb) {
                    self.reject(reason);
                    continue;
                }
            }
            self.counters.dropped_obsolete += self.state.adopt_grave(&key, Grave::of_tombstone(tomb)) as u64;
        }
    }

    /// The answer to a sync request; `None` (nothing sent) if malformed.
    fn build_response(&mut self, req: &SyncRequest) -> Option<SyncResponse> {
        let n = req.knowledge.buckets.0.len();
        if !valid_knowledge_bucket_count(n) {
            self.reject(RejectReason::BadKnowledgeBuckets);
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
            manifest: self.state.manifest_within(&differing, MAX_MANIFEST_DOTS),
            graves: {
                let mut graves = self.state.graves_in(&differing);
                graves.truncate(MAX_SYNC_GRAVES);
                graves
            },
            buckets: Hashes(buckets),
            members,
            member_buckets: Hashes(member_buckets),
            high_seq: self.state.next_seq(&self.me) - 1,
        })
    }
    pub(super) fn expire_syncs(&mut self) {
        let now = self.now_ms;
        let timeout = self.cfg.sync_timeout_ms;
        let expired: Vec<u64> = self
            .sync
            .inflight
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.started_ms) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.sync.inflight.remove(&id);
            self.counters.syncs_failed += 1;
        }
        self.sync
            .served
            .retain(|_, at| now.saturating_sub(*at) <= timeout);
    }

    fn sync_allowed(&self, peer: NodeId) -> bool {
        if self.sync.inflight.values().any(|s| s.peer == peer) {
            return false;
        }
        match self.sync.last_sync_with.get(&peer) {
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
    pub(super) fn try_digest_sync(&mut self) {
        let Some(peer) = self.sync.digest_sync else {
            return;
        };
        if self.left {
            self.sync.digest_sync = None;
            return;
        }
        // While the membership grows (within an interval of the last new
        // member), a quarter of the interval apart: a joining node learns
        // the cluster, and the cluster the joiners, from whichever peers
        // heard of them first, instead of one member list per second (a
        // 20-node join waited a whole interval for its second wave).
        let min = self.cfg.sync_min_interval_ms;
        let growing = self
            .sync
            .grew_ms
            .is_some_and(|t| self.now_ms.saturating_sub(t) < min);
        let spacing = if growing { min / GROWING_SYNC_DIVISOR } else { min };
        let recent = self
            .sync
            .last_digest_sync_ms
            .is_some_and(|t| self.now_ms.saturating_sub(t) < spacing);
        if recent || self.sync.inflight.len() >= self.cfg.max_inflight_syncs || !self.sync_allowed(peer) {
            return;
        }
        self.sync.digest_sync = None;
        self.sync.wanted.remove(&peer);
        self.sync.last_digest_sync_ms = Some(self.now_ms);
        self.start_sync(peer);
    }

    pub(super) fn want_sync(&mut self, peer: NodeId) {
        if peer == self.me || self.left {
            return;
        }
        if self.sync.inflight.len() >= self.cfg.max_inflight_syncs || !self.sync_allowed(peer) {
            self.sync.wanted.insert(peer);
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
            high_seq: self.state.next_seq(&self.me) - 1,
        };
        let bytes = self.encode(&Message::SyncRequest(req));
        let id = self.sync.next_request_id();
        self.sync.inflight.insert(
            id,
            InflightSync {
                peer,
                started_ms: self.now_ms,
                phase: SyncPhase::Pull,
            },
        );
        self.sync.last_sync_with.insert(peer, self.now_ms);
        self.counters.syncs_started += 1;
        self.out.push(Action::SendRequest { to: peer, id, bytes });
    }
}

/// The rejection for a knowledge summary [`PeerKnowledge::new`] refused; it
/// refuses only a bad bucket layout.
fn knowledge_rejection(reason: &'static str) -> RejectReason {
    debug_assert_eq!(reason, RejectReason::BadKnowledgeBuckets.as_str());
    RejectReason::BadKnowledgeBuckets
}

/// Whether a peer's manifest lists more dots, or its graves are more,
/// than any node sends in one message.
fn over_sync_bounds(manifest: &BTreeMap<u16, Vec<Dot>>, graves: &[(StateKey, Version)]) -> bool {
    graves.len() > MAX_SYNC_GRAVES
        || manifest
            .values()
            .try_fold(0usize, |n, dots| {
                n.checked_add(dots.len()).filter(|n| *n <= MAX_MANIFEST_DOTS)
            })
            .is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Config;
    use crate::core::ids::{Key, Namespace};
    use crate::core::membership::NodeInfo;
    use crate::core::persist::Snapshot;
    use crate::core::wire;
    use crate::core::Command;
    use crate::core::Input;

    const T0: u64 = 1_000_000;

    fn engine(index: u64) -> Engine {
        Engine::new(
            Config::default(),
            crate::core::crypto::test_keys(NodeId::from_index(index)),
            NodeInfo::default(),
            T0,
            index,
            None,
        )
        .expect("default config is valid")
    }

    fn put(e: &mut Engine, now: u64, key: &str, value: &str) {
        let actions = e.handle(
            now,
            Input::Command {
                id: 1,
                command: Command::Put {
                    namespace: Namespace::new("app").expect("valid namespace"),
                    key: Key::new(key).expect("valid key"),
                    value: value.as_bytes().to_vec(),
                    expect: None,
                },
            },
        );
        assert!(matches!(actions.first(), Some(Action::Persist(_))));
    }

    fn read(e: &Engine, key: &str) -> Option<Vec<u8>> {
        e.kv_get(
            &Namespace::new("app").expect("valid namespace"),
            &Key::new(key).expect("valid key"),
        )
        .map(|entry| entry.value)
    }

    /// The one request among `actions`: `(to, id, bytes)`.
    fn request(actions: Vec<Action>) -> (NodeId, u64, Vec<u8>) {
        let mut requests: Vec<_> = actions
            .into_iter()
            .filter_map(|a| match a {
                Action::SendRequest { to, id, bytes } => Some((to, id, bytes)),
                _ => None,
            })
            .collect();
        assert_eq!(requests.len(), 1, "exactly one request");
        requests.pop().expect("one request")
    }

    /// The one response among `actions`.
    fn response(actions: Vec<Action>) -> Vec<u8> {
        let mut responses: Vec<_> = actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Respond { bytes, .. } => Some(bytes),
                _ => None,
            })
            .collect();
        assert_eq!(responses.len(), 1, "exactly one response");
        responses.pop().expect("one response")
    }

    fn decode(e: &Engine, bytes: &[u8]) -> Message {
        wire::decode(bytes, e.cluster_id, e.cfg.max_message_bytes).expect("the engine encodes valid messages")
    }

    /// Carry one sync round trip from `requester` to `responder` and back;
    /// returns the requester's actions.
    fn round_trip(
        requester: &mut Engine,
        responder: &mut Engine,
        now: u64,
        req: (NodeId, u64, Vec<u8>),
    ) -> Vec<Action> {
        let (to, id, bytes) = req;
        assert_eq!(to, responder.node_id());
        let from = requester.node_id();
        let answer = response(responder.handle(now, Input::Request { from, id: 77, bytes }));
        requester.handle(
            now,
            Input::Response {
                from: to,
                id,
                bytes: answer,
            },
        )
    }

    /// The attack the trust review found: a `SyncPush` out of the blue
    /// that claims to have seen every version of ours (our own knowledge
    /// summary) and lists none of them. It used to make the node drop
    /// everything — and honest anti-entropy then spread the loss. A live
    /// version now leaves only with a version that supersedes it or a
    /// grave, so the node keeps every value.
    #[test]
    fn a_push_claiming_to_have_seen_and_dropped_everything_drops_no_live_value() {
        let mut a = engine(1);
        put(&mut a, T0, "k", "v");
        put(&mut a, T0 + 1, "k", "v2");
        put(&mut a, T0 + 2, "other", "w");
        a.flush();
        let n = knowledge_bucket_count(1);
        let mine = a.state().knowledge().bucket_hashes(n);
        let push = SyncPush {
            versions: Vec::new(),
            knowledge: KnowledgeSummary {
                buckets: Hashes(mine),
                shipped: Vec::new(),
                ranges: Knowledge::new(),
            },
            manifest: (0..BUCKETS as u16).map(|b| (b, Vec::new())).collect(),
            graves: Vec::new(),
            members: Vec::new(),
            wanted: Vec::new(),
        };
        let bytes = wire::encode(&Message::SyncPush(push), a.cluster_id);
        // The attacker opens a real sync (a push is taken only as the
        // second half of one), then pushes its lie.
        let mut attacker = engine(66);
        let (_, _, req) = request(attacker.handle(T0 + 3, Input::PeerConnected(a.node_id())));
        response(a.handle(
            T0 + 3,
            Input::Request {
                from: attacker.node_id(),
                id: 1,
                bytes: req,
            },
        ));
        let ack = response(a.handle(
            T0 + 3,
            Input::Request {
                from: attacker.node_id(),
                id: 2,
                bytes,
            },
        ));
        assert!(
            matches!(decode(&a, &ack), Message::SyncAck(_)),
            "the push was taken in and answered, not rejected"
        );
        assert_eq!(read(&a, "k"), Some(b"v2".to_vec()));
        assert_eq!(read(&a, "other"), Some(b"w".to_vec()));
    }

    #[test]
    fn a_push_without_a_sync_request_is_refused_and_counted() {
        let mut a = engine(1);
        put(&mut a, T0, "k", "v");
        a.flush();
        let mut b = engine(2);
        put(&mut b, T0, "theirs", "x");
        b.flush();
        let (versions, _) = b.state().delta_since(&Knowledge::new(), usize::MAX);
        let push = SyncPush {
            versions,
            knowledge: KnowledgeSummary {
                buckets: Hashes(Vec::new()),
                shipped: Vec::new(),
                ranges: Knowledge::new(),
            },
            manifest: BTreeMap::new(),
            graves: Vec::new(),
            members: Vec::new(),
            wanted: Vec::new(),
        };
        let bytes = wire::encode(&Message::SyncPush(push), a.cluster_id);
        let out = a.handle(
            T0 + 1,
            Input::Request {
                from: b.node_id(),
                id: 1,
                bytes,
            },
        );
        match decode(&a, &response(out)) {
            Message::SyncAck(ack) => {
                assert_eq!(ack.applied, 0);
                assert!(
                    ack.versions.is_empty() && !ack.complete,
                    "an empty, incomplete ack"
                );
            }
            other => panic!("expected an empty ack, got {other:?}"),
        }
        assert_eq!(
            a.counters().rejected.get(&RejectReason::UnsolicitedPush),
            Some(&1)
        );
        assert_eq!(read(&a, "theirs"), None, "nothing of the push was merged");
    }

    #[test]
    fn a_node_that_holds_every_peer_dead_still_syncs_with_one_on_its_timer() {
        let mut a = engine(1);
        let b = NodeId::from_index(2);
        let claim = crate::core::crypto::member_claim(&b, &NodeInfo::default(), 1, false);
        a.merge_member(crate::core::membership::Member {
            node: b,
            info: NodeInfo::default().into(),
            incarnation: 1,
            status: MemberStatus::Dead,
            proof: crate::core::crypto::test_keys(b).sign(&claim),
        });
        assert_eq!(a.member(&b).map(|m| m.status), Some(MemberStatus::Dead));
        a.flush();
        a.on_sync_timer(T0 + 1);
        let (to, _, _) = request(a.flush());
        assert_eq!(to, b, "the dead peer is tried, so a healed partition merges back");
    }

    /// The heartbeat `e` publishes when its timer fires at `now`.
    fn heartbeat_of(e: &mut Engine, now: u64) -> Vec<u8> {
        e.now_ms = now;
        e.on_heartbeat_timer(now);
        e.flush()
            .into_iter()
            .find_map(|act| match act {
                Action::Publish {
                    topic: super::super::Topic::Heartbeat,
                    bytes,
                } => Some(bytes),
                _ => None,
            })
            .expect("a heartbeat is published")
    }

    /// A periodic round of `a` at `now`: the peer it wants a sync with,
    /// if any (the sync is then forgotten, as if it failed at once).
    fn round(a: &mut Engine, now: u64) -> Option<NodeId> {
        a.now_ms = now;
        a.on_sync_timer(now);
        let to = a.flush().into_iter().find_map(|act| match act {
            Action::SendRequest { to, .. } => Some(to),
            _ => None,
        });
        a.sync.inflight.clear();
        to
    }

    #[test]
    fn a_quiet_node_runs_one_periodic_round_in_four_and_bridges_only_to_a_member_not_heard_equal() {
        let (mut a, mut b, mut c) = (engine(1), engine(2), engine(3));
        // B is a connected neighbour, C a member reached only by gossip;
        // their heartbeats show A equal state.
        a.connected.insert(b.node_id());
        let step = a.cfg.sync_interval_ms;
        let mut t = T0;
        let hear = |a: &mut Engine, t: u64, from: &mut [&mut Engine]| {
            for e in from.iter_mut() {
                let hb = heartbeat_of(e, t);
                a.handle_gossip(t, e.node_id(), &hb);
            }
        };
        // Everyone hears everyone's record: equal membership everywhere.
        let hbs: Vec<(NodeId, Vec<u8>)> = [&mut a, &mut b, &mut c]
            .into_iter()
            .map(|e| (e.node_id(), heartbeat_of(e, t)))
            .collect();
        for e in [&mut a, &mut b, &mut c] {
            for (from, hb) in &hbs {
                if *from != e.node_id() {
                    e.handle_gossip(t, *from, hb);
                }
            }
            e.flush();
        }
        assert_eq!(a.members.hash(), c.members.hash());
        round(&mut a, t); // the first round has no mark to compare with
        let mut synced = Vec::new();
        for _ in 0..8 {
            t += step;
            hear(&mut a, t - 1, &mut [&mut b, &mut c]);
            synced.extend(round(&mut a, t));
        }
        assert_eq!(a.counters.syncs_skipped_quiet, 6, "three rounds in four skipped");
        assert_eq!(synced, vec![b.node_id(); 2], "the fourth goes to a neighbour");
        // C falls silent (say an island formed): once it has not shown
        // equal state for the bridge window, the fourth round goes to it.
        let mut synced = Vec::new();
        for _ in 0..8 {
            t += step;
            hear(&mut a, t - 1, &mut [&mut b]);
            synced.extend(round(&mut a, t));
        }
        assert_eq!(a.counters.syncs_skipped_quiet, 12);
        assert!(synced.contains(&c.node_id()), "{synced:?}");
        // Any heartbeat showing other state makes the next round run.
        put(&mut c, t, "k", "v");
        t += step;
        let before = a.counters.syncs_skipped_quiet;
        hear(&mut a, t - 1, &mut [&mut c]);
        a.sync.inflight.clear();
        a.flush();
        for _ in 0..3 {
            round(&mut a, t);
            t += step;
            hear(&mut a, t - 1, &mut [&mut b]);
        }
        assert!(
            a.counters.syncs_skipped_quiet < before + 3,
            "a changed state wakes the rounds"
        );
    }

    #[test]
    fn a_sync_with_a_peer_that_holds_more_brings_back_the_missing_versions() {
        let (mut a, mut b) = (engine(1), engine(2));
        put(&mut a, T0, "k", "v");
        assert_ne!(a.digest(), b.digest());
        b.want_sync(a.node_id());
        let (to, id, bytes) = request(b.flush());
        assert_eq!(b.inflight_syncs(), 1);
        // Pull: A's answer lists the dot B lacks in the bucket that differs.
        let answer = response(a.handle(
            T0 + 1,
            Input::Request {
                from: b.node_id(),
                id: 5,
                bytes,
            },
        ));
        let Message::SyncResponse(resp) = decode(&a, &answer) else {
            panic!("a sync request is answered by a sync response");
        };
        let listed: Vec<Dot> = resp.manifest.values().flatten().copied().collect();
        let (_, written) = a.state().iter().next().expect("A holds its write");
        assert_eq!(listed, vec![written.winner().expect("live").dot]);
        // Push: B answers with its half; A's ack carries the missing version.
        let push = request(b.handle(
            T0 + 2,
            Input::Response {
                from: to,
                id,
                bytes: answer,
            },
        ));
        let ack = response(a.handle(
            T0 + 3,
            Input::Request {
                from: b.node_id(),
                id: 6,
                bytes: push.2,
            },
        ));
        let Message::SyncAck(ack_msg) = decode(&a, &ack) else {
            panic!("a push is answered by an ack");
        };
        assert_eq!(ack_msg.versions.len(), 1);
        assert!(ack_msg.complete);
        let after = b.handle(
            T0 + 4,
            Input::Response {
                from: a.node_id(),
                id: push.1,
                bytes: ack,
            },
        );
        assert!(after.iter().all(|act| !matches!(act, Action::SendRequest { .. })));
        assert_eq!(read(&b, "k").as_deref(), Some(&b"v"[..]));
        assert_eq!(a.digest(), b.digest());
        assert_eq!(b.inflight_syncs(), 0);
        assert_eq!(b.counters.syncs_completed, 1);
        assert_eq!(b.last_converged().get(&a.node_id()), Some(&(T0 + 4)));
    }

    /// The bug hunt's open finding (swarm seed 2245, shrunk): B deletes a
    /// key A holds, collects the delete and forgets its grave before A
    /// hears of it (a cut longer than `grave_ttl_ms`). B has seen the
    /// value's dot and holds nothing; A holds the value and nothing shows
    /// it deleted. Syncs used to find nothing to send either way and the
    /// two stayed diverged for ever. Now B asks back what A lists that B
    /// has seen and holds nowhere, and both end with the value (the
    /// documented limit of a cut past the grave lifetime).
    #[test]
    fn a_delete_forgotten_before_it_reached_a_peer_is_undone_and_the_two_converge() {
        let short = |index| {
            let cfg = Config {
                tombstone_ttl_ms: 1_000,
                grave_ttl_ms: 2_000,
                ..Config::default()
            };
            Engine::new(
                cfg,
                crate::core::crypto::test_keys(NodeId::from_index(index)),
                NodeInfo::default(),
                T0,
                index,
                None,
            )
            .expect("valid config")
        };
        let (mut a, mut b) = (short(1), short(2));
        put(&mut a, T0, "k", "v");
        let sync = |b: &mut Engine, a: &mut Engine, now: u64| {
            b.now_ms = now;
            b.want_sync(a.node_id());
            let req = request(b.flush());
            let push = request(round_trip(b, a, now + 1, req));
            round_trip(b, a, now + 2, push);
        };
        sync(&mut b, &mut a, T0 + 1);
        assert_eq!(read(&b, "k").as_deref(), Some(&b"v"[..]));
        // B deletes (A is cut off), collects, and forgets the grave.
        let del = b.handle(
            T0 + 10,
            Input::Command {
                id: 2,
                command: Command::Delete {
                    namespace: Namespace::new("app").expect("valid namespace"),
                    key: Key::new("k").expect("valid key"),
                    expect: None,
                },
            },
        );
        assert!(matches!(del.first(), Some(Action::Persist(_))));
        b.collect_garbage(T0 + 1_100);
        b.collect_garbage(T0 + 2_100);
        assert!(
            b.state().iter().next().is_none(),
            "B holds nothing, not even the grave"
        );
        assert_ne!(a.digest(), b.digest());
        // One sync started by B brings the value back.
        sync(&mut b, &mut a, T0 + 5_000);
        assert_eq!(read(&b, "k").as_deref(), Some(&b"v"[..]));
        assert_eq!(b.counters.taken_back, 1);
        assert_eq!(a.digest(), b.digest());
        // Syncs either way change nothing more.
        sync(&mut b, &mut a, T0 + 10_000);
        sync(&mut a, &mut b, T0 + 15_000);
        assert_eq!(b.counters.taken_back + a.counters.taken_back, 1);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(read(&a, "k").as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn a_sync_between_equal_nodes_ends_after_the_pull() {
        let (mut a, mut b) = (engine(1), engine(2));
        put(&mut a, T0, "k", "v");
        // A first exchange brings B the write and each the other's record.
        b.want_sync(a.node_id());
        let req = request(b.flush());
        let push = request(round_trip(&mut b, &mut a, T0 + 1, req));
        round_trip(&mut b, &mut a, T0 + 2, push);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.members_hash(), b.members_hash());
        // The next one finds nothing to push.
        let later = T0 + 2 + a.cfg.sync_min_interval_ms;
        b.now_ms = later;
        b.want_sync(a.node_id());
        let req = request(b.flush());
        let after = round_trip(&mut b, &mut a, later, req);
        assert!(
            after.iter().all(|act| !matches!(act, Action::SendRequest { .. })),
            "no push: {after:?}"
        );
        assert_eq!(b.counters.syncs_completed, 2);
        assert_eq!(b.inflight_syncs(), 0);
    }

    #[test]
    fn a_response_to_no_sync_in_flight_is_rejected_and_counted() {
        let (mut a, mut b) = (engine(1), engine(2));
        b.want_sync(a.node_id());
        let (_, _, bytes) = request(b.flush());
        let answer = response(a.handle(
            T0,
            Input::Request {
                from: b.node_id(),
                id: 1,
                bytes,
            },
        ));
        let digest = b.digest();
        let actions = b.handle(
            T0 + 1,
            Input::Response {
                from: a.node_id(),
                id: 999,
                bytes: answer,
            },
        );
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!(
            b.counters.rejected.get(&RejectReason::UnexpectedResponse),
            Some(&1)
        );
        assert_eq!(b.digest(), digest);
        assert_eq!(b.inflight_syncs(), 1, "the real sync still waits for its answer");
    }

    #[test]
    fn a_response_from_another_peer_than_the_one_asked_is_rejected() {
        let (mut a, mut b, c) = (engine(1), engine(2), engine(3));
        b.want_sync(a.node_id());
        let (_, id, bytes) = request(b.flush());
        let answer = response(a.handle(
            T0,
            Input::Request {
                from: b.node_id(),
                id: 1,
                bytes,
            },
        ));
        let actions = b.handle(
            T0 + 1,
            Input::Response {
                from: c.node_id(),
                id,
                bytes: answer,
            },
        );
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!(b.counters.rejected.get("response_from_wrong_peer"), Some(&1));
        assert!(
            b.members().iter().all(|m| m.node != a.node_id()),
            "nothing of it merged"
        );
    }

    #[test]
    fn a_sync_without_an_answer_fails_once_the_sync_timeout_has_passed() {
        let (a, mut b) = (engine(1), engine(2));
        b.want_sync(a.node_id());
        request(b.flush());
        let timeout = b.cfg.sync_timeout_ms;
        let mut now = T0;
        while now <= T0 + timeout {
            b.handle(now, Input::Tick);
            assert_eq!(b.inflight_syncs(), 1, "still waiting at {}", now - T0);
            now += 100;
        }
        // The next housekeeping check after the timeout gives up.
        let check = b.timers.get(Timer::Check).expect("armed");
        b.handle(check.max(now), Input::Tick);
        assert_eq!(b.inflight_syncs(), 0);
        assert_eq!(b.counters.syncs_failed, 1);
    }

    #[test]
    fn a_failed_request_fails_the_sync_and_retries_the_peer_after_the_interval() {
        let (a, mut b) = (engine(1), engine(2));
        b.want_sync(a.node_id());
        let (_, id, _) = request(b.flush());
        b.handle(T0 + 1, Input::RequestFailed { id });
        assert_eq!(b.counters.syncs_failed, 1);
        assert_eq!(b.inflight_syncs(), 0);
        // Not again before the per-peer interval...
        let quick = b.handle(T0 + 2, Input::Tick);
        assert!(quick.iter().all(|act| !matches!(act, Action::SendRequest { .. })));
        // ...then at once.
        let later = b.handle(T0 + b.cfg.sync_min_interval_ms, Input::Tick);
        let (to, _, bytes) = request(later);
        assert_eq!(to, a.node_id());
        assert!(matches!(decode(&b, &bytes), Message::SyncRequest(_)));
    }

    fn no_request(actions: &[Action]) -> bool {
        actions
            .iter()
            .all(|act| !matches!(act, Action::SendRequest { .. }))
    }

    /// B hears a heartbeat from A, then one from C, both showing state B
    /// lacks: B syncs with A at once, remembers C, and syncs with C
    /// `spacing` after A. Returns B.
    fn second_digest_sync_after(mut b: Engine, spacing: u64) -> Engine {
        let (mut a, mut c) = (engine(1), engine(3));
        put(&mut a, T0, "a", "1");
        put(&mut c, T0, "c", "1");
        let (hb_a, hb_c) = (heartbeat_of(&mut a, T0 + 100), heartbeat_of(&mut c, T0 + 100));
        let first = b.handle_gossip(T0 + 300, a.node_id(), &hb_a);
        assert_eq!(request(first).0, a.node_id());
        let second = b.handle_gossip(T0 + 310, c.node_id(), &hb_c);
        assert!(no_request(&second), "a second digest sync waits");
        assert_eq!(b.sync.digest_sync, Some(c.node_id()), "remembered for later");
        let early = b.handle(T0 + 299 + spacing, Input::Tick);
        assert!(no_request(&early), "not before {spacing} ms");
        let later = b.handle(T0 + 300 + spacing, Input::Tick);
        assert_eq!(request(later).0, c.node_id());
        b
    }

    #[test]
    fn heartbeat_mismatches_start_at_most_one_sync_per_interval_for_the_whole_node() {
        // B has held A's and C's records since before (restarted with
        // them): its membership is not growing.
        let (a, c) = (engine(1), engine(3));
        let known = Snapshot {
            members: vec![
                a.own_record(MemberStatus::Alive),
                c.own_record(MemberStatus::Alive),
            ],
            ..Snapshot::default()
        };
        let b = Engine::new(
            Config::default(),
            crate::core::crypto::test_keys(NodeId::from_index(2)),
            NodeInfo::default(),
            T0,
            2,
            Some(known),
        )
        .expect("default config is valid");
        let min = b.cfg.sync_min_interval_ms;
        second_digest_sync_after(b, min);
    }

    #[test]
    fn while_the_membership_grows_digest_syncs_run_a_quarter_interval_apart() {
        // A and C are new to B: a joining node learns the cluster from
        // whoever heard of its members first, four times a second.
        let b = engine(2);
        let quarter = b.cfg.sync_min_interval_ms / GROWING_SYNC_DIVISOR;
        let b = second_digest_sync_after(b, quarter);
        assert_eq!(b.sync.grew_ms, Some(T0 + 310), "C's record was the last new one");
    }
}
