//! Validated identifiers: node ids, namespaces, keys, service names.
//!
//! Every identifier that crosses the API boundary is parsed once into a
//! newtype here, so the rest of the core never re-validates strings.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest namespace name, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// Longest config key, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Longest service name or instance id, in bytes.
pub const MAX_SERVICE_NAME_LEN: usize = 128;

/// A node's identity: the 32 bytes of its ed25519 public key.
///
/// The libp2p driver maps it one-to-one to a `PeerId`; because it *is* the
/// public key, a signature made by the origin of a version can be checked by
/// any node that relays it.
#[derive(Clone, Copy, Eq)]
pub struct NodeId(pub [u8; 32]);

impl std::hash::Hash for NodeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

/// Encoded as a byte string (one length byte and the 32 bytes in bincode):
/// ids are in every dot of every causal context, and decoding them byte by
/// byte as a tuple was a tenth of the simulator's time at 1,000 nodes.
impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        byte_array::<D, 32>(d, "32 bytes of a node id").map(NodeId)
    }
}

/// Decode a fixed-size byte array written with `serialize_bytes` (or, from
/// a self-describing format, as a sequence of exactly `N` bytes).
pub(crate) fn byte_array<'de, D: serde::Deserializer<'de>, const N: usize>(
    d: D,
    what: &'static str,
) -> Result<[u8; N], D::Error> {
    struct V<const N: usize>(&'static str);
    impl<'de, const N: usize> serde::de::Visitor<'de> for V<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<[u8; N], E> {
            <[u8; N]>::try_from(b).map_err(|_| E::invalid_length(b.len(), &self))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, b) in out.iter_mut().enumerate() {
                *b = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
            }
            if seq.next_element::<u8>()?.is_some() {
                return Err(serde::de::Error::invalid_length(N + 1, &self));
            }
            Ok(out)
        }
    }
    d.deserialize_bytes(V::<N>(what))
}

impl PartialEq for NodeId {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        // Word by word: no `memcmp` call (dots are compared in every merge).
        let w = |id: &NodeId, i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&id.0[i * 8..i * 8 + 8]);
            u64::from_ne_bytes(b)
        };
        (w(self, 0) ^ w(other, 0))
            | (w(self, 1) ^ w(other, 1))
            | (w(self, 2) ^ w(other, 2))
            | (w(self, 3) ^ w(other, 3))
            == 0
    }
}

/// A hasher for maps keyed by [`NodeId`] (ids are public keys, hashing
/// them again is wasted work). Deterministic: no random seed. The final
/// mix matters: the fold alone leaves the low bits (the table index) the
/// same for every synthetic id of tests and simulations, whose bytes
/// differ only at the end, and put all 1,000 peers of a simulated node in
/// one probe chain.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(23) ^ u64::from_le_bytes(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

/// A hash map keyed by node id, iterated in an order that depends only on
/// what was inserted (never use its order for anything observable).
pub(crate) type IdMap<V> = std::collections::HashMap<NodeId, V, std::hash::BuildHasherDefault<IdHasher>>;

impl Ord for NodeId {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Two big-endian halves: ordering them in turn is ordering the
        // bytes. Synthetic ids (simulations, tests) differ only in their
        // last bytes, so every comparison of them reaches the second half.
        let half = |id: &NodeId, i: usize| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&id.0[i * 16..i * 16 + 16]);
            u128::from_be_bytes(b)
        };
        half(self, 0)
            .cmp(&half(other, 0))
            .then_with(|| half(self, 1).cmp(&half(other, 1)))
    }
}

