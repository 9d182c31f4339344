//! Liveness: heartbeats out and in, the membership merge with refutation,
//! and failure detection (suspect, then dead).
//!
//! Every node publishes a heartbeat per effective interval (the base
//! interval, grown with the cluster so each node hears about
//! `heartbeat_fanin` heartbeats per base interval). Each arrival feeds the
//! sender's phi-accrual detector, whose deadline says when the silence
//! becomes suspicious. The failure check, run every quarter interval or so,
//! declares a member past its deadline suspect, and a member suspect for
//! `suspect_timeout_ms` dead; declarations are staggered per pair of nodes
//! so the first ones reach the others before most of them declare. A node
//! that hears it is suspected (or dead) refutes by raising its incarnation.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;

use super::limits::{
    FULL_SPREAD_MEMBERS, INTERVAL_CHANGE_SHARE, MIN_CHECK_INTERVAL_MS, PEER_INTERVAL_RANGE_MS, PHI_WINDOW,
};
use super::timers::Timer;
use super::{Action, Engine, RejectReason, Topic};
use crate::core::ids::{IdMap, NodeId};
use crate::core::membership::{Member, MemberStatus};
use crate::core::phi::PhiDetector;
use crate::core::state::Digest;
use crate::core::wire::{Delta, Heartbeat, Message, ANNOUNCE_HEARTBEATS};

/// A member known from a record but never heard by heartbeat is silent
/// after this many effective heartbeat intervals.
const UNHEARD_INTERVALS: u64 = 3;

/// A node whose state and membership digests have not changed for this
/// many base heartbeat intervals is quiet (see [`Engine::send_heartbeat`]).
const QUIET_AFTER_INTERVALS: u64 = 5;

/// A quiet node heartbeats this many times less often.
pub(super) const QUIET_FACTOR: u64 = 2;

/// First-hand suspicions are declared within this long of the evidence,
/// at a delay fixed per pair of nodes (see [`Engine::on_unreachable`]).
const FIRST_HAND_SPREAD_MS: u64 = 100;

/// How soon after a new connection a node whose own record is not yet
/// announced sends its heartbeat: at once, give or take a few connections
/// coming up together. The driver holds a publish that finds no
/// subscribed peer until the new connection's subscriptions arrive
/// (`node::held`), so nothing waits for them here. (At 10 ms the
/// simulator's regression `membership-islands-after-heal` was invalid for
/// a while: the simulator's mesh refused links to peers at twice the
/// degree, and two nodes back from a pause stayed an island; fixed in
/// the simulator, `sim::mesh::graft`.)
const ANNOUNCE_DELAY_MS: u64 = 10;

/// What a node tracks about the liveness of its peers and announces about
/// its own.
#[derive(Clone, Debug, Default)]
pub(super) struct Liveness {
    /// Per peer: its failure detector and the precedence of the record
    /// held for it (so a heartbeat is judged with one lookup).
    peers: IdMap<Peer>,
    /// When each member currently held as suspect was first suspected.
    suspect_since: BTreeMap<NodeId, u64>,
    /// Members reported unreachable first-hand and not reached since,
    /// with when: silent whatever their detector says (their last
    /// heartbeat may be recent; at scale heartbeats are far apart).
    unreachable: BTreeMap<NodeId, u64>,
    /// `(incarnation, heartbeats left)`: the own incarnation last
    /// announced in full in heartbeats, and how many more will carry it.
    announced: (u64, u32),
    /// Sequence number of the last heartbeat sent.
    heartbeat_seq: u64,
    /// The `(state digest, members hash)` as of the last input, and since
    /// when it has stood (see [`Engine::note_changes`]).
    mark: Option<((Digest, u64), u64)>,
    /// The interval the last heartbeat announced: the next one is due
    /// within it.
    sent_interval_ms: u64,
    /// Members held dead or departed, with since when (this node's clock,
    /// as first noticed by the garbage collection pass).
    gone_since: BTreeMap<NodeId, u64>,
    /// Members reaped (their records dropped), with the incarnation
    /// dropped and when: a record at that incarnation or below is ignored
    /// for `member_reap_ms`, so a peer that has not reaped yet does not
    /// bring it back.
    reaped: BTreeMap<NodeId, (u64, u64)>,
    /// Members alive or suspect as of the last failure check (a cached
    /// count: heartbeats arrive far more often than checks run).
    alive_seen: u64,
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
    /// Whether a heartbeat of its own has arrived: until one has, its
    /// interval is unknown (it grows with a cluster this node may not
    /// know in full yet), so its detector's deadline is not used.
    heard: bool,
}

