//! Gray (canary) rollout of config values, without a server.
//!
//! A canary for a config key is its own replicated register
//! ([`StateKey::Canary`](super::StateKey::Canary)) holding a
//! [`CanarySpec`]: the candidate value and the [`CanaryTarget`] of nodes that
//! should read it. It merges, syncs and converges like every other register.
//! Each node decides locally and deterministically whether the target
//! matches it (its own tags, and a hash of its own node id for percentages),
//! so every node agrees on who is in the canary without asking anyone.
//! Promoting writes the candidate as the key's stable value and deletes the
//! canary; aborting deletes the canary.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ids::NodeId;

/// Most tags a canary selector may name.
pub const MAX_SELECTOR_TAGS: usize = 16;
/// Longest tag name or value in a selector, in bytes.
pub const MAX_SELECTOR_FIELD_LEN: usize = 128;

/// Which nodes read a canary value: every node whose tags include all of
/// `tags` and, when `percent` is set, whose id falls in the first `percent`
/// of the id-hash space. Both conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CanaryTarget {
    /// Tags a node must carry, with these exact values.
    pub tags: BTreeMap<String, String>,
    /// Share of nodes (1..=100), chosen by a stable hash of the node id.
    pub percent: Option<u8>,
}

impl CanaryTarget {
    /// Check the target selects something and is within limits.
    pub fn validate(&self) -> Result<(), String> {
        if self.tags.is_empty() && self.percent.is_none() {
            return Err("a canary target needs a tag selector, a percentage, or both".into());
        }
        if let Some(p) = self.percent {
            if !(1..=100).contains(&p) {
                return Err(format!("canary percent must be 1..=100, got {p}"));
            }
        }
        if self.tags.len() > MAX_SELECTOR_TAGS {
            return Err(format!(
                "a canary selector names at most {MAX_SELECTOR_TAGS} tags"
            ));
        }
        let too_long = self.tags.iter().any(|(k, v)| {
            k.is_empty() || k.len() > MAX_SELECTOR_FIELD_LEN || v.len() > MAX_SELECTOR_FIELD_LEN
        });
        if too_long {
            return Err(format!(
                "canary selector tags must be non-empty names of at most {MAX_SELECTOR_FIELD_LEN} bytes"
            ));
        }
        Ok(())
    }

    /// Whether a node with this id and these tags reads the canary.
    pub fn matches(&self, node: &NodeId, tags: &BTreeMap<String, String>) -> bool {
        let tags_ok = self.tags.iter().all(|(k, v)| tags.get(k) == Some(v));
        let percent_ok = self.percent.is_none_or(|p| cohort_bucket(node) < u64::from(p));
        tags_ok && percent_ok
    }

    /// Parse a selector such as `role=gateway,region=eu` (empty for none).
    pub fn parse_selector(text: &str) -> Result<BTreeMap<String, String>, String> {
        let mut tags = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("selector entry {part:?} is not name=value"))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(format!("selector entry {part:?} has an empty name"));
            }
            if tags.insert(k.to_string(), v.to_string()).is_some() {
                return Err(format!("selector names tag {k:?} twice"));
            }
        }
        Ok(tags)
    }

    /// Approximate encoded size in bytes.
    pub fn approx_size(&self) -> usize {
        4 + self
            .tags
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>()
    }
}

impl std::fmt::Display for CanaryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sel: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        match (sel.is_empty(), self.percent) {
            (false, Some(p)) => write!(f, "{} and {p}% of nodes", sel.join(",")),
            (false, None) => write!(f, "{}", sel.join(",")),
            (true, Some(p)) => write!(f, "{p}% of nodes"),
            (true, None) => write!(f, "no nodes"),
        }
    }
}

/// The bucket (0..100) a node falls in for percentage targets. It depends
/// on the node id only, so a node is in the same cohort for every key: a
/// 10% canary always reaches the same tenth of the cluster, and growing the
/// percentage only adds nodes.
pub fn cohort_bucket(node: &NodeId) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(node.as_bytes(), 0x5354_524c_4341_4e59) % 100
}

/// A canary: the candidate value and who reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanarySpec {
    /// The candidate value.
    pub value: Vec<u8>,
    /// Which nodes read it.
    pub target: CanaryTarget,
}

impl CanarySpec {
    /// Approximate encoded size in bytes.
    pub fn approx_size(&self) -> usize {
        self.value.len() + 8 + self.target.approx_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_parses_and_rejects_junk() {
        let t = CanaryTarget::parse_selector("role=gateway, region=eu").unwrap();
        assert_eq!(t.get("role").map(String::as_str), Some("gateway"));
        assert_eq!(t.get("region").map(String::as_str), Some("eu"));
        assert!(CanaryTarget::parse_selector("").unwrap().is_empty());
        assert!(CanaryTarget::parse_selector("role").is_err());
        assert!(CanaryTarget::parse_selector("=x").is_err());
        assert!(CanaryTarget::parse_selector("a=1,a=2").is_err());
    }

    #[test]
    fn tags_must_all_match() {
        let target = CanaryTarget {
            tags: CanaryTarget::parse_selector("role=gateway,region=eu").unwrap(),
            percent: None,
        };
        let node = NodeId::from_index(1);
        let mut tags = CanaryTarget::parse_selector("role=gateway").unwrap();
        assert!(!target.matches(&node, &tags));
        tags.insert("region".into(), "eu".into());
        assert!(target.matches(&node, &tags));
        tags.insert("region".into(), "us".into());
        assert!(!target.matches(&node, &tags));
    }

    #[test]
    fn percentage_picks_about_that_share_and_grows_monotonically() {
        let nodes: Vec<NodeId> = (0..2000).map(NodeId::from_index).collect();
        let none = BTreeMap::new();
        let picked = |p: u8| -> Vec<bool> {
            let t = CanaryTarget {
                tags: BTreeMap::new(),
                percent: Some(p),
            };
            nodes.iter().map(|n| t.matches(n, &none)).collect()
        };
        let ten = picked(10);
        let thirty = picked(30);
        let share = ten.iter().filter(|b| **b).count();
        assert!((140..=260).contains(&share), "10% of 2000 picked {share}");
        assert!(
            ten.iter().zip(&thirty).all(|(a, b)| !*a || *b),
            "growing the share drops nobody"
        );
        assert!(picked(100).iter().all(|b| *b));
    }

    #[test]
    fn validation() {
        assert!(CanaryTarget::default().validate().is_err());
        let pct = |p| CanaryTarget {
            tags: BTreeMap::new(),
            percent: Some(p),
        };
        assert!(pct(0).validate().is_err());
        assert!(pct(101).validate().is_err());
        assert!(pct(5).validate().is_ok());
        assert_eq!(pct(5).to_string(), "5% of nodes");
    }
}
