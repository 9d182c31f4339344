//! Dots and causal knowledge.
//!
//! Every replicated write gets a *dot*: `(origin node, seq)`, where `seq`
//! counts that origin's writes from 1. A node's *knowledge* is the set of dots
//! it has seen, per origin a contiguous prefix plus the out-of-order dots
//! above it. Knowledge is what `delta_since` compares against, and it is what
//! makes deletion safe: a version whose dot a node has seen but no longer
//! holds was superseded or collected, and is never taken back.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ids::NodeId;

/// One write's identity: its origin node and that origin's sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The node that made the write.
    pub node: NodeId,
    /// The origin's counter, from 1.
    pub seq: u64,
}

/// The dots seen from one origin: everything up to `base`, plus `extra`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DotRange {
    /// Every seq in `1..=base` has been seen.
    pub base: u64,
    /// Seen seqs above `base + 1` (never contains `base + 1`).
    pub extra: BTreeSet<u64>,
}

impl DotRange {
    /// Whether `seq` was seen.
    pub fn contains(&self, seq: u64) -> bool {
        seq <= self.base || self.extra.contains(&seq)
    }

    /// Record `seq`; returns whether it was new.
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq == 0 || self.contains(seq) {
            return false;
        }
        if seq == self.base + 1 {
            self.base = seq;
            // `base < MAX` guard: a peer may claim seq u64::MAX.
            while self.base < u64::MAX && self.extra.remove(&(self.base + 1)) {
                self.base += 1;
            }
        } else {
            self.extra.insert(seq);
        }
        true
    }

    /// Forget `seq` (only used to undo a write that failed to persist).
    pub fn remove(&mut self, seq: u64) {
        if self.extra.remove(&seq) {
            return;
        }
        if seq != 0 && seq <= self.base {
            // Split the prefix: seqs above the removed one become extras.
            for s in seq + 1..=self.base {
                self.extra.insert(s);
            }
            self.base = seq - 1;
        }
    }

    /// The highest seq seen.
    pub fn max(&self) -> u64 {
        self.extra.last().copied().unwrap_or(0).max(self.base)
    }

    fn union(&mut self, other: &DotRange) {
        if other.base > self.base {
            let base = other.base;
            self.extra.retain(|s| *s > base);
            self.base = base;
        }
        for s in &other.extra {
            self.insert(*s);
        }
        while self.base < u64::MAX && self.extra.remove(&(self.base + 1)) {
            self.base += 1;
        }
    }
}

/// Origins fall into this many fine buckets; anti-entropy compares
/// knowledge bucket by bucket (folded to fewer buckets for small clusters)
/// and ships only the ranges of buckets that differ.
pub const KNOWLEDGE_BUCKETS: usize = 256;

