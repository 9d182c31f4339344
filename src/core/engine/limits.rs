//! Named limits: what the engine accepts from peers and the fixed constants
//! of its schedules, with [`validate_version`], the check every version from
//! a peer passes before it is merged.

use super::RejectReason;
use crate::core::config::Config;
use crate::core::dots::Context;
use crate::core::hlc::HlcClock;
use crate::core::ids::StateKey;
use crate::core::state::{Payload, Version};

/// Highest dot sequence accepted from a peer (in a version or in knowledge
/// we adopt). No node writes 2^63 times; a larger seq is junk, and adopting
/// it would overflow this node's own counter (`next_seq`).
pub(super) const MAX_REMOTE_SEQ: u64 = u64::MAX / 2;

/// Most verified versions held back at once because their context names
/// writes not yet seen signed (see `Engine::context_signed`).
pub(super) const MAX_DEFERRED: usize = 4096;

/// Most dots a remote version's causal context may hold.
pub(super) const MAX_CONTEXT_DOTS: usize = 4096;

/// Most dots the manifests of one sync message may list, all buckets
/// together. A node lists whole buckets until the next would pass it (a
/// bucket left out drops nothing on the other side, and is listed again
/// once the others match); a message over it is refused
/// (`manifest_too_large`) before anything in it is looked at.
pub(super) const MAX_MANIFEST_DOTS: usize = 1 << 20;

/// Most graves one sync message may carry (a node sends the first ones
/// in key order; the rest go once those buckets match).
pub(super) const MAX_SYNC_GRAVES: usize = 1 << 16;

/// Most dots one sync push may ask back (`SyncPush::wanted`; the rest are
/// asked at the next sync).
pub(super) const MAX_WANTED_BACK: usize = 1 << 16;

/// Largest signature a remote version may carry, in bytes.
pub(super) const MAX_SIGNATURE_BYTES: usize = 256;

/// The heartbeat interval a peer announces is clamped into this range
/// before its failure detector is built on it.
pub(super) const PEER_INTERVAL_RANGE_MS: (u64, u64) = (10, 3_600_000);

/// A peer's detector starts over when the interval it announces is this
/// share of an interval away from the mean it has measured (the cluster
/// grew or shrank).
pub(super) const INTERVAL_CHANGE_SHARE: f64 = 0.5;

/// Heartbeat inter-arrival times each peer's failure detector keeps.
pub(super) const PHI_WINDOW: usize = 100;

/// Shortest period of the housekeeping and failure checks.
pub(super) const MIN_CHECK_INTERVAL_MS: u64 = 10;

/// Alive members at which the spread of suspicion declarations reaches
/// its full width (half an effective heartbeat interval).
pub(super) const FULL_SPREAD_MEMBERS: u64 = 16;

/// Check a version from a peer against every rule a version must follow:
/// its dot, context, payload (it must fit its key and the size limits),
/// checksum, signature size, and an HLC stamp within the drift limit of
/// `now_ms`.
pub(super) fn validate_version(
    cfg: &Config,
    clock: &HlcClock,
    now_ms: u64,
    key: &StateKey,
    v: &Version,
) -> Result<(), RejectReason> {
    if v.dot.seq == 0 {
        return Err(RejectReason::VersionZeroSeq);
    }
    if v.dot.seq > MAX_REMOTE_SEQ {
        return Err(RejectReason::VersionSeqOutOfRange);
    }
    if !context_in_range(&v.ctx) {
        return Err(RejectReason::VersionBadContext);
    }
    if !v
        .ctx
        .dots()
        .iter()
        .any(|d| d.node == v.dot.node && d.seq == v.dot.seq)
    {
        return Err(RejectReason::VersionContextMissesOwnDot);
    }
    if matches!(key, StateKey::Service { .. }) && v.ctx.dots().iter().any(|d| d.node != v.dot.node) {
        // Service versions supersede their own origin's only: a context
        // naming another origin would let a node deregister (or pin)
        // instances it does not own.
        return Err(RejectReason::VersionForeignContext);
    }
    match (key, &v.payload) {
        (StateKey::Kv { .. }, Payload::Value(b)) if b.len() > cfg.max_value_bytes => {
            return Err(RejectReason::VersionValueTooLarge)
        }
        (StateKey::Kv { .. }, Payload::Value(_) | Payload::Tombstone) => {}
        (StateKey::Service { .. }, Payload::Instance(i)) => {
            if i.spec.validate().is_err() {
                return Err(RejectReason::VersionBadInstance);
            }
        }
        (StateKey::Service { .. }, Payload::Tombstone) => {}
        (StateKey::Canary { .. }, Payload::Canary(c)) => {
            if c.value.len() > cfg.max_value_bytes {
                return Err(RejectReason::VersionValueTooLarge);
            }
            if c.target.validate().is_err() {
                return Err(RejectReason::VersionBadCanary);
            }
        }
        (StateKey::Canary { .. }, Payload::Tombstone) => {}
        _ => return Err(RejectReason::VersionPayloadKindMismatch),
    }
    if v.payload.checksum() != v.checksum {
        return Err(RejectReason::VersionChecksumMismatch);
    }
    if v.signature
        .as_ref()
        .is_some_and(|s| s.len() > MAX_SIGNATURE_BYTES)
    {
        return Err(RejectReason::VersionSignatureTooLarge);
    }
    if clock.check(v.hlc, now_ms).is_err() {
        return Err(RejectReason::ClockDrift);
    }
    Ok(())
}

/// Whether a causal context from a peer is well formed, not too large, and
/// names no sequence number no write could have (zero, or past
/// [`MAX_REMOTE_SEQ`], which would pin the key above every later write).
fn context_in_range(ctx: &Context) -> bool {
    ctx.is_well_formed()
        && ctx.dots().len() <= MAX_CONTEXT_DOTS
        && ctx.dots().iter().all(|d| d.seq != 0 && d.seq <= MAX_REMOTE_SEQ)
}