impl Liveness {
    /// Current phi of a peer, if tracked.
    pub(super) fn phi(&self, node: &NodeId, now_ms: u64) -> Option<f64> {
        self.peers.get(node).map(|p| p.detector.phi(now_ms))
    }

    /// Recompute every deadline for a new phi threshold.
    pub(super) fn rearm_deadlines(&mut self, threshold: f64) {
        for p in self.peers.values_mut() {
            p.deadline = p.detector.suspect_deadline_ms(threshold);
        }
    }
}

impl Peer {
    /// A peer first heard from by a heartbeat announcing `interval_ms`: no
    /// arrival recorded yet, so no deadline.
    fn unheard(interval_ms: u64) -> Self {
        Peer {
            detector: detector(interval_ms),
            deadline: None,
            held: None,
            heard: true,
        }
    }

    /// A peer learned of (from a record) at `now_ms`: treated as heard
    /// from then, expected to heartbeat every `interval_ms`.
    fn heard_of(interval_ms: u64, now_ms: u64, threshold: f64) -> Self {
        let mut d = detector(interval_ms);
        d.reset(now_ms);
        Peer {
            deadline: d.suspect_deadline_ms(threshold),
            detector: d,
            held: None,
            heard: false,
        }
    }
}

impl Engine {
    /// Track `node`, known from a stored record held at `(incarnation,
    /// status)`, as if heard from at `now`.
    pub(super) fn hold_peer(&mut self, node: NodeId, held: (u64, MemberStatus), now: u64) {
        self.track(node, now).held = Some(held);
    }

    /// The heartbeat timer fired: publish one and re-arm (jittered, per the
    /// effective interval).
    pub(super) fn on_heartbeat_timer(&mut self, now: u64) {
        self.send_heartbeat();
        let interval = self.liveness.sent_interval_ms;
        let jitter = self.rng.gen_range(0..=interval / 10);
        self.timers
            .set(Timer::Heartbeat, now + interval - interval / 20 + jitter);
    }

