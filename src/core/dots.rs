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

/// Everything a node has seen: per origin, a [`DotRange`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knowledge {
    ranges: BTreeMap<NodeId, DotRange>,
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
        self.ranges.entry(dot.node).or_default().insert(dot.seq)
    }

    /// Forget `dot`.
    pub fn remove(&mut self, dot: &Dot) {
        if let Some(r) = self.ranges.get_mut(&dot.node) {
            r.remove(dot.seq);
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
            mine.union(range);
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
        Knowledge {
            ranges: ranges.into_iter().collect(),
        }
    }
}

/// A per-key causal context: for each origin, the highest seq of that
/// origin's writes *to this key* that a version's writer had seen. Sorted by
/// node, one entry per node. Version `a` supersedes version `b` when `a`'s
/// context covers `b`'s dot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Context(Vec<Dot>);

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
            Ok(i) => self.0[i].seq = self.0[i].seq.max(dot.seq),
            Err(i) => self.0.insert(i, dot),
        }
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &Context) {
        for d in &other.0 {
            self.add(*d);
        }
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
