//! The wire format: a versioned envelope around bincode-encoded messages.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "STRL"
//! 4       1     protocol version (currently 7)
//! 5       1     message kind
//! 6       8     cluster id (xxh3 of the cluster name, little endian)
//! 14      ..    bincode 2 (standard config) body
//! ```
//! Sizes are checked before anything is decoded: the whole message against
//! the caller's maximum (the node passes `max_message_bytes`), capped at
//! [`ABSOLUTE_MAX_MESSAGE`]. bincode's own limit on what a body may claim
//! is the fixed [`ABSOLUTE_MAX_MESSAGE`], not the caller's maximum. Every
//! failure is a typed [`WireError`]; nothing here panics on input.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::crypto::Signature;
use super::dots::{Dot, Knowledge};
use super::hlc::Hlc;
use super::ids::NodeId;
use super::ids::StateKey;
use super::membership::{Member, MemberStatus, NodeInfo};
use super::state::{Digest, Version, BUCKETS};

/// The first four bytes of every message.
pub const MAGIC: [u8; 4] = *b"STRL";
/// The protocol version this build speaks.
/// Version 2: compact heartbeats (record summary, info only when
/// announcing) and anti-entropy by knowledge summaries (bucket hashes plus
/// the ranges of differing buckets; the ack carries the requester's
/// missing versions). Version 4: signed versions and member records.
/// Version 5: graves travel as their signed tombstones. Version 6:
/// liveness from neighbours. Version 7: service versions carry causal
/// context for their own origin only (a peer's service version naming
/// another origin is refused), so only an instance's owner deregisters
/// it; sync manifests and graves are bounded per message. Version 8: a
/// push lists the dots it has seen but no longer holds (`wanted`) and the
/// ack returns those still held live, so replicas converge after a delete
/// was forgotten on one side only.
pub const PROTOCOL_VERSION: u8 = 8;
/// Envelope header length.
pub const HEADER_LEN: usize = 14;
/// Hard ceiling for any message, whatever the config says.
pub const ABSOLUTE_MAX_MESSAGE: usize = 256 << 20;

/// Message kinds, as the byte in the envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MessageKind {
    /// Periodic liveness + digest.
    Heartbeat = 1,
    /// Pushed state changes.
    Delta = 2,
    /// Anti-entropy: "here is what I know".
    SyncRequest = 3,
    /// Anti-entropy: "here is what you lack".
    SyncResponse = 4,
    /// Anti-entropy: the requester's half.
    SyncPush = 5,
    /// Anti-entropy: push received, and what the requester lacks.
    SyncAck = 6,
}

impl MessageKind {
    /// Lower-case name, for metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageKind::Heartbeat => "heartbeat",
            MessageKind::Delta => "delta",
            MessageKind::SyncRequest => "sync_request",
            MessageKind::SyncResponse => "sync_response",
            MessageKind::SyncPush => "sync_push",
            MessageKind::SyncAck => "sync_ack",
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => MessageKind::Heartbeat,
            2 => MessageKind::Delta,
            3 => MessageKind::SyncRequest,
            4 => MessageKind::SyncResponse,
            5 => MessageKind::SyncPush,
            6 => MessageKind::SyncAck,
            _ => return None,
        })
    }

    /// Every kind, for metric families.
    pub const ALL: [MessageKind; 6] = [
        MessageKind::Heartbeat,
        MessageKind::Delta,
        MessageKind::SyncRequest,
        MessageKind::SyncResponse,
        MessageKind::SyncPush,
        MessageKind::SyncAck,
    ];
}

/// How many heartbeats after each change of its incarnation a node sends
/// with its full self-description ([`Heartbeat::info`]).
pub const ANNOUNCE_HEARTBEATS: u32 = 3;

