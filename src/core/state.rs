//! The replicated state: a map from [`StateKey`] to a multi-value register
//! with bounded history, plus the knowledge of every dot seen.
//!
//! ## Merge semantics
//! Each [`Version`] carries its dot and a per-key causal [`Context`]. A
//! version *supersedes* another when its context covers the other's dot. A
//! key's *live* versions are those no other version supersedes — one after
//! sequential writes, several (*siblings*) after concurrent ones. Superseded
//! versions are kept as history, at most `history_limit` of them, highest
//! `(hlc, origin)` first.
//!
//! Merging one version: a version already held is a no-op; a version whose
//! dot is in [`Knowledge`] but no longer held was superseded-and-trimmed or
//! collected, and is ignored (this is what stops a deleted key from coming
//! back); anything else is added and the key's live/history split recomputed.
//! Merging whole states ([`ReplicatedState::join`]) is the causal-context
//! join: a version held by one side only survives unless the other side's
//! knowledge shows it was seen and dropped. Both are commutative,
//! associative and idempotent (see `tests/crdt_laws.rs`), with one known
//! exception: history trimming combined with tombstone collection can make
//! `join` order-dependent in which superseded versions stay in history (the
//! live versions never differ, and states joined with each other agree);
//! `join_is_associative` in `tests/crdt_laws.rs` is ignored until fixed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::canary::CanarySpec;
use super::dots::{Context, Dot, Knowledge, PeerKnowledge};
use super::hlc::Hlc;
use super::ids::{NodeId, StateKey};
use super::pool::SharedPool;
use super::registry::ServiceInstance;

/// Number of digest buckets.
pub const BUCKETS: usize = 256;

/// What a version holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A config value.
    Value(Vec<u8>),
    /// A deletion.
    Tombstone,
    /// A service instance registration (boxed, as is the canary: a
    /// version is held per key, and most hold a plain value).
    Instance(Box<ServiceInstance>),
    /// A canary (gray rollout) value and its target.
    Canary(Box<CanarySpec>),
}

impl Payload {
    /// Content checksum (xxh3-64 of the value bytes or the encoded
    /// instance; 0 for a tombstone).
    pub fn checksum(&self) -> u64 {
        match self {
            Payload::Value(bytes) => xxhash_rust::xxh3::xxh3_64(bytes),
            Payload::Tombstone => 0,
            Payload::Instance(inst) => {
                let bytes = bincode::serde::encode_to_vec(inst, bincode::config::standard())
                    .expect("encoding a ServiceInstance into memory cannot fail");
                xxhash_rust::xxh3::xxh3_64(&bytes)
            }
            Payload::Canary(spec) => {
                let bytes = bincode::serde::encode_to_vec(spec, bincode::config::standard())
                    .expect("encoding a CanarySpec into memory cannot fail");
                xxhash_rust::xxh3::xxh3_64(&bytes)
            }
        }
    }

    /// Whether this is a deletion.
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Payload::Tombstone)
    }

    fn kind_byte(&self) -> u8 {
        match self {
            Payload::Value(_) => 1,
            Payload::Tombstone => 2,
            Payload::Instance(_) => 3,
            Payload::Canary(_) => 4,
        }
    }

    /// Approximate encoded size in bytes.
    pub fn approx_size(&self) -> usize {
        match self {
            Payload::Value(v) => v.len() + 8,
            Payload::Tombstone => 1,
            Payload::Instance(i) => i.approx_size(),
            Payload::Canary(c) => c.approx_size(),
        }
    }
}

/// One write to one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Origin and per-origin sequence number.
    pub dot: Dot,
    /// What the writer had seen of this key (includes `dot`).
    pub ctx: Context,
    /// When it was written, by the origin's HLC.
    pub hlc: Hlc,
    /// The content.
    pub payload: Payload,
    /// Checksum of the content, checked on every merge.
    pub checksum: u64,
    /// The origin's signature (64 bytes) over everything above and the
    /// key ([`version_claim`](super::crypto::version_claim)); a version
    /// from a peer without a valid one is rejected.
    pub signature: Option<Vec<u8>>,
}

impl Version {
    /// The ordering used to pick a winner among siblings: highest HLC, then
    /// highest origin id.
    pub fn rank(&self) -> (Hlc, NodeId) {
        (self.hlc, self.dot.node)
    }

    /// Whether `self` supersedes `other`.
    pub fn supersedes(&self, other: &Version) -> bool {
        self.dot != other.dot && self.ctx.covers(&other.dot)
    }

    /// A short, stable identifier users can quote back (CAS, rollback).
    pub fn id(&self) -> VersionId {
        VersionId::of(&self.dot)
    }

    /// Approximate encoded size.
    pub fn approx_size(&self) -> usize {
        64 + self.ctx.dots().len() * 41 + self.payload.approx_size()
    }

    fn digest_hash(&self, key_hash: u64) -> u64 {
        let mut buf = [0u8; 8 + 32 + 8 + 8 + 4 + 8 + 1];
        buf[..8].copy_from_slice(&key_hash.to_le_bytes());
        buf[8..40].copy_from_slice(self.dot.node.as_bytes());
        buf[40..48].copy_from_slice(&self.dot.seq.to_le_bytes());
        buf[48..56].copy_from_slice(&self.hlc.wall_ms.to_le_bytes());
        buf[56..60].copy_from_slice(&self.hlc.logical.to_le_bytes());
        buf[60..68].copy_from_slice(&self.checksum.to_le_bytes());
        buf[68] = self.payload.kind_byte();
        xxhash_rust::xxh3::xxh3_64(&buf)
    }
}

/// A version's user-facing id: 16 hex digits derived from its dot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VersionId(pub u64);

impl VersionId {
    /// The id of the version with this dot.
    pub fn of(dot: &Dot) -> Self {
        let mut buf = [0u8; 40];
        buf[..32].copy_from_slice(dot.node.as_bytes());
        buf[32..].copy_from_slice(&dot.seq.to_le_bytes());
        VersionId(xxhash_rust::xxh3::xxh3_64(&buf))
    }

    /// Parse the 16-hex-digit form.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 16 {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(VersionId)
    }
}

impl std::fmt::Display for VersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What stays of a deleted key once its tombstone is collected: the
/// tombstone's dot, stamp and causal context (no value).
///
/// A version arriving later that the delete superseded (the grave's
/// context covers it), or that never saw the delete (its context misses
/// the grave's dot) and ranks below it, lost to the delete while the
/// tombstone existed, so it is dropped instead of bringing the key back;
/// one that ranks above it wins, as it would have. A later write to the
/// key carries the grave's context, so it supersedes everything the delete
/// did. Graves
/// travel in syncs and count in the bucket digests (so two nodes that
/// differ only by a grave sync, and the grave reaches the one without it),
/// are not counted as keys, and expire after `grave_ttl_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grave {
    /// The collected tombstone's dot.
    pub dot: Dot,
    /// Its stamp.
    pub hlc: Hlc,
    /// What it superseded: the tombstone's context, joined with that of
    /// any concurrent delete's grave taken over since.
    pub ctx: Context,
    /// The collected tombstone itself, with its origin's signature: the
    /// evidence a peer checks before it takes the grave over (a grave
    /// travels as this version, never as the joined context above, which
    /// no single origin signed). `None` only for a grave migrated from a
    /// store that kept no signature: it still buries here, but is never
    /// sent.
    pub tombstone: Option<Version>,
}

impl Grave {
    /// The grave a signed, collected tombstone leaves, as a peer takes it
    /// over: its context is the one the tombstone's origin signed.
    pub fn of_tombstone(tombstone: Version) -> Grave {
        Grave {
            dot: tombstone.dot,
            hlc: tombstone.hlc,
            ctx: tombstone.ctx.clone(),
            tombstone: Some(tombstone),
        }
    }

    /// Its share of its bucket's digest hash (distinct from any version's:
    /// a kind byte no payload uses). The context is left out: it grows
    /// with what the grave buried where, which differs between nodes
    /// holding the same versions; it travels with the grave whenever the
    /// bucket is repaired.
    fn digest_hash(&self, key_hash: u64) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&[GRAVE_KIND]);
        h.update(&key_hash.to_le_bytes());
        h.update(self.dot.node.as_bytes());
        h.update(&self.dot.seq.to_le_bytes());
        h.update(&self.hlc.wall_ms.to_le_bytes());
        h.update(&self.hlc.logical.to_le_bytes());
        h.digest()
    }

    /// The order in which concurrent graves of one key are kept.
    fn rank(&self) -> (Hlc, NodeId, u64) {
        (self.hlc, self.dot.node, self.dot.seq)
    }

    /// Whether `v` lost to the collected delete: the delete superseded it,
    /// or `v` never saw the delete and ranks below it. On a service key
    /// (`service`) a delete removes only what its context covers (its own
    /// origin's versions, see [`KeyOrder`]): a registration of another
    /// origin never loses to it, only a lower-ranked concurrent tombstone
    /// does (which would read as deleted anyway).
    fn buries(&self, v: &Version, service: bool) -> bool {
        v.dot == self.dot
            || self.ctx.covers(&v.dot)
            || ((!service || v.payload.is_tombstone())
                && !v.ctx.covers(&self.dot)
                && v.rank() < (self.hlc, self.dot.node))
    }
}

