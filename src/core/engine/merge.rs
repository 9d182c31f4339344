//! Taking in versions from peers (from gossip and from syncs alike): each
//! is validated against the limits, then merged, and the outcome counted.

use super::limits::{validate_version, MAX_DEFERRED, MAX_REMOTE_SEQ};
use super::{Counters, Engine, RejectReason};
use crate::core::crypto::{version_claim, Signature, SIGNATURE_LEN};
use crate::core::dots::Dot;
use crate::core::ids::{NodeId, StateKey};
use crate::core::membership::MemberStatus;
use crate::core::state::{KeyLimit, MergeOutcome, Payload, Version};

/// What became of a version from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum RemoteMerge {
    /// It passed validation and was merged with this outcome.
    Merged(MergeOutcome),
    /// It broke a rule and was dropped (and counted) for this reason.
    Rejected(RejectReason),
    /// Its signature holds but its context is ahead of what this node
    /// has seen signed: held back until it is not (see
    /// [`Engine::context_signed`]).
    Deferred,
}

impl RemoteMerge {
    /// Whether the version was new here (and is now held).
    pub(super) fn is_new(&self) -> bool {
        matches!(self, RemoteMerge::Merged(MergeOutcome::Applied))
    }

    /// Whether the version was merged (neither rejected nor held back).
    pub(super) fn is_settled(&self) -> bool {
        matches!(self, RemoteMerge::Merged(_))
    }
}

/// How [`Engine::check_remote`] judges a version from a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CheckMode {
    /// To merge (from gossip or a sync): its origin's signature and its
    /// context are checked only when the version is new here — a duplicate
    /// or a version already superseded changes nothing, and skipping them
    /// keeps the cost at one check per version per node; a signature that
    /// holds raises its origin's signed high mark
    /// ([`Engine::saw_signed`]), and a context ahead holds the version
    /// back ([`Checked::Ahead`]).
    Merge,
    /// To take back (`SyncAck::returned`): its origin's signature always,
    /// since nothing here vouches for it, and a context ahead rejects it.
    TakeBack,
}

/// What [`Engine::check_remote`] found a version that broke no rule fit
/// for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checked {
    /// To merge now.
    Ready,
    /// Its signature holds but its context is ahead of what this node has
    /// seen signed: to hold back (only with [`CheckMode::Merge`]).
    Ahead,
}

/// Verified versions held back because their context is ahead.
#[derive(Debug, Default)]
pub(super) struct Deferred {
    /// Oldest first.
    pub(super) held: std::collections::VecDeque<(StateKey, Version)>,
    /// An origin's signed high mark rose since the last look.
    ready: bool,
    /// When the origins named ahead were last asked.
    asked_at: Option<u64>,
}

/// Held-back versions looked at per round of asking their origins.
const ASK_SCAN: usize = 64;

/// Origins asked per round (each a sync, within the sync limits).
const ASK_ORIGINS: usize = 4;

impl Engine {
    /// Validate and merge a version from a peer ([`CheckMode::Merge`]).
    pub(super) fn merge_remote(&mut self, key: StateKey, v: Version) -> RemoteMerge {
        let checked = match self.check_remote(&key, &v, CheckMode::Merge) {
            Ok(checked) => checked,
            Err(reason) => return RemoteMerge::Rejected(reason),
        };
        if v.dot.node == self.me && v.dot.seq >= self.state.next_seq(&self.me) {
            // A peer holds our own writes that we do not: our data was lost
            // or restored from an old backup. Taking them back moves our
            // counter past them, so no dot is ever reused.
            tracing::warn!(seq = v.dot.seq, "peer holds own writes newer than local state");
        }
        if checked == Checked::Ahead {
            self.defer(key, v);
            return RemoteMerge::Deferred;
        }
        let _ = self.clock.observe(v.hlc, self.now_ms);
        match self.merge_counted(key, v) {
            MergeOutcome::Refused(limit) => RemoteMerge::Rejected(limit_reason(limit)),
            outcome => RemoteMerge::Merged(outcome),
        }
    }

    /// A version a peer returned because this node has seen it and holds
    /// it nowhere (`SyncAck::returned`): checked as fully as a new one
    /// ([`CheckMode::TakeBack`]), then taken back unless something held
    /// here supersedes or buries it ([`ReplicatedState::take_back`]).
    pub(super) fn take_back_remote(&mut self, key: StateKey, v: Version) {
        if self.check_remote(&key, &v, CheckMode::TakeBack).is_err() {
            return;
        }
        let _ = self.clock.observe(v.hlc, self.now_ms);
        let outcome = self.state.take_back(key, v);
        self.count_outcome(&outcome, |c| &mut c.taken_back);
    }

