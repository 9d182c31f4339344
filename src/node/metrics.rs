//! What a node measures for `GET /metrics` (rendered by `crate::http`).
//!
//! Two kinds of figures:
//! - latency histograms ([`NodeMetrics`]), observed on the driver task where
//!   the events happen ([`LatencyProbe`]) and shared with the HTTP layer
//!   through the [`NodeHandle`](super::NodeHandle)'s `Arc`, and the
//!   admission counters next to them (cluster key mismatches, counted by
//!   the transport; denied peers' connections, counted by the driver);
//! - a [`MetricsSnapshot`] of the engine's counters and of the state,
//!   read on the node's task when a scrape asks for it, like every other
//!   read.

use std::collections::HashMap;
use std::sync::Arc;

use libp2p::request_response::OutboundRequestId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::time::Instant;

use crate::core::wire::{self, Message, MessageKind};
use crate::core::{Counters, Engine, HealthStatus, MemberStatus, NodeId, StateKey};
use crate::net::display_id;

use super::clock::wall_ms;
use super::types::DriverView;

/// Most anti-entropy pulls timed at once; past it new ones go untimed.
const MAX_TIMED_PULLS: usize = 4096;

/// Characters of a peer id shown in the `peer` label (its tail: every
/// ed25519 peer id starts with the same `12D3KooW`).
const PEER_LABEL_CHARS: usize = 8;

/// Latency histograms, observed by the driver task, and admission
/// counters.
#[derive(Debug)]
pub(crate) struct NodeMetrics {
    /// Receipt time minus the sender's HLC stamp, per accepted heartbeat.
    pub heartbeat_delay: Histogram,
    /// Time between two accepted heartbeats from the same peer.
    pub heartbeat_interval: Histogram,
    /// From sending a `SyncRequest` to receiving its response.
    pub sync_latency: Histogram,
    /// From sending a liveness probe to its answer (`node::probe`).
    pub probe_rtt: Histogram,
    /// Connections that failed the cluster key check, both directions.
    pub key_mismatches: Counter,
    /// Bytes on TCP connections, by direction.
    pub wire: crate::net::WireCounters,
    /// Bytes on TCP connections' substreams, by protocol and direction.
    pub protocols: crate::net::ProtocolCounters,
    /// Connections of denied peers, by [`DeniedEvent`].
    pub denied_connections: Family<DeniedLabels, Counter>,
    /// The DNS server's counters (`crate::dns`).
    pub dns: crate::dns::metrics::DnsMetrics,
    /// Refusals by the limit that refused, by [`Limit`].
    pub limits: Family<LimitLabels, Counter>,
    /// Gossip messages by topic and validation result.
    pub gossip_validation: Family<ValidationLabels, Counter>,
    /// Publishes held for want of a subscribed peer (`node::held`) and
    /// sent once one subscribed.
    pub gossip_held_sent: Counter,
    /// Publishes held and dropped unsent (too old, or over the bounds).
    pub gossip_held_dropped: Counter,
    /// Connected peers whose gossipsub score is below the graylist
    /// threshold (their gossip is ignored).
    pub graylisted_peers: Gauge,
    /// `Store::sync` calls that made lazy member commits durable.
    pub store_syncs: Counter,
    /// `Store::sync` calls that failed (retried at the next one).
    pub store_sync_failures: Counter,
}

/// A limit that refused something (docs/SECURITY.md, "Limits").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// A heartbeat over `limits.heartbeat_max_bytes` (received, or our
    /// own not sent).
    HeartbeatSize,
    /// An anti-entropy frame whose length prefix is over
    /// `protocol.max_message_bytes`.
    SyncFrameSize,
    /// An incoming anti-entropy request over the peer's rate.
    SyncRate,
    /// A connection refused by the connection limits.
    Connections,
    /// A peer's gossipsub score fell below the graylist threshold.
    GossipGraylist,
    /// An HTTP request that ran past `limits.http_request_timeout_ms`.
    HttpTimeout,
    /// An HTTP request body over `http_max_body_bytes`.
    HttpBodySize,
    /// A watch or blocking query past `limits.http_max_watchers`.
    HttpWatchers,
}