/// The kind byte of a grave in digest hashes (payload kinds are 1 to 4).
const GRAVE_KIND: u8 = 0xff;

/// All versions of one key: live ones (not superseded) and bounded history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// Versions no other version supersedes, highest rank first.
    pub live: Vec<Version>,
    /// Superseded versions, highest rank first, at most the history limit.
    pub history: Vec<Version>,
    /// The collected delete this key remembers, if any.
    pub grave: Option<Box<Grave>>,
}

impl KeyState {
    /// The version a plain read returns: highest `(hlc, origin)` among the
    /// live ones (may be a tombstone, meaning "deleted").
    pub fn winner(&self) -> Option<&Version> {
        self.live.first()
    }

    /// Whether the key reads as absent.
    pub fn is_deleted(&self) -> bool {
        self.winner().is_none_or(|v| v.payload.is_tombstone())
    }

    /// Every version held, live first.
    pub fn all(&self) -> impl Iterator<Item = &Version> {
        self.live.iter().chain(self.history.iter())
    }

    /// The causal context a new local write to this key must carry (before
    /// adding its own dot): the join of every live version's context.
    pub fn context(&self) -> Context {
        let mut ctx = Context::default();
        for v in &self.live {
            ctx.join(&v.ctx);
        }
        if let Some(g) = &self.grave {
            ctx.join(&g.ctx);
            ctx.add(g.dot);
        }
        ctx
    }

    /// Whether `v` lost to this key's collected delete (see [`Grave`]);
    /// `order` is the key's.
    pub fn buries(&self, v: &Version, order: KeyOrder) -> bool {
        self.grave
            .as_ref()
            .is_some_and(|g| g.buries(v, order == KeyOrder::Registrations))
    }

    fn holds(&self, dot: &Dot) -> bool {
        self.all().any(|v| v.dot == *dot)
    }

    /// Add a version, recompute live/history, trim history. Returns the dots
    /// of versions dropped by trimming (possibly including `v` itself).
    fn add(&mut self, v: Version, history_limit: usize, order: KeyOrder) -> Vec<Version> {
        let superseded = self.all().any(|o| o.supersedes(&v));
        if superseded {
            self.history.push(v);
        } else {
            let (now_history, mut still_live): (Vec<_>, Vec<_>) =
                self.live.drain(..).partition(|o| v.supersedes(o));
            // Most keys hold one live version: room for exactly that (a
            // first push would make room for four).
            still_live.reserve_exact(1);
            still_live.push(v);
            self.live = still_live;
            self.history.extend(now_history);
        }
        order.sort_live(&mut self.live);
        sort_by_rank(&mut self.history);
        if self.history.len() > history_limit {
            let dropped = self.history.split_off(history_limit);
            // A full history holds the limit and takes one more before
            // trimming: room for exactly that, not the double a growing
            // vector keeps (every node holds the history of every key).
            self.history.shrink_to(history_limit + 1);
            dropped
        } else {
            Vec::new()
        }
    }

    /// Remove the version with `dot`. With `revive` (the undo of a write
    /// that could not be made durable, and nothing else), history versions
    /// that only it superseded become live again; otherwise removing a
    /// version never changes what the others are.
    fn remove(&mut self, dot: &Dot, revive: bool, order: KeyOrder) -> Option<Version> {
        if let Some(i) = self.live.iter().position(|v| v.dot == *dot) {
            let v = self.live.remove(i);
            if !revive {
                return Some(v);
            }
            // History versions that only `v` superseded become live again.
            let mut revived = Vec::new();
            self.history.retain(|h| {
                let covered = self.live.iter().any(|l| l.supersedes(h));
                if !covered && v.supersedes(h) {
                    revived.push(h.clone());
                    false
                } else {
                    true
                }
            });
            // Of the revived, keep only those not superseded by each other.
            let snapshot = revived.clone();
            for r in revived {
                if snapshot.iter().any(|o| o.supersedes(&r)) {
                    self.history.push(r);
                } else {
                    self.live.push(r);
                }
            }
            order.sort_live(&mut self.live);
            sort_by_rank(&mut self.history);
            return Some(v);
        }
        if let Some(i) = self.history.iter().position(|v| v.dot == *dot) {
            return Some(self.history.remove(i));
        }
        None
    }

    fn is_empty(&self) -> bool {
        self.live.is_empty() && self.history.is_empty() && self.grave.is_none()
    }

    /// Whether only a grave is left: no version held.
    pub fn is_grave_only(&self) -> bool {
        self.live.is_empty() && self.history.is_empty() && self.grave.is_some()
    }
}

fn sort_by_rank(vs: &mut [Version]) {
    vs.sort_by(|a, b| b.rank().cmp(&a.rank()).then(b.dot.seq.cmp(&a.dot.seq)));
}

/// How a key orders its live versions: the first is what a plain read
/// returns, and when a bound is reached the last ones go first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyOrder {
    /// Config keys and canaries: highest `(hlc, origin)` first, tombstones
    /// included (a concurrent delete that ranks highest reads as deleted).
    Rank,
    /// Service instances: live registrations first (highest rank first),
    /// then tombstones. An instance reads as its highest live registration
    /// and as deleted only when every live version is a tombstone. Service
    /// versions carry causal context for their own origin only, so a
    /// tombstone supersedes its own origin's registrations and nothing
    /// else: only the owner's deregistration removes an instance, and a
    /// foreign tombstone stays a harmless live sibling.
    Registrations,
}

impl KeyOrder {
    /// The order of `key`'s live versions.
    pub fn of(key: &StateKey) -> KeyOrder {
        match key {
            StateKey::Service { .. } => KeyOrder::Registrations,
            StateKey::Kv { .. } | StateKey::Canary { .. } => KeyOrder::Rank,
        }
    }

    /// Whether `a` comes before `b` in this order.
    fn before(self, a: &Version, b: &Version) -> bool {
        let tomb = |v: &Version| self == KeyOrder::Registrations && v.payload.is_tombstone();
        let key = |v: &Version| (std::cmp::Reverse(tomb(v)), v.rank(), v.dot.seq);
        key(a) > key(b)
    }

    fn sort_live(self, live: &mut [Version]) {
        sort_by_rank(live);
        if self == KeyOrder::Registrations {
            // Stable: each group keeps its rank order.
            live.sort_by_key(|v| v.payload.is_tombstone());
        }
    }
}

/// Which bound of a key refused a version (see [`ReplicatedState::merge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KeyLimit {
    /// More live versions (siblings) than the key may hold.
    Siblings,
    /// More stored bytes than the key may hold ([`MAX_KEY_BYTES`]).
    Bytes,
}

/// Most bytes one key's stored record — its live versions, history and
/// grave, encoded as the store writes it — may hold. The store refuses
/// to decode a record over 256 MiB (it reads its own file as corrupt and
/// the node cannot restart), so the engine keeps every key under this:
/// history is trimmed to fit, and live versions beyond it are refused.
pub const MAX_KEY_BYTES: usize = 128 << 20;

/// Bytes a key's record takes beyond its versions and grave (the lengths
/// of its lists and the grave's tag), at most.
const KEY_RECORD_OVERHEAD: usize = 32;

/// At least the encoded size of `v`, from its in-memory sizes (twice the
/// estimate plus room for every fixed field at its largest): below the
/// byte bound by this measure, a key needs no exact count.
fn size_ceiling(v: &Version) -> usize {
    2 * v.approx_size() + 512
}

/// At least the encoded size of `g`.
fn grave_ceiling(g: &Grave) -> usize {
    g.tombstone.as_ref().map_or(0, size_ceiling) + 48 * g.ctx.dots().len() + 128
}

impl KeyState {
    /// Whether this key is far enough below the byte bound, with `extra`
    /// (a version about to join it), that no exact count is needed.
    fn clearly_fits(&self, extra: Option<&Version>) -> bool {
        let total = KEY_RECORD_OVERHEAD
            + self.grave.as_deref().map_or(0, grave_ceiling)
            + self.all().chain(extra).map(size_ceiling).sum::<usize>();
        total <= MAX_KEY_BYTES
    }
}

/// The encoded size of `value` (bincode, standard config: what the store
/// and the wire write), counted without allocating.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    bincode::serde::encode_into_std_write(value, &mut c, bincode::config::standard())
        .expect("counting the encoding of an in-memory value cannot fail");
    c.0
}

/// The result of merging one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The version was new and is now held (live or in history).
    Applied,
    /// The same dot is already held: nothing changed.
    Duplicate,
    /// The dot was seen before and has since been superseded or collected:
    /// ignored, so a deleted key cannot come back.
    Obsolete,
    /// The version would be live but the key is at one of its bounds, and
    /// every version it already holds there comes before this one in the
    /// key's order ([`KeyOrder`]): refused, nothing changed, and its dot
    /// is *not* recorded as seen, so anti-entropy offers it again (it is
    /// taken once a write supersedes what stood in its way).
    Refused(KeyLimit),
}

