//! What the engine counts (exported as metrics by the node), and the typed
//! reasons it rejects input for.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::core::wire::{MessageKind, WireError};

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
    /// Versions seen here, held nowhere, and taken back from a peer that
    /// still held them live (`SyncAck::returned`).
    pub taken_back: u64,
    /// Dead or departed members whose records were dropped after
    /// `member_reap_ms`.
    pub members_reaped: u64,
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
    /// Periodic sync rounds skipped because the cluster was quiet.
    pub syncs_skipped_quiet: u64,
    /// Heartbeats sent at the quiet interval (own state unchanged).
    pub heartbeats_quiet: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Heartbeats received.
    pub heartbeats_received: u64,
    /// Peers suspected on first-hand evidence from the driver
    /// ([`super::Input::PeerUnreachable`]) while held alive.
    pub unreachable_reports: u64,
    /// Tombstoned keys collected.
    pub tombstones_collected: u64,
    /// Writes undone because they could not be persisted.
    pub persist_failures: u64,
    /// Verified versions held back because their causal context named
    /// writes not yet seen signed by their origins (merged once they are).
    pub deferred: u64,
    /// Versions removed because a new writer rule refuses them (written
    /// before the rule reached this node).
    pub acl_purged: u64,
    /// Messages received, by kind.
    pub messages_in: BTreeMap<String, u64>,
    /// Bytes received, by kind.
    pub bytes_in: BTreeMap<String, u64>,
    /// Messages sent, by kind.
    pub messages_out: BTreeMap<String, u64>,
    /// Bytes sent, by kind.
    pub bytes_out: BTreeMap<String, u64>,
    /// Input rejected, by reason. Ordered by label, and a label looks a
    /// reason up too: `rejected.get("clock_drift")`.
    pub rejected: BTreeMap<RejectReason, u64>,
}

/// Why the engine dropped input from the network. Every rejection is
/// counted under its reason in [`Counters::rejected`]; the label
/// ([`RejectReason::as_str`]) is the metrics label.
///
/// A reason is ordered, compared, hashed and serialized as its label, so a
/// map keyed by reasons reads (and renders) like one keyed by labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The message is shorter than its envelope header.
    Truncated,
    /// The message is over the size limit.
    TooLarge,
    /// The message does not start with the magic bytes.
    BadMagic,
    /// The message is from an unknown protocol version.
    UnsupportedVersion,
    /// The envelope names an unknown message kind.
    UnknownKind,
    /// The message is from another cluster.
    WrongCluster,
    /// The message body did not decode.
    Malformed,
    /// A message of this kind arrived as gossip, where it has no place.
    UnexpectedOnGossip(MessageKind),
    /// A message of this kind arrived as a request, where it has no place.
    UnexpectedAsRequest(MessageKind),
    /// A message of this kind answered a sync request, where it has no
    /// place (or not in the sync's current phase).
    UnexpectedAsResponse(MessageKind),
    /// A response to no sync in flight.
    UnexpectedResponse,
    /// A sync push from a peer whose request this node did not answer.
    UnsolicitedPush,
    /// A response from another peer than the one asked.
    ResponseFromWrongPeer,
    /// A heartbeat whose author is not the node that sent it.
    HeartbeatSpoofed,
    /// A member record without its subject's valid signature.
    MemberBadSignature,
    /// A version without its origin's valid signature.
    VersionBadSignature,
    /// A service instance written by another node than its owner.
    VersionNotOwner,
    /// A version its namespace's writer rule does not permit (or a rule
    /// version not written by an admin).
    VersionNotPermitted,
    /// An HLC stamp further ahead of local time than the drift limit.
    ClockDrift,
    /// A sync response without one hash per state bucket.
    BadBucketCount,
    /// A knowledge summary with an invalid bucket layout.
    BadKnowledgeBuckets,
    /// Shipped knowledge with a sequence number beyond the accepted range.
    KnowledgeSeqOutOfRange,
    /// A version with sequence number zero.
    VersionZeroSeq,
    /// A version with a sequence number beyond the accepted range.
    VersionSeqOutOfRange,
    /// A version whose causal context is malformed or too large.
    VersionBadContext,
    /// A version whose causal context lacks its own dot.
    VersionContextMissesOwnDot,
    /// A version whose value is over the size limit.
    VersionValueTooLarge,
    /// A service instance version with an invalid spec.
    VersionBadInstance,
    /// A canary version with an invalid target.
    VersionBadCanary,
    /// A version whose payload kind does not fit its key.
    VersionPayloadKindMismatch,
    /// A version whose checksum does not match its payload.
    VersionChecksumMismatch,
    /// A version whose signature is over the size limit.
    VersionSignatureTooLarge,
    /// A grave (collected delete) that is not a tombstone.
    BadGrave,
    /// A version held back because its causal context named a write of
    /// another origin beyond any that origin had been seen to sign (a pin
    /// on the key, or a reordering), dropped when too many were held back
    /// (anti-entropy brings an honest one again).
    VersionContextAhead,
    /// Adopted knowledge that claimed writes of an origin beyond any that
    /// origin has been seen to sign: the claim was cut down to that.
    KnowledgeAhead,
    /// A service version whose causal context names another origin than
    /// its own (service versions supersede their own origin's only).
    VersionForeignContext,
    /// A version refused, or one held evicted, because its key was at its
    /// bound of live versions (`max_siblings`) and the others come first
    /// in the key's order; not recorded as seen, so it comes back once a
    /// write makes room.
    SiblingsLimit,
    /// A version refused, or one held evicted, because its key's stored
    /// record would pass `MAX_KEY_BYTES`; not recorded as seen.
    KeySizeLimit,
    /// A member record for an identity this node does not know, refused
    /// because the member table is full (`max_members`).
    MemberLimit,
    /// A member record whose self-description (name, addresses, tags) is
    /// over the limits of `NodeInfo::validate`.
    MemberBadInfo,
    /// A sync message listing more dots in its manifest, or more graves,
    /// than any node sends (`MAX_MANIFEST_DOTS`, `MAX_SYNC_GRAVES`).
    ManifestTooLarge,
}