/// Periodic liveness announcement.
///
/// Every node receives every other node's heartbeats, so they are kept
/// small: the sender's record travels as `(node, incarnation, status)`,
/// with its [`NodeInfo`] only in the first [`ANNOUNCE_HEARTBEATS`]
/// heartbeats of each incarnation. A receiver that sees a newer incarnation
/// than it holds without the info fetches the record by anti-entropy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Increases with every heartbeat (gossipsub dedups identical payloads).
    pub seq: u64,
    /// The sender.
    pub node: NodeId,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The sender's status (as the sender holds it: alive).
    pub status: MemberStatus,
    /// The sender's self-description and its signature over its record
    /// ([`Member::proof`]), in announcing heartbeats only.
    pub info: Option<(std::sync::Arc<NodeInfo>, Signature)>,
    /// The sender's HLC.
    pub hlc: Hlc,
    /// Digest of the sender's replicated state.
    pub digest: Digest,
    /// Digest of the sender's membership view.
    pub members_hash: u64,
    /// The sender's current heartbeat interval.
    pub interval_ms: u64,
    /// The highest dot sequence the sender has issued. The heartbeat's
    /// author is authenticated by the transport, so this is the origin's
    /// own word: what peers may claim about its writes (a context entry,
    /// adopted knowledge) is capped at it.
    pub high_seq: u64,
}

impl Heartbeat {
    /// The sender's full record, when this heartbeat carries its info.
    pub fn member(&self) -> Option<Member> {
        self.info.as_ref().map(|(info, proof)| Member {
            node: self.node,
            info: info.clone(),
            incarnation: self.incarnation,
            status: self.status,
            proof: *proof,
        })
    }
}

/// State changes pushed by gossip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Versions to merge.
    pub versions: Vec<(StateKey, Version)>,
    /// Member records to merge.
    pub members: Vec<Member>,
}

/// A list of 64-bit hashes (bucket hashes), encoded compactly as one byte
/// string: count (u16 LE), a bitmap of the non-zero entries, then those
/// entries (u64 LE). Decoding is a copy, not a varint per entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hashes(pub Vec<u64>);

/// Most entries a [`Hashes`] may hold.
pub const MAX_HASHES: usize = 4096;

impl Serialize for Hashes {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let n = self.0.len();
        if n > MAX_HASHES {
            return Err(serde::ser::Error::custom("too many hashes"));
        }
        let nonzero = self.0.iter().filter(|h| **h != 0).count();
        let mut out = Vec::with_capacity(2 + n.div_ceil(8) + 8 * nonzero);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        let mut bitmap = vec![0u8; n.div_ceil(8)];
        for (i, h) in self.0.iter().enumerate() {
            if *h != 0 {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        out.extend_from_slice(&bitmap);
        for h in self.0.iter().filter(|h| **h != 0) {
            out.extend_from_slice(&h.to_le_bytes());
        }
        ser.serialize_bytes(&out)
    }
}

impl<'de> Deserialize<'de> for Hashes {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Hashes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("packed hashes")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Hashes, E> {
                let bad = || E::custom("malformed hashes");
                let n =
                    u16::from_le_bytes(b.get(..2).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
                if n > MAX_HASHES {
                    return Err(bad());
                }
                let bitmap = b.get(2..2 + n.div_ceil(8)).ok_or_else(bad)?;
                let mut rest = &b[2 + n.div_ceil(8)..];
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                        let (w, r) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
                        let h = u64::from_le_bytes(*w);
                        if h == 0 {
                            return Err(bad());
                        }
                        out.push(h);
                        rest = r;
                    } else {
                        out.push(0);
                    }
                }
                // Unused bitmap bits and trailing bytes are malformed.
                if !rest.is_empty()
                    || (!n.is_multiple_of(8) && bitmap.last().is_some_and(|l| l >> (n % 8) != 0))
                {
                    return Err(bad());
                }
                Ok(Hashes(out))
            }
        }
        de.deserialize_bytes(V)
    }
}