impl Limit {
    const ALL: [Limit; 8] = [
        Limit::HeartbeatSize,
        Limit::SyncFrameSize,
        Limit::SyncRate,
        Limit::Connections,
        Limit::GossipGraylist,
        Limit::HttpTimeout,
        Limit::HttpBodySize,
        Limit::HttpWatchers,
    ];

    /// The `limit` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Limit::HeartbeatSize => "heartbeat_size",
            Limit::SyncFrameSize => "sync_frame_size",
            Limit::SyncRate => "sync_rate",
            Limit::Connections => "connections",
            Limit::GossipGraylist => "gossip_graylist",
            Limit::HttpTimeout => "http_timeout",
            Limit::HttpBodySize => "http_body_size",
            Limit::HttpWatchers => "http_watchers",
        }
    }
}

/// Labels of `starling_limit_exceeded_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimitLabels {
    /// [`Limit::as_str`].
    limit: &'static str,
}

/// What the driver told gossipsub about a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Validation {
    /// Taken: forwarded to other peers.
    Accept,
    /// Invalid (malformed, a bad signature, over a limit): not forwarded,
    /// and the peer that sent it is penalised.
    Reject,
    /// Not taken, through no provable fault of the sender (a denied peer,
    /// a clock judged too far ahead, a newer protocol): not forwarded, no
    /// penalty.
    Ignore,
}

impl Validation {
    const ALL: [Validation; 3] = [Validation::Accept, Validation::Reject, Validation::Ignore];

    fn as_str(self) -> &'static str {
        match self {
            Validation::Accept => "accept",
            Validation::Reject => "reject",
            Validation::Ignore => "ignore",
        }
    }
}

/// Labels of `starling_gossip_messages_validated_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ValidationLabels {
    /// `heartbeat` or `delta`.
    topic: &'static str,
    /// `accept`, `reject` or `ignore`.
    result: &'static str,
}

/// What happened to a connection of a peer in `deny_peers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeniedEvent {
    /// It connected to us and was refused.
    RefusedInbound,
    /// Something on this node dialled it and the dial was refused.
    RefusedOutbound,
    /// It was connected when the deny-list named it and was disconnected.
    Closed,
}

impl DeniedEvent {
    const ALL: [DeniedEvent; 3] = [
        DeniedEvent::RefusedInbound,
        DeniedEvent::RefusedOutbound,
        DeniedEvent::Closed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DeniedEvent::RefusedInbound => "refused_inbound",
            DeniedEvent::RefusedOutbound => "refused_outbound",
            DeniedEvent::Closed => "closed",
        }
    }
}

/// Labels of `starling_denied_connections_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeniedLabels {
    /// `refused_inbound`, `refused_outbound` or `closed`.
    event: &'static str,
}

impl NodeMetrics {
    pub(crate) fn new() -> Self {
        let m = NodeMetrics {
            // 1 ms .. 8.2 s (the delay has millisecond resolution).
            heartbeat_delay: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            // 50 ms .. 102 s.
            heartbeat_interval: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            // 1 ms .. 32.8 s.
            sync_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            // 0.1 ms .. 1.6 s (a probe times out after 1 s).
            probe_rtt: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            key_mismatches: Counter::default(),
            wire: crate::net::WireCounters::default(),
            protocols: crate::net::ProtocolCounters::default(),
            denied_connections: Family::default(),
            dns: crate::dns::metrics::DnsMetrics::new(),
            limits: Family::default(),
            gossip_validation: Family::default(),
            gossip_held_sent: Counter::default(),
            gossip_held_dropped: Counter::default(),
            graylisted_peers: Gauge::default(),
            store_syncs: Counter::default(),
            store_sync_failures: Counter::default(),
        };
        m.touch_denied();
        for l in Limit::ALL {
            let _ = m.limit_count(l);
        }
        for topic in ["heartbeat", "delta"] {
            for v in Validation::ALL {
                let _ = m.validated(topic, v);
            }
        }
        m
    }

