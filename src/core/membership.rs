//! Membership: who is in the cluster and what everyone believes of them.
//!
//! Each node's record carries an *incarnation* that only that node raises.
//! Records merge by `(incarnation, status)`: a higher incarnation wins; at the
//! same incarnation `left > dead > suspect > alive`. So a suspicion spreads
//! and sticks until the suspected node hears of it and *refutes* it by
//! announcing itself alive at a higher incarnation; a graceful leave is final
//! for its incarnation. The phi-accrual detector (see [`super::phi`]) is local:
//! each node suspects the peers whose heartbeats stop reaching it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::crypto::{member_claim, Keys, Signature};
use super::ids::NodeId;
use super::pool::SharedPool;

/// A member's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MemberStatus {
    /// Heartbeats arrive.
    Alive,
    /// Someone's detector crossed its threshold.
    Suspect,
    /// Suspected for longer than the suspicion timeout.
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberStatus {
    /// Lower-case name, as in the HTTP API.
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Dead => "dead",
            MemberStatus::Left => "left",
        }
    }
}

/// What a node says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Human-readable name.
    pub name: String,
    /// Addresses peers can dial (multiaddrs in the libp2p node).
    pub addrs: Vec<String>,
    /// Free-form tags: role, region, env...
    pub tags: BTreeMap<String, String>,
}

/// Longest node name, address, or tag value in a [`NodeInfo`], in bytes.
pub const MAX_NODE_FIELD_BYTES: usize = 256;
/// Longest tag key in a [`NodeInfo`], in bytes.
pub const MAX_NODE_TAG_KEY_BYTES: usize = 128;
/// Most addresses a [`NodeInfo`] lists.
pub const MAX_NODE_ADDRS: usize = 128;
/// Most tags a [`NodeInfo`] carries.
pub const MAX_NODE_TAGS: usize = 128;

impl NodeInfo {
    /// Check the limits a self-description must keep (every member record
    /// from a peer is checked against them, `member_bad_info`): the name,
    /// each address and each tag value at most [`MAX_NODE_FIELD_BYTES`],
    /// tag keys at most [`MAX_NODE_TAG_KEY_BYTES`], at most
    /// [`MAX_NODE_ADDRS`] addresses and [`MAX_NODE_TAGS`] tags. So one
    /// record is at most about 100 KiB, however it travels.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.len() > MAX_NODE_FIELD_BYTES {
            return Err(format!("name longer than {MAX_NODE_FIELD_BYTES} bytes"));
        }
        if self.addrs.len() > MAX_NODE_ADDRS {
            return Err(format!("more than {MAX_NODE_ADDRS} addresses"));
        }
        if self.addrs.iter().any(|a| a.len() > MAX_NODE_FIELD_BYTES) {
            return Err(format!("an address longer than {MAX_NODE_FIELD_BYTES} bytes"));
        }
        if self.tags.len() > MAX_NODE_TAGS {
            return Err(format!("more than {MAX_NODE_TAGS} tags"));
        }
        if self
            .tags
            .iter()
            .any(|(k, v)| k.len() > MAX_NODE_TAG_KEY_BYTES || v.len() > MAX_NODE_FIELD_BYTES)
        {
            return Err(format!(
                "a tag key over {MAX_NODE_TAG_KEY_BYTES} bytes or value over {MAX_NODE_FIELD_BYTES}"
            ));
        }
        Ok(())
    }
}

/// One member as this node sees it.
#[derive(Clone, Debug, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its id.
    pub node: NodeId,
    /// Its self-description (as of `incarnation`). Shared: every record
    /// of the member at this incarnation (each status, each copy sent or
    /// persisted) holds the same one, and engines of one process share
    /// equal ones (see [`SharedPool`](super::pool::SharedPool)). Encoded
    /// as the `NodeInfo` itself.
    pub info: Arc<NodeInfo>,
    /// Raised only by the node itself: to refute suspicion or change info.
    pub incarnation: u64,
    /// Status at that incarnation.
    pub status: MemberStatus,
    /// The member's own signature over its claim
    /// ([`member_claim`](super::crypto::member_claim)): that it left, for
    /// a `Left` record; that it is alive with this info at this
    /// incarnation, for any other (others declare it suspect or dead by
    /// passing its alive claim on with another status, so they can do so
    /// only at an incarnation it really had).
    pub proof: Signature,
}