/// A node's knowledge as sent in anti-entropy: hashes of all of it,
/// bucket by bucket, and its full ranges for some buckets only. See
/// [`PeerKnowledge`](super::dots::PeerKnowledge) for how it is read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeSummary {
    /// Per bucket (a power of two of them, at most 256), the hash of the
    /// sender's ranges of the origins in it.
    pub buckets: Hashes,
    /// The buckets whose ranges are in `ranges` (in full: an origin of such
    /// a bucket missing from `ranges` has nothing seen).
    pub shipped: Vec<u16>,
    /// The sender's ranges for the shipped buckets.
    pub ranges: Knowledge,
}

/// Anti-entropy request: a summary of what the requester knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The requester's knowledge bucket hashes (nothing shipped).
    pub knowledge: KnowledgeSummary,
    /// The requester's per-bucket state hashes (256).
    pub buckets: Hashes,
    /// The requester's membership digest.
    pub members_hash: u64,
    /// The requester's membership view folded into a power-of-two number
    /// of buckets (at most 256; see `Membership::bucket_hashes`): when the
    /// digests differ, the responder sends only the records of the buckets
    /// that differ.
    pub member_buckets: Hashes,
    /// The sender's own highest sequence number issued: its word about its
    /// own writes, as in its heartbeats, so an origin asked directly
    /// settles the versions held back for naming its writes.
    pub high_seq: u64,
}

impl SyncRequest {
    /// A request that tells nothing (one knowledge bucket, zeroed state
    /// hashes, no member buckets): any node answers it with its whole
    /// knowledge, a manifest of every differing bucket and its member
    /// records. What a probe or a test peer sends.
    pub fn telling_nothing() -> SyncRequest {
        SyncRequest {
            knowledge: KnowledgeSummary {
                buckets: Hashes(vec![0]),
                shipped: Vec::new(),
                ranges: Knowledge::new(),
            },
            buckets: Hashes(vec![0; BUCKETS]),
            members_hash: 0,
            member_buckets: Hashes(Vec::new()),
            high_seq: 0,
        }
    }
}

/// Anti-entropy response: where the responder differs from the requester.
/// It carries no versions: the requester pushes what the responder lacks
/// and gets what it lacks in the [`SyncAck`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// The responder's knowledge: bucket hashes (as many as the
    /// request's) and its ranges for the buckets that differed.
    pub knowledge: KnowledgeSummary,
    /// The responder's per-bucket state hashes.
    pub buckets: Hashes,
    /// For each state bucket that differed, the dots the responder holds in it.
    pub manifest: BTreeMap<u16, Vec<Dot>>,
    /// The responder's graves (collected deletes) in the state buckets that
    /// differed, each as its signed tombstone: the requester takes each
    /// collection over whole.
    pub graves: Vec<(StateKey, Version)>,
    /// The responder's records in the member buckets that differed from
    /// the request's.
    pub members: Vec<Member>,
    /// The responder's member bucket hashes (as many as the request's),
    /// when the membership digests differed; empty when they were equal.
    pub member_buckets: Hashes,
    /// The sender's own highest sequence number issued: its word about its
    /// own writes, as in its heartbeats, so an origin asked directly
    /// settles the versions held back for naming its writes.
    pub high_seq: u64,
}

/// The requester's half of a sync.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncPush {
    /// Versions the responder has not seen (or may not have).
    pub versions: Vec<(StateKey, Version)>,
    /// The requester's knowledge after taking the response in: bucket
    /// hashes, and its ranges for the buckets that differ from the
    /// response's.
    pub knowledge: KnowledgeSummary,
    /// For each state bucket that still differs, the dots the requester holds.
    pub manifest: BTreeMap<u16, Vec<Dot>>,
    /// The requester's graves in the state buckets that still differ, each
    /// as its signed tombstone.
    pub graves: Vec<(StateKey, Version)>,
    /// The requester's records in the member buckets that still differ
    /// from the response's.
    pub members: Vec<Member>,
    /// Dots the response's manifest lists that the requester has seen but
    /// holds nowhere (protocol v8): the responder sends back those it still
    /// holds live, in [`SyncAck::returned`], so two replicas that can show
    /// each other nothing else still converge (see
    /// `ReplicatedState::take_back`).
    pub wanted: Vec<Dot>,
}

