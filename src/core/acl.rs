//! Per-namespace writer rules (the *writer ACL*): which node ids may
//! write which namespaces, enforced by every node on every merge.
//!
//! A rule is an ordinary config key of the reserved namespace
//! [`ACL_NAMESPACE`], named after the namespace it governs, and is
//! replicated, versioned and watched like any other key. Only the *admins*
//! named in every node's config (`protocol.acl_admins`) may write it: a
//! version of it from any other origin is refused on merge. A namespace
//! without a rule is open to every member.
//!
//! A rule names writers by node id, each either without bound or up to a
//! sequence number of its own: a writer's version `(node, seq)` in the
//! namespace is accepted when `seq` is at most its bound. Bounds are what
//! make a rule judge every version the same way on every node, whenever the
//! rule reaches it: when an admin takes a writer out, the writer stays
//! listed up to the highest sequence number the admin has seen it sign, so
//! what it wrote before stays and what it writes after is refused
//! everywhere — also where the write arrived before the rule did (it is
//! then purged, see [`crate::core::ReplicatedState::purge`]). Members that
//! had written before the namespace got its first rule are kept up to their
//! marks the same way.
//!
//! The stored value is plain text, one writer per line:
//!
//! ```text
//! writer 12D3KooWLk5B...
//! writer 12D3KooWQpY2... until 57
//! ```
//!
//! Two admins writing one rule at once leave two siblings; a version is
//! then accepted only if every sibling accepts it (the stricter rule wins
//! until an admin writes the rule again).

use std::collections::{BTreeMap, BTreeSet};

use crate::core::dots::Dot;
use crate::core::ids::{Namespace, NodeId, StateKey};

/// The reserved namespace holding the writer rules, one key per governed
/// namespace.
pub const ACL_NAMESPACE: &str = "starling.acl";

/// The reserved namespace as a [`Namespace`].
pub fn acl_namespace() -> Namespace {
    Namespace::new(ACL_NAMESPACE).expect("the ACL namespace name is valid")
}

/// The writers of one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterRule {
    /// Each writer and the highest sequence number of its own accepted in
    /// the namespace (`None`: no bound).
    pub writers: BTreeMap<NodeId, Option<u64>>,
}

impl WriterRule {
    /// Whether the version with dot `dot` may be in the namespace.
    pub fn permits(&self, dot: &Dot) -> bool {
        match self.writers.get(&dot.node) {
            Some(None) => true,
            Some(Some(until)) => dot.seq <= *until,
            None => false,
        }
    }

    /// The stricter of two rules: a writer of both, with the lower bound.
    pub fn meet(&self, other: &WriterRule) -> WriterRule {
        let writers = self
            .writers
            .iter()
            .filter_map(|(node, a)| {
                let b = other.writers.get(node)?;
                Some((*node, lower(*a, *b)))
            })
            .collect();
        WriterRule { writers }
    }

    /// Parse the stored text. Blank lines and lines starting with `#` are
    /// skipped; anything else must be `writer <id>` or `writer <id> until
    /// <seq>`, with the id as a peer id (`12D3KooW...`) or 64 hex digits.
    pub fn parse(text: &str) -> Result<WriterRule, String> {
        let mut writers = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let bad = || {
                format!(
                    "line {}: expected `writer <node id> [until <seq>]`, got `{line}`",
                    n + 1
                )
            };
            let (id, until) = match words.as_slice() {
                ["writer", id] => (*id, None),
                ["writer", id, "until", seq] => (*id, Some(seq.parse::<u64>().map_err(|_| bad())?)),
                _ => return Err(bad()),
            };
            let node = NodeId::parse(id).ok_or_else(|| format!("line {}: `{id}` is not a node id", n + 1))?;
            let slot = writers.entry(node).or_insert(until);
            *slot = lower(*slot, until);
        }
        Ok(WriterRule { writers })
    }

    /// The stored text (writers in id order, ids in peer-id form).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (node, until) in &self.writers {
            match until {
                None => out.push_str(&format!("writer {}\n", node.peer_id_text())),
                Some(seq) => out.push_str(&format!("writer {} until {seq}\n", node.peer_id_text())),
            }
        }
        out
    }

    /// The rule an admin writes to make `listed` the writers of a
    /// namespace: each without bound; every other origin that may write
    /// now is kept up to its current mark (`mark(origin)`, the highest
    /// sequence number seen of it), so what it wrote stays and what it
    /// writes next is refused. `current` is the rule in force (`None`: the
    /// namespace is open, and every origin `mark` knows may write).
    pub fn replacing(
        current: Option<&WriterRule>,
        listed: &BTreeSet<NodeId>,
        origins: impl IntoIterator<Item = NodeId>,
        mark: impl Fn(&NodeId) -> u64,
    ) -> WriterRule {
        let mut writers: BTreeMap<NodeId, Option<u64>> = listed.iter().map(|n| (*n, None)).collect();
        let mut keep = |node: NodeId, until: u64| {
            if until > 0 && !listed.contains(&node) {
                writers.insert(node, Some(until));
            }
        };
        match current {
            Some(rule) => {
                for (node, until) in &rule.writers {
                    keep(*node, until.unwrap_or_else(|| mark(node)));
                }
            }
            None => {
                for node in origins {
                    keep(node, mark(&node));
                }
            }
        }
        WriterRule { writers }
    }
}