    /// The checks a version from a peer passes before it is merged or
    /// taken back: the limits ([`validate_version`]), an instance record
    /// written by its own owner, the writer rules, its origin's signature and a context
    /// naming nothing ahead of what this node has seen signed
    /// ([`Engine::context_signed`]) — the last two as `mode` says. A
    /// version that breaks one is counted under the reason returned.
    fn check_remote(
        &mut self,
        key: &StateKey,
        v: &Version,
        mode: CheckMode,
    ) -> Result<Checked, RejectReason> {
        self.judge_remote(key, v, mode)
            .inspect_err(|reason| self.reject(*reason))
    }

    /// [`Engine::check_remote`] before the rejection is counted.
    fn judge_remote(
        &mut self,
        key: &StateKey,
        v: &Version,
        mode: CheckMode,
    ) -> Result<Checked, RejectReason> {
        validate_version(&self.cfg, &self.clock, self.now_ms, key, v)?;
        if let Payload::Instance(i) = &v.payload {
            if i.owner != v.dot.node {
                return Err(RejectReason::VersionNotOwner);
            }
        }
        if !self.acl.permits(key, &v.dot) {
            return Err(RejectReason::VersionNotPermitted);
        }
        if mode == CheckMode::Merge && self.state.knows(key, &v.dot) {
            return Ok(Checked::Ready);
        }
        if !self.signed_by_origin(key, v) {
            return Err(RejectReason::VersionBadSignature);
        }
        match mode {
            CheckMode::Merge => {
                self.saw_signed(v.dot);
                Ok(match self.context_signed(v) {
                    Ok(()) => Checked::Ready,
                    Err(_) => Checked::Ahead,
                })
            }
            CheckMode::TakeBack => self.context_signed(v).map(|()| Checked::Ready),
        }
    }

    /// Merge a checked version into the state and count the outcome
    /// ([`Engine::count_outcome`]).
    fn merge_counted(&mut self, key: StateKey, v: Version) -> MergeOutcome {
        let outcome = self.state.merge(key, v);
        self.count_outcome(&outcome, |c| &mut c.merged);
        outcome
    }

    /// Count the outcome of merging or taking back a checked version — a
    /// version new here under the counter `applied` picks — with any
    /// version a key's bound refused or evicted.
    fn count_outcome(&mut self, outcome: &MergeOutcome, applied: fn(&mut Counters) -> &mut u64) {
        match outcome {
            MergeOutcome::Applied => *applied(&mut self.counters) += 1,
            MergeOutcome::Duplicate => self.counters.duplicates += 1,
            MergeOutcome::Obsolete => self.counters.obsolete += 1,
            MergeOutcome::Refused(limit) => self.reject(limit_reason(*limit)),
        }
        for limit in self.state.take_evicted() {
            self.reject(limit_reason(limit));
        }
    }

    /// Record that `dot`'s origin has signed up to `dot.seq`, from a
    /// version verified here. Tracked only for origins heard from (see
    /// [`Engine::heard_from`]).
    pub(super) fn saw_signed(&mut self, dot: Dot) {
        if let Some(high) = self.signed_high.get_mut(&dot.node) {
            if dot.seq > *high {
                *high = dot.seq.min(MAX_REMOTE_SEQ);
                self.deferred.ready = !self.deferred.held.is_empty();
            }
        }
    }

    /// An origin's own heartbeat says it has issued up to `high_seq`.
    pub(super) fn heard_from(&mut self, origin: NodeId, high_seq: u64) {
        let high = self.signed_high.entry(origin).or_default();
        if high_seq > *high {
            *high = high_seq.min(MAX_REMOTE_SEQ);
            self.deferred.ready = !self.deferred.held.is_empty();
        }
    }

    /// An origin's own word in a sync message (`high_seq`): raises the
    /// mark of an origin already heard from by heartbeat, so versions held
    /// back for naming its writes are settled by asking it directly. It
    /// does not make an origin judged (that takes a heartbeat), so a sync
    /// alone never starts holding versions back.
    pub(super) fn told_by_origin(&mut self, origin: NodeId, high_seq: u64) {
        if self.signed_high.contains_key(&origin) {
            self.heard_from(origin, high_seq);
        }
    }

    /// Hold back a verified version whose context is ahead. The oldest
    /// goes (counted as `version_context_ahead`) when too many are held:
    /// a liar's pins cannot grow memory, and an honest version evicted
    /// here comes again with anti-entropy.
    fn defer(&mut self, key: StateKey, v: Version) {
        if self.deferred.held.iter().any(|(_, d)| d.dot == v.dot) {
            return;
        }
        self.counters.deferred += 1;
        self.deferred.held.push_back((key, v));
        if self.deferred.held.len() > MAX_DEFERRED {
            self.deferred.held.pop_front();
            self.reject(RejectReason::VersionContextAhead);
        }
    }

