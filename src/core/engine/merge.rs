//! Taking in versions from peers (from gossip and from syncs alike): each
//! is validated against the limits, then merged, and the outcome counted.

use super::limits::validate_version;
use super::{Engine, RejectReason};
use crate::core::crypto::{version_claim, Signature, SIGNATURE_LEN};
use crate::core::ids::StateKey;
use crate::core::state::{MergeOutcome, Payload, Version};

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
        if let Payload::Instance(i) = &v.payload {
            if i.owner != v.dot.node {
                self.reject(RejectReason::VersionNotOwner);
                return RemoteMerge::Rejected(RejectReason::VersionNotOwner);
            }
        }
        // Checked only when the version is new here: a duplicate or a
        // version already superseded changes nothing, and skipping them
        // keeps the cost at one check per version per node.
        if !self.state.knows(&key, &v.dot) && !self.signed_by_origin(&key, &v) {
            self.reject(RejectReason::VersionBadSignature);
            return RemoteMerge::Rejected(RejectReason::VersionBadSignature);
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