/// The responder's answer to a push: the versions the requester lacks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncAck {
    /// Versions of the push that were new here.
    pub applied: u64,
    /// Versions held here that the requester has not seen (or may not have).
    pub versions: Vec<(StateKey, Version)>,
    /// Whether `versions` is everything (else the requester asks again).
    pub complete: bool,
    /// Live versions held here whose dots the push listed as
    /// [`SyncPush::wanted`] (protocol v8).
    pub returned: Vec<(StateKey, Version)>,
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// See [`Delta`].
    Delta(Delta),
    /// See [`SyncRequest`].
    SyncRequest(SyncRequest),
    /// See [`SyncResponse`].
    SyncResponse(SyncResponse),
    /// See [`SyncPush`].
    SyncPush(SyncPush),
    /// See [`SyncAck`].
    SyncAck(SyncAck),
}

impl Message {
    /// The kind byte.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Heartbeat(_) => MessageKind::Heartbeat,
            Message::Delta(_) => MessageKind::Delta,
            Message::SyncRequest(_) => MessageKind::SyncRequest,
            Message::SyncResponse(_) => MessageKind::SyncResponse,
            Message::SyncPush(_) => MessageKind::SyncPush,
            Message::SyncAck(_) => MessageKind::SyncAck,
        }
    }
}

/// Why bytes from the network were not a message. The bytes are dropped;
/// no state changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the envelope header.
    #[error("message truncated: {len} bytes, header needs {HEADER_LEN}")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// Over the size limit; not decoded.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Bytes received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Does not start with the magic bytes.
    #[error("bad magic: not a Starling message")]
    BadMagic,
    /// From a newer (or unknown) protocol version.
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// Unknown message kind byte.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// From another cluster.
    #[error("message from another cluster")]
    WrongCluster,
    /// The body did not decode.
    #[error("malformed {kind:?} body: {reason}")]
    Malformed {
        /// The kind the header claimed.
        kind: MessageKind,
        /// Decoder's explanation.
        reason: String,
    },
}

impl WireError {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Truncated { .. } => "truncated",
            WireError::TooLarge { .. } => "too_large",
            WireError::BadMagic => "bad_magic",
            WireError::UnsupportedVersion(_) => "unsupported_version",
            WireError::UnknownKind(_) => "unknown_kind",
            WireError::WrongCluster => "wrong_cluster",
            WireError::Malformed { .. } => "malformed",
        }
    }
}

/// The cluster id carried in every envelope.
pub fn cluster_id(cluster: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(cluster.as_bytes())
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<ABSOLUTE_MAX_MESSAGE>()
}

/// Encode a message for `cluster`.
pub fn encode(msg: &Message, cluster: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(msg.kind() as u8);
    out.extend_from_slice(&cluster.to_le_bytes());
    let cfg = bincode_config();
    let res = match msg {
        Message::Heartbeat(m) => bincode::serde::encode_into_std_write(m, &mut out, cfg),
        Message::Delta(m) => bincode::serde::encode_into_std_write(m, &mut out, cfg),
        Message::SyncRequest(m) => bincode::serde::encode_into_std_write(m, &mut out, cfg),
        Message::SyncResponse(m) => bincode::serde::encode_into_std_write(m, &mut out, cfg),
        Message::SyncPush(m) => bincode::serde::encode_into_std_write(m, &mut out, cfg),
        Message::SyncAck(m) => bincode::serde::encode_into_std_write(m, &mut out, cfg),
    };
    res.expect("encoding into a Vec cannot fail");
    out
}

/// Read just the kind from a header (for metrics on undecodable input).
pub fn peek_kind(bytes: &[u8]) -> Option<MessageKind> {
    if bytes.len() < HEADER_LEN || bytes[..4] != MAGIC {
        return None;
    }
    MessageKind::from_byte(bytes[5])
}