/// Field by field, the fixed-size fields first: the same record arrives
/// again and again (every heartbeat, every sync), and a different one
/// usually differs in them, before its self-description is compared.
impl PartialEq for Member {
    fn eq(&self, other: &Member) -> bool {
        self.node == other.node
            && self.incarnation == other.incarnation
            && self.status == other.status
            && self.proof == other.proof
            && self.info == other.info
    }
}

impl Member {
    /// The bytes [`proof`](Self::proof) signs.
    pub fn claim(&self) -> Vec<u8> {
        member_claim(
            &self.node,
            &self.info,
            self.incarnation,
            self.status == MemberStatus::Left,
        )
    }

    /// Whether the record is what its subject signed.
    pub fn is_signed(&self, keys: &dyn Keys) -> bool {
        keys.verify(&self.node, &self.claim(), &self.proof)
    }

    fn precedence(&self) -> (u64, MemberStatus) {
        (self.incarnation, self.status)
    }

    /// Stable hash for the membership digest: xxh3 of the record's bincode
    /// encoding, streamed (no allocation).
    pub fn digest_hash(&self) -> u64 {
        struct HashWriter(xxhash_rust::xxh3::Xxh3);
        impl std::io::Write for HashWriter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = HashWriter(xxhash_rust::xxh3::Xxh3::new());
        bincode::serde::encode_into_std_write(self, &mut w, bincode::config::standard())
            .expect("hashing a Member cannot fail");
        w.0.digest()
    }

    /// Whether `other` should replace `self`.
    pub fn is_superseded_by(&self, other: &Member) -> bool {
        match other.precedence().cmp(&self.precedence()) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            // The same record again (every heartbeat): nothing to do.
            std::cmp::Ordering::Equal if other == self => false,
            // Same incarnation and status but different info can only come
            // from a confused or lying peer; pick deterministically.
            std::cmp::Ordering::Equal => other.digest_hash() > self.digest_hash(),
        }
    }
}

/// Member buckets kept by a [`Membership`]: anti-entropy compares views
/// bucket by bucket and ships only the records of buckets that differ.
pub const MEMBER_BUCKETS: usize = 256;
const _: () = assert!(MEMBER_BUCKETS <= 256, "a fine bucket index fits in a byte");

/// The fine bucket (of [`MEMBER_BUCKETS`]) a member's record hashes into.
pub fn member_bucket(node: &NodeId) -> usize {
    (xxhash_rust::xxh3::xxh3_64(&node.0) % MEMBER_BUCKETS as u64) as usize
}

/// How many member buckets to compare for a view of `members` records: a
/// power of two dividing [`MEMBER_BUCKETS`], about four records a bucket.
pub fn member_bucket_count(members: usize) -> usize {
    members.div_ceil(4).next_power_of_two().clamp(1, MEMBER_BUCKETS)
}

/// Whether `n` is a valid coarse bucket count (see [`Membership::bucket_hashes`]).
pub fn valid_member_bucket_count(n: usize) -> bool {
    n.is_power_of_two() && n <= MEMBER_BUCKETS
}

#[derive(Clone, Debug)]
struct Entry {
    member: Member,
    hash: u64,
    bucket: u8,
}

/// The membership view: a join-semilattice of member records.
#[derive(Clone, Debug)]
pub struct Membership {
    members: BTreeMap<NodeId, Entry>,
    hash: u64,
    buckets: Box<[u64; MEMBER_BUCKETS]>,
    dirty: BTreeSet<NodeId>,
    /// Where the self-descriptions of merged records are shared from.
    pool: Option<SharedPool>,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            members: BTreeMap::new(),
            hash: 0,
            buckets: Box::new([0; MEMBER_BUCKETS]),
            dirty: BTreeSet::new(),
            pool: None,
        }
    }
}

impl Membership {
    /// An empty view.
    pub fn new() -> Self {
        Membership::default()
    }