impl PartialOrd for NodeId {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl NodeId {
    /// A synthetic id for tests and simulations: the index, big-endian, in
    /// the last eight bytes.
    pub fn from_index(index: u64) -> Self {
        let mut bytes = [0u8; 32];
        bytes[24..].copy_from_slice(&index.to_be_bytes());
        NodeId(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short form for logs and reports: the first eight hex digits, or
    /// `#<index>` for a synthetic id ([`NodeId::from_index`]), whose
    /// leading bytes are all zero and would print every node alike.
    pub fn short(&self) -> String {
        if self.0[..24].iter().all(|b| *b == 0) {
            let mut index = [0u8; 8];
            index.copy_from_slice(&self.0[24..]);
            return format!("#{}", u64::from_be_bytes(index));
        }
        hex(&self.0[..4])
    }

    /// Parse a node id given as a libp2p peer id (`12D3KooW...`, the form
    /// the HTTP API and logs show) or as the 64 hex digits of `Display`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Some(id) = Self::parse_hex(text) {
            return Some(id);
        }
        let bytes = bs58::decode(text).into_vec().ok()?;
        let key = bytes.strip_prefix(&PEER_ID_PREFIX)?;
        Some(NodeId(<[u8; 32]>::try_from(key).ok()?))
    }

    /// This id as a libp2p peer id (`12D3KooW...`): an identity multihash
    /// of the protobuf-encoded ed25519 public key, in base58.
    pub fn peer_id_text(&self) -> String {
        let mut bytes = PEER_ID_PREFIX.to_vec();
        bytes.extend_from_slice(&self.0);
        bs58::encode(bytes).into_string()
    }