    /// Ask the origins that held-back versions name beyond what they were
    /// seen to sign: a sync with an origin carries its word on how far it
    /// has written (`high_seq`), which settles an honest context without
    /// waiting for the origin's next heartbeat (rare in a big cluster).
    /// Called from the housekeeping check (an origin out of reach is asked
    /// again once it is back), at most once per `sync_min_interval_ms`,
    /// over the oldest few held.
    pub(super) fn ask_ahead_origins(&mut self) {
        let now = self.now_ms;
        if self.deferred.held.is_empty()
            || self
                .deferred
                .asked_at
                .is_some_and(|t| now.saturating_sub(t) < self.cfg.sync_min_interval_ms)
        {
            return;
        }
        self.deferred.asked_at = Some(now);
        let mut ahead = std::collections::BTreeSet::new();
        for (_, v) in self.deferred.held.iter().take(ASK_SCAN) {
            for d in v.ctx.dots() {
                if d.node != v.dot.node
                    && d.node != self.me
                    && self.signed_up_to(&d.node).is_some_and(|high| d.seq > high)
                    && self
                        .members
                        .get(&d.node)
                        .is_some_and(|m| m.status == MemberStatus::Alive)
                {
                    ahead.insert(d.node);
                }
            }
        }
        for origin in ahead.into_iter().take(ASK_ORIGINS) {
            self.want_sync(origin);
        }
    }

    /// Merge the held-back versions whose contexts are no longer ahead
    /// (called once per input, after it was handled, when an origin's
    /// signed high mark rose); merging one may raise another's.
    pub(super) fn merge_deferred(&mut self) {
        while std::mem::take(&mut self.deferred.ready) {
            let held = std::mem::take(&mut self.deferred.held);
            for (key, v) in held {
                if self.context_signed(&v).is_err() {
                    self.deferred.held.push_back((key, v));
                    continue;
                }
                if self.state.knows(&key, &v.dot) {
                    continue;
                }
                let _ = self.clock.observe(v.hlc, self.now_ms);
                self.merge_counted(key, v);
            }
        }
    }

    /// The highest sequence number `origin` has been seen to sign, for
    /// an origin this node has heard from (its own: the last it issued);
    /// `None` for one it has not, about which it cannot judge.
    pub(super) fn signed_up_to(&self, origin: &NodeId) -> Option<u64> {
        let heard = self.signed_high.get(origin).copied();
        if *origin == self.me {
            Some(heard.unwrap_or(0).max(self.state.next_seq(&self.me) - 1))
        } else {
            heard
        }
    }

    /// Check that `v`'s causal context claims no write of a live origin
    /// that this node has not seen that origin sign: an entry `(victim,
    /// huge)` signed by a member would otherwise supersede every later
    /// write of the victim to the key. Judged only for origins that are
    /// alive (or suspect) and heard from: their heartbeats carry how far
    /// they have written, so an honest context is ahead only until the
    /// next one (a reordering). About an origin never heard from, dead or
    /// gone, a node cannot judge and takes the context as it is.
    pub(super) fn context_signed(&self, v: &Version) -> Result<(), RejectReason> {
        let ahead = v.ctx.dots().iter().any(|d| {
            d.node != v.dot.node
                && self.signed_up_to(&d.node).is_some_and(|high| d.seq > high)
                && (d.node == self.me
                    || self
                        .members
                        .get(&d.node)
                        .is_some_and(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect)))
        });
        if ahead {
            Err(RejectReason::VersionContextAhead)
        } else {
            Ok(())
        }
    }

    /// Whether `v` carries its origin's signature over everything that
    /// defines it.
    pub(super) fn signed_by_origin(&self, key: &StateKey, v: &Version) -> bool {
        let Some(sig) = v
            .signature
            .as_deref()
            .and_then(|s| <[u8; SIGNATURE_LEN]>::try_from(s).ok())
        else {
            return false;
        };
        let claim = version_claim(key, &v.dot, &v.ctx, &v.hlc, &v.payload, v.checksum);
        self.keys.verify(&v.dot.node, &claim, &Signature(sig))
    }
}

/// The reason a version refused or evicted by a key's bound is counted
/// under.
fn limit_reason(limit: KeyLimit) -> RejectReason {
    match limit {
        KeyLimit::Siblings => RejectReason::SiblingsLimit,
        KeyLimit::Bytes => RejectReason::KeySizeLimit,
    }
}