/// The fine knowledge bucket of an origin.
#[inline]
pub fn origin_bucket(node: &NodeId) -> usize {
    let b = &node.0;
    let mut x = 0u64;
    for chunk in b.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        x = (x ^ u64::from_le_bytes(w)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    (x >> 56) as usize % KNOWLEDGE_BUCKETS
}

/// How many knowledge buckets to compare for `origins` origins: a power
/// of two dividing [`KNOWLEDGE_BUCKETS`], about four origins a bucket.
pub fn knowledge_bucket_count(origins: usize) -> usize {
    origins
        .div_ceil(4)
        .next_power_of_two()
        .clamp(1, KNOWLEDGE_BUCKETS)
}

/// Whether `n` is a valid coarse bucket count.
pub fn valid_knowledge_bucket_count(n: usize) -> bool {
    n.is_power_of_two() && n <= KNOWLEDGE_BUCKETS
}

/// One origin's share of its bucket hash; an empty range counts as absent.
fn range_hash(node: &NodeId, r: &DotRange) -> u64 {
    if r.base == 0 && r.extra.is_empty() {
        return 0;
    }
    if r.extra.is_empty() {
        // The common case, without a streaming hasher's setup.
        let mut b = [0u8; 40];
        b[..32].copy_from_slice(&node.0);
        b[32..].copy_from_slice(&r.base.to_le_bytes());
        return xxhash_rust::xxh3::xxh3_64(&b) | 1;
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&node.0);
    h.update(&r.base.to_le_bytes());
    for s in &r.extra {
        h.update(&s.to_le_bytes());
    }
    // Never 0 for a non-empty range, so "absent" stays distinguishable.
    h.digest() | 1
}

/// Everything a node has seen: per origin, a [`DotRange`]. Keeps a hash per
/// origin bucket up to date, so two nodes can find where their knowledge
/// differs without exchanging all of it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "KnowledgeRepr")]
pub struct Knowledge {
    ranges: BTreeMap<NodeId, DotRange>,
    #[serde(skip_serializing)]
    buckets: Box<[u64; KNOWLEDGE_BUCKETS]>,
}

#[derive(Deserialize)]
struct KnowledgeRepr {
    ranges: BTreeMap<NodeId, DotRange>,
}

impl From<KnowledgeRepr> for Knowledge {
    fn from(r: KnowledgeRepr) -> Self {
        Knowledge::from_ranges(r.ranges)
    }
}

impl Default for Knowledge {
    fn default() -> Self {
        Knowledge {
            ranges: BTreeMap::new(),
            buckets: Box::new([0; KNOWLEDGE_BUCKETS]),
        }
    }
}

impl std::fmt::Debug for Knowledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knowledge").field("ranges", &self.ranges).finish()
    }
}

impl Knowledge {
    /// An empty knowledge set.
    pub fn new() -> Self {
        Knowledge::default()
    }

    /// Whether `dot` was seen.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.ranges.get(&dot.node).is_some_and(|r| r.contains(dot.seq))
    }

    /// Record `dot`; returns whether it was new.
    pub fn insert(&mut self, dot: Dot) -> bool {
        let r = self.ranges.entry(dot.node).or_default();
        if dot.seq == 0 || r.contains(dot.seq) {
            return false;
        }
        let before = range_hash(&dot.node, r);
        r.insert(dot.seq);
        let after = range_hash(&dot.node, r);
        self.buckets[origin_bucket(&dot.node)] ^= before ^ after;
        true
    }

    /// Forget `dot`.
    pub fn remove(&mut self, dot: &Dot) {
        if let Some(r) = self.ranges.get_mut(&dot.node) {
            let before = range_hash(&dot.node, r);
            r.remove(dot.seq);
            let after = range_hash(&dot.node, r);
            self.buckets[origin_bucket(&dot.node)] ^= before ^ after;
        }
    }

    /// Union with another node's knowledge; returns the origins whose
    /// range grew.
    pub fn union(&mut self, other: &Knowledge) -> Vec<NodeId> {
        let mut changed = Vec::new();
        for (node, range) in &other.ranges {
            let mine = self.ranges.entry(*node).or_default();
            if mine.base >= range.base && range.extra.iter().all(|s| mine.contains(*s)) {
                continue;
            }
            let before = range_hash(node, mine);
            mine.union(range);
            let after = range_hash(node, mine);
            self.buckets[origin_bucket(node)] ^= before ^ after;
            changed.push(*node);
        }
        changed
    }

    /// Highest seq seen from `node` (0 if none).
    pub fn max_seq(&self, node: &NodeId) -> u64 {
        self.ranges.get(node).map_or(0, DotRange::max)
    }

    /// The origin's range, if any dot from it was seen.
    pub fn range(&self, node: &NodeId) -> Option<&DotRange> {
        self.ranges.get(node)
    }

    /// Per origin, the highest seq seen: a plain version vector.
    pub fn version_vector(&self) -> BTreeMap<NodeId, u64> {
        self.ranges.iter().map(|(n, r)| (*n, r.max())).collect()
    }

    /// Iterate origins and their ranges in order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &DotRange)> {
        self.ranges.iter()
    }

    /// Number of origins known.
    pub fn origins(&self) -> usize {
        self.ranges.len()
    }

    /// Rebuild from stored ranges.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (NodeId, DotRange)>) -> Self {
        let mut k = Knowledge {
            ranges: ranges.into_iter().collect(),
            ..Knowledge::default()
        };
        for (node, r) in &k.ranges {
            k.buckets[origin_bucket(node)] ^= range_hash(node, r);
        }
        k
    }

    /// The bucket hashes folded into `n` buckets (`n` a valid count): an
    /// origin in fine bucket `b` is in bucket `b % n`.
    pub fn bucket_hashes(&self, n: usize) -> Vec<u64> {
        debug_assert!(valid_knowledge_bucket_count(n));
        fold_buckets(&self.buckets[..], n)
    }

    /// This knowledge cut down to `cap(origin)` per origin (an origin
    /// capped at 0 is left out), and whether anything was cut.
    pub fn capped(&self, cap: impl Fn(&NodeId) -> u64) -> (Knowledge, bool) {
        let mut cut = false;
        let ranges = self.ranges.iter().filter_map(|(node, r)| {
            let c = cap(node);
            if r.max() <= c {
                return Some((*node, r.clone()));
            }
            cut = true;
            let kept = DotRange {
                base: r.base.min(c),
                extra: r.extra.iter().copied().filter(|s| *s <= c).collect(),
            };
            (kept.max() > 0).then_some((*node, kept))
        });
        let k = Knowledge::from_ranges(ranges.collect::<Vec<_>>());
        (k, cut)
    }

    /// The ranges of the origins in the marked buckets (of `marked.len()`).
    pub fn restricted(&self, marked: &[bool]) -> Knowledge {
        let n = marked.len();
        if !marked.iter().any(|m| *m) {
            return Knowledge::new();
        }
        Knowledge::from_ranges(
            self.ranges
                .iter()
                .filter(|(node, _)| marked[origin_bucket(node) % n])
                .map(|(node, r)| (*node, r.clone())),
        )
    }
}