/// A compact summary of the state: equal digests ⇔ equal held versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// XOR-combination of every held version's hash.
    pub hash: u64,
    /// Number of keys held.
    pub keys: u64,
}

/// The digest buckets, with their XOR kept as they change: the digest is
/// read on every input (and every heartbeat compares it), and folding the
/// buckets each time read 2 KiB per read.
#[derive(Clone, Debug)]
struct Buckets {
    each: Box<[u64; BUCKETS]>,
    /// The XOR of `each`.
    all: u64,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            each: Box::new([0; BUCKETS]),
            all: 0,
        }
    }
}

impl Buckets {
    /// Toggle `hash` in bucket `b`.
    fn flip(&mut self, b: usize, hash: u64) {
        self.each[b] ^= hash;
        self.all ^= hash;
    }

    /// The XOR of every bucket.
    fn all(&self) -> u64 {
        debug_assert_eq!(
            self.all,
            self.each.iter().fold(0, |a, b| a ^ b),
            "the kept XOR is the buckets' XOR"
        );
        self.all
    }
}

/// The replicated key/value and service state of one node.
#[derive(Clone, Debug)]
pub struct ReplicatedState {
    entries: BTreeMap<StateKey, KeyState>,
    knowledge: Knowledge,
    buckets: Buckets,
    history_limit: usize,
    dirty_keys: BTreeSet<StateKey>,
    dirty_live: BTreeSet<StateKey>,
    dirty_origins: BTreeSet<NodeId>,
    /// Entries holding only a grave (no versions), not counted as keys.
    graves_only: usize,
    /// Most live versions a key holds (see [`ReplicatedState::merge`]).
    max_siblings: usize,
    /// Live versions evicted by a bound since the last
    /// [`take_evicted`](Self::take_evicted).
    evicted: Vec<KeyLimit>,
    /// This node's id: its own writes evicted by a bound stay seen (see
    /// [`set_local_origin`](Self::set_local_origin)).
    local: Option<NodeId>,
    /// Where the causal contexts of merged versions are shared from.
    pool: Option<SharedPool>,
}

/// What changed since the last [`ReplicatedState::take_dirty`].
#[derive(Debug, Default)]
pub struct Dirty {
    /// Keys whose stored versions changed (persist these).
    pub keys: BTreeSet<StateKey>,
    /// Keys whose live versions changed (notify watchers of these).
    pub live: BTreeSet<StateKey>,
    /// Origins whose knowledge changed.
    pub origins: BTreeSet<NodeId>,
}

impl ReplicatedState {
    /// An empty state keeping at most `history_limit` superseded versions
    /// per config key (service instances keep none).
    pub fn new(history_limit: usize) -> Self {
        ReplicatedState {
            entries: BTreeMap::new(),
            knowledge: Knowledge::new(),
            buckets: Buckets::default(),
            history_limit,
            dirty_keys: BTreeSet::new(),
            dirty_live: BTreeSet::new(),
            dirty_origins: BTreeSet::new(),
            graves_only: 0,
            max_siblings: usize::MAX,
            evicted: Vec::new(),
            local: None,
            pool: None,
        }
    }

    /// Share the causal contexts of the versions merged from now on
    /// through `pool` (see [`SharedPool`]); the state does not change.
    pub(crate) fn share_through(&mut self, pool: SharedPool) {
        self.pool = Some(pool);
    }