    /// Share the self-descriptions of the records held, and of those
    /// merged from now on, through `pool` (see [`SharedPool`]). The view
    /// itself does not change.
    pub(crate) fn share_through(&mut self, pool: SharedPool) {
        for e in self.members.values_mut() {
            e.member.info = pool.info(e.member.info.clone());
        }
        self.pool = Some(pool);
    }

    /// Whether [`merge`](Self::merge) would change the view.
    pub fn would_change(&self, m: &Member) -> bool {
        self.would_change_held(m).0
    }

    /// Whether [`merge`](Self::merge) would change the view, and whether
    /// a record of the member is held (one search for both).
    pub(crate) fn would_change_held(&self, m: &Member) -> (bool, bool) {
        match self.members.get(&m.node) {
            None => (true, false),
            Some(cur) => {
                let change = match m.precedence().cmp(&cur.member.precedence()) {
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Equal => *m != cur.member && m.digest_hash() > cur.hash,
                    std::cmp::Ordering::Greater => true,
                };
                (change, true)
            }
        }
    }

    /// Merge a record; returns the previous record if it changed anything.
    pub fn merge(&mut self, mut m: Member) -> Option<Option<Member>> {
        use std::collections::btree_map::Entry as Slot;
        let node = m.node;
        let bucket = member_bucket(&node);
        // One search of the map for the decision and the insertion.
        let (hash, prev) = match self.members.entry(node) {
            Slot::Occupied(mut slot) => {
                let cur = slot.get();
                let hash = match m.precedence().cmp(&cur.member.precedence()) {
                    std::cmp::Ordering::Less => return None,
                    std::cmp::Ordering::Equal if m == cur.member => return None,
                    std::cmp::Ordering::Equal => {
                        let h = m.digest_hash();
                        if h <= cur.hash {
                            return None;
                        }
                        h
                    }
                    std::cmp::Ordering::Greater => m.digest_hash(),
                };
                // The same self-description as the record held (a change
                // of status or incarnation only) is kept once; another is
                // shared through the pool.
                m.info = match &self.pool {
                    _ if cur.member.info == m.info => cur.member.info.clone(),
                    Some(pool) => pool.info(m.info),
                    None => m.info,
                };
                let entry = Entry {
                    member: m,
                    hash,
                    bucket: bucket as u8,
                };
                (hash, Some(slot.insert(entry)))
            }
            Slot::Vacant(slot) => {
                let hash = m.digest_hash();
                if let Some(pool) = &self.pool {
                    m.info = pool.info(m.info);
                }
                slot.insert(Entry {
                    member: m,
                    hash,
                    bucket: bucket as u8,
                });
                (hash, None)
            }
        };
        let mut delta = hash;
        if let Some(p) = &prev {
            delta ^= p.hash;
        }
        self.hash ^= delta;
        self.buckets[bucket] ^= delta;
        self.dirty.insert(node);
        Some(prev.map(|p| p.member))
    }

    /// Drop a member's record (reaped); returns it. The removal is
    /// marked dirty, so it is persisted.
    pub fn remove(&mut self, node: &NodeId) -> Option<Member> {
        let e = self.members.remove(node)?;
        self.hash ^= e.hash;
        self.buckets[e.bucket as usize] ^= e.hash;
        self.dirty.insert(*node);
        Some(e.member)
    }

    /// A member's record.
    pub fn get(&self, node: &NodeId) -> Option<&Member> {
        self.members.get(node).map(|e| &e.member)
    }