/// Every message kind, for enumerating the reasons that carry one.
const KINDS: [MessageKind; 6] = [
    MessageKind::Heartbeat,
    MessageKind::Delta,
    MessageKind::SyncRequest,
    MessageKind::SyncResponse,
    MessageKind::SyncPush,
    MessageKind::SyncAck,
];

impl RejectReason {
    /// Every reason without a message kind.
    const PLAIN: [RejectReason; 38] = [
        RejectReason::Truncated,
        RejectReason::TooLarge,
        RejectReason::BadMagic,
        RejectReason::UnsupportedVersion,
        RejectReason::UnknownKind,
        RejectReason::WrongCluster,
        RejectReason::Malformed,
        RejectReason::UnexpectedResponse,
        RejectReason::UnsolicitedPush,
        RejectReason::ResponseFromWrongPeer,
        RejectReason::HeartbeatSpoofed,
        RejectReason::MemberBadSignature,
        RejectReason::VersionBadSignature,
        RejectReason::VersionNotOwner,
        RejectReason::VersionNotPermitted,
        RejectReason::ClockDrift,
        RejectReason::BadBucketCount,
        RejectReason::BadKnowledgeBuckets,
        RejectReason::KnowledgeSeqOutOfRange,
        RejectReason::VersionZeroSeq,
        RejectReason::VersionSeqOutOfRange,
        RejectReason::VersionBadContext,
        RejectReason::VersionContextMissesOwnDot,
        RejectReason::VersionValueTooLarge,
        RejectReason::VersionBadInstance,
        RejectReason::VersionBadCanary,
        RejectReason::VersionPayloadKindMismatch,
        RejectReason::VersionChecksumMismatch,
        RejectReason::VersionSignatureTooLarge,
        RejectReason::BadGrave,
        RejectReason::VersionContextAhead,
        RejectReason::KnowledgeAhead,
        RejectReason::VersionForeignContext,
        RejectReason::SiblingsLimit,
        RejectReason::KeySizeLimit,
        RejectReason::MemberLimit,
        RejectReason::MemberBadInfo,
        RejectReason::ManifestTooLarge,
    ];