    /// The counter of refusals by `limit` (a handle on the same series,
    /// for a layer that counts on its own, such as the sync codec).
    pub(crate) fn limit(&self, limit: Limit) -> Counter {
        self.limits
            .get_or_create(&LimitLabels {
                limit: limit.as_str(),
            })
            .clone()
    }

    /// Count one refusal by `limit`.
    pub(crate) fn exceeded(&self, limit: Limit) {
        self.limit(limit).inc();
    }

    /// How many refusals `limit` counted.
    pub(crate) fn limit_count(&self, limit: Limit) -> u64 {
        self.limit(limit).get()
    }

    /// The counter of gossip messages on `topic` given result `v`.
    pub(crate) fn validated(&self, topic: &'static str, v: Validation) -> Counter {
        self.gossip_validation
            .get_or_create(&ValidationLabels {
                topic,
                result: v.as_str(),
            })
            .clone()
    }

    /// Count one event of a denied peer's connection.
    pub(crate) fn denied(&self, event: DeniedEvent) {
        self.denied_connections
            .get_or_create(&DeniedLabels {
                event: event.as_str(),
            })
            .inc();
    }

    /// How many of `event` were counted.
    pub(crate) fn denied_count(&self, event: DeniedEvent) -> u64 {
        self.denied_connections
            .get_or_create(&DeniedLabels {
                event: event.as_str(),
            })
            .get()
    }

    /// Every series of `denied_connections`, zeros included (so a scrape
    /// shows them before the first event).
    fn touch_denied(&self) {
        for e in DeniedEvent::ALL {
            let _ = self.denied_count(e);
        }
    }
}

/// The driver's side of [`NodeMetrics`]: the start times it needs to turn
/// events into latencies.
pub(crate) struct LatencyProbe {
    metrics: Arc<NodeMetrics>,
    cluster_id: u64,
    max_message_bytes: usize,
    pulls: HashMap<OutboundRequestId, Instant>,
    last_heartbeat: HashMap<NodeId, Instant>,
}

impl LatencyProbe {
    pub(crate) fn new(metrics: Arc<NodeMetrics>, engine: &Engine) -> Self {
        LatencyProbe {
            metrics,
            cluster_id: wire::cluster_id(&engine.config().cluster),
            max_message_bytes: engine.config().max_message_bytes,
            pulls: HashMap::new(),
            last_heartbeat: HashMap::new(),
        }
    }

    /// The histograms this probe observes into.
    pub(crate) fn metrics(&self) -> Arc<NodeMetrics> {
        self.metrics.clone()
    }

    /// The same, borrowed (to count an admission event).
    pub(crate) fn metrics_ref(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// The sender's HLC wall time if `bytes` is a heartbeat of our cluster.
    /// (A second decode of a small message; the engine keeps no stamp.)
    pub(crate) fn heartbeat_stamp(&self, bytes: &[u8]) -> Option<u64> {
        if wire::peek_kind(bytes) != Some(MessageKind::Heartbeat) {
            return None;
        }
        match wire::decode(bytes, self.cluster_id, self.max_message_bytes) {
            Ok(Message::Heartbeat(hb)) => Some(hb.hlc.wall_ms),
            _ => None,
        }
    }

    /// The engine accepted a heartbeat from `from` stamped `stamp_ms`
    /// (sender's HLC) at `now_ms` (our clock).
    pub(crate) fn heartbeat_accepted(&mut self, from: NodeId, stamp_ms: u64, now_ms: u64) {
        let delay_ms = now_ms.saturating_sub(stamp_ms);
        self.metrics.heartbeat_delay.observe(delay_ms as f64 / 1000.0);
        let now = Instant::now();
        if let Some(last) = self.last_heartbeat.insert(from, now) {
            let gap = now.duration_since(last).as_secs_f64();
            self.metrics.heartbeat_interval.observe(gap);
        }
    }

    /// A request went out; it is timed if it is an anti-entropy pull.
    pub(crate) fn request_sent(&mut self, id: OutboundRequestId, kind: Option<MessageKind>) {
        if kind == Some(MessageKind::SyncRequest) && self.pulls.len() < MAX_TIMED_PULLS {
            self.pulls.insert(id, Instant::now());
        }
    }

    /// The answer to request `id` arrived.
    pub(crate) fn response_received(&mut self, id: &OutboundRequestId) {
        if let Some(sent) = self.pulls.remove(id) {
            self.metrics.sync_latency.observe(sent.elapsed().as_secs_f64());
        }
    }

    /// Request `id` failed or timed out: not a latency.
    pub(crate) fn request_failed(&mut self, id: &OutboundRequestId) {
        self.pulls.remove(id);
    }
}

/// How long ago this node last converged with one peer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PeerConvergence {
    /// The tail of the peer's id.
    pub peer: String,
    /// The peer's name.
    pub name: String,
    /// Seconds since the last sync or heartbeat that found equal state.
    pub age_seconds: f64,
}