    /// Every member, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|e| &e.member)
    }

    /// Number of members known (any status).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no member is known.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Digest of the whole view.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The view's hashes folded into `n` buckets (`n` a power of two up to
    /// `MEMBER_BUCKETS`, 256): a member in fine bucket `b` is in bucket `b % n`.
    pub fn bucket_hashes(&self, n: usize) -> Vec<u64> {
        debug_assert!(valid_member_bucket_count(n));
        super::dots::fold_buckets(&self.buckets[..], n)
    }

    /// The records in the given buckets (of `n`), ordered by id.
    pub fn in_buckets(&self, n: usize, buckets: &[bool]) -> Vec<Member> {
        self.members
            .values()
            .filter(|e| buckets[e.bucket as usize % n])
            .map(|e| e.member.clone())
            .collect()
    }

    /// Ids changed since the last call.
    pub fn take_dirty(&mut self) -> BTreeSet<NodeId> {
        std::mem::take(&mut self.dirty)
    }

    /// Mark member records to be written again (what a failed persist
    /// batch held); ids not held are ignored.
    pub fn mark_dirty(&mut self, nodes: BTreeSet<NodeId>) {
        self.dirty
            .extend(nodes.into_iter().filter(|n| self.members.contains_key(n)));
    }

    /// Count by status.
    pub fn count(&self, status: MemberStatus) -> usize {
        self.members
            .values()
            .filter(|e| e.member.status == status)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: u64, inc: u64, status: MemberStatus) -> Member {
        Member {
            node: NodeId::from_index(i),
            info: Arc::new(NodeInfo::default()),
            incarnation: inc,
            status,
            proof: crate::core::crypto::Signature([0; 64]),
        }
    }

    #[test]
    fn suspicion_overrides_alive_at_the_same_incarnation_and_refutation_overrides_it() {
        let mut m = Membership::new();
        assert!(m.merge(member(1, 0, MemberStatus::Alive)).is_some());
        assert!(m.merge(member(1, 0, MemberStatus::Suspect)).is_some());
        assert!(m.merge(member(1, 0, MemberStatus::Alive)).is_none());
        assert!(m.merge(member(1, 1, MemberStatus::Alive)).is_some());
        assert_eq!(m.get(&NodeId::from_index(1)).unwrap().status, MemberStatus::Alive);
    }

    #[test]
    fn leave_is_final_for_its_incarnation() {
        let mut m = Membership::new();
        m.merge(member(1, 3, MemberStatus::Left));
        assert!(m.merge(member(1, 3, MemberStatus::Alive)).is_none());
        assert!(m.merge(member(1, 3, MemberStatus::Dead)).is_none());
        assert_eq!(m.get(&NodeId::from_index(1)).unwrap().status, MemberStatus::Left);
    }

    #[test]
    fn merge_order_does_not_change_the_view() {
        let recs = [
            member(1, 0, MemberStatus::Alive),
            member(1, 1, MemberStatus::Suspect),
            member(2, 0, MemberStatus::Dead),
            member(1, 1, MemberStatus::Alive),
        ];
        let mut a = Membership::new();
        let mut b = Membership::new();
        for r in recs.iter() {
            a.merge(r.clone());
        }
        for r in recs.iter().rev() {
            b.merge(r.clone());
        }
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.bucket_hashes(4), b.bucket_hashes(4));
    }

    #[test]
    fn digest_hash_is_the_hash_of_the_encoding() {
        let m = member(7, 3, MemberStatus::Suspect);
        let bytes = bincode::serde::encode_to_vec(&m, bincode::config::standard()).unwrap();
        assert_eq!(m.digest_hash(), xxhash_rust::xxh3::xxh3_64(&bytes));
    }

    #[test]
    fn bucket_hashes_fold_to_the_view_hash_and_locate_differences() {
        let mut a = Membership::new();
        let mut b = Membership::new();
        for i in 0..40 {
            a.merge(member(i, 0, MemberStatus::Alive));
            b.merge(member(i, 0, MemberStatus::Alive));
        }
        assert_eq!(a.bucket_hashes(1), vec![a.hash()]);
        b.merge(member(5, 0, MemberStatus::Suspect));
        let n = member_bucket_count(b.len());
        let (ha, hb) = (a.bucket_hashes(n), b.bucket_hashes(n));
        let differing: Vec<bool> = ha.iter().zip(&hb).map(|(x, y)| x != y).collect();
        assert_eq!(differing.iter().filter(|d| **d).count(), 1);
        let sent = b.in_buckets(n, &differing);
        assert!(sent.len() < 40 && sent.iter().any(|m| m.node == NodeId::from_index(5)));
        for m in sent {
            a.merge(m);
        }
        assert_eq!(a.hash(), b.hash());
    }
}