    /// Change the per-key history bound (applies from the next write).
    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit;
    }

    /// Bound the live versions (siblings) of every key (at least 1;
    /// applies from the next merge).
    pub fn set_max_siblings(&mut self, limit: usize) {
        self.max_siblings = limit.max(1);
    }

    /// Name this node: a write of its own that a key's bound evicts (a
    /// concurrent write that ranks below every sibling kept) stays in
    /// knowledge, so its dot is never issued again. It is lost, as a write
    /// that loses to a delete is, and every replica agrees on that.
    pub fn set_local_origin(&mut self, me: NodeId) {
        self.local = Some(me);
    }

    /// The live versions that bounds evicted since the last call (each by
    /// the bound that evicted it).
    pub fn take_evicted(&mut self) -> Vec<KeyLimit> {
        std::mem::take(&mut self.evicted)
    }

    /// The digest-bucket a key falls in.
    pub fn bucket_of(key: &StateKey) -> usize {
        (key.stable_hash() % BUCKETS as u64) as usize
    }

    /// Everything seen.
    pub fn knowledge(&self) -> &Knowledge {
        &self.knowledge
    }

    /// The state of one key.
    pub fn get(&self, key: &StateKey) -> Option<&KeyState> {
        self.entries.get(key)
    }

    /// Keys in order, from `start` on.
    pub fn range_from<'a>(
        &'a self,
        start: &StateKey,
    ) -> impl Iterator<Item = (&'a StateKey, &'a KeyState)> + 'a {
        self.entries.range(start.clone()..)
    }

    /// Every key in order.
    pub fn iter(&self) -> impl Iterator<Item = (&StateKey, &KeyState)> {
        self.entries.iter()
    }

    /// Number of keys held (including deleted ones not yet collected, not
    /// counting graves of collected ones).
    pub fn len(&self) -> usize {
        self.entries.len() - self.graves_only
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The digest.
    pub fn digest(&self) -> Digest {
        Digest {
            hash: self.buckets.all(),
            keys: self.len() as u64,
        }
    }

    /// The per-bucket hashes.
    pub fn bucket_hashes(&self) -> &[u64; BUCKETS] {
        &self.buckets.each
    }

    /// The next sequence number `node` should use for its own write.
    pub fn next_seq(&self, node: &NodeId) -> u64 {
        self.knowledge.max_seq(node) + 1
    }

    /// Whether the version `dot` of `key` is held or was seen here (a
    /// merge of it would change nothing).
    pub fn knows(&self, key: &StateKey, dot: &Dot) -> bool {
        self.knowledge.contains(dot) || self.entries.get(key).is_some_and(|ks| ks.holds(dot))
    }

    /// Merge one version of `key`.
    ///
    /// Bounds: a key holds at most `max_siblings` live versions and
    /// [`MAX_KEY_BYTES`] in all. They are applied by the key's order
    /// ([`KeyOrder`]), never by arrival: the live versions kept are the
    /// longest prefix of that order within both bounds. A version that
    /// would fall beyond it is refused ([`MergeOutcome::Refused`]); one
    /// that comes before versions held pushes them out (*evicted*, see
    /// [`take_evicted`](Self::take_evicted)). Neither is recorded as seen,
    /// so both come back with anti-entropy when room is made (a write
    /// supersedes the siblings). Replicas holding the same versions so
    /// keep the same ones whatever order they came in. History is trimmed
    /// to fit the byte bound, lowest rank first (trimmed versions stay
    /// seen, as with the history limit).
    pub fn merge(&mut self, key: StateKey, v: Version) -> MergeOutcome {
        self.merge_inner(key, v, false)
    }

    /// Take back a version this node has seen but holds nowhere, from a
    /// peer that still holds it live: merged as new unless a version held
    /// here supersedes it or a grave here buries it (then
    /// [`MergeOutcome::Obsolete`], nothing changed). This is how two
    /// replicas converge after a delete was forgotten on one side before
    /// it reached the other — a partition or downtime longer than
    /// `grave_ttl_ms`, past which nothing here can show the value was
    /// deleted (the documented limit, docs/DESIGN.md) — and how a node
    /// whose store lost a key it had seen gets it back.
    pub fn take_back(&mut self, key: StateKey, v: Version) -> MergeOutcome {
        if !self.knowledge.contains(&v.dot) {
            return self.merge(key, v);
        }
        if let Some(ks) = self.entries.get(&key) {
            if ks.holds(&v.dot) {
                return MergeOutcome::Duplicate;
            }
            if ks.buries(&v, KeyOrder::of(&key)) || ks.all().any(|o| o.supersedes(&v)) {
                return MergeOutcome::Obsolete;
            }
        }
        self.merge_inner(key, v, true)
    }

    /// Whether versions returned by a peer for `key` should be taken back
    /// at all: not when this node holds nothing of the key (no version, no
    /// grave) and they would read deleted — it reads the key absent
    /// already, and taking back tombstones only had it collect them again,
    /// and ask again at every sync for as long as the peer kept them
    /// (swarm seeds 5034 and 7541). Into a key it holds, they are taken
    /// back (a losing sibling the peer still holds, seed 9487).
    pub fn wants_back(&self, key: &StateKey, returned: &[&Version]) -> bool {
        if self.entries.contains_key(key) {
            return true;
        }
        let order = KeyOrder::of(key);
        let mut ks = KeyState::default();
        for v in returned {
            ks.add((*v).clone(), 0, order);
        }
        !ks.is_deleted()
    }

    /// The buckets of a peer's manifest `theirs` that list a dot this node
    /// has seen: the only buckets where
    /// [`seen_not_held`](Self::seen_not_held) can find one, so the only
    /// ones of this node's own manifest it needs.
    pub fn buckets_listing_seen(&self, theirs: &BTreeMap<u16, Vec<Dot>>) -> Vec<u16> {
        theirs
            .iter()
            .filter(|(b, dots)| usize::from(**b) < BUCKETS && dots.iter().any(|d| self.knowledge.contains(d)))
            .map(|(b, _)| *b)
            .collect()
    }

    /// The dots a peer lists in its manifest `theirs` that this node has
    /// seen and holds nowhere (the candidates to
    /// [`take_back`](Self::take_back) from it), in order, at most `max` of
    /// them. A dot listed in bucket `b` can be held here only under a key
    /// of bucket `b`, so it is looked for only in `ours[b]`: `ours` is
    /// this node's own [`manifest`](Self::manifest) (whole buckets, not
    /// cut to a size) of at least the
    /// [`buckets_listing_seen`](Self::buckets_listing_seen); a bucket it
    /// lacks, or no key has, gives none.
    pub fn seen_not_held(
        &self,
        theirs: &BTreeMap<u16, Vec<Dot>>,
        ours: &BTreeMap<u16, Vec<Dot>>,
        max: usize,
    ) -> Vec<Dot> {
        let mut wanted = BTreeSet::new();
        for (b, dots) in theirs {
            let Some(held) = ours.get(b).filter(|_| usize::from(*b) < BUCKETS) else {
                continue;
            };
            let mut candidates: BTreeSet<Dot> = dots
                .iter()
                .copied()
                .filter(|d| self.knowledge.contains(d))
                .collect();
            if candidates.is_empty() {
                continue;
            }
            for d in held {
                candidates.remove(d);
            }
            wanted.append(&mut candidates);
        }
        wanted.into_iter().take(max).collect()
    }

    /// The live versions held here with one of these dots, up to about
    /// `budget_bytes` (at least one if any).
    pub fn live_with_dots(&self, dots: &[Dot], budget_bytes: usize) -> Vec<(StateKey, Version)> {
        let wanted: BTreeSet<&Dot> = dots.iter().collect();
        let mut out = Vec::new();
        if wanted.is_empty() {
            return out;
        }
        let mut used = 0usize;
        for (key, ks) in &self.entries {
            for v in ks.live.iter().filter(|v| wanted.contains(&v.dot)) {
                let size = v.approx_size();
                if !out.is_empty() && used.saturating_add(size) > budget_bytes {
                    return out;
                }
                used = used.saturating_add(size);
                out.push((key.clone(), v.clone()));
            }
        }
        out
    }

    fn merge_inner(&mut self, key: StateKey, mut v: Version, taking_back: bool) -> MergeOutcome {
        let order = KeyOrder::of(&key);
        let (held, buried) = match self.entries.get(&key) {
            Some(ks) => (ks.holds(&v.dot), ks.buries(&v, order)),
            None => (false, false),
        };
        if held {
            return MergeOutcome::Duplicate;
        }
        if !taking_back && self.knowledge.contains(&v.dot) {
            return MergeOutcome::Obsolete;
        }
        if !buried {
            if let Some(limit) = self.refuses(&key, &v, order) {
                return MergeOutcome::Refused(limit);
            }
        }
        let key_hash = key.stable_hash();
        let bucket = (key_hash % BUCKETS as u64) as usize;
        self.knowledge.insert(v.dot);
        self.dirty_origins.insert(v.dot.node);
        if buried {
            // Lost to a delete this node has already collected: the grave
            // takes over what it superseded, as the tombstone's key would
            // have (so a version it superseded arriving later is buried
            // too, whichever order they come in).
            let ks = self.entries.get_mut(&key).expect("a burying key is held");
            let g = ks.grave.as_mut().expect("a burying key has a grave");
            if !v.ctx.dots().iter().all(|d| g.ctx.covers(d)) {
                g.ctx.join(&v.ctx);
                self.dirty_keys.insert(key.clone());
                // What it superseded, if held here, is buried now too.
                let was_grave_only = ks.is_grave_only();
                self.bury_held(&key);
                if !was_grave_only && self.entries.get(&key).is_some_and(KeyState::is_grave_only) {
                    self.graves_only += 1;
                }
            }
            return MergeOutcome::Obsolete;
        }
        let limit = match key {
            StateKey::Kv { .. } | StateKey::Canary { .. } => self.history_limit,
            StateKey::Service { .. } => 0,
        };
        self.buckets.flip(bucket, v.digest_hash(key_hash));
        if let Some(pool) = &self.pool {
            v.ctx = pool.context(std::mem::take(&mut v.ctx));
        }
        let dot = v.dot;
        let ks = self.entries.entry(key.clone()).or_default();
        if ks.is_grave_only() {
            self.graves_only -= 1;
        }
        for dropped in ks.add(v, limit, order) {
            self.buckets.flip(bucket, dropped.digest_hash(key_hash));
        }
        if ks.live.iter().any(|l| l.dot == dot) {
            self.dirty_live.insert(key.clone());
        }
        self.dirty_keys.insert(key.clone());
        self.enforce_bounds(&key);
        MergeOutcome::Applied
    }

    /// Whether `key`'s bounds refuse `v`: it would be live, and the live
    /// versions that come before it in the key's order (with it) are more
    /// than `max_siblings`, or take more than [`MAX_KEY_BYTES`] with the
    /// grave.
    fn refuses(&self, key: &StateKey, v: &Version, order: KeyOrder) -> Option<KeyLimit> {
        let ks = self.entries.get(key)?;
        if ks.all().any(|o| o.supersedes(v)) {
            return None; // history: trimmed, never refused
        }
        if ks.live.len() < self.max_siblings && ks.clearly_fits(Some(v)) {
            return None;
        }
        let mut live: Vec<&Version> = ks.live.iter().filter(|l| !v.supersedes(l)).collect();
        live.push(v);
        let ahead = |a: &Version| order.before(a, v);
        let before: Vec<&Version> = live.into_iter().filter(|l| ahead(l)).collect();
        if before.len() >= self.max_siblings {
            return Some(KeyLimit::Siblings);
        }
        let bytes = KEY_RECORD_OVERHEAD
            + ks.grave.as_ref().map_or(0, encoded_len)
            + before.iter().map(|l| encoded_len(*l)).sum::<usize>()
            + encoded_len(v);
        (bytes > MAX_KEY_BYTES).then_some(KeyLimit::Bytes)
    }

    /// Apply `key`'s bounds after a merge: evict the live versions beyond
    /// the longest prefix of its order within both bounds (forgetting
    /// their dots, so they can come back), then trim history to fit.
    fn enforce_bounds(&mut self, key: &StateKey) {
        let Some(ks) = self.entries.get(key) else {
            return;
        };
        if ks.live.len() <= self.max_siblings && ks.clearly_fits(None) {
            return;
        }
        let mut bytes = KEY_RECORD_OVERHEAD + ks.grave.as_ref().map_or(0, encoded_len);
        let mut evict = Vec::new();
        for (i, l) in ks.live.iter().enumerate() {
            let size = encoded_len(l);
            if i >= self.max_siblings {
                evict.push((l.dot, KeyLimit::Siblings));
            } else if bytes + size > MAX_KEY_BYTES && i > 0 {
                evict.push((l.dot, KeyLimit::Bytes));
            } else {
                bytes += size;
            }
        }
        let mut trim = Vec::new();
        for h in &ks.history {
            let size = encoded_len(h);
            if bytes + size > MAX_KEY_BYTES {
                trim.push(h.dot);
            } else {
                bytes += size;
            }
        }
        for (dot, limit) in evict {
            if self.remove_version(key, &dot, false) {
                if self.local != Some(dot.node) {
                    self.knowledge.remove(&dot);
                    self.dirty_origins.insert(dot.node);
                }
                self.evicted.push(limit);
            }
        }
        for dot in trim {
            self.remove_version(key, &dot, false);
        }
    }

    /// Remove every version of `key` that `permits` refuses — the writer
    /// rules changed and they fall outside them — as if they had never
    /// come: what only they superseded is live again if held in history,
    /// and the dots they name that nothing held here stands for any more
    /// are forgotten, so anti-entropy brings those versions back from
    /// nodes that refused the purged ones. The purged dots are forgotten
    /// too (refused again if offered, taken if a later rule permits them).
    /// This node's own dots stay known, so its counter never goes back.
    /// Returns how many versions were removed.
    pub fn purge(&mut self, key: &StateKey, permits: impl Fn(&Dot) -> bool) -> usize {
        let Some(ks) = self.entries.get(key) else {
            return 0;
        };
        let doomed: Vec<(Dot, Context)> = ks
            .all()
            .filter(|v| !permits(&v.dot))
            .map(|v| (v.dot, v.ctx.clone()))
            .collect();
        let mut removed = 0;
        for (dot, _) in &doomed {
            // In the order found (live first): removing a live version
            // revives what it superseded, which may be doomed too.
            if self.remove_version(key, dot, true) {
                removed += 1;
            }
        }
        for (dot, ctx) in &doomed {
            for d in std::iter::once(dot).chain(ctx.dots()) {
                if self.local == Some(d.node) || !self.knowledge.contains(d) {
                    continue;
                }
                let stands = self.entries.get(key).is_some_and(|ks| {
                    ks.holds(d)
                        || ks.all().any(|o| o.ctx.covers(d))
                        || ks.grave.as_ref().is_some_and(|g| g.ctx.covers(d))
                });
                if !stands {
                    self.knowledge.remove(d);
                    self.dirty_origins.insert(d.node);
                }
            }
        }
        removed
    }

    /// The keys whose live versions changed since the last
    /// [`take_dirty`](Self::take_dirty).
    pub fn live_changed(&self) -> impl Iterator<Item = &StateKey> {
        self.dirty_live.iter()
    }

    /// Remove a held version and forget its dot (undo of a write that could
    /// not be made durable). Returns whether anything was removed.
    pub fn unapply(&mut self, key: &StateKey, dot: &Dot) -> bool {
        let removed = self.remove_version(key, dot, true);
        if removed {
            self.knowledge.remove(dot);
            self.dirty_origins.insert(dot.node);
        }
        removed
    }

    fn remove_version(&mut self, key: &StateKey, dot: &Dot, revive: bool) -> bool {
        let Some(ks) = self.entries.get_mut(key) else {
            return false;
        };
        let was_live = ks.live.iter().any(|l| l.dot == *dot);
        let Some(v) = ks.remove(dot, revive, KeyOrder::of(key)) else {
            return false;
        };
        if was_live {
            self.dirty_live.insert(key.clone());
        }
        let key_hash = key.stable_hash();
        self.buckets
            .flip((key_hash % BUCKETS as u64) as usize, v.digest_hash(key_hash));
        if ks.is_empty() {
            self.entries.remove(key);
        } else if ks.is_grave_only() {
            self.graves_only += 1;
        }
        self.dirty_keys.insert(key.clone());
        true
    }

    /// Every held version whose dot is not in `theirs`, in key order, until
    /// about `budget_bytes` have been collected. Returns the versions and
    /// whether the delta is complete.
    pub fn delta_since(&self, theirs: &Knowledge, budget_bytes: usize) -> (Vec<(StateKey, Version)>, bool) {
        self.versions_until(budget_bytes, |dot| theirs.contains(dot))
    }

    /// Every held version whose dot `skip` rejects, in key order, until
    /// about `budget_bytes`; and whether that is all of them.
    fn versions_until(
        &self,
        budget_bytes: usize,
        skip: impl Fn(&Dot) -> bool,
    ) -> (Vec<(StateKey, Version)>, bool) {
        let mut out = Vec::new();
        let mut size = 0usize;
        for (key, ks) in &self.entries {
            for v in ks.all() {
                if skip(&v.dot) {
                    continue;
                }
                let s = v.approx_size() + 64;
                if size + s > budget_bytes && !out.is_empty() {
                    return (out, false);
                }
                size += s;
                out.push((key.clone(), v.clone()));
            }
        }
        (out, true)
    }

    /// The dots held in each of the given buckets.
    pub fn manifest(&self, buckets: &[u16]) -> BTreeMap<u16, Vec<Dot>> {
        let wanted: BTreeSet<u16> = buckets.iter().copied().collect();
        let mut out: BTreeMap<u16, Vec<Dot>> = wanted.iter().map(|b| (*b, Vec::new())).collect();
        if wanted.is_empty() {
            return out;
        }
        for (key, ks) in &self.entries {
            let b = Self::bucket_of(key) as u16;
            if let Some(list) = out.get_mut(&b) {
                list.extend(ks.all().map(|v| v.dot));
            }
        }
        out
    }

    /// The dots held in each of the given buckets, whole buckets in order
    /// for as long as they hold at most `max_dots` in all (a bucket left
    /// out tells the peer nothing, so it drops nothing there).
    pub fn manifest_within(&self, buckets: &[u16], max_dots: usize) -> BTreeMap<u16, Vec<Dot>> {
        Self::cap_manifest(self.manifest(buckets), max_dots)
    }

    /// A [`manifest`](Self::manifest) cut as
    /// [`manifest_within`](Self::manifest_within) cuts it: whole buckets in
    /// order for as long as they hold at most `max_dots` in all.
    pub fn cap_manifest(mut manifest: BTreeMap<u16, Vec<Dot>>, max_dots: usize) -> BTreeMap<u16, Vec<Dot>> {
        let mut total = 0usize;
        manifest.retain(|_, dots| {
            total = total.saturating_add(dots.len());
            total <= max_dots
        });
        manifest
    }

    /// Drop versions a peer has seen and no longer holds: for each bucket in
    /// the peer's `manifest`, every version of ours not listed there whose
    /// dot is in `their_knowledge` was superseded or collected on the peer.
    /// Returns the number of versions dropped.
    pub fn drop_obsolete(
        &mut self,
        manifest: &BTreeMap<u16, Vec<Dot>>,
        their_knowledge: &Knowledge,
    ) -> usize {
        if manifest.is_empty() {
            return 0;
        }
        let mut doomed = Vec::new();
        for (key, ks) in &self.entries {
            let b = Self::bucket_of(key) as u16;
            let Some(held) = manifest.get(&b) else {
                continue;
            };
            for v in ks.all() {
                if their_knowledge.contains(&v.dot) && !held.contains(&v.dot) {
                    doomed.push((key.clone(), v.dot));
                }
            }
        }
        let n = doomed.len();
        for (key, dot) in doomed {
            self.remove_version(&key, &dot, false);
        }
        n
    }

    /// Anti-entropy with a knowledge summary: every held version the peer
    /// has not seen, or may not have (its origin's bucket is unknown), in
    /// key order until about `budget_bytes`. Returns the versions and
    /// whether that is all of them.
    pub fn missing_for(&self, peer: &PeerKnowledge, budget_bytes: usize) -> (Vec<(StateKey, Version)>, bool) {
        if peer.all_same() {
            return (Vec::new(), true);
        }
        self.versions_until(budget_bytes, |dot| peer.seen_of_ours(dot) == Some(true))
    }

    /// The superseded versions a peer has certainly seen and no longer
    /// holds (trimmed from its bounded history): for each bucket of the
    /// peer's `manifest`, every *history* version of ours whose dot the
    /// peer has seen and does not list. Live versions are never doomed on a
    /// peer's word: a live version leaves only when a version that
    /// supersedes it arrives, or with a collected key's grave
    /// ([`adopt_grave`](Self::adopt_grave)), which takes the whole key at
    /// once. Computed when the summary arrives and applied later with
    /// [`drop_versions`](Self::drop_versions).
    pub fn seen_and_dropped(
        &self,
        manifest: &BTreeMap<u16, Vec<Dot>>,
        peer: &PeerKnowledge,
    ) -> Vec<(StateKey, Dot)> {
        let mut doomed = Vec::new();
        if manifest.is_empty() {
            return doomed;
        }
        // Looked up once per history version: sets, not lists, so a long
        // manifest costs its length once.
        let held: BTreeMap<u16, BTreeSet<&Dot>> = manifest
            .iter()
            .map(|(b, dots)| (*b, dots.iter().collect()))
            .collect();
        for (key, ks) in &self.entries {
            let b = Self::bucket_of(key) as u16;
            let Some(held) = held.get(&b) else {
                continue;
            };
            for v in &ks.history {
                if peer.seen_of_ours(&v.dot) == Some(true) && !held.contains(&v.dot) {
                    doomed.push((key.clone(), v.dot));
                }
            }
        }
        doomed
    }

    /// Drop these superseded versions (those still held in history);
    /// returns how many were.
    pub fn drop_versions(&mut self, doomed: &[(StateKey, Dot)]) -> usize {
        doomed
            .iter()
            .filter(|(key, dot)| {
                self.entries
                    .get(key)
                    .is_some_and(|ks| ks.history.iter().any(|h| h.dot == *dot))
                    && self.remove_version(key, dot, false)
            })
            .count()
    }

    /// The graves held in the given buckets, as their signed tombstones
    /// (they travel with manifests, so a peer applies a collection to the
    /// whole key). A grave with no signed tombstone is not sent.
    pub fn graves_in(&self, buckets: &[u16]) -> Vec<(StateKey, Version)> {
        let wanted: BTreeSet<u16> = buckets.iter().copied().collect();
        if wanted.is_empty() {
            return Vec::new();
        }
        self.entries
            .iter()
            .filter(|(key, _)| wanted.contains(&(Self::bucket_of(key) as u16)))
            .filter_map(|(key, ks)| {
                let tomb = ks.grave.as_ref()?.tombstone.clone()?;
                Some((key.clone(), tomb))
            })
            .collect()
    }

    /// Take over another replica's grave for `key`: keep the higher-ranked
    /// grave, record the collected tombstone's dot as seen, and drop, all
    /// at once, the tombstone itself and every version the grave buries
    /// (everything the collection took: the tombstone's history and its
    /// losing concurrent siblings). Versions written after the delete
    /// (whose context covers the grave's dot) or ranking above it stay.
    /// Returns how many versions were dropped.
    pub fn adopt_grave(&mut self, key: &StateKey, g: Grave) -> usize {
        if self.knowledge.insert(g.dot) {
            self.dirty_origins.insert(g.dot.node);
        }
        let key_hash = key.stable_hash();
        let b = (key_hash % BUCKETS as u64) as usize;
        let ks = self.entries.entry(key.clone()).or_default();
        let before = ks.is_grave_only();
        // Keep the higher-ranked grave, with both contexts: what either
        // delete superseded stays superseded.
        let joined = match &ks.grave {
            None => g,
            Some(old) => {
                let (mut keep, other) = if old.rank() < g.rank() {
                    (g, old.ctx.clone())
                } else {
                    ((**old).clone(), g.ctx)
                };
                keep.ctx.join(&other);
                keep
            }
        };
        let changed = ks.grave.as_deref() != Some(&joined);
        if changed {
            if let Some(old) = ks.grave.replace(Box::new(joined)) {
                self.buckets.flip(b, old.digest_hash(key_hash));
            }
            self.buckets
                .flip(b, ks.grave.as_ref().expect("just set").digest_hash(key_hash));
        }
        let buried = self.bury_held(key);
        if changed {
            self.dirty_keys.insert(key.clone());
        }
        if let Some(ks) = self.entries.get(key) {
            match (before, ks.is_grave_only()) {
                (false, true) => self.graves_only += 1,
                (true, false) => self.graves_only -= 1,
                _ => {}
            }
        }
        buried
    }

    /// Drop the held versions of `key` its grave buries; each buried
    /// version's context joins the grave's (what it superseded is
    /// superseded), which may bury more: repeat until nothing more is.
    /// Returns how many were dropped. Leaves `graves_only` to the caller.
    fn bury_held(&mut self, key: &StateKey) -> usize {
        let key_hash = key.stable_hash();
        let b = (key_hash % BUCKETS as u64) as usize;
        let Some(ks) = self.entries.get_mut(key) else {
            return 0;
        };
        let order = KeyOrder::of(key);
        let mut buried = 0;
        loop {
            let now_buried: Vec<Dot> = ks.all().filter(|v| ks.buries(v, order)).map(|v| v.dot).collect();
            if now_buried.is_empty() {
                break;
            }
            for dot in now_buried {
                let was_live = ks.live.iter().any(|l| l.dot == dot);
                if let Some(v) = ks.remove(&dot, false, order) {
                    self.buckets.flip(b, v.digest_hash(key_hash));
                    ks.grave.as_mut().expect("only a grave buries").ctx.join(&v.ctx);
                    if was_live {
                        self.dirty_live.insert(key.clone());
                    }
                    buried += 1;
                }
            }
        }
        if buried > 0 {
            self.dirty_keys.insert(key.clone());
        }
        buried
    }

    /// Adopt another node's knowledge (after a complete exchange with it).
    pub fn union_knowledge(&mut self, other: &Knowledge) {
        let changed = self.knowledge.union(other);
        self.dirty_origins.extend(changed);
    }

    /// Full-state join with another replica (used by tests and by a full
    /// state transfer): merge every version of theirs, drop ours that they
    /// have seen and dropped, union knowledge.
    pub fn join(&mut self, other: &ReplicatedState) {
        let all_buckets: Vec<u16> = (0..BUCKETS as u16).collect();
        let theirs = other.manifest(&all_buckets);
        self.drop_obsolete(&theirs, &other.knowledge);
        for (key, ks) in &other.entries {
            if let Some(tomb) = ks.grave.as_ref().and_then(|g| g.tombstone.clone()) {
                self.adopt_grave(key, Grave::of_tombstone(tomb));
            }
            for v in ks.all() {
                // Seen-and-dropped versions come back as `Obsolete`.
                self.merge(key.clone(), v.clone());
            }
        }
        self.union_knowledge(&other.knowledge);
    }

    /// Collect deleted keys: every key whose winner is a tombstone stamped
    /// before `horizon_ms` is emptied — its history and any losing
    /// concurrent siblings go with it — leaving a [`Grave`] that remembers
    /// the delete until `grave_horizon_ms`. Graves stamped before that are
    /// forgotten. Returns the keys collected.
    ///
    /// The no-resurrection rule: after collection, knowledge and the grave
    /// are all that stop a peer that missed the delete from handing the
    /// deleted value back. So a key is collected only once knowledge holds
    /// *every* write its live versions supersede: for each `(origin, seq)`
    /// entry of their contexts, every dot of that origin up to `seq` (the
    /// contiguous prefix, since which of the lower seqs went to this key is
    /// not recorded). A node that saw the tombstone but not the value it
    /// deletes keeps the tombstone until anti-entropy fills that gap. The
    /// superseded values then arrive as `Obsolete`, and a stale peer drops
    /// them at its next sync because this node's knowledge lists them.
    /// A write concurrent with the delete that arrives after collection
    /// (from across a partition longer than the tombstone TTL) is judged
    /// by the grave: below the delete's rank it is dropped, as it would have
    /// lost while the tombstone existed. A tombstone older than the grave
    /// horizon is collected whatever this node has seen: every other node
    /// has forgotten that delete by then (the documented limit past
    /// `grave_ttl_ms`), and the writes it superseded may be gone everywhere.
    pub fn collect_tombstones(&mut self, horizon_ms: u64, grave_horizon_ms: u64) -> Vec<StateKey> {
        let knowledge = &self.knowledge;
        let covers_all_superseded = |v: &Version| {
            v.ctx
                .dots()
                .iter()
                .all(|d| knowledge.range(&d.node).is_some_and(|r| r.base >= d.seq))
        };
        let doomed: Vec<StateKey> = self
            .entries
            .iter()
            .filter(|(_, ks)| {
                ks.winner().is_some_and(|w| {
                    w.payload.is_tombstone()
                        && w.hlc.wall_ms < horizon_ms
                        // Past the grave lifetime every other node has
                        // forgotten this delete: waiting for the writes it
                        // superseded to be seen would keep it for ever (they
                        // may be gone everywhere, and their origin with them),
                        // while every other node reads the key absent.
                        && (w.hlc.wall_ms < grave_horizon_ms || ks.live.iter().all(covers_all_superseded))
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in &doomed {
            let ks = self.entries.get_mut(key).expect("key listed from the map");
            let winner = ks.winner().expect("a doomed key has a winner");
            // Its context is the key's: what the tombstone, its losing
            // siblings and any earlier grave superseded.
            let grave = Grave {
                dot: winner.dot,
                hlc: winner.hlc,
                ctx: ks.context(),
                // Kept as the evidence peers check.
                tombstone: Some(winner.clone()),
            };
            if !ks.is_grave_only() {
                self.graves_only += 1;
            }
            let gone = std::mem::replace(
                ks,
                KeyState {
                    grave: Some(Box::new(grave.clone())),
                    ..KeyState::default()
                },
            );
            let key_hash = key.stable_hash();
            let b = (key_hash % BUCKETS as u64) as usize;
            for v in gone.all() {
                self.buckets.flip(b, v.digest_hash(key_hash));
            }
            if let Some(old) = &gone.grave {
                self.buckets.flip(b, old.digest_hash(key_hash));
            }
            self.buckets.flip(b, grave.digest_hash(key_hash));
            self.dirty_keys.insert(key.clone());
            self.dirty_live.insert(key.clone());
        }
        let expired: Vec<StateKey> = self
            .entries
            .iter()
            .filter(|(_, ks)| {
                ks.grave
                    .as_ref()
                    .is_some_and(|g| g.hlc.wall_ms < grave_horizon_ms)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            let ks = self.entries.get_mut(&key).expect("key listed from the map");
            let grave_only = ks.is_grave_only();
            let g = ks.grave.take().expect("listed for its grave");
            let key_hash = key.stable_hash();
            self.buckets
                .flip((key_hash % BUCKETS as u64) as usize, g.digest_hash(key_hash));
            if grave_only {
                self.entries.remove(&key);
                self.graves_only -= 1;
            }
            self.dirty_keys.insert(key);
        }
        doomed
    }

    /// What changed since the last call (for persistence and watchers).
    pub fn take_dirty(&mut self) -> Dirty {
        Dirty {
            keys: std::mem::take(&mut self.dirty_keys),
            live: std::mem::take(&mut self.dirty_live),
            origins: std::mem::take(&mut self.dirty_origins),
        }
    }

    /// Mark keys and knowledge origins to be written again (what a failed
    /// persist batch held).
    pub fn mark_dirty(&mut self, keys: BTreeSet<StateKey>, origins: BTreeSet<NodeId>) {
        self.dirty_keys.extend(keys);
        self.dirty_origins.extend(origins);
    }

    /// Whether anything changed since the last [`take_dirty`](Self::take_dirty).
    pub fn is_dirty(&self) -> bool {
        !self.dirty_keys.is_empty() || !self.dirty_origins.is_empty()
    }

    /// Restore from storage: keys with their versions, and knowledge.
    pub fn restore(&mut self, entries: Vec<(StateKey, KeyState)>, knowledge: Knowledge) {
        self.knowledge = knowledge;
        for (key, mut ks) in entries {
            // A store written before service keys had their own order.
            KeyOrder::of(&key).sort_live(&mut ks.live);
            let key_hash = key.stable_hash();
            let b = (key_hash % BUCKETS as u64) as usize;
            for v in ks.all() {
                self.buckets.flip(b, v.digest_hash(key_hash));
                self.knowledge.insert(v.dot);
            }
            if let Some(g) = &ks.grave {
                self.buckets.flip(b, g.digest_hash(key_hash));
            }
            if ks.is_grave_only() {
                self.graves_only += 1;
            }
            self.entries.insert(key, ks);
        }
        self.dirty_keys.clear();
        self.dirty_live.clear();
        self.dirty_origins.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::{Key, Namespace};

    fn key() -> StateKey {
        StateKey::Kv {
            namespace: Namespace::new("app").expect("valid namespace"),
            key: Key::new("k").expect("valid key"),
        }
    }

    /// A version by `node` with `seq`, stamped `wall_ms`, that saw `seen`.
    fn version(node: u64, seq: u64, wall_ms: u64, seen: &[Dot], payload: Payload) -> Version {
        let dot = Dot {
            node: NodeId::from_index(node),
            seq,
        };
        let mut ctx = Context::default();
        for d in seen {
            ctx.add(*d);
        }
        ctx.add(dot);
        Version {
            dot,
            ctx,
            hlc: Hlc { wall_ms, logical: 0 },
            checksum: payload.checksum(),
            payload,
            signature: None,
        }
    }

    /// Two replicas holding `v1` then a delete of it (v1 in history, the
    /// tombstone live); the first has collected the key.
    fn collected_pair() -> (ReplicatedState, ReplicatedState, Version, Version) {
        let v1 = version(1, 1, 1_000, &[], Payload::Value(b"old".to_vec()));
        let del = version(2, 1, 2_000, &[v1.dot], Payload::Tombstone);
        let mut a = ReplicatedState::new(16);
        let mut b = ReplicatedState::new(16);
        for s in [&mut a, &mut b] {
            assert_eq!(s.merge(key(), v1.clone()), MergeOutcome::Applied);
            assert_eq!(s.merge(key(), del.clone()), MergeOutcome::Applied);
        }
        assert_eq!(a.collect_tombstones(3_000, 0), vec![key()]);
        assert!(a.get(&key()).is_some_and(|ks| ks.is_grave_only()));
        (a, b, v1, del)
    }

    #[test]
    fn a_peers_manifest_never_drops_a_live_version_and_never_revives_history() {
        let (a, mut b, v1, del) = collected_pair();
        // The collector lists nothing for the key and has seen both dots:
        // judged alone, that is no evidence against the live tombstone.
        let bucket = ReplicatedState::bucket_of(&key()) as u16;
        let manifest = a.manifest(&[bucket]);
        let n = 1;
        let peer = PeerKnowledge::new(
            b.knowledge(),
            &a.knowledge().bucket_hashes(n),
            &[0],
            a.knowledge().clone(),
        )
        .expect("well-formed summary");
        let doomed = b.seen_and_dropped(&manifest, &peer);
        assert_eq!(
            doomed,
            vec![(key(), v1.dot)],
            "only the superseded version is doomed"
        );
        assert_eq!(b.drop_versions(&doomed), 1);
        let ks = b.get(&key()).expect("the key is still held");
        assert_eq!(ks.live, vec![del], "the tombstone stays the winner");
        assert!(ks.history.is_empty(), "and the deleted value did not come back");
        assert!(ks.is_deleted());
    }

    #[test]
    fn a_taken_over_grave_removes_the_whole_key_at_once() {
        let (a, mut b, v1, del) = collected_pair();
        let bucket = ReplicatedState::bucket_of(&key()) as u16;
        let graves = a.graves_in(&[bucket]);
        assert_eq!(graves.len(), 1);
        let (k, g) = graves[0].clone();
        assert_eq!(
            b.adopt_grave(&k, Grave::of_tombstone(g)),
            2,
            "the tombstone and the value it deleted go together"
        );
        let ks = b.get(&key()).expect("the grave stays");
        assert!(ks.is_grave_only());
        assert_eq!(b.digest(), a.digest(), "the two replicas hold the same versions");
        // Both dots are known: neither comes back from a stale peer.
        assert_eq!(b.merge(key(), v1), MergeOutcome::Obsolete);
        assert_eq!(b.merge(key(), del), MergeOutcome::Obsolete);
    }

    #[test]
    fn a_taken_over_grave_buries_a_losing_concurrent_sibling_and_keeps_later_writes() {
        let (a, mut b, v1, del) = collected_pair();
        // b also holds a write concurrent with the delete that ranks below
        // it, and a write made after the delete (it saw the tombstone).
        let loser = version(3, 1, 1_500, &[v1.dot], Payload::Value(b"loser".to_vec()));
        let later = version(4, 1, 5_000, &[v1.dot, del.dot], Payload::Value(b"new".to_vec()));
        assert_eq!(b.merge(key(), loser.clone()), MergeOutcome::Applied);
        let (k, g) = a.graves_in(&[ReplicatedState::bucket_of(&key()) as u16])[0].clone();
        b.adopt_grave(&k, Grave::of_tombstone(g));
        assert!(
            b.get(&key()).is_some_and(|ks| ks.is_grave_only()),
            "the loser went with the delete"
        );
        assert_eq!(b.merge(key(), loser), MergeOutcome::Obsolete);
        assert_eq!(b.merge(key(), later.clone()), MergeOutcome::Applied);
        assert_eq!(b.get(&key()).and_then(|ks| ks.winner()), Some(&later));
    }

    fn bucket_of(key: &StateKey) -> u16 {
        ReplicatedState::bucket_of(key) as u16
    }

    /// What `s` asks back of a peer whose manifest is `listed`, as a sync
    /// asks it: its own manifest of the buckets listing a dot it has seen,
    /// then the dots it has seen and holds nowhere.
    fn asked_back(s: &ReplicatedState, listed: &BTreeMap<u16, Vec<Dot>>) -> Vec<Dot> {
        let ours = s.manifest(&s.buckets_listing_seen(listed));
        s.seen_not_held(listed, &ours, 16)
    }

    #[test]
    fn take_back_restores_a_seen_version_held_nowhere_and_nothing_a_grave_or_a_held_version_rules_out() {
        let (mut a, _b, v1, del) = collected_pair();
        // While the grave stands, the value and the delete stay out.
        let listed = BTreeMap::from([(bucket_of(&key()), vec![v1.dot, del.dot])]);
        assert_eq!(asked_back(&a, &listed), vec![v1.dot, del.dot]);
        assert_eq!(a.take_back(key(), v1.clone()), MergeOutcome::Obsolete);
        assert_eq!(a.take_back(key(), del.clone()), MergeOutcome::Obsolete);
        // Past the grave's lifetime nothing here shows the value deleted: a
        // peer that still holds it live gives it back, once.
        a.collect_tombstones(3_000, 3_000);
        assert!(a.get(&key()).is_none(), "the grave is gone");
        assert_eq!(a.take_back(key(), v1.clone()), MergeOutcome::Applied);
        assert_eq!(a.take_back(key(), v1.clone()), MergeOutcome::Duplicate);
        assert_eq!(a.get(&key()).and_then(|ks| ks.winner()), Some(&v1));
        assert_eq!(asked_back(&a, &listed), vec![del.dot]);
        // A held version that supersedes it keeps it out.
        let v2 = version(1, 2, 4_000, &[v1.dot], Payload::Value(b"new".to_vec()));
        let mut d = ReplicatedState::new(0);
        assert_eq!(d.merge(key(), v1.clone()), MergeOutcome::Applied);
        assert_eq!(d.merge(key(), v2.clone()), MergeOutcome::Applied);
        assert!(
            d.get(&key()).is_some_and(|ks| ks.history.is_empty()),
            "v1 trimmed"
        );
        assert_eq!(d.take_back(key(), v1.clone()), MergeOutcome::Obsolete);
        assert_eq!(d.get(&key()).and_then(|ks| ks.winner()), Some(&v2));
        // A dot never seen is merged as usual.
        let fresh = version(5, 1, 6_000, &[v2.dot], Payload::Value(b"x".to_vec()));
        assert_eq!(d.take_back(key(), fresh), MergeOutcome::Applied);
    }

    #[test]
    fn only_the_buckets_a_peer_lists_are_looked_at_and_each_dot_only_in_its_own() {
        let (mut a, _b, v1, del) = collected_pair();
        let b1 = bucket_of(&key());
        // A key of another bucket, holding a version seen here.
        let other = (0..)
            .map(|i| StateKey::Kv {
                namespace: Namespace::new("app").expect("valid namespace"),
                key: Key::new(format!("other-{i}")).expect("valid key"),
            })
            .find(|k| bucket_of(k) != b1)
            .expect("a key of another bucket");
        let b2 = bucket_of(&other);
        let w = version(3, 1, 4_000, &[], Payload::Value(b"w".to_vec()));
        assert_eq!(a.merge(other.clone(), w.clone()), MergeOutcome::Applied);
        // Never seen here: in a bucket of its own, it is not looked at.
        let never = version(4, 1, 4_000, &[], Payload::Value(b"n".to_vec()));
        let b3 = (0..BUCKETS as u16)
            .find(|b| *b != b1 && *b != b2)
            .expect("a third bucket");
        let listed = BTreeMap::from([
            (b1, vec![del.dot, v1.dot, never.dot]),
            (b2, vec![w.dot]),
            (b3, vec![never.dot]),
        ]);
        let mut seen_in = vec![b1, b2];
        seen_in.sort_unstable();
        assert_eq!(a.buckets_listing_seen(&listed), seen_in);
        // Held under the key of its own bucket, `w` is not asked back; the
        // dots of the collected key, held nowhere, are, in order.
        let ours = a.manifest(&seen_in);
        assert_eq!(ours.get(&b2), Some(&vec![w.dot]));
        assert_eq!(a.seen_not_held(&listed, &ours, 16), vec![v1.dot, del.dot]);
        assert_eq!(a.seen_not_held(&listed, &ours, 1), vec![v1.dot], "at most `max`");
        // Each dot is looked for only in the bucket it is listed in: with
        // no manifest of ours for b2, nothing listed there is asked back.
        assert_eq!(
            a.seen_not_held(&listed, &a.manifest(&[b1]), 16),
            vec![v1.dot, del.dot]
        );
        assert_eq!(
            a.seen_not_held(&listed, &a.manifest(&[b2]), 16),
            Vec::<Dot>::new()
        );
    }

    #[test]
    fn versions_that_would_read_deleted_are_not_taken_back_into_a_key_held_nowhere() {
        let v1 = version(1, 1, 1_000, &[], Payload::Value(b"v".to_vec()));
        let t1 = version(2, 1, 2_000, &[], Payload::Tombstone);
        let empty = ReplicatedState::new(16);
        assert!(
            !empty.wants_back(&key(), &[&v1, &t1]),
            "the tombstone ranks first"
        );
        assert!(!empty.wants_back(&key(), &[&t1]));
        assert!(empty.wants_back(&key(), &[&v1]), "a value would read again");
        let mut holder = ReplicatedState::new(16);
        holder.merge(key(), t1.clone());
        assert!(
            holder.wants_back(&key(), &[&v1]),
            "a losing sibling of a key held"
        );
    }

    #[test]
    fn a_tombstone_whose_superseded_writes_were_never_seen_is_collected_only_past_the_grave_horizon() {
        // The delete superseded origin 3's write 2, never seen here (gone
        // everywhere, with its origin): its knowledge of origin 3 stops at 1.
        let mut s = ReplicatedState::new(16);
        let unseen = Dot {
            node: NodeId::from_index(3),
            seq: 2,
        };
        let del = version(2, 1, 2_000, &[unseen], Payload::Tombstone);
        assert_eq!(s.merge(key(), del), MergeOutcome::Applied);
        assert!(
            s.collect_tombstones(10_000, 0).is_empty(),
            "kept past the tombstone TTL"
        );
        assert!(s
            .get(&key())
            .is_some_and(|ks| ks.is_deleted() && !ks.is_grave_only()));
        assert_eq!(
            s.collect_tombstones(10_000, 3_000),
            vec![key()],
            "collected once older than the grave horizon"
        );
    }

    /// Five concurrent writes of one key by five origins (seen nothing).
    fn concurrent(n: u64) -> Vec<Version> {
        (1..=n)
            .map(|i| version(i, 1, 1_000 + i, &[], Payload::Value(vec![i as u8])))
            .collect()
    }

    fn live_dots(s: &ReplicatedState) -> Vec<Dot> {
        s.get(&key())
            .map_or(Vec::new(), |ks| ks.live.iter().map(|v| v.dot).collect())
    }

    #[test]
    fn at_the_sibling_bound_replicas_keep_the_same_siblings_whatever_the_arrival_order() {
        let vs = concurrent(5);
        let orders: [[usize; 5]; 4] = [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1], [1, 0, 4, 2, 3]];
        let mut seen = Vec::new();
        for order in orders {
            let mut s = ReplicatedState::new(16);
            s.set_max_siblings(3);
            for i in order {
                let _ = s.merge(key(), vs[i].clone());
            }
            assert_eq!(s.get(&key()).map(|ks| ks.live.len()), Some(3));
            for v in &vs[..2] {
                assert!(
                    !s.knowledge().contains(&v.dot),
                    "a refused or evicted version is not recorded as seen"
                );
            }
            seen.push((live_dots(&s), s.digest()));
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
        // The highest-ranked three are kept.
        assert_eq!(seen[0].0, vec![vs[4].dot, vs[3].dot, vs[2].dot]);
    }

    #[test]
    fn a_refused_sibling_is_taken_once_a_write_makes_room() {
        let vs = concurrent(3);
        let mut s = ReplicatedState::new(16);
        s.set_max_siblings(2);
        for v in &vs {
            let _ = s.merge(key(), v.clone());
        }
        assert_eq!(
            s.merge(key(), vs[0].clone()),
            MergeOutcome::Refused(KeyLimit::Siblings),
            "still refused while the others stand"
        );
        // A write that saw the two kept supersedes them: room for the third.
        let w = version(
            9,
            1,
            5_000,
            &[vs[1].dot, vs[2].dot],
            Payload::Value(b"w".to_vec()),
        );
        assert_eq!(s.merge(key(), w.clone()), MergeOutcome::Applied);
        assert_eq!(s.merge(key(), vs[0].clone()), MergeOutcome::Applied);
        assert_eq!(live_dots(&s), vec![w.dot, vs[0].dot]);
    }

    #[test]
    fn a_service_instance_keeps_its_registrations_before_tombstones_at_the_bound() {
        let k = StateKey::Service {
            namespace: Namespace::new("app").expect("valid namespace"),
            service: crate::core::ids::ServiceName::new("api").expect("valid service"),
            instance: crate::core::ids::InstanceId::new("i1").expect("valid instance"),
        };
        let owner = NodeId::from_index(1);
        let reg = version(
            1,
            1,
            1_000,
            &[],
            Payload::Instance(Box::new(crate::core::registry::ServiceInstance {
                spec: crate::core::registry::ServiceSpec {
                    address: "10.0.0.1".into(),
                    port: 80,
                    tags: BTreeSet::new(),
                    metadata: BTreeMap::new(),
                    weight: 100,
                    ttl_ms: None,
                },
                owner,
                health: crate::core::registry::HealthStatus::Passing,
            })),
        );
        let mut s = ReplicatedState::new(16);
        s.set_max_siblings(2);
        assert_eq!(s.merge(k.clone(), reg.clone()), MergeOutcome::Applied);
        // Foreign tombstones, newer than the registration, each with its
        // own origin's context only: they never push the registration out.
        for i in 2..6 {
            let _ = s.merge(k.clone(), version(i, 1, 2_000 + i, &[], Payload::Tombstone));
        }
        let ks = s.get(&k).expect("held");
        assert_eq!(ks.live.len(), 2);
        assert_eq!(
            ks.winner().map(|w| w.dot),
            Some(reg.dot),
            "read as its registration"
        );
        assert!(!ks.is_deleted());
    }

    #[test]
    fn a_key_never_stores_more_than_max_key_bytes_and_the_highest_ranked_values_stay() {
        let mib = 1 << 20;
        let big = |i: u64| version(i, 1, 1_000 + i, &[], Payload::Value(vec![i as u8; 24 * mib]));
        let mut s = ReplicatedState::new(16);
        let mut outcomes = Vec::new();
        for i in 1..=7 {
            outcomes.push(s.merge(key(), big(i)));
        }
        let ks = s.get(&key()).expect("held").clone();
        assert!(encoded_len(&ks) <= MAX_KEY_BYTES, "{} bytes", encoded_len(&ks));
        assert_eq!(ks.live.len(), 5, "five of 24 MiB fit in 128 MiB");
        assert_eq!(ks.winner().map(|w| w.dot.node), Some(NodeId::from_index(7)));
        assert_eq!(
            s.take_evicted(),
            vec![KeyLimit::Bytes, KeyLimit::Bytes],
            "the two lowest-ranked went as higher ones came"
        );
        assert!(outcomes.iter().all(|o| *o == MergeOutcome::Applied));
        // Arriving again, the lowest is refused: the five above it fill the key.
        assert_eq!(s.merge(key(), big(1)), MergeOutcome::Refused(KeyLimit::Bytes));
        // History is trimmed to fit too: a write superseding them all keeps
        // as much history as fits.
        let seen: Vec<Dot> = ks.live.iter().map(|v| v.dot).collect();
        let w = version(9, 1, 9_000, &seen, Payload::Value(vec![9; 24 * mib]));
        assert_eq!(s.merge(key(), w), MergeOutcome::Applied);
        let ks = s.get(&key()).expect("held");
        assert!(encoded_len(ks) <= MAX_KEY_BYTES);
        assert_eq!((ks.live.len(), ks.history.len()), (1, 4));
    }
}
