//! The service registry: instances, their health, and how reads derive it.
//!
//! An instance is a register in the replicated state keyed by
//! `(namespace, service, instance_id)`. Only its owner writes it: the owner
//! registers it, judges its TTL with its own clock and writes a health change
//! when the TTL lapses or a heartbeat brings it back. Every other node derives
//! one more rule at read time: an instance whose owner is dead or has left is
//! reported critical, without anyone writing that.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ids::NodeId;

/// Health of a service instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HealthStatus {
    /// Serving.
    Passing,
    /// Serving, degraded.
    Warning,
    /// Not serving: TTL lapsed, owner gone, or reported so.
    Critical,
}

impl HealthStatus {
    /// Lower-case name, as in the HTTP API.
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthStatus::Passing => "passing",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
        }
    }

    /// Parse the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "passing" => Some(HealthStatus::Passing),
            "warning" => Some(HealthStatus::Warning),
            "critical" => Some(HealthStatus::Critical),
            _ => None,
        }
    }

    /// Whether traffic should go to it.
    pub fn is_healthy(&self) -> bool {
        !matches!(self, HealthStatus::Critical)
    }
}

/// What a client supplies to register an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Host name or IP the instance serves on.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Tags for filtering.
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// Free-form string metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Routing weight 0–100 (for weighted / gray routing).
    #[serde(default = "default_weight")]
    pub weight: u8,
    /// If set, the instance turns critical when the owner has not had a
    /// heartbeat for this long.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

fn default_weight() -> u8 {
    100
}

/// Longest address, tag, metadata key or value, in bytes.
pub const MAX_SERVICE_FIELD_LEN: usize = 256;
/// Most tags or metadata entries on one instance.
pub const MAX_SERVICE_ENTRIES: usize = 64;

impl ServiceSpec {
    /// Check limits: weight ≤ 100, field lengths, entry counts, TTL ≥ 100 ms.
    pub fn validate(&self) -> Result<(), String> {
        if self.weight > 100 {
            return Err(format!("weight must be 0..=100, got {}", self.weight));
        }
        if self.address.is_empty() || self.address.len() > MAX_SERVICE_FIELD_LEN {
            return Err("address must be 1..=256 bytes".into());
        }
        if self.tags.len() > MAX_SERVICE_ENTRIES || self.metadata.len() > MAX_SERVICE_ENTRIES {
            return Err(format!(
                "at most {MAX_SERVICE_ENTRIES} tags and {MAX_SERVICE_ENTRIES} metadata entries"
            ));
        }
        let long = self
            .tags
            .iter()
            .chain(self.metadata.keys())
            .chain(self.metadata.values());
        if long.into_iter().any(|s| s.len() > MAX_SERVICE_FIELD_LEN) {
            return Err("tags and metadata entries must be at most 256 bytes".into());
        }
        if let Some(ttl) = self.ttl_ms {
            if ttl < 100 {
                return Err(format!("ttl_ms must be at least 100, got {ttl}"));
            }
        }
        Ok(())
    }
}

/// A registered instance as replicated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// What the client registered.
    pub spec: ServiceSpec,
    /// The node that registered it and alone writes it.
    pub owner: NodeId,
    /// Health as last written by the owner.
    pub health: HealthStatus,
}

impl ServiceInstance {
    /// Approximate encoded size.
    pub fn approx_size(&self) -> usize {
        let s = &self.spec;
        48 + s.address.len()
            + s.tags.iter().map(|t| t.len() + 2).sum::<usize>()
            + s.metadata
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
    }
}

/// Which instances a query wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceQuery {
    /// Only instances carrying all of these tags.
    pub tags: BTreeSet<String>,
    /// Only instances whose effective health is not critical.
    pub healthy_only: bool,
}