/// What a peer has seen, as far as a node can tell from the peer's
/// knowledge summary: bucket hashes of all of its knowledge, plus its full
/// ranges for some buckets ("shipped"). A bucket whose hash equals this
/// node's holds exactly what this node has seen; a shipped bucket holds
/// the shipped ranges (an origin missing from them: nothing seen); any
/// other bucket is unknown (it changed on one side since the summary was
/// made), and nothing is concluded about it.
#[derive(Clone, Debug)]
pub struct PeerKnowledge {
    /// Per bucket: 0 same as ours, 1 shipped, 2 unknown.
    class: Vec<u8>,
    shipped: Knowledge,
}

impl PeerKnowledge {
    /// Judge a peer's summary against this node's knowledge `mine`.
    /// Errors on a malformed summary (bad bucket count, a shipped bucket
    /// out of range, a shipped origin outside the shipped buckets).
    pub fn new(
        mine: &Knowledge,
        buckets: &[u64],
        shipped: &[u16],
        ranges: Knowledge,
    ) -> Result<Self, &'static str> {
        let n = buckets.len();
        if !valid_knowledge_bucket_count(n) {
            return Err("bad_knowledge_buckets");
        }
        let ours = mine.bucket_hashes(n);
        let mut class: Vec<u8> = ours
            .iter()
            .zip(buckets)
            .map(|(a, b)| if a == b { 0 } else { 2 })
            .collect();
        for &b in shipped {
            let Some(c) = class.get_mut(b as usize) else {
                return Err("bad_knowledge_buckets");
            };
            *c = 1;
        }
        if ranges.iter().any(|(node, _)| class[origin_bucket(node) % n] != 1) {
            return Err("bad_knowledge_buckets");
        }
        Ok(PeerKnowledge {
            class,
            shipped: ranges,
        })
    }

    /// Whether the peer has seen `dot`, a dot this node has seen (holds):
    /// `None` when its bucket is unknown.
    #[inline]
    pub fn seen_of_ours(&self, dot: &Dot) -> Option<bool> {
        match self.class[origin_bucket(&dot.node) % self.class.len()] {
            0 => Some(true),
            1 => Some(self.shipped.contains(dot)),
            _ => None,
        }
    }

    /// Buckets where the peer's knowledge may differ from ours (shipped or
    /// unknown): ours should be shipped back for these.
    pub fn differing(&self) -> Vec<bool> {
        self.class.iter().map(|c| *c != 0).collect()
    }

    /// Whether every bucket equals ours.
    pub fn all_same(&self) -> bool {
        self.class.iter().all(|c| *c == 0)
    }

    /// The shipped ranges.
    pub fn shipped(&self) -> &Knowledge {
        &self.shipped
    }
}