/// Decode a message, checking size, magic, version, kind and cluster first.
pub fn decode(bytes: &[u8], cluster: u64, max_len: usize) -> Result<Message, WireError> {
    let max = max_len.min(ABSOLUTE_MAX_MESSAGE);
    if bytes.len() > max {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(WireError::Truncated { len: bytes.len() });
    }
    if bytes[..4] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if bytes[4] != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion(bytes[4]));
    }
    let kind = MessageKind::from_byte(bytes[5]).ok_or(WireError::UnknownKind(bytes[5]))?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[6..14]);
    if u64::from_le_bytes(id) != cluster {
        return Err(WireError::WrongCluster);
    }
    let body = &bytes[HEADER_LEN..];
    let malformed = |e: bincode::error::DecodeError| WireError::Malformed {
        kind,
        reason: e.to_string(),
    };
    fn body_of<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, bincode::error::DecodeError> {
        let (v, used): (T, usize) = bincode::serde::decode_from_slice(b, bincode_config())?;
        if used != b.len() {
            return Err(bincode::error::DecodeError::OtherString(format!(
                "{} trailing bytes",
                b.len() - used
            )));
        }
        Ok(v)
    }
    Ok(match kind {
        MessageKind::Heartbeat => Message::Heartbeat(body_of(body).map_err(malformed)?),
        MessageKind::Delta => Message::Delta(body_of(body).map_err(malformed)?),
        MessageKind::SyncRequest => Message::SyncRequest(body_of(body).map_err(malformed)?),
        MessageKind::SyncResponse => Message::SyncResponse(body_of(body).map_err(malformed)?),
        MessageKind::SyncPush => Message::SyncPush(body_of(body).map_err(malformed)?),
        MessageKind::SyncAck => Message::SyncAck(body_of(body).map_err(malformed)?),
    })
}

/// One message's decoding, shared by the engines of one process it is
/// delivered to (the simulator delivers each published message to
/// hundreds): decoded by the first engine that needs it, cloned for the
/// others. A clone is equal to what [`decode`] would give each of them
/// (shared `Arc`s aside, which compare and behave as values), so nothing
/// an engine checks or decides changes; only the work does.
#[derive(Debug, Default)]
pub struct SharedDecode {
    /// `(cluster, max_len, bytes.len(), the result)` of the first decode.
    first: std::cell::OnceCell<(u64, usize, usize, Result<Message, WireError>)>,
}

impl SharedDecode {
    /// Nothing decoded yet.
    pub fn new() -> Self {
        SharedDecode::default()
    }

