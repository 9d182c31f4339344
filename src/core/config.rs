//! Protocol configuration, validated once.

use serde::{Deserialize, Serialize};

/// Every tunable of the protocol core, with its limit. Build one with
/// `Config::default()`, change fields, then [`Config::validated`]; the
/// [`Engine`](super::Engine) only accepts validated configs.
///
/// The same struct is the `[protocol]` section of the node's TOML file and of
/// simulation scenarios, so both are parsed by this one definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Cluster name; nodes only merge state from their own cluster.
    pub cluster: String,
    /// Base heartbeat interval: the unit of the liveness timers (failure
    /// checks, declaration spread) and the heartbeat period of a cluster
    /// no larger than `heartbeat_fanin`.
    pub heartbeat_interval_ms: u64,
    /// Each node aims to receive about this many gossiped heartbeats per
    /// base interval from the whole cluster: with more alive members, each
    /// node's interval grows in proportion, so idle traffic per node stays
    /// flat as the cluster grows. Failures are found first-hand by a
    /// node's connected neighbours ([`crate::core::Input::PeerUnreachable`]);
    /// gossiped heartbeats carry digests and announcements and are the
    /// slow backstop of failure detection.
    pub heartbeat_fanin: u32,
    /// Phi above which a silent peer is suspected.
    pub phi_threshold: f64,
    /// How long a suspicion stands before the member is declared dead.
    pub suspect_timeout_ms: u64,
    /// Remote HLC stamps further ahead of local time than this are rejected.
    pub max_clock_drift_ms: u64,
    /// Largest config value.
    pub max_value_bytes: usize,
    /// Superseded versions kept per config key for rollback.
    pub history_limit: usize,
    /// Deleted keys are collected this long after their deletion.
    pub tombstone_ttl_ms: u64,
    /// After collection a deleted key keeps a small grave (the delete's dot
    /// and stamp) this long, so a write that lost to the delete and arrives
    /// late — from across a partition longer than `tombstone_ttl_ms` —
    /// stays lost. A node cut off for longer than this can bring such a
    /// write back.
    pub grave_ttl_ms: u64,
    /// How often tombstone collection runs.
    pub gc_interval_ms: u64,
    /// Anti-entropy with a random peer at least this often.
    pub sync_interval_ms: u64,
    /// At most one sync per peer per this interval (digest mismatches
    /// inside it are remembered and served when it ends).
    pub sync_min_interval_ms: u64,
    /// A sync request without an answer after this long has failed.
    pub sync_timeout_ms: u64,
    /// Syncs this node runs at once, at most.
    pub max_inflight_syncs: usize,
    /// Soft size bound of one sync response or push.
    pub sync_budget_bytes: usize,
    /// Largest message accepted from the network.
    pub max_message_bytes: usize,
    /// Watch events kept for resuming watchers.
    pub watch_log_capacity: usize,
    /// Most live versions (concurrent siblings) one key holds. At the
    /// bound the key keeps the first ones in its order (highest rank; a
    /// service instance's registrations before tombstones) and refuses
    /// the rest without recording them as seen, so they come back once a
    /// write supersedes the siblings. Set it alike on every node: nodes
    /// with different bounds keep different siblings of a key past the
    /// smaller one.
    pub max_siblings: usize,
    /// Most members (any status, this node included) the membership view
    /// holds. A record for an unknown identity past it is refused and
    /// counted (`member_limit`); known members are never evicted for it.
    /// Set it above the largest cluster expected, with room for the dead
    /// and departed members the view keeps.
    pub max_members: usize,
    /// How long a member held dead or departed stays in the view before
    /// this node drops its record (*reaps* it), like Serf's
    /// `reconnect_timeout` / `tombstone_timeout`. A reaped identity's old
    /// record is ignored for as long again; it is back as soon as it
    /// raises its incarnation (a restart or a refutation). Without
    /// reaping, a cluster whose nodes come back under new identities fills
    /// `max_members`.
    pub member_reap_ms: u64,
    /// Node ids (`12D3KooW...` peer ids, or 64 hex digits) that may write
    /// the per-namespace writer rules (the reserved namespace
    /// `starling.acl`, see docs/SECURITY.md "Writer rules"). A rule
    /// version from any other origin is refused on merge. Empty: nobody
    /// can write rules, and every namespace is open to every member. Set
    /// it alike on every node.
    pub acl_admins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster: "default".into(),
            heartbeat_interval_ms: 1_000,
            heartbeat_fanin: 1,
            phi_threshold: 8.0,
            suspect_timeout_ms: 2_000,
            max_clock_drift_ms: 60_000,
            max_value_bytes: 1 << 20,
            history_limit: 16,
            tombstone_ttl_ms: 24 * 3600 * 1000,
            grave_ttl_ms: 30 * 24 * 3600 * 1000,
            gc_interval_ms: 60_000,
            sync_interval_ms: 15_000,
            sync_min_interval_ms: 1_000,
            sync_timeout_ms: 10_000,
            max_inflight_syncs: 4,
            sync_budget_bytes: 8 << 20,
            max_message_bytes: 32 << 20,
            watch_log_capacity: 10_000,
            max_siblings: 64,
            max_members: 4_096,
            member_reap_ms: 24 * 3600 * 1000,
            acl_admins: Vec::new(),
        }
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config field `{field}`: {reason}")]
pub struct ConfigError {
    /// The field's name, as in TOML.
    pub field: &'static str,
    /// What is allowed.
    pub reason: String,
}