    /// First-hand evidence from the driver that `node` is gone (see
    /// [`super::Input::PeerUnreachable`]): a member held alive is declared
    /// suspect by the failure check within [`FIRST_HAND_SPREAD_MS`] (a
    /// share fixed per pair of nodes), not after its detector's deadline.
    /// Its few neighbours see the evidence at once; staggered, the first
    /// declaration reaches the others before they make their own.
    pub(super) fn on_unreachable(&mut self, node: NodeId) {
        if node == self.me || self.left {
            return;
        }
        let Some(m) = self.members.get(&node) else {
            return;
        };
        if !matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect) {
            return;
        }
        // A suspect one (on someone's word) is now suspect on ours too: it
        // turns dead on time here whatever the detector says.
        let alive = m.status == MemberStatus::Alive;
        let now = self.now_ms;
        // The first report's time stands: repeats do not delay it.
        let first = !self.liveness.unreachable.contains_key(&node);
        self.liveness.unreachable.entry(node).or_insert(now);
        if first && alive {
            self.counters.unreachable_reports += 1;
            tracing::debug!(me = %self.me.short(), peer = %node.short(), "unreachable: suspecting");
        }
        let at = now + self.declaration_delay_ms(&node, FIRST_HAND_SPREAD_MS);
        self.timers.set_earlier(Timer::FailureCheck, at);
        self.timers.set_earlier(Timer::Check, at);
    }

    /// A connection to `node` opened: whatever first-hand evidence there
    /// was of it being gone is void (its detector decides again).
    pub(super) fn reached(&mut self, node: &NodeId) {
        self.liveness.unreachable.remove(node);
    }

    /// Send the next heartbeat soon when this node's own record has not
    /// been announced yet (it just started, or its incarnation changed): a
    /// new connection means gossip can now carry it, and waiting a whole
    /// interval (which grows with the cluster) would slow every join.
    pub(super) fn announce_soon(&mut self) {
        let fresh =
            self.liveness.announced.0 != self.incarnation || self.liveness.announced.1 == ANNOUNCE_HEARTBEATS;
        if fresh && !self.left {
            self.timers
                .set_earlier(Timer::Heartbeat, self.now_ms + ANNOUNCE_DELAY_MS);
        }
    }

    /// The failure check is due: run it and re-arm.
    pub(super) fn on_failure_check_timer(&mut self, now: u64) {
        self.check_failures();
        // Peers heartbeat once per *effective* interval (it grows
        // with the cluster), so checking a quarter of it is as
        // precise as checking every base quarter, and keeps the
        // O(members) scan flat per node as the cluster grows (the
        // simulator measured it dominating at 1,000 nodes).
        // Jittered (half to one and a half quarters) so that the
        // scans of nodes started together drift apart.
        let mut quarter = (self.heartbeat_interval_ms() / 4).max(MIN_CHECK_INTERVAL_MS);
        if !self.liveness.suspect_since.is_empty() {
            // A suspicion turns to death on time, whatever the cluster size.
            quarter = quarter.min((self.cfg.heartbeat_interval_ms / 4).max(MIN_CHECK_INTERVAL_MS));
        }
        self.timers.set(
            Timer::FailureCheck,
            now + quarter / 2 + self.rng.gen_range(0..=quarter),
        );
    }

    pub(super) fn on_heartbeat(&mut self, from: NodeId, hb: Heartbeat) {
        if hb.node != from {
            self.reject(RejectReason::HeartbeatSpoofed);
            return;
        }
        if self.clock.observe(hb.hlc, self.now_ms).is_err() {
            self.reject(RejectReason::ClockDrift);
            return;
        }
        if !self.has_room_for(&from) {
            // Its detector and mark would be a member entry in all but
            // name: refused like its record.
            self.reject(RejectReason::MemberLimit);
            return;
        }
        self.counters.heartbeats_received += 1;
        self.heard_from(from, hb.high_seq);
        let now = self.now_ms;
        let (lo, hi) = PEER_INTERVAL_RANGE_MS;
        // Expected no more often than this node's own interval: a sender
        // that knew fewer members when it sent (a cluster forming or
        // growing) announces a shorter interval than it will keep once it
        // learns them, and gossip during a join is lossy. Its detector
        // is the slow backstop (neighbours see a failure first-hand), so
        // it waits for the interval the cluster is heading to; at 50
        // nodes the announced one fired on joins (PERFORMANCE "False
        // suspicions while a cluster forms").
        let interval = hb
            .interval_ms
            .clamp(lo, hi)
            .max(self.interval_for(self.liveness.alive_seen));
        let peer = self
            .liveness
            .peers
            .entry(from)
            .or_insert_with(|| Peer::unheard(interval));
        let det = &mut peer.detector;
        // The sender's interval changed (cluster grew or shrank, it went
        // quiet or woke up): start over. Relative to the shorter of the
        // two, so that doubling counts as much as halving.
        let mean = det.mean_ms();
        if (mean - interval as f64).abs() > mean.min(interval as f64) * INTERVAL_CHANGE_SHARE
            && det.last_arrival_ms().is_some()
        {
            *det = detector(interval);
        }
        det.heartbeat(now);
        peer.heard = true;
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
        let equal = !behind && hb.digest == mine && hb.members_hash == self.members.hash();
        self.sync.heard_state(equal);
        if equal {
            self.sync.converged_with(from, now);
        } else {
            self.want_digest_sync(from);
        }
    }

    /// Merge a member record from a peer (or this node's own declaration
    /// of a peer as suspect or dead). A record that would change the view
    /// is checked first: it must carry its subject's signature over its
    /// claim, so nobody declares a node anything at an incarnation it never
    /// had, nor that it left.
    pub(super) fn merge_member(&mut self, m: Member) {
        if m.node == self.me {
            let mine = self.local_member();
            if !self.left && mine.is_superseded_by(&m) {
                if !m.is_signed(&*self.keys) {
                    self.reject(RejectReason::MemberBadSignature);
                    return;
                }
                // Someone thinks we are suspect, dead or gone: refute.
                // Saturating: a peer may claim incarnation u64::MAX.
                self.incarnation = self.incarnation.max(m.incarnation).saturating_add(1);
                let rec = self.own_record(MemberStatus::Alive);
                self.members.merge(rec.clone());
                self.publish_members(vec![rec]);
            }
            return;
        }
        let (change, held) = self.members.would_change_held(&m);
        if !change {
            return;
        }
        if let Some(&(incarnation, _)) = self.liveness.reaped.get(&m.node) {
            if m.incarnation <= incarnation {
                return; // reaped here; a peer still holds the old record
            }
        }
        if !(held || self.below_member_limit()) {
            self.reject(RejectReason::MemberLimit);
            return;
        }
        if m.info.validate().is_err() {
            self.reject(RejectReason::MemberBadInfo);
            return;
        }
        if !m.is_signed(&*self.keys) {
            self.reject(RejectReason::MemberBadSignature);
            return;
        }
        let now = self.now_ms;
        let (node, status, incarnation) = (m.node, m.status, m.incarnation);
        // A member this node did not hold: the membership grows.
        let new = !held;
        if self.members.merge(m).is_some() {
            match status {
                MemberStatus::Suspect => {
                    self.liveness.suspect_since.entry(node).or_insert(now);
                }
                _ => {
                    self.liveness.suspect_since.remove(&node);
                    self.liveness.unreachable.remove(&node);
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
            if new {
                self.sync.grew(now);
            }
        }
    }

    /// Drop the records of members held dead or departed for
    /// `member_reap_ms` (run with the garbage collection), and forget
    /// reaped identities after as long again. A reaped identity is back
    /// as soon as a record of it at a higher incarnation arrives (signed
    /// by it, like every record that raises an incarnation).
    pub(super) fn reap_members(&mut self, now: u64) {
        let reap = self.cfg.member_reap_ms;
        let gone: BTreeSet<NodeId> = self
            .members
            .iter()
            .filter(|m| m.node != self.me && matches!(m.status, MemberStatus::Dead | MemberStatus::Left))
            .map(|m| m.node)
            .collect();
        self.liveness.gone_since.retain(|n, _| gone.contains(n));
        for n in &gone {
            self.liveness.gone_since.entry(*n).or_insert(now);
        }
        let due: Vec<NodeId> = self
            .liveness
            .gone_since
            .iter()
            .filter(|(_, since)| now.saturating_sub(**since) >= reap)
            .map(|(n, _)| *n)
            .collect();
        for n in due {
            self.liveness.gone_since.remove(&n);
            if let Some(m) = self.members.remove(&n) {
                self.liveness.reaped.insert(n, (m.incarnation, now));
                self.liveness.peers.remove(&n);
                self.liveness.suspect_since.remove(&n);
                self.liveness.unreachable.remove(&n);
                self.counters.members_reaped += 1;
            }
        }
        self.liveness
            .reaped
            .retain(|_, (_, at)| now.saturating_sub(*at) < reap);
    }

    /// Whether the membership view may hold `node`: it is known already,
    /// or the view is below `max_members`. An unknown identity past the
    /// bound is refused; no known member is ever evicted for it.
    fn has_room_for(&self, node: &NodeId) -> bool {
        // The count first: below the limit (always, in a healthy cluster)
        // no search of the view is needed.
        self.below_member_limit() || self.members.get(node).is_some()
    }

    /// Whether the view holds fewer than `max_members` records.
    fn below_member_limit(&self) -> bool {
        self.members.len() < self.cfg.max_members
    }

    /// The peer entry of a member, created (its detector starting now) the
    /// first time.
    fn track(&mut self, node: NodeId, now: u64) -> &mut Peer {
        let interval = self.cfg.heartbeat_interval_ms;
        let threshold = self.cfg.phi_threshold;
        self.liveness
            .peers
            .entry(node)
            .or_insert_with(|| Peer::heard_of(interval, now, threshold))
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
        self.liveness.alive_seen = alive;
        // At most half a base interval: the effective interval grows with
        // the cluster, a declaration's delay must not.
        let spread = self.interval_for(alive).min(self.cfg.heartbeat_interval_ms) / 2
            * alive.min(FULL_SPREAD_MEMBERS)
            / FULL_SPREAD_MEMBERS;
        let unheard_after = UNHEARD_INTERVALS * self.interval_for(alive);
        for (node, peer) in &self.liveness.peers {
            let Some((_, status)) = peer.held else {
                continue;
            };
            let first_hand = self.liveness.unreachable.get(node).copied();
            let delay = if first_hand.is_some() {
                self.declaration_delay_ms(node, FIRST_HAND_SPREAD_MS)
            } else {
                self.declaration_delay_ms(node, spread)
            };
            let by_detector = if peer.heard {
                peer.deadline.is_some_and(|d| now >= d.saturating_add(delay))
            } else {
                // Known from a record, never heard: silent after a few of
                // the intervals its heartbeats should come at.
                peer.detector
                    .last_arrival_ms()
                    .is_some_and(|t| now >= t.saturating_add(unheard_after).saturating_add(delay))
            };
            let silent = by_detector || first_hand.is_some_and(|t| now >= t.saturating_add(delay));
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
                    let since = self.liveness.suspect_since.get(&m.node).copied().unwrap_or(now);
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

    /// Publish a heartbeat, at the quiet interval when nothing changed.
    fn send_heartbeat(&mut self) {
        self.liveness.heartbeat_seq += 1;
        let me = self.local_member();
        if self.liveness.announced.0 != me.incarnation {
            self.liveness.announced = (me.incarnation, ANNOUNCE_HEARTBEATS);
        }
        let info = if self.liveness.announced.1 > 0 {
            // Sent with no peer connected, it reaches nobody (a node's
            // first heartbeat often fires before its bootstrap dial
            // completes): it does not count, so the first connection
            // still brings the announcement forward (`announce_soon`)
            // instead of leaving the record to anti-entropy, or to the
            // next heartbeat an effective interval later.
            if !self.connected.is_empty() {
                self.liveness.announced.1 -= 1;
            }
            Some((me.info, me.proof))
        } else {
            None
        };
        // Quiet: state and membership unchanged for QUIET_AFTER_INTERVALS
        // base intervals and nobody suspected here (a new incarnation to
        // announce changed the membership hash). The heartbeat then
        // announces (and the timer keeps) QUIET_FACTOR times the interval:
        // digests still go round, at a fraction of the cost, and failures
        // are found from connections and pings, not from heartbeats (far
        // apart at scale anyway).
        let mark = self.note_changes();
        let unchanged_for = self
            .liveness
            .mark
            .map_or(0, |(_, since)| self.now_ms.saturating_sub(since));
        let quiet = unchanged_for >= QUIET_AFTER_INTERVALS.saturating_mul(self.cfg.heartbeat_interval_ms)
            && self.liveness.suspect_since.is_empty()
            && self.liveness.unreachable.is_empty();
        let mut interval = self.heartbeat_interval_ms();
        if quiet {
            interval = interval.saturating_mul(QUIET_FACTOR);
            self.counters.heartbeats_quiet += 1;
        }
        self.liveness.sent_interval_ms = interval;
        let hb = Heartbeat {
            seq: self.liveness.heartbeat_seq,
            node: me.node,
            incarnation: me.incarnation,
            status: me.status,
            info,
            hlc: self.clock.last(),
            digest: mark.0,
            members_hash: mark.1,
            interval_ms: interval,
            high_seq: self.state.next_seq(&self.me) - 1,
        };
        let bytes = self.encode(&Message::Heartbeat(hb));
        self.counters.heartbeats_sent += 1;
        self.out.push(Action::Publish {
            topic: Topic::Heartbeat,
            bytes,
        });
    }

    /// Note whether state or membership changed since the last look (after
    /// every input): the quiet heartbeat interval needs them unchanged for
    /// a while. Returns the current `(state digest, members hash)`.
    pub(super) fn note_changes(&mut self) -> (Digest, u64) {
        let mark = (self.state.digest(), self.members.hash());
        match self.liveness.mark {
            Some((m, _)) if m == mark => {}
            _ => self.liveness.mark = Some((mark, self.now_ms)),
        }
        mark
    }

    pub(super) fn publish_members(&mut self, members: Vec<Member>) {
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

    pub(super) fn members_not_gone(&self) -> u64 {
        self.members
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .count() as u64
    }

    /// The effective heartbeat interval with `alive` members.
    pub(super) fn interval_for(&self, alive: u64) -> u64 {
        let fanin = u64::from(self.cfg.heartbeat_fanin);
        self.cfg.heartbeat_interval_ms * alive.div_ceil(fanin).max(1)
    }
}

/// A failure detector expecting a heartbeat every `interval_ms`.
fn detector(interval_ms: u64) -> PhiDetector {
    PhiDetector::new(interval_ms, PHI_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Config;
    use crate::core::membership::NodeInfo;
    use crate::core::wire;
    use crate::core::Input;

    const T0: u64 = 1_000_000;

    fn engine(index: u64) -> Engine {
        let info = NodeInfo {
            name: format!("n{index}"),
            ..NodeInfo::default()
        };
        Engine::new(
            Config::default(),
            crate::core::crypto::test_keys(NodeId::from_index(index)),
            info,
            T0,
            index,
            None,
        )
        .expect("default config is valid")
    }

    /// A heartbeat of `e`, as published at `now`.
    fn heartbeat(e: &mut Engine, now: u64) -> Vec<u8> {
        e.now_ms = now;
        e.send_heartbeat();
        e.flush()
            .into_iter()
            .find_map(|act| match act {
                Action::Publish {
                    topic: Topic::Heartbeat,
                    bytes,
                } => Some(bytes),
                _ => None,
            })
            .expect("a heartbeat is published")
    }

    fn delta_of(e: &Engine, members: Vec<Member>) -> Vec<u8> {
        wire::encode(
            &Message::Delta(Delta {
                versions: Vec::new(),
                members,
            }),
            e.cluster_id,
        )
    }

    fn status(e: &Engine, of: &Engine) -> Option<MemberStatus> {
        e.member(&of.node_id()).map(|m| m.status)
    }

    /// `a` hears `beats` heartbeats of `b`, each one the interval the one
    /// before announced after it (the first a base interval from now),
    /// ticking in between; returns the time of the last one.
    fn beat(a: &mut Engine, b: &mut Engine, beats: u64) -> u64 {
        let mut interval = a.cfg.heartbeat_interval_ms;
        let mut t = a.now_ms;
        for _ in 0..beats {
            t += interval;
            let hb = heartbeat(b, t);
            interval = b.liveness.sent_interval_ms;
            a.handle_gossip(t, b.node_id(), &hb);
            a.handle(t, Input::Tick);
        }
        t
    }

    /// Tick `a` at each of its timeouts until `until`; the first times `b`
    /// reads as suspect and as dead.
    fn watch_silence(a: &mut Engine, b: &Engine, until: u64) -> (Option<u64>, Option<u64>) {
        let (mut suspect, mut dead) = (None, None);
        while a.now_ms < until {
            let next = a.poll_timeout().max(a.now_ms + 1);
            a.handle(next, Input::Tick);
            match status(a, b) {
                Some(MemberStatus::Suspect) if suspect.is_none() => suspect = Some(next),
                Some(MemberStatus::Dead) if dead.is_none() => dead = Some(next),
                _ => {}
            }
        }
        (suspect, dead)
    }

    #[test]
    fn a_peer_that_keeps_heartbeating_stays_alive() {
        let (mut a, mut b) = (engine(1), engine(2));
        beat(&mut a, &mut b, 120);
        assert_eq!(status(&a, &b), Some(MemberStatus::Alive));
        assert_eq!(a.counters.heartbeats_received, 120);
        assert!(a.phi(&b.node_id()).expect("tracked") < a.cfg.phi_threshold);
    }

    #[test]
    fn a_silent_peer_is_suspected_at_its_deadline_then_declared_dead_after_the_suspect_timeout() {
        let (mut a, mut b) = (engine(1), engine(2));
        let last = beat(&mut a, &mut b, 20);
        assert_eq!(status(&a, &b), Some(MemberStatus::Alive));
        let deadline = a.liveness.peers[&b.node_id()].deadline.expect("heard from");
        let interval = a.cfg.heartbeat_interval_ms;
        assert!(deadline > last + interval, "one missed heartbeat is tolerated");
        let timeout = a.cfg.suspect_timeout_ms;
        let until = deadline + timeout + 3 * interval;
        let (suspect, dead) = watch_silence(&mut a, &b, until);
        let suspect = suspect.expect("suspected");
        let dead = dead.expect("declared dead");
        // Declared at the first failure check past the deadline (and the
        // pair's declaration delay): within an interval of it.
        assert!(
            (deadline..=deadline + interval).contains(&suspect),
            "suspected at {} for a deadline at {}",
            suspect - T0,
            deadline - T0
        );
        assert!(
            (suspect + timeout..=suspect + timeout + interval).contains(&dead),
            "dead at {} after suspicion at {}",
            dead - T0,
            suspect - T0
        );
        assert!(!a.liveness.suspect_since.contains_key(&b.node_id()));
    }

    #[test]
    fn a_higher_incarnation_alive_refutes_a_suspicion() {
        let (mut a, mut b) = (engine(1), engine(2));
        beat(&mut a, &mut b, 10);
        let deadline = a.liveness.peers[&b.node_id()].deadline.expect("heard from");
        let until = deadline + a.cfg.heartbeat_interval_ms;
        let (suspect, _) = watch_silence(&mut a, &b, until);
        let suspect = suspect.expect("suspected");
        assert!(a.liveness.suspect_since.contains_key(&b.node_id()));
        // B hears it is suspect and refutes with a higher incarnation.
        let held = a.member(&b.node_id()).cloned().expect("held");
        let before = b.local_member().incarnation;
        b.handle_gossip(suspect, a.node_id(), &delta_of(&a, vec![held]));
        let refuted = b.local_member();
        assert_eq!(refuted.incarnation, before + 1);
        assert_eq!(refuted.status, MemberStatus::Alive);
        // A takes the refutation: alive again, and the silence starts over.
        a.handle_gossip(suspect + 1, b.node_id(), &delta_of(&b, vec![refuted.clone()]));
        assert_eq!(status(&a, &b), Some(MemberStatus::Alive));
        assert_eq!(
            a.member(&b.node_id()).map(|m| m.incarnation),
            Some(refuted.incarnation)
        );
        assert!(!a.liveness.suspect_since.contains_key(&b.node_id()));
        let rearmed = a.liveness.peers[&b.node_id()].deadline.expect("reset");
        assert!(
            rearmed > suspect + a.cfg.heartbeat_interval_ms,
            "deadline {} after the refutation at {}",
            rearmed - T0,
            suspect - T0
        );
        // The same suspicion again, at the old incarnation, changes nothing.
        let stale = Member {
            status: MemberStatus::Suspect,
            ..held_at(&refuted, before)
        };
        a.handle_gossip(suspect + 2, b.node_id(), &delta_of(&b, vec![stale]));
        assert_eq!(status(&a, &b), Some(MemberStatus::Alive));
    }

    #[test]
    fn an_unchanged_node_heartbeats_at_the_quiet_interval_and_wakes_on_a_change() {
        let (mut a, mut b) = (engine(1), engine(2));
        let base = b.cfg.heartbeat_interval_ms;
        // Not quiet until unchanged for QUIET_AFTER_INTERVALS base
        // intervals (its first heartbeat is the first look).
        beat(&mut a, &mut b, QUIET_AFTER_INTERVALS);
        assert_eq!(b.liveness.sent_interval_ms, base);
        assert_eq!(b.counters.heartbeats_quiet, 0);
        let t = beat(&mut a, &mut b, 30);
        assert_eq!(b.liveness.sent_interval_ms, QUIET_FACTOR * base);
        assert_eq!(b.counters.heartbeats_quiet, 30);
        // The observer follows the announced interval: never suspects.
        assert_eq!(status(&a, &b), Some(MemberStatus::Alive));
        let mean = a.liveness.peers[&b.node_id()].detector.mean_ms();
        assert!((mean - (QUIET_FACTOR * base) as f64).abs() < 1.0, "{mean}");
        // A write changes B's digest: its next heartbeat announces the
        // base interval again.
        b.handle(
            t + 1,
            Input::Command {
                id: 1,
                command: crate::core::Command::Put {
                    namespace: crate::core::ids::Namespace::new("app").expect("valid namespace"),
                    key: crate::core::ids::Key::new("k").expect("valid key"),
                    value: b"v".to_vec(),
                    expect: None,
                },
            },
        );
        heartbeat(&mut b, t + 2);
        assert_eq!(b.liveness.sent_interval_ms, base);
    }

    fn held_at(m: &Member, incarnation: u64) -> Member {
        Member {
            incarnation,
            ..m.clone()
        }
    }

    #[test]
    fn a_node_told_it_is_suspect_refutes_and_announces_the_new_incarnation() {
        let (mut a, b) = (engine(1), engine(2));
        let me = a.local_member();
        let rumour = Member {
            status: MemberStatus::Suspect,
            ..me.clone()
        };
        let actions = a.handle_gossip(T0 + 5, b.node_id(), &delta_of(&b, vec![rumour]));
        let mine = a.local_member();
        assert_eq!(mine.incarnation, me.incarnation + 1);
        assert_eq!(mine.status, MemberStatus::Alive);
        let announced = actions
            .iter()
            .find_map(|act| match act {
                Action::Publish {
                    topic: Topic::Delta,
                    bytes,
                } => Some(bytes),
                _ => None,
            })
            .expect("the refutation is published");
        let Ok(Message::Delta(d)) = wire::decode(announced, a.cluster_id, a.cfg.max_message_bytes) else {
            panic!("a delta");
        };
        assert_eq!(d.members, vec![mine]);
    }

    #[test]
    fn a_heartbeat_relayed_under_another_authors_name_is_rejected() {
        let (mut a, mut b, c) = (engine(1), engine(2), engine(3));
        let hb = heartbeat(&mut b, T0 + 10);
        a.handle_gossip(T0 + 10, c.node_id(), &hb);
        assert_eq!(a.counters.rejected.get("heartbeat_spoofed"), Some(&1));
        assert_eq!(a.counters.heartbeats_received, 0);
        assert!(a.member(&b.node_id()).is_none());
        assert!(a.phi(&b.node_id()).is_none());
    }

    #[test]
    fn a_peer_whose_interval_changes_gets_a_fresh_detector() {
        let (mut a, mut b) = (engine(1), engine(2));
        beat(&mut a, &mut b, 10);
        let mean = a.liveness.peers[&b.node_id()].detector.mean_ms();
        let quiet = b.liveness.sent_interval_ms;
        assert_eq!(
            quiet,
            2 * b.cfg.heartbeat_interval_ms,
            "alone and unchanged: quiet"
        );
        assert!((mean - quiet as f64).abs() < 1.0, "{mean}");
        // B's cluster grew: it now announces (and keeps) a 6 s interval.
        let mut t = a.now_ms;
        let hb = Heartbeat {
            seq: 1_000,
            node: b.node_id(),
            incarnation: b.incarnation,
            status: MemberStatus::Alive,
            info: None,
            hlc: b.clock.last(),
            digest: b.state.digest(),
            members_hash: b.members.hash(),
            interval_ms: 6_000,
            high_seq: 0,
        };
        let bytes = wire::encode(&Message::Heartbeat(hb), b.cluster_id);
        t += 6_000;
        a.handle_gossip(t, b.node_id(), &bytes);
        let d = &a.liveness.peers[&b.node_id()].detector;
        assert!(
            (d.mean_ms() - 6_000.0).abs() < 1.0,
            "started over: {}",
            d.mean_ms()
        );
        assert_eq!(d.last_arrival_ms(), Some(t));
    }

    /// The next heartbeat `e` publishes (ticking it at its timeouts up to
    /// `until`): when, and whether it carried the full record.
    fn next_heartbeat(e: &mut Engine, until: u64) -> Option<(u64, bool)> {
        while e.now_ms < until {
            let next = e.poll_timeout().max(e.now_ms + 1);
            for act in e.handle(next, Input::Tick) {
                if let Action::Publish {
                    topic: Topic::Heartbeat,
                    bytes,
                } = act
                {
                    let Ok(Message::Heartbeat(hb)) =
                        wire::decode(&bytes, e.cluster_id, e.cfg.max_message_bytes)
                    else {
                        panic!("a heartbeat");
                    };
                    return Some((next, hb.info.is_some()));
                }
            }
        }
        None
    }

    #[test]
    fn a_heartbeat_sent_before_any_connection_does_not_use_up_the_announcement() {
        let (mut a, b, c) = (engine(1), engine(2), engine(3));
        // The first heartbeat fires within a quarter interval of the
        // start, before the bootstrap dial completed: it reaches nobody.
        let (first, full) = next_heartbeat(&mut a, T0 + 1_000).expect("a first heartbeat");
        assert!(full);
        // The bootstrap connection opens: the announcement comes at once,
        // not an interval later.
        let t = first + 50;
        a.handle(t, Input::PeerConnected(b.node_id()));
        let (sent, full) = next_heartbeat(&mut a, t + 1_000).expect("an announcement");
        assert_eq!(sent, t + ANNOUNCE_DELAY_MS);
        assert!(full);
        // Sent while connected, that one counts: a later connection does
        // not bring the next heartbeat forward (it still carries the
        // record, as the announcement repeats ANNOUNCE_HEARTBEATS times).
        let t = sent + 50;
        a.handle(t, Input::PeerConnected(c.node_id()));
        let (later, full) = next_heartbeat(&mut a, t + 10_000).expect("the next heartbeat");
        assert!(
            later >= sent + a.cfg.heartbeat_interval_ms * 9 / 10,
            "{later} after {sent}"
        );
        assert!(full);
    }
}