    /// [`decode`]`(bytes, cluster, max_len)`. `bytes` must be the same
    /// message at every call; a caller with another cluster or limit than
    /// the first gets its own decode.
    pub fn decode(&self, bytes: &[u8], cluster: u64, max_len: usize) -> Result<Message, WireError> {
        let (c, m, len, result) = self
            .first
            .get_or_init(|| (cluster, max_len, bytes.len(), decode(bytes, cluster, max_len)));
        debug_assert_eq!(*len, bytes.len(), "a SharedDecode is used for one message only");
        if (*c, *m) == (cluster, max_len) {
            result.clone()
        } else {
            decode(bytes, cluster, max_len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb() -> Message {
        Message::Heartbeat(Heartbeat {
            seq: 7,
            node: NodeId::from_index(1),
            incarnation: 2,
            status: MemberStatus::Alive,
            info: Some((NodeInfo::default().into(), Signature([3; 64]))),
            hlc: Hlc::default(),
            digest: Digest { hash: 9, keys: 1 },
            members_hash: 3,
            interval_ms: 1000,
            high_seq: 3,
        })
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&hb(), 5);
        assert_eq!(decode(&bytes, 5, 1 << 20).unwrap(), hb());
    }

    #[test]
    fn a_shared_decode_gives_every_engine_what_its_own_decode_would() {
        let bytes = encode(&hb(), 5);
        let shared = SharedDecode::new();
        // The first caller decodes; the same cluster and limit get a copy.
        for _ in 0..2 {
            assert_eq!(shared.decode(&bytes, 5, 1 << 20), decode(&bytes, 5, 1 << 20));
        }
        // Another cluster or limit than the first caller's: decoded anew.
        assert_eq!(shared.decode(&bytes, 6, 1 << 20), Err(WireError::WrongCluster));
        assert!(matches!(
            shared.decode(&bytes, 5, 8),
            Err(WireError::TooLarge { .. })
        ));
        // A failure is shared like a message.
        let bad = SharedDecode::new();
        assert_eq!(bad.decode(&bytes, 6, 1 << 20), Err(WireError::WrongCluster));
        assert_eq!(bad.decode(&bytes, 6, 1 << 20), Err(WireError::WrongCluster));
        assert_eq!(bad.decode(&bytes, 5, 1 << 20), Ok(hb()));
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let bytes = encode(&hb(), 5);
        for n in 0..bytes.len() {
            assert!(
                decode(&bytes[..n], 5, 1 << 20).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
    }

    #[test]
    fn header_checks_come_before_decoding() {
        let mut bytes = encode(&hb(), 5);
        assert_eq!(decode(&bytes, 6, 1 << 20), Err(WireError::WrongCluster));
        assert!(matches!(decode(&bytes, 5, 10), Err(WireError::TooLarge { .. })));
        bytes[4] = PROTOCOL_VERSION + 1;
        assert_eq!(
            decode(&bytes, 5, 1 << 20),
            Err(WireError::UnsupportedVersion(PROTOCOL_VERSION + 1))
        );
        bytes[4] = PROTOCOL_VERSION;
        bytes[5] = 99;
        assert_eq!(decode(&bytes, 5, 1 << 20), Err(WireError::UnknownKind(99)));
        bytes[0] = b'X';
        assert_eq!(decode(&bytes, 5, 1 << 20), Err(WireError::BadMagic));
    }

    #[test]
    fn hashes_pack_zeros_and_reject_junk() {
        let cfg = bincode::config::standard();
        for v in [
            vec![],
            vec![0; 256],
            vec![1, 0, 0, u64::MAX, 0, 7, 0, 0, 9],
            (1..300).collect(),
        ] {
            let h = Hashes(v);
            let bytes = bincode::serde::encode_to_vec(&h, cfg).unwrap();
            let (back, _): (Hashes, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
            assert_eq!(back, h);
        }
        let zeros = bincode::serde::encode_to_vec(Hashes(vec![0; 256]), cfg).unwrap();
        assert!(zeros.len() < 40, "{}", zeros.len());
        // A set bitmap bit with no hash behind it, a stray bit past the
        // count, trailing bytes: all malformed.
        for junk in [vec![1u8, 0, 1], vec![1, 0, 2], vec![1, 0, 0, 5]] {
            let bytes = bincode::serde::encode_to_vec(serde_bytes_of(&junk), cfg).unwrap();
            assert!(
                bincode::serde::decode_from_slice::<Hashes, _>(&bytes, cfg).is_err(),
                "{junk:?}"
            );
        }
    }

    /// Raw bytes serialised the way `Hashes` serialises its blob.
    fn serde_bytes_of(b: &[u8]) -> impl Serialize + '_ {
        struct B<'a>(&'a [u8]);
        impl Serialize for B<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        B(b)
    }

    #[test]
    fn trailing_garbage_is_malformed() {
        let mut bytes = encode(&hb(), 5);
        bytes.push(0);
        assert!(matches!(
            decode(&bytes, 5, 1 << 20),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn a_huge_length_prefix_does_not_allocate() {
        // A delta claiming 2^60 versions in a few bytes.
        let mut bytes = encode(
            &Message::Delta(Delta {
                versions: vec![],
                members: vec![],
            }),
            5,
        );
        bytes.truncate(HEADER_LEN);
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            decode(&bytes, 5, 1 << 20),
            Err(WireError::Malformed { .. })
        ));
    }
}