fn check(ok: bool, field: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            field,
            reason: reason.into(),
        })
    }
}

impl Config {
    /// Check every field; returns the config unchanged if all are in range.
    pub fn validated(self) -> Result<Config, ConfigError> {
        let c = &self;
        check(
            !c.cluster.is_empty()
                && c.cluster.len() <= 64
                && c.cluster
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)),
            "cluster",
            "1..=64 ASCII letters, digits, - _ .",
        )?;
        check(
            (10..=600_000).contains(&c.heartbeat_interval_ms),
            "heartbeat_interval_ms",
            "10..=600000",
        )?;
        check(c.heartbeat_fanin >= 1, "heartbeat_fanin", "at least 1")?;
        check(
            c.phi_threshold.is_finite() && (1.0..=100.0).contains(&c.phi_threshold),
            "phi_threshold",
            "1.0..=100.0",
        )?;
        check(
            c.suspect_timeout_ms >= c.heartbeat_interval_ms,
            "suspect_timeout_ms",
            "at least heartbeat_interval_ms",
        )?;
        check(
            c.max_clock_drift_ms >= 1_000,
            "max_clock_drift_ms",
            "at least 1000",
        )?;
        check(
            (1..=64 << 20).contains(&c.max_value_bytes),
            "max_value_bytes",
            "1..=67108864",
        )?;
        check(c.history_limit <= 1024, "history_limit", "0..=1024")?;
        check(c.tombstone_ttl_ms >= 1_000, "tombstone_ttl_ms", "at least 1000")?;
        check(
            c.grave_ttl_ms >= c.tombstone_ttl_ms,
            "grave_ttl_ms",
            "at least tombstone_ttl_ms",
        )?;
        check(c.gc_interval_ms >= 100, "gc_interval_ms", "at least 100")?;
        check(c.sync_interval_ms >= 100, "sync_interval_ms", "at least 100")?;
        check(c.sync_timeout_ms >= 100, "sync_timeout_ms", "at least 100")?;
        check(c.max_inflight_syncs >= 1, "max_inflight_syncs", "at least 1")?;
        check(
            c.max_message_bytes >= c.max_value_bytes * 2 + 65_536,
            "max_message_bytes",
            "at least 2 * max_value_bytes + 64 KiB",
        )?;
        check(
            c.sync_budget_bytes >= 1024 && c.sync_budget_bytes <= c.max_message_bytes / 2,
            "sync_budget_bytes",
            "1024..=max_message_bytes/2",
        )?;
        check(c.watch_log_capacity >= 1, "watch_log_capacity", "at least 1")?;
        check((1..=1024).contains(&c.max_siblings), "max_siblings", "1..=1024")?;
        check(
            (2..=1 << 20).contains(&c.max_members),
            "max_members",
            "2..=1048576",
        )?;
        check(
            c.member_reap_ms >= c.suspect_timeout_ms.saturating_mul(2).max(1_000),
            "member_reap_ms",
            "at least 2 * suspect_timeout_ms (and 1 s)",
        )?;
        if let Some(bad) = c
            .acl_admins
            .iter()
            .find(|a| crate::core::ids::NodeId::parse(a).is_none())
        {
            return Err(ConfigError {
                field: "acl_admins",
                reason: format!("`{bad}` is not a node id (a peer id 12D3KooW... or 64 hex digits)"),
            });
        }
        Ok(self)
    }

    /// The admins of the writer rules, parsed (see
    /// [`Config::acl_admins`]; call on a validated config).
    pub fn admins(&self) -> std::collections::BTreeSet<crate::core::ids::NodeId> {
        self.acl_admins
            .iter()
            .filter_map(|a| crate::core::ids::NodeId::parse(a))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().validated().is_ok());
    }

    #[test]
    fn out_of_range_fields_are_named_in_the_error() {
        let c = Config {
            phi_threshold: 0.0,
            ..Config::default()
        };
        assert_eq!(c.validated().unwrap_err().field, "phi_threshold");
        let c = Config {
            cluster: "a b".into(),
            ..Config::default()
        };
        assert_eq!(c.validated().unwrap_err().field, "cluster");
    }
}