    /// The metrics label, e.g. `clock_drift` or
    /// `unexpected_sync_ack_on_gossip`.
    pub fn as_str(&self) -> &'static str {
        use MessageKind as K;
        match self {
            RejectReason::Truncated => "truncated",
            RejectReason::TooLarge => "too_large",
            RejectReason::BadMagic => "bad_magic",
            RejectReason::UnsupportedVersion => "unsupported_version",
            RejectReason::UnknownKind => "unknown_kind",
            RejectReason::WrongCluster => "wrong_cluster",
            RejectReason::Malformed => "malformed",
            RejectReason::UnexpectedOnGossip(kind) => match kind {
                K::Heartbeat => "unexpected_heartbeat_on_gossip",
                K::Delta => "unexpected_delta_on_gossip",
                K::SyncRequest => "unexpected_sync_request_on_gossip",
                K::SyncResponse => "unexpected_sync_response_on_gossip",
                K::SyncPush => "unexpected_sync_push_on_gossip",
                K::SyncAck => "unexpected_sync_ack_on_gossip",
            },
            RejectReason::UnexpectedAsRequest(kind) => match kind {
                K::Heartbeat => "unexpected_heartbeat_as_request",
                K::Delta => "unexpected_delta_as_request",
                K::SyncRequest => "unexpected_sync_request_as_request",
                K::SyncResponse => "unexpected_sync_response_as_request",
                K::SyncPush => "unexpected_sync_push_as_request",
                K::SyncAck => "unexpected_sync_ack_as_request",
            },
            RejectReason::UnexpectedAsResponse(kind) => match kind {
                K::Heartbeat => "unexpected_heartbeat_as_response",
                K::Delta => "unexpected_delta_as_response",
                K::SyncRequest => "unexpected_sync_request_as_response",
                K::SyncResponse => "unexpected_sync_response_as_response",
                K::SyncPush => "unexpected_sync_push_as_response",
                K::SyncAck => "unexpected_sync_ack_as_response",
            },
            RejectReason::UnexpectedResponse => "unexpected_response",
            RejectReason::UnsolicitedPush => "unsolicited_push",
            RejectReason::ResponseFromWrongPeer => "response_from_wrong_peer",
            RejectReason::HeartbeatSpoofed => "heartbeat_spoofed",
            RejectReason::MemberBadSignature => "member_bad_signature",
            RejectReason::VersionBadSignature => "version_bad_signature",
            RejectReason::VersionNotOwner => "version_not_owner",
            RejectReason::VersionNotPermitted => "version_not_permitted",
            RejectReason::ClockDrift => "clock_drift",
            RejectReason::BadBucketCount => "bad_bucket_count",
            RejectReason::BadKnowledgeBuckets => "bad_knowledge_buckets",
            RejectReason::KnowledgeSeqOutOfRange => "knowledge_seq_out_of_range",
            RejectReason::VersionZeroSeq => "version_zero_seq",
            RejectReason::VersionSeqOutOfRange => "version_seq_out_of_range",
            RejectReason::VersionBadContext => "version_bad_context",
            RejectReason::VersionContextMissesOwnDot => "version_context_misses_own_dot",
            RejectReason::VersionValueTooLarge => "version_value_too_large",
            RejectReason::VersionBadInstance => "version_bad_instance",
            RejectReason::VersionBadCanary => "version_bad_canary",
            RejectReason::VersionPayloadKindMismatch => "version_payload_kind_mismatch",
            RejectReason::VersionChecksumMismatch => "version_checksum_mismatch",
            RejectReason::VersionSignatureTooLarge => "version_signature_too_large",
            RejectReason::BadGrave => "bad_grave",
            RejectReason::VersionContextAhead => "version_context_ahead",
            RejectReason::KnowledgeAhead => "knowledge_ahead",
            RejectReason::VersionForeignContext => "version_foreign_context",
            RejectReason::SiblingsLimit => "siblings_limit",
            RejectReason::KeySizeLimit => "key_size_limit",
            RejectReason::MemberLimit => "member_limit",
            RejectReason::MemberBadInfo => "member_bad_info",
            RejectReason::ManifestTooLarge => "manifest_too_large",
        }
    }

    /// Whether a rejection proves the message invalid whoever judges it: it
    /// does not decode, a signature does not verify, a field is out of every
    /// accepted range. Such a message is rejected and its sender penalised.
    /// The rest depend on this node's view (its clock, its configured value
    /// size) or on a protocol version this node does not know: ignored, no
    /// penalty, since an honest peer may send them. Exhaustive on purpose: a
    /// new reason needs a decision here.
    pub fn proves_invalid(&self) -> bool {
        match self {
            RejectReason::UnsupportedVersion
            | RejectReason::UnknownKind
            | RejectReason::ClockDrift
            | RejectReason::VersionValueTooLarge
            // What this node has seen its origins sign so far.
            | RejectReason::VersionContextAhead
            | RejectReason::KnowledgeAhead
            // This node's bounds and what it already holds.
            | RejectReason::SiblingsLimit
            | RejectReason::KeySizeLimit
            | RejectReason::MemberLimit
            // The writer rules as this node holds them now: a relay whose
            // rules are older forwards such versions honestly.
            | RejectReason::VersionNotPermitted
            // Sync-only reasons, never from gossip; no judgement needed.
            | RejectReason::UnexpectedAsRequest(_)
            | RejectReason::UnexpectedAsResponse(_)
            | RejectReason::UnexpectedResponse
            | RejectReason::UnsolicitedPush
            | RejectReason::ResponseFromWrongPeer => false,
            RejectReason::Truncated
            | RejectReason::TooLarge
            | RejectReason::BadMagic
            | RejectReason::WrongCluster
            | RejectReason::Malformed
            | RejectReason::UnexpectedOnGossip(_)
            | RejectReason::HeartbeatSpoofed
            | RejectReason::MemberBadSignature
            | RejectReason::VersionBadSignature
            | RejectReason::VersionNotOwner
            | RejectReason::BadBucketCount
            | RejectReason::BadKnowledgeBuckets
            | RejectReason::KnowledgeSeqOutOfRange
            | RejectReason::VersionZeroSeq
            | RejectReason::VersionSeqOutOfRange
            | RejectReason::VersionBadContext
            | RejectReason::VersionContextMissesOwnDot
            | RejectReason::VersionBadInstance
            | RejectReason::VersionBadCanary
            | RejectReason::VersionPayloadKindMismatch
            | RejectReason::VersionChecksumMismatch
            | RejectReason::VersionSignatureTooLarge
            | RejectReason::BadGrave
            | RejectReason::VersionForeignContext
            | RejectReason::MemberBadInfo
            | RejectReason::ManifestTooLarge => true,
        }
    }

    /// The reason with this label, if any.
    pub fn from_label(label: &str) -> Option<RejectReason> {
        Self::all().find(|r| r.as_str() == label)
    }

    /// Every reason there is.
    fn all() -> impl Iterator<Item = RejectReason> {
        let with_kind = KINDS.into_iter().flat_map(|k| {
            [
                RejectReason::UnexpectedOnGossip(k),
                RejectReason::UnexpectedAsRequest(k),
                RejectReason::UnexpectedAsResponse(k),
            ]
        });
        Self::PLAIN.into_iter().chain(with_kind)
    }
}