    /// Parse the 64-hex-digit form produced by `Display`.
    pub fn parse_hex(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).ok()?;
            bytes[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(NodeId(bytes))
    }
}

/// The bytes before the key in an ed25519 peer id: identity multihash
/// (0x00) of 36 bytes (0x24), protobuf field 1 key type Ed25519 (0x08 0x01),
/// field 2 the 32 key bytes (0x12 0x20).
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Empty or longer than the limit for its kind.
    #[error("{kind} must be 1..={max} bytes long, got {len}")]
    Length {
        /// Which identifier.
        kind: &'static str,
        /// Its limit.
        max: usize,
        /// What was given.
        len: usize,
    },
    /// Contains a character the kind does not allow.
    #[error("{kind} {value:?} contains an invalid character: {reason}")]
    Invalid {
        /// Which identifier.
        kind: &'static str,
        /// The rejected text.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
}

fn check_len(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() || s.len() > max {
        return Err(IdError::Length {
            kind,
            max,
            len: s.len(),
        });
    }
    Ok(())
}

fn check_name(kind: &'static str, s: &str, max: usize, extra: &[char]) -> Result<(), IdError> {
    check_len(kind, s, max)?;
    let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let all_ok = s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c));
    if !first_ok || !all_ok {
        return Err(IdError::Invalid {
            kind,
            value: s.to_string(),
            reason: "use ASCII letters, digits and - _ . (starting with a letter or digit)",
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parse and validate.
            pub fn new(text: impl Into<String>) -> Result<Self, IdError> {
                let text = text.into();
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(&text)?;
                Ok($name(text))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $name::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::new(text).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A config namespace such as `prod` or `staging`.
    Namespace,
    "namespace",
    |s| check_name("namespace", s, MAX_NAMESPACE_LEN, &['-', '_', '.'])
);

string_id!(
    /// A config key: UTF-8, `/`-separated non-empty segments, at most
    /// 512 bytes, no control characters.
    Key,
    "key",
    |s| {
        check_len("key", s, MAX_KEY_LEN)?;
        if s.chars().any(|c| c.is_control()) {
            return Err(IdError::Invalid {
                kind: "key",
                value: s.to_string(),
                reason: "control characters are not allowed",
            });
        }
        if s.split('/').any(|seg| seg.is_empty()) {
            return Err(IdError::Invalid {
                kind: "key",
                value: s.to_string(),
                reason: "segments between '/' must be non-empty (no leading, trailing or double '/')",
            });
        }
        Ok(())
    }
);

string_id!(
    /// A service name such as `api` or `payments-v2`.
    ServiceName,
    "service name",
    |s| check_name("service name", s, MAX_SERVICE_NAME_LEN, &['-', '_', '.'])
);

string_id!(
    /// One instance of a service, unique within the service.
    InstanceId,
    "instance id",
    |s| check_name("instance id", s, MAX_SERVICE_NAME_LEN, &['-', '_', '.', ':'])
);

/// The address of one replicated register in the state.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub enum StateKey {
    /// A config key.
    Kv {
        /// Its namespace.
        namespace: Namespace,
        /// The key.
        key: Key,
    },
    /// A service instance.
    Service {
        /// Its namespace.
        namespace: Namespace,
        /// The service.
        service: ServiceName,
        /// The instance.
        instance: InstanceId,
    },
    /// The canary (gray rollout) of a config key: a candidate value read
    /// only by the nodes its target selects.
    Canary {
        /// Its namespace.
        namespace: Namespace,
        /// The config key it is a candidate for.
        key: Key,
    },
}

trait HashBuf {
    fn push(&mut self, b: u8);
    fn extend_from_slice(&mut self, b: &[u8]);
    fn len(&self) -> usize;
}

impl HashBuf for Vec<u8> {
    fn push(&mut self, b: u8) {
        Vec::push(self, b)
    }
    fn extend_from_slice(&mut self, b: &[u8]) {
        Vec::extend_from_slice(self, b)
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

struct StackBuf<'a> {
    buf: &'a mut [u8; 256],
    len: usize,
}

impl HashBuf for StackBuf<'_> {
    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }
    fn extend_from_slice(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl StateKey {
    /// A stable 64-bit hash, the same on every node and platform.
    pub fn stable_hash(&self) -> u64 {
        // Hashed on every merge and sync: short keys are laid out on the
        // stack, longer ones in a vector (same bytes, same hash).
        let parts: [&str; 3] = match self {
            StateKey::Kv { namespace, key } | StateKey::Canary { namespace, key } => {
                [namespace.as_str(), key.as_str(), ""]
            }
            StateKey::Service {
                namespace,
                service,
                instance,
            } => [namespace.as_str(), service.as_str(), instance.as_str()],
        };
        let len = 3 + parts.iter().map(|p| p.len()).sum::<usize>();
        if len <= 256 {
            let mut stack = [0u8; 256];
            let n = self.hash_bytes(&mut StackBuf {
                buf: &mut stack,
                len: 0,
            });
            return xxhash_rust::xxh3::xxh3_64(&stack[..n]);
        }
        let mut buf = Vec::with_capacity(len);
        self.hash_bytes(&mut buf);
        xxhash_rust::xxh3::xxh3_64(&buf)
    }

    /// Lay out the bytes `stable_hash` hashes; returns their length.
    fn hash_bytes(&self, buf: &mut impl HashBuf) -> usize {
        match self {
            StateKey::Kv { namespace, key } => {
                buf.push(0);
                buf.extend_from_slice(namespace.as_str().as_bytes());
                buf.push(0xff);
                buf.extend_from_slice(key.as_str().as_bytes());
            }
            StateKey::Service {
                namespace,
                service,
                instance,
            } => {
                buf.push(1);
                buf.extend_from_slice(namespace.as_str().as_bytes());
                buf.push(0xff);
                buf.extend_from_slice(service.as_str().as_bytes());
                buf.push(0xff);
                buf.extend_from_slice(instance.as_str().as_bytes());
            }
            StateKey::Canary { namespace, key } => {
                buf.push(2);
                buf.extend_from_slice(namespace.as_str().as_bytes());
                buf.push(0xff);
                buf.extend_from_slice(key.as_str().as_bytes());
            }
        }
        buf.len()
    }

    /// The namespace of either kind of key.
    pub fn namespace(&self) -> &Namespace {
        match self {
            StateKey::Kv { namespace, .. }
            | StateKey::Service { namespace, .. }
            | StateKey::Canary { namespace, .. } => namespace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_tell_synthetic_nodes_apart_and_show_real_keys_by_their_first_bytes() {
        assert_eq!(NodeId::from_index(7).short(), "#7");
        assert_ne!(NodeId::from_index(1).short(), NodeId::from_index(2).short());
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[31] = 1;
        assert_eq!(NodeId(bytes).short(), "ab000000");
    }

    #[test]
    fn namespaces_accept_simple_names_and_reject_junk() {
        assert!(Namespace::new("prod").is_ok());
        assert!(Namespace::new("eu-west.1_a").is_ok());
        assert!(Namespace::new("").is_err());
        assert!(Namespace::new("-prod").is_err());
        assert!(Namespace::new("pr od").is_err());
        assert!(Namespace::new("x".repeat(MAX_NAMESPACE_LEN + 1)).is_err());
    }

    #[test]
    fn keys_are_slash_separated_non_empty_segments() {
        assert!(Key::new("db/primary/url").is_ok());
        assert!(Key::new("héllo/wörld").is_ok());
        assert!(Key::new("/db").is_err());
        assert!(Key::new("db/").is_err());
        assert!(Key::new("db//x").is_err());
        assert!(Key::new("a\nb").is_err());
        assert!(Key::new("k".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn node_id_hex_round_trips() {
        let id = NodeId::from_index(42);
        assert_eq!(NodeId::parse_hex(&id.to_string()), Some(id));
        assert_eq!(NodeId::parse_hex("zz"), None);
    }

    #[test]
    fn synthetic_ids_spread_over_the_low_bits_of_their_hash() {
        use std::hash::BuildHasher;
        let b = std::hash::BuildHasherDefault::<IdHasher>::default();
        let buckets: std::collections::BTreeSet<u64> = (1..=1024u64)
            .map(|i| b.hash_one(NodeId::from_index(i)) & 1023)
            .collect();
        assert!(
            buckets.len() > 500,
            "1,024 ids land in only {} of 1,024 buckets",
            buckets.len()
        );
    }

    #[test]
    fn stable_hash_is_xxh3_of_the_tagged_parts() {
        let ns = Namespace::new("app").unwrap();
        let long = "k".repeat(300);
        for (k, tag, parts) in [
            (Key::new("a/b").unwrap(), 0u8, vec!["app", "a/b"]),
            (Key::new(long.clone()).unwrap(), 0u8, vec!["app", long.as_str()]),
        ] {
            let mut want = vec![tag];
            want.extend_from_slice(parts[0].as_bytes());
            want.push(0xff);
            want.extend_from_slice(parts[1].as_bytes());
            let sk = StateKey::Kv {
                namespace: ns.clone(),
                key: k,
            };
            assert_eq!(sk.stable_hash(), xxhash_rust::xxh3::xxh3_64(&want));
        }
        let svc = StateKey::Service {
            namespace: ns.clone(),
            service: ServiceName::new("api").unwrap(),
            instance: InstanceId::new("i1").unwrap(),
        };
        assert_eq!(
            svc.stable_hash(),
            xxhash_rust::xxh3::xxh3_64(b"\x01app\xffapi\xffi1")
        );
    }

    #[test]
    fn node_ids_encode_as_byte_strings() {
        let id = NodeId::from_index(0x0102_0304);
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(id, cfg).unwrap();
        assert_eq!(bytes.len(), 33);
        let (back, _): (NodeId, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, id);
        let mut short = bytes.clone();
        short[0] = 31;
        short.pop();
        assert!(bincode::serde::decode_from_slice::<NodeId, _>(&short, cfg).is_err());
    }

    #[test]
    fn node_ids_order_like_their_bytes() {
        let ids: Vec<NodeId> = [[0u8; 32], [1; 32], [255; 32]]
            .into_iter()
            .chain((0..64u8).map(|i| {
                let mut b = [7u8; 32];
                b[(i as usize * 5) % 32] = i.wrapping_mul(37);
                b
            }))
            .map(NodeId)
            .collect();
        for a in &ids {
            for b in &ids {
                assert_eq!(a.cmp(b), a.0.cmp(&b.0));
            }
        }
    }

    #[test]
    fn invalid_names_are_rejected_when_deserialized() {
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec("bad name", cfg).unwrap();
        let res: Result<(Namespace, usize), _> = bincode::serde::decode_from_slice(&bytes, cfg);
        assert!(res.is_err());
    }
}