/// A per-key causal context: for each origin, the highest seq of that
/// origin's writes *to this key* that a version's writer had seen. Sorted by
/// node, one entry per node. Version `a` supersedes version `b` when `a`'s
/// context covers `b`'s dot.
///
/// A context has an entry for every origin that ever wrote the key, so at
/// a thousand writers it is kilobytes; versions are cloned whenever a key's
/// state is persisted, so the entries are shared (copied on write only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Context(std::sync::Arc<Vec<Dot>>);

impl Context {
    /// Whether this context covers `dot`.
    pub fn covers(&self, dot: &Dot) -> bool {
        match self.0.binary_search_by(|d| d.node.cmp(&dot.node)) {
            Ok(i) => self.0[i].seq >= dot.seq,
            Err(_) => false,
        }
    }

    /// Raise the entry for `dot.node` to at least `dot.seq`.
    pub fn add(&mut self, dot: Dot) {
        match self.0.binary_search_by(|d| d.node.cmp(&dot.node)) {
            Ok(i) if self.0[i].seq >= dot.seq => {}
            Ok(i) => std::sync::Arc::make_mut(&mut self.0)[i].seq = dot.seq,
            Err(i) => {
                let dots = std::sync::Arc::make_mut(&mut self.0);
                // Most contexts name one origin: room for exactly that.
                if dots.is_empty() {
                    dots.reserve_exact(1);
                }
                dots.insert(i, dot)
            }
        }
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &Context) {
        if self.0.is_empty() {
            self.0 = other.0.clone();
            return;
        }
        for d in other.0.iter() {
            self.add(*d);
        }
    }

    /// This context cut to `node`'s entry alone.
    pub fn only(&self, node: &NodeId) -> Context {
        let mut ctx = Context::default();
        if let Some(d) = self.0.iter().find(|d| d.node == *node) {
            ctx.add(*d);
        }
        ctx
    }

    /// The shared entries, to share them further (see
    /// [`SharedPool`](super::pool::SharedPool)).
    pub(crate) fn into_shared(self) -> std::sync::Arc<Vec<Dot>> {
        self.0
    }

    /// A context of shared entries (copied on write like any other).
    pub(crate) fn from_shared(dots: std::sync::Arc<Vec<Dot>>) -> Self {
        Context(dots)
    }

    /// The entries, sorted by node.
    pub fn dots(&self) -> &[Dot] {
        &self.0
    }

    /// Whether entries are sorted and unique (a peer could send junk).
    pub fn is_well_formed(&self) -> bool {
        self.0.windows(2).all(|w| w[0].node < w[1].node)
    }
}