impl From<&WireError> for RejectReason {
    fn from(e: &WireError) -> Self {
        match e {
            WireError::Truncated { .. } => RejectReason::Truncated,
            WireError::TooLarge { .. } => RejectReason::TooLarge,
            WireError::BadMagic => RejectReason::BadMagic,
            WireError::UnsupportedVersion(_) => RejectReason::UnsupportedVersion,
            WireError::UnknownKind(_) => RejectReason::UnknownKind,
            WireError::WrongCluster => RejectReason::WrongCluster,
            WireError::Malformed { .. } => RejectReason::Malformed,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for RejectReason {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Consistent with `Ord`, `Eq` and `Hash`, which all go by the label.
impl Borrow<str> for RejectReason {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Ord for RejectReason {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for RejectReason {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for RejectReason {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Serialize for RejectReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RejectReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let label = String::deserialize(d)?;
        RejectReason::from_label(&label)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown rejection reason `{label}`")))
    }
}

impl Counters {
    /// Count one rejection.
    pub(super) fn reject(&mut self, reason: RejectReason) {
        *self.rejected.entry(reason).or_insert(0) += 1;
    }

    /// Count a message received (or one that failed to decode, as kind
    /// `unknown`).
    pub(super) fn count_in(&mut self, kind: &str, len: usize) {
        bump(&mut self.messages_in, kind, 1);
        bump(&mut self.bytes_in, kind, len as u64);
    }

    /// Count a message sent.
    pub(super) fn count_out(&mut self, kind: &str, len: usize) {
        bump(&mut self.messages_out, kind, 1);
        bump(&mut self.bytes_out, kind, len as u64);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_label_and_is_found_by_it() {
        let all: Vec<RejectReason> = RejectReason::all().collect();
        assert_eq!(all.len(), RejectReason::PLAIN.len() + 3 * KINDS.len());
        let labels: std::collections::BTreeSet<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), all.len(), "labels are distinct");
        for r in all {
            assert_eq!(RejectReason::from_label(r.as_str()), Some(r));
        }
        assert_eq!(RejectReason::from_label("no_such_reason"), None);
    }

    #[test]
    fn labels_of_misplaced_messages_name_the_kind_and_the_channel() {
        for k in KINDS {
            assert_eq!(
                RejectReason::UnexpectedOnGossip(k).as_str(),
                format!("unexpected_{}_on_gossip", k.as_str())
            );
            assert_eq!(
                RejectReason::UnexpectedAsRequest(k).as_str(),
                format!("unexpected_{}_as_request", k.as_str())
            );
            assert_eq!(
                RejectReason::UnexpectedAsResponse(k).as_str(),
                format!("unexpected_{}_as_response", k.as_str())
            );
        }
    }

    #[test]
    fn wire_errors_count_under_the_wire_label() {
        let errors = [
            WireError::Truncated { len: 3 },
            WireError::TooLarge { len: 9, max: 8 },
            WireError::BadMagic,
            WireError::UnsupportedVersion(9),
            WireError::UnknownKind(200),
            WireError::WrongCluster,
            WireError::Malformed {
                kind: MessageKind::Delta,
                reason: "eof".into(),
            },
        ];
        for e in &errors {
            assert_eq!(RejectReason::from(e).as_str(), e.reason());
        }
    }

    #[test]
    fn rejections_are_kept_in_label_order_and_serialize_as_labels() {
        let mut c = Counters::default();
        c.reject(RejectReason::VersionZeroSeq);
        c.reject(RejectReason::ClockDrift);
        c.reject(RejectReason::ClockDrift);
        c.reject(RejectReason::UnexpectedOnGossip(MessageKind::SyncAck));
        let labels: Vec<&str> = c.rejected.keys().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            ["clock_drift", "unexpected_sync_ack_on_gossip", "version_zero_seq"]
        );
        assert_eq!(c.rejected.get("clock_drift"), Some(&2));
        let cfg = bincode::config::standard();
        let as_reason = bincode::serde::encode_to_vec(RejectReason::ClockDrift, cfg).expect("encodes");
        let as_label = bincode::serde::encode_to_vec("clock_drift", cfg).expect("encodes");
        assert_eq!(as_reason, as_label, "a reason serializes as its label");
        let bytes = bincode::serde::encode_to_vec(&c.rejected, cfg).expect("encodes");
        let (back, _): (BTreeMap<RejectReason, u64>, usize) =
            bincode::serde::decode_from_slice(&bytes, cfg).expect("labels parse back");
        assert_eq!(back, c.rejected);
    }
}
