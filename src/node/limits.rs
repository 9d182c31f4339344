//! The `[limits]` table of the node config: bounds on what peers and HTTP
//! clients can make a node hold or do. Each refusal is counted in
//! `starling_limit_exceeded_total{limit}` (docs/SECURITY.md, "Limits").

use serde::{Deserialize, Serialize};

use super::config::NodeConfigError;

/// Network and HTTP limits. Every field has a default sized for clusters
/// of up to a few hundred nodes. Read at start (restart to change).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Limits {
    /// Largest heartbeat accepted from gossip, bytes (the envelope, the
    /// sender's record with its name, tags and addresses, and its
    /// signature). A larger one is rejected before the engine sees it and
    /// its sender penalised in gossipsub's peer score. The node's own
    /// name and tags must fit in half of it.
    pub heartbeat_max_bytes: usize,
    /// How many members this node chooses to keep a connection to (its
    /// partial view): it dials them, keeps those links, and chooses
    /// another when one fails. Others connect to it too (their chosen
    /// links are kept), and above three times this many connected peers
    /// it closes the youngest idle inbound links it did not choose. Connections
    /// opened for a sync, a lookup or a bootstrap dial close after 5 s
    /// without requests. Gossip travels over the links, and the peers at
    /// their other ends are the ones that notice first-hand when this node
    /// fails (docs/DESIGN.md, "Liveness from neighbours").
    pub neighbours: u32,
    /// How often this node probes one of its connected peers, milliseconds
    /// (docs/DESIGN.md, "Liveness from neighbours"): a hung peer is
    /// noticed about half of this plus `probe_timeout_ms` after it stops;
    /// each probe costs about 230 bytes on the wire (counted from the
    /// header sizes, not captured).
    pub probe_interval_ms: u64,
    /// A probe unanswered for this long makes the peer unreachable (it is
    /// suspected at once), milliseconds. Raise it for links with round
    /// trips near it (across sites) or hosts starved of CPU; with 500 ms
    /// (memberlist's LAN default, which memberlist confirms through other
    /// members before it suspects) two of nine benchmark runs on a host
    /// saturated by other work counted false suspicions.
    pub probe_timeout_ms: u64,
    /// Most established inbound connections.
    pub connections_max_incoming: u32,
    /// Most inbound connections still in their handshake.
    pub connections_max_pending_incoming: u32,
    /// Most established connections with one peer.
    pub connections_max_per_peer: u32,
    /// Anti-entropy requests (pulls and pushes) a peer may send per
    /// second, sustained; over it a request is refused (the stream is
    /// closed, so the requester fails at once instead of timing out).
    pub sync_requests_per_sec: u32,
    /// Anti-entropy requests a peer may send in a burst.
    pub sync_requests_burst: u32,
    /// Longest time an HTTP request may take before it is answered 503
    /// (watch streams and blocking queries excepted: they have their own
    /// bound, the blocking-query `wait`), milliseconds.
    pub http_request_timeout_ms: u64,
    /// Most open HTTP watch streams and blocking queries at once; past it
    /// a new one gets 503.
    pub http_max_watchers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            heartbeat_max_bytes: 16 << 10,
            neighbours: 3,
            probe_interval_ms: 1_000,
            probe_timeout_ms: 1_000,
            connections_max_incoming: 1024,
            connections_max_pending_incoming: 256,
            connections_max_per_peer: 4,
            sync_requests_per_sec: 5,
            sync_requests_burst: 10,
            http_request_timeout_ms: 30_000,
            http_max_watchers: 1024,
        }
    }
}

impl Limits {
    /// Check the ranges, and that a heartbeat carrying `name` and `tags`
    /// (the node's own) fits under [`Limits::heartbeat_max_bytes`] with
    /// room for its addresses.
    pub(crate) fn validate<'a>(
        &self,
        name: &str,
        tags: impl Iterator<Item = (&'a String, &'a String)>,
    ) -> Result<(), NodeConfigError> {
        let field = |f: &str, r: String| NodeConfigError::Field {
            field: format!("limits.{f}"),
            reason: r,
        };
        if !(1024..=1 << 20).contains(&self.heartbeat_max_bytes) {
            return Err(field("heartbeat_max_bytes", "1024..=1048576".into()));
        }
        for (f, v) in [
            ("neighbours", self.neighbours),
            ("connections_max_incoming", self.connections_max_incoming),
            (
                "connections_max_pending_incoming",
                self.connections_max_pending_incoming,
            ),
            ("connections_max_per_peer", self.connections_max_per_peer),
            ("sync_requests_per_sec", self.sync_requests_per_sec),
        ] {
            if v == 0 {
                return Err(field(f, "at least 1".into()));
            }
        }
        // A sync is a pull and a push: a burst below 2 refuses every push.
        if self.sync_requests_burst < 2 {
            return Err(field("sync_requests_burst", "at least 2".into()));
        }
        if !(100..=60_000).contains(&self.probe_interval_ms) {
            return Err(field("probe_interval_ms", "100..=60000".into()));
        }
        if !(50..=60_000).contains(&self.probe_timeout_ms) {
            return Err(field("probe_timeout_ms", "50..=60000".into()));
        }
        if self.http_request_timeout_ms < 100 {
            return Err(field("http_request_timeout_ms", "at least 100".into()));
        }
        if self.http_max_watchers == 0 {
            return Err(field("http_max_watchers", "at least 1".into()));
        }
        let own: usize = name.len() + tags.map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if own > self.heartbeat_max_bytes / 2 {
            return Err(NodeConfigError::Field {
                field: "tags".into(),
                reason: format!(
                    "the node's name and tags take {own} bytes; every heartbeat carries them and \
                     is limited to limits.heartbeat_max_bytes ({}), so they must fit in half of \
                     it: shorten them or raise the limit on every node",
                    self.heartbeat_max_bytes
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn check(l: &Limits, tags: &BTreeMap<String, String>) -> Result<(), String> {
        l.validate("node", tags.iter()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_zeros_are_refused_by_name() {
        let none = BTreeMap::new();
        check(&Limits::default(), &none).unwrap();
        let l = Limits {
            connections_max_per_peer: 0,
            ..Limits::default()
        };
        assert!(check(&l, &none)
            .unwrap_err()
            .contains("limits.connections_max_per_peer"));
        let l = Limits {
            sync_requests_burst: 1,
            ..Limits::default()
        };
        assert!(check(&l, &none)
            .unwrap_err()
            .contains("limits.sync_requests_burst"));
        for (l, name) in [
            (
                Limits {
                    probe_interval_ms: 0,
                    ..Limits::default()
                },
                "limits.probe_interval_ms",
            ),
            (
                Limits {
                    probe_timeout_ms: 10,
                    ..Limits::default()
                },
                "limits.probe_timeout_ms",
            ),
        ] {
            assert!(check(&l, &none).unwrap_err().contains(name), "{name}");
        }
    }

    #[test]
    fn tags_that_would_not_fit_in_a_heartbeat_are_refused() {
        let l = Limits::default();
        let mut tags = BTreeMap::new();
        for i in 0..40 {
            tags.insert(format!("tag{i:02}"), "v".repeat(200));
        }
        let err = check(&l, &tags).unwrap_err();
        assert!(
            err.contains("`tags`") && err.contains("heartbeat_max_bytes"),
            "{err}"
        );
        let bigger = Limits {
            heartbeat_max_bytes: 64 << 10,
            ..l
        };
        check(&bigger, &tags).unwrap();
    }
}