/// Counters and state figures, read on the node's task at scrape time.
#[derive(Clone, Debug)]
pub(crate) struct MetricsSnapshot {
    /// The engine's counters.
    pub counters: Counters,
    /// Members by status (every status, zeros included).
    pub members: Vec<(&'static str, u64)>,
    /// Live (not deleted) config keys.
    pub keys: u64,
    /// Service instances by health as reads report it (zeros included).
    pub instances: Vec<(&'static str, u64)>,
    /// Peers (not left) this node has converged with since it started.
    pub convergence: Vec<PeerConvergence>,
    /// Connected libp2p peers.
    pub connected_peers: u64,
    /// Anti-entropy rounds in flight.
    pub inflight_syncs: u64,
    /// Open watch streams by kind (zeros included).
    pub watchers: Vec<(&'static str, u64)>,
}

impl MetricsSnapshot {
    /// Read the figures from the engine and the driver's facts.
    pub(crate) fn read(engine: &Engine, view: &DriverView) -> Self {
        let members = engine.members();
        let member_counts = [
            MemberStatus::Alive,
            MemberStatus::Suspect,
            MemberStatus::Dead,
            MemberStatus::Left,
        ]
        .map(|s| {
            (
                s.as_str(),
                members.iter().filter(|m| m.status == s).count() as u64,
            )
        });
        let keys = engine
            .state()
            .iter()
            .filter(|(k, ks)| matches!(k, StateKey::Kv { .. }) && !ks.is_deleted())
            .count() as u64;
        let health = engine.instances_by_health();
        let instances = [
            HealthStatus::Passing,
            HealthStatus::Warning,
            HealthStatus::Critical,
        ]
        .map(|h| (h.as_str(), health.get(&h).copied().unwrap_or(0)));
        let now = wall_ms();
        let me = engine.node_id();
        let convergence = engine
            .last_converged()
            .iter()
            .filter(|(node, _)| **node != me)
            .filter_map(|(node, at)| {
                let m = engine.member(node).filter(|m| m.status != MemberStatus::Left)?;
                Some(PeerConvergence {
                    peer: peer_label(node),
                    name: m.info.name.clone(),
                    age_seconds: now.saturating_sub(*at) as f64 / 1000.0,
                })
            })
            .collect();
        let watchers = ["kv", "services", "members"]
            .map(|kind| (kind, view.watchers.get(kind).copied().unwrap_or(0) as u64));
        MetricsSnapshot {
            counters: engine.counters().clone(),
            members: member_counts.to_vec(),
            keys,
            instances: instances.to_vec(),
            convergence,
            connected_peers: view.connected_peers as u64,
            inflight_syncs: engine.inflight_syncs() as u64,
            watchers: watchers.to_vec(),
        }
    }
}

/// The tail of a node's peer id, for labels.
fn peer_label(node: &NodeId) -> String {
    let id = display_id(node);
    let start = id.len().saturating_sub(PEER_LABEL_CHARS);
    id[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_label_is_the_tail_of_the_peer_id() {
        let node = NodeId::from_index(7);
        let full = display_id(&node);
        let label = peer_label(&node);
        assert_eq!(label.len(), PEER_LABEL_CHARS);
        assert!(full.ends_with(&label));
    }
}
