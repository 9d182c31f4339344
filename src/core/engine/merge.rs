//! Taking in versions from peers (from gossip and from syncs alike): each
//! is validated against the limits, then merged, and the outcome counted.

use super::limits::validate_version;
use super::{Engine, RejectReason};
use crate::core::ids::StateKey;
use crate::core::state::{MergeOutcome, Version};

/// What became of a version from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum RemoteMerge {
    /// It passed validation and was merged with this outcome.
    Merged(MergeOutcome),
    /// It broke a rule and was dropped (and counted) for this reason.
    Rejected(RejectReason),
}

impl RemoteMerge {
    /// Whether the version was new here (and is now held).
    pub(super) fn is_new(&self) -> bool {
        matches!(self, RemoteMerge::Merged(MergeOutcome::Applied))
    }

    /// Whether the version was dropped as invalid.
    pub(super) fn is_rejected(&self) -> bool {
        matches!(self, RemoteMerge::Rejected(_))
    }
}

impl Engine {
    /// Validate and merge a version from a peer.
    pub(super) fn merge_remote(&mut self, key: StateKey, v: Version) -> RemoteMerge {
        if let Err(reason) = validate_version(&self.cfg, &self.clock, self.now_ms, &key, &v) {
            self.reject(reason);
            return RemoteMerge::Rejected(reason);
        }
        if v.dot.node == self.me && v.dot.seq >= self.state.next_seq(&self.me) {
            // A peer holds our own writes that we do not: our data was lost
            // or restored from an old backup. Taking them back moves our
            // counter past them, so no dot is ever reused.
            tracing::warn!(seq = v.dot.seq, "peer holds own writes newer than local state");
        }
        let _ = self.clock.observe(v.hlc, self.now_ms);
        let outcome = self.state.merge(key, v);
        match outcome {
            MergeOutcome::Applied => self.counters.merged += 1,
            MergeOutcome::Duplicate => self.counters.duplicates += 1,
            MergeOutcome::Obsolete => self.counters.obsolete += 1,
        }
        RemoteMerge::Merged(outcome)
    }
}
