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

use serde::{Deserialize, Serialize};

use super::ids::NodeId;

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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Human-readable name.
    pub name: String,
    /// Addresses peers can dial (multiaddrs in the libp2p node).
    pub addrs: Vec<String>,
    /// Free-form tags: role, region, env...
    pub tags: BTreeMap<String, String>,
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its id.
    pub node: NodeId,
    /// Its self-description (as of `incarnation`).
    pub info: NodeInfo,
    /// Raised only by the node itself: to refute suspicion or change info.
    pub incarnation: u64,
    /// Status at that incarnation.
    pub status: MemberStatus,
}

impl Member {
    fn precedence(&self) -> (u64, MemberStatus) {
        (self.incarnation, self.status)
    }

    /// Stable hash for the membership digest.
    pub fn digest_hash(&self) -> u64 {
        let bytes = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("encoding a Member into memory cannot fail");
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    /// Whether `other` should replace `self`.
    pub fn is_superseded_by(&self, other: &Member) -> bool {
        match other.precedence().cmp(&self.precedence()) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            // Same incarnation and status but different info can only come
            // from a confused or lying peer; pick deterministically.
            std::cmp::Ordering::Equal => other.digest_hash() > self.digest_hash(),
        }
    }
}

/// The membership view: a join-semilattice of member records.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    members: BTreeMap<NodeId, Member>,
    hash: u64,
    dirty: BTreeSet<NodeId>,
}

impl Membership {
    /// An empty view.
    pub fn new() -> Self {
        Membership::default()
    }

    /// Merge a record; returns the previous record if it changed anything.
    pub fn merge(&mut self, m: Member) -> Option<Option<Member>> {
        match self.members.get(&m.node) {
            Some(cur) if !cur.is_superseded_by(&m) => None,
            _ => {
                self.hash ^= m.digest_hash();
                let prev = self.members.insert(m.node, m.clone());
                if let Some(p) = &prev {
                    self.hash ^= p.digest_hash();
                }
                self.dirty.insert(m.node);
                Some(prev)
            }
        }
    }

    /// A member's record.
    pub fn get(&self, node: &NodeId) -> Option<&Member> {
        self.members.get(node)
    }

    /// Every member, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
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

    /// Ids changed since the last call.
    pub fn take_dirty(&mut self) -> BTreeSet<NodeId> {
        std::mem::take(&mut self.dirty)
    }

    /// Count by status.
    pub fn count(&self, status: MemberStatus) -> usize {
        self.members.values().filter(|m| m.status == status).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: u64, inc: u64, status: MemberStatus) -> Member {
        Member {
            node: NodeId::from_index(i),
            info: NodeInfo::default(),
            incarnation: inc,
            status,
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
    }
}