fn lower(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => Some(a.min(b)),
    }
}

/// The writer rules in force on a node, derived from the state of
/// [`ACL_NAMESPACE`] and the configured admins.
#[derive(Clone, Debug, Default)]
pub(crate) struct Acl {
    /// Who may write the rules.
    pub(crate) admins: BTreeSet<NodeId>,
    /// The rule of each governed namespace.
    pub(crate) rules: BTreeMap<Namespace, WriterRule>,
}

impl Acl {
    /// Whether a version with dot `dot` of `key` may be held.
    pub(crate) fn permits(&self, key: &StateKey, dot: &Dot) -> bool {
        let ns = key.namespace();
        if ns.as_str() == ACL_NAMESPACE {
            return self.admins.contains(&dot.node);
        }
        self.rules.get(ns).is_none_or(|r| r.permits(dot))
    }

    /// Whether `node` may write `ns` now, as its next write would be
    /// judged (`next_seq` its next sequence number).
    pub(crate) fn may_write(&self, ns: &Namespace, node: NodeId, next_seq: u64) -> bool {
        self.permits(
            &StateKey::Kv {
                namespace: ns.clone(),
                key: crate::core::ids::Key::new("x").expect("valid key"),
            },
            &Dot { node, seq: next_seq },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u64) -> NodeId {
        NodeId::from_index(i)
    }

    #[test]
    fn a_rule_reads_back_what_it_wrote_and_judges_by_bound() {
        let mut rule = WriterRule::default();
        rule.writers.insert(id(1), None);
        rule.writers.insert(id(2), Some(7));
        let back = WriterRule::parse(&rule.to_text()).unwrap();
        assert_eq!(back, rule);
        assert!(back.permits(&Dot {
            node: id(1),
            seq: u64::MAX
        }));
        assert!(back.permits(&Dot { node: id(2), seq: 7 }));
        assert!(!back.permits(&Dot { node: id(2), seq: 8 }));
        assert!(!back.permits(&Dot { node: id(3), seq: 1 }));
    }

    #[test]
    fn a_malformed_rule_names_its_line() {
        let err = WriterRule::parse("# ok\nwriter nobody\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let err = WriterRule::parse("reader 12\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn siblings_meet_in_the_stricter_rule() {
        let a = WriterRule {
            writers: [(id(1), None), (id(2), Some(9))].into(),
        };
        let b = WriterRule {
            writers: [(id(1), Some(4)), (id(3), None)].into(),
        };
        assert_eq!(a.meet(&b).writers, [(id(1), Some(4))].into());
    }

    #[test]
    fn replacing_keeps_others_up_to_their_marks_and_never_widens_a_bound() {
        let listed: BTreeSet<NodeId> = [id(1)].into();
        let marks = |n: &NodeId| if *n == id(2) { 5 } else { 0 };
        // First rule: origin 2 had written up to 5, origin 3 nothing.
        let first = WriterRule::replacing(None, &listed, [id(1), id(2), id(3)], marks);
        assert_eq!(first.writers, [(id(1), None), (id(2), Some(5))].into());
        // Writer 1 taken out later at mark 0: it wrote nothing, so it is gone.
        let second = WriterRule::replacing(Some(&first), &[id(3)].into(), [], |_| 0);
        assert_eq!(second.writers, [(id(2), Some(5)), (id(3), None)].into());
        // A bound already set stays even if the mark rose since.
        let third = WriterRule::replacing(Some(&second), &[id(3)].into(), [], |_| 100);
        assert_eq!(third.writers[&id(2)], Some(5));
    }

    #[test]
    fn only_admins_may_write_the_rules_and_an_open_namespace_takes_anyone() {
        let mut acl = Acl::default();
        acl.admins.insert(id(9));
        let rules = StateKey::Kv {
            namespace: acl_namespace(),
            key: crate::core::ids::Key::new("prod").unwrap(),
        };
        assert!(acl.permits(&rules, &Dot { node: id(9), seq: 1 }));
        assert!(!acl.permits(&rules, &Dot { node: id(1), seq: 1 }));
        let prod = Namespace::new("prod").unwrap();
        assert!(acl.may_write(&prod, id(1), 1));
        acl.rules.insert(prod.clone(), WriterRule::default());
        assert!(!acl.may_write(&prod, id(1), 1));
    }
}