/// XOR-fold fine bucket hashes into `n` buckets: fine bucket `b` goes to
/// `b % n` (knowledge and membership summaries alike).
pub(crate) fn fold_buckets(fine: &[u64], n: usize) -> Vec<u64> {
    let mut out = vec![0u64; n];
    for (b, h) in fine.iter().enumerate() {
        out[b % n] ^= h;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(n: u64, seq: u64) -> Dot {
        Dot {
            node: NodeId::from_index(n),
            seq,
        }
    }

    #[test]
    fn out_of_order_dots_fill_the_prefix_when_the_gap_closes() {
        let mut k = Knowledge::new();
        assert!(k.insert(dot(1, 1)));
        assert!(k.insert(dot(1, 3)));
        assert!(!k.contains(&dot(1, 2)));
        assert_eq!(k.range(&NodeId::from_index(1)).unwrap().base, 1);
        assert!(k.insert(dot(1, 2)));
        let r = k.range(&NodeId::from_index(1)).unwrap();
        assert_eq!((r.base, r.extra.len()), (3, 0));
        assert!(!k.insert(dot(1, 2)));
    }

    #[test]
    fn union_merges_prefixes_and_extras() {
        let mut a = Knowledge::new();
        let mut b = Knowledge::new();
        for s in [1, 2, 5] {
            a.insert(dot(1, s));
        }
        for s in [1, 2, 3, 4, 7] {
            b.insert(dot(1, s));
        }
        a.union(&b);
        let r = a.range(&NodeId::from_index(1)).unwrap();
        assert_eq!(r.base, 5);
        assert_eq!(r.extra.iter().copied().collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn removing_a_dot_from_the_prefix_keeps_the_rest() {
        let mut k = Knowledge::new();
        for s in 1..=5 {
            k.insert(dot(1, s));
        }
        k.remove(&dot(1, 3));
        assert!(!k.contains(&dot(1, 3)));
        for s in [1, 2, 4, 5] {
            assert!(k.contains(&dot(1, s)));
        }
    }

    #[test]
    fn bucket_hashes_track_every_change_and_locate_differences() {
        let mut a = Knowledge::new();
        let mut b = Knowledge::new();
        for n in 1..40 {
            for s in 1..=3 {
                a.insert(dot(n, s));
                b.insert(dot(n, s));
            }
        }
        assert_eq!(a.bucket_hashes(16), b.bucket_hashes(16));
        b.insert(dot(7, 5));
        b.insert(dot(41, 1));
        let n = knowledge_bucket_count(b.origins());
        let (ha, hb) = (a.bucket_hashes(n), b.bucket_hashes(n));
        let differing: Vec<bool> = ha.iter().zip(&hb).map(|(x, y)| x != y).collect();
        assert!(differing.iter().filter(|d| **d).count() <= 2);
        // Shipping b's ranges for the differing buckets tells a exactly
        // what b has seen.
        let shipped: Vec<u16> = (0..n as u16).filter(|i| differing[*i as usize]).collect();
        let view = PeerKnowledge::new(&a, &hb, &shipped, b.restricted(&differing)).unwrap();
        assert_eq!(view.seen_of_ours(&dot(3, 2)), Some(true));
        assert_eq!(view.seen_of_ours(&dot(7, 5)), Some(true));
        assert_eq!(view.seen_of_ours(&dot(7, 6)), Some(false));
        a.union(view.shipped());
        assert_eq!(a.bucket_hashes(n), b.bucket_hashes(n));
        // Removal and rebuild agree with incremental upkeep.
        a.remove(&dot(7, 5));
        let rebuilt = Knowledge::from_ranges(a.iter().map(|(n, r)| (*n, r.clone())));
        assert_eq!(rebuilt.bucket_hashes(256), a.bucket_hashes(256));
        // Decoding rebuilds the hashes too.
        let bytes = bincode::serde::encode_to_vec(&a, bincode::config::standard()).unwrap();
        let (back, _): (Knowledge, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn an_unknown_bucket_concludes_nothing() {
        let mut a = Knowledge::new();
        a.insert(dot(1, 1));
        let b = Knowledge::new();
        // b's summary says nothing was shipped, and differs from a.
        let view = PeerKnowledge::new(&a, &b.bucket_hashes(1), &[], Knowledge::new()).unwrap();
        assert_eq!(view.seen_of_ours(&dot(1, 1)), None);
        assert!(PeerKnowledge::new(&a, &[0; 3], &[], Knowledge::new()).is_err());
        assert!(PeerKnowledge::new(&a, &[0; 2], &[2], Knowledge::new()).is_err());
        assert!(PeerKnowledge::new(&a, &[0; 1], &[], a.clone()).is_err());
    }

    #[test]
    fn context_covers_lower_seqs_of_the_same_node_only() {
        let mut c = Context::default();
        c.add(dot(2, 5));
        c.add(dot(1, 3));
        assert!(c.is_well_formed());
        assert!(c.covers(&dot(2, 4)));
        assert!(!c.covers(&dot(2, 6)));
        assert!(!c.covers(&dot(3, 1)));
    }
}
