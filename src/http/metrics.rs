//! `GET /metrics`: the node's counters, state and latencies for Prometheus.
//!
//! The answer is OpenMetrics 1.0 text (`application/openmetrics-text`),
//! which Prometheus asks for first. A client whose `Accept` header names
//! `text/plain` and not `application/openmetrics-text` gets Prometheus'
//! classic text format 0.0.4 instead (what older scrapers and
//! `promtool check metrics` read): the same families, with counters' HELP and
//! TYPE lines naming the `_total` series and no `# UNIT` or `# EOF` lines.
//!
//! Every scrape builds a fresh [`Registry`]: the latency histograms (shared
//! with the driver, which observes them), the HTTP request counters kept by
//! [`count_requests`], and a collector over a [`MetricsSnapshot`] read from
//! the node at that moment. Metric names are in the README's table.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::core::wire::MessageKind;
use crate::net::ProtocolLabel;
use crate::node::metrics::{MetricsSnapshot, NodeMetrics};

use super::auth::Rejection;
use super::{ApiError, App};

/// Content type of the default answer.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic text format answer.
pub(crate) const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Labels of `starling_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The request method (`other` for a non-standard one).
    method: &'static str,
    /// The route template that matched (`unmatched` for none).
    route: String,
    /// The answer's status code.
    status: u16,
}

/// Labels of `starling_http_rejected_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    /// Why: `unauthenticated`, `forbidden`, `bad_host`, `bad_origin`,
    /// `bad_content_type`.
    reason: &'static str,
}

/// HTTP request counters, kept across scrapes by the router.
#[derive(Clone, Debug)]
pub(crate) struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    rejected: Family<RejectionLabels, Counter>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let rejected = Family::<RejectionLabels, Counter>::default();
        // Every reason from 0, so a dashboard sees the series before the
        // first rejection.
        for reason in Rejection::REASONS {
            let _ = rejected.get_or_create(&RejectionLabels { reason });
        }
        HttpMetrics {
            requests: Family::default(),
            rejected,
        }
    }
}

impl HttpMetrics {
    /// Count a request refused by the access checks.
    pub(crate) fn rejected(&self, r: &Rejection) {
        self.rejected
            .get_or_create(&RejectionLabels { reason: r.reason() })
            .inc();
    }
}

/// Middleware: count every request by method, route template and status.
pub(crate) async fn count_requests(State(http): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    // A route template, never the raw path: the label set stays bounded.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    let labels = RequestLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    http.requests.get_or_create(&labels).inc();
    response
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    let snapshot = app.node.metrics_snapshot().await?;
    let text = render(snapshot, app.node.latency_metrics(), &app.http_metrics, |r| {
        app.node.register_check_metrics(r)
    });
    if wants_classic_text(&headers) {
        Ok((
            [(CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE)],
            to_classic_text(&text),
        )
            .into_response())
    } else {
        Ok(([(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response())
    }
}

/// A family of counters read at this scrape: each row's labels with its
/// counter's current value.
fn counter_family<'a>(
    rows: impl IntoIterator<Item = (Vec<(&'static str, &'a str)>, &'a Counter)>,
) -> Family<Vec<(String, String)>, Counter> {
    let family = Family::<Vec<(String, String)>, Counter>::default();
    for (labels, c) in rows {
        let labels = labels
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        family.get_or_create(&labels).inc_by(c.get());
    }
    family
}

/// The OpenMetrics text of one scrape.
fn render(
    snapshot: MetricsSnapshot,
    latency: &NodeMetrics,
    http: &HttpMetrics,
    checks: impl FnOnce(&mut Registry),
) -> String {
    let mut registry = Registry::with_prefix("starling");
    checks(&mut registry);
    registry.register_with_unit(
        "heartbeat_delay",
        "Heartbeat one-way delay: local receipt time minus the sender's HLC stamp, \
         millisecond resolution. It includes the clock offset between the two hosts \
         (an HLC runs ahead of a slow clock; negative values count as 0)",
        Unit::Seconds,
        latency.heartbeat_delay.clone(),
    );
    registry.register_with_unit(
        "heartbeat_interval",
        "Time between two accepted heartbeats from the same peer, on the local monotonic \
         clock (what the failure detector sees)",
        Unit::Seconds,
        latency.heartbeat_interval.clone(),
    );
    registry.register_with_unit(
        "sync_latency",
        "Anti-entropy pull round trip: from sending a SyncRequest to receiving its \
         SyncResponse (failed or timed-out requests are not observed)",
        Unit::Seconds,
        latency.sync_latency.clone(),
    );
    registry.register_with_unit(
        "probe_rtt",
        "Liveness probe round trip: from sending a probe to a connected peer to its answer \
         (unanswered probes are not observed: they count in peers_unreachable)",
        Unit::Seconds,
        latency.probe_rtt.clone(),
    );
    registry.register(
        "cluster_key_mismatches",
        "Connections (both directions) that failed the cluster key check: the peer has \
         another key or none",
        latency.key_mismatches.clone(),
    );
    let wire = counter_family(
        [("in", &latency.wire.received), ("out", &latency.wire.sent)]
            .map(|(direction, c)| (vec![("direction", direction)], c)),
    );
    registry.register_with_unit(
        "wire",
        "Bytes on the node's TCP connections, by direction: everything libp2p reads and writes \
         (noise, yamux, gossipsub and sync framing included; IP and TCP headers and QUIC not)",
        Unit::Bytes,
        wire,
    );
    let protocols = counter_family(ProtocolLabel::ALL.into_iter().flat_map(|label| {
        [
            ("in", latency.protocols.received(label)),
            ("out", latency.protocols.sent(label)),
        ]
        .map(|(direction, c)| (vec![("protocol", label.as_str()), ("direction", direction)], c))
    }));
    registry.register_with_unit(
        "protocol",
        "Plaintext bytes on each protocol's streams of the node's TCP connections, by protocol \
         (gossip, sync, probe, kad, identify, other) and direction, including the \
         multistream-select negotiation and excluding noise encryption and yamux framing \
         (which wire_bytes includes): wire_bytes minus the sum of protocol_bytes is that \
         framing overhead (QUIC not counted)",
        Unit::Bytes,
        protocols,
    );
    let held = counter_family(
        [
            ("sent", &latency.gossip_held_sent),
            ("dropped", &latency.gossip_held_dropped),
        ]
        .map(|(outcome, c)| (vec![("outcome", outcome)], c)),
    );
    registry.register(
        "gossip_held",
        "Publishes gossipsub refused for want of a subscribed peer (alone, or before a new \
         connection's subscriptions arrived), held up to 5 s: sent once a peer subscribed, or \
         dropped unsent (anti-entropy repairs what they carried)",
        held,
    );
    let syncs = counter_family(
        [
            ("ok", &latency.store_syncs),
            ("failed", &latency.store_sync_failures),
        ]
        .map(|(outcome, c)| (vec![("outcome", outcome)], c)),
    );
    registry.register(
        "store_syncs",
        "Durable commits of member records that were committed without an fsync (other \
         nodes' records alone are made durable within a second, not one fsync each), by \
         outcome; a failed one is retried at the next",
        syncs,
    );
    registry.register(
        "denied_connections",
        "Connections of peers in deny_peers: refused inbound, refused outbound, or closed \
         when the deny-list named a connected peer",
        latency.denied_connections.clone(),
    );
    registry.register(
        "limit_exceeded",
        "Refusals by the limit that refused (docs/SECURITY.md, Limits): heartbeat_size, \
         sync_frame_size, sync_rate, connections, gossip_graylist (a peer's gossipsub score fell \
         below the graylist threshold), http_timeout, http_body_size, http_watchers",
        latency.limits.clone(),
    );
    registry.register(
        "gossip_messages_validated",
        "Gossip messages received, by topic and the verdict given to gossipsub after the engine \
         took them in: accept (forwarded), reject (invalid: not forwarded, the delivering peer \
         penalised), ignore (not forwarded, no penalty)",
        latency.gossip_validation.clone(),
    );
    registry.register(
        "gossip_graylisted_peers",
        "Connected peers whose gossipsub score is below the graylist threshold (all they send \
         over gossip is ignored)",
        latency.graylisted_peers.clone(),
    );
    registry.register(
        "http_requests",
        "HTTP requests answered, by method, route template and status",
        http.requests.clone(),
    );
    registry.register(
        "http_rejected_requests",
        "HTTP requests refused by the access checks before any handler, by reason \
         (unauthenticated, forbidden, bad_host, bad_origin, bad_content_type)",
        http.rejected.clone(),
    );
    registry.register(
        "dns_queries",
        "DNS queries by result: answered (NOERROR, records or none), nxdomain, refused \
         (outside the domain), servfail (the node could not answer), malformed",
        latency.dns.queries.clone(),
    );
    registry.register(
        "dns_truncated_responses",
        "DNS answers over UDP cut short with the TC bit (the client retries over TCP)",
        latency.dns.truncated.clone(),
    );
    registry.register_collector(Box::new(Scrape(snapshot)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing into a String cannot fail");
    text
}

/// Whether the client asked for the classic text format rather than
/// OpenMetrics.
fn wants_classic_text(headers: &HeaderMap) -> bool {
    let accept: Vec<&str> = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let names = |media: &str| accept.iter().any(|a| a.contains(media));
    names("text/plain") && !names("application/openmetrics-text")
}

/// OpenMetrics text → Prometheus text format 0.0.4, for the families this
/// module writes (counters, gauges, histograms, no exemplars, no
/// `_created` series): a counter family's HELP and TYPE name its `_total`
/// series; `# UNIT` and `# EOF` lines go.
fn to_classic_text(openmetrics: &str) -> String {
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut out = String::with_capacity(openmetrics.len());
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("# UNIT ") || *line == "# EOF" {
            continue;
        }
        let family = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .and_then(|rest| rest.split(' ').next());
        let is_counter = family.is_some_and(|name| {
            let ty = format!("# TYPE {name} counter");
            lines[i..].iter().take(2).any(|l| *l == ty)
        });
        match family {
            Some(name) if is_counter => {
                let (head, rest) = line.split_at(7 + name.len());
                out.push_str(head);
                out.push_str("_total");
                out.push_str(rest);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A label value in the text exposition format: backslash, double quote
/// and line feed escaped, as Prometheus and OpenMetrics both require.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The counters and state figures of one scrape.
#[derive(Debug)]
struct Scrape(MetricsSnapshot);

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let c = &s.counters;
        gauges(
            &mut enc,
            "build_info",
            "Starling build: version label, value 1",
            "version",
            [(env!("CARGO_PKG_VERSION"), 1.0)],
        )?;
        gauges(
            &mut enc,
            "members",
            "Members this node knows, by status",
            "status",
            s.members.iter().map(|(k, v)| (*k, *v as f64)),
        )?;
        gauge(
            &mut enc,
            "keys",
            "Live (not deleted) config keys",
            None,
            s.keys as f64,
        )?;
        gauges(
            &mut enc,
            "service_instances",
            "Registered service instances, by health as reads report it (an instance of a \
             dead or departed owner is critical)",
            "health",
            s.instances.iter().map(|(k, v)| (*k, *v as f64)),
        )?;
        gauge(
            &mut enc,
            "connected_peers",
            "Peers with an open libp2p connection",
            None,
            s.connected_peers as f64,
        )?;
        gauges(
            &mut enc,
            "watchers",
            "Open watch streams, by kind",
            "kind",
            s.watchers.iter().map(|(k, v)| (*k, *v as f64)),
        )?;
        gauge(
            &mut enc,
            "syncs_in_flight",
            "Anti-entropy rounds in flight",
            None,
            s.inflight_syncs as f64,
        )?;
        {
            let mut family = enc.encode_descriptor(
                "peer_convergence_age",
                "Seconds since this node last found its state equal to a peer's: a heartbeat \
                 with equal digests or a completed sync round. Peers never converged with \
                 since start, and peers that left, have no series. Labels: the tail of the \
                 peer id and the peer's name.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for p in &s.convergence {
                // A peer names itself: escape it, since prometheus-client
                // writes label values as they are.
                let name = escape_label_value(&p.name);
                let labels = [("peer", p.peer.as_str()), ("name", name.as_str())];
                ConstGauge::new(p.age_seconds).encode(family.encode_family(&labels)?)?;
            }
        }
        counter(&mut enc, "writes", "Local writes applied", None, c.writes)?;
        counters(
            &mut enc,
            "merges",
            "Remote versions received, by result: merged (new), duplicate (already held), \
             obsolete (seen before and since superseded or collected), taken_back (seen, held \
             nowhere, returned by a peer that still holds it live: a delete forgotten before it \
             reached that peer, or a local store that lost it)",
            None,
            "result",
            [
                ("merged", &c.merged),
                ("duplicate", &c.duplicates),
                ("obsolete", &c.obsolete),
                ("taken_back", &c.taken_back),
            ],
        )?;
        counter(
            &mut enc,
            "versions_dropped",
            "Versions dropped because a peer showed it had superseded them",
            None,
            c.dropped_obsolete,
        )?;
        counter(
            &mut enc,
            "members_reaped",
            "Dead or departed members whose records were dropped after member_reap_ms",
            None,
            c.members_reaped,
        )?;
        counter(
            &mut enc,
            "deltas_sent",
            "Deltas published on gossip",
            None,
            c.deltas_sent,
        )?;
        counter(
            &mut enc,
            "syncs_started",
            "Anti-entropy rounds started",
            None,
            c.syncs_started,
        )?;
        counter(
            &mut enc,
            "syncs_completed",
            "Anti-entropy rounds completed",
            None,
            c.syncs_completed,
        )?;
        counter(
            &mut enc,
            "syncs_failed",
            "Anti-entropy rounds that failed or timed out",
            None,
            c.syncs_failed,
        )?;
        counter(
            &mut enc,
            "syncs_served",
            "Anti-entropy requests served to peers",
            None,
            c.syncs_served,
        )?;
        counter(
            &mut enc,
            "syncs_skipped_quiet",
            "Periodic anti-entropy rounds skipped: nothing changed and every heartbeat heard showed equal state",
            None,
            c.syncs_skipped_quiet,
        )?;
        counter(
            &mut enc,
            "heartbeats_quiet",
            "Heartbeats announcing the quiet interval (own state and membership unchanged)",
            None,
            c.heartbeats_quiet,
        )?;
        counter(
            &mut enc,
            "heartbeats_sent",
            "Heartbeats published",
            None,
            c.heartbeats_sent,
        )?;
        counter(
            &mut enc,
            "heartbeats_received",
            "Heartbeats accepted from peers",
            None,
            c.heartbeats_received,
        )?;
        counter(
            &mut enc,
            "peers_unreachable",
            "Members suspected first-hand: a lost connection that could not be re-dialled, or an unanswered ping",
            None,
            c.unreachable_reports,
        )?;
        counter(
            &mut enc,
            "tombstones_collected",
            "Deleted keys whose tombstones were collected",
            None,
            c.tombstones_collected,
        )?;
        counter(
            &mut enc,
            "versions_deferred",
            "Verified versions held back until their context's writes were seen signed",
            None,
            c.deferred,
        )?;
        counter(
            &mut enc,
            "versions_acl_purged",
            "Versions removed because a new writer rule refuses them",
            None,
            c.acl_purged,
        )?;
        counter(
            &mut enc,
            "persist_failures",
            "Engine batches undone because they could not be made durable",
            None,
            c.persist_failures,
        )?;
        let by_kind = |map: &std::collections::BTreeMap<String, u64>| {
            let mut all: std::collections::BTreeMap<String, u64> = MessageKind::ALL
                .iter()
                .map(|k| (k.as_str().to_string(), 0))
                .collect();
            all.extend(map.iter().map(|(k, v)| (k.clone(), *v)));
            all
        };
        counters(
            &mut enc,
            "messages_received",
            "Protocol messages received, by kind",
            None,
            "kind",
            &by_kind(&c.messages_in),
        )?;
        counters(
            &mut enc,
            "messages_sent",
            "Protocol messages sent, by kind",
            None,
            "kind",
            &by_kind(&c.messages_out),
        )?;
        counters(
            &mut enc,
            "received",
            "Protocol message bytes received, by kind",
            Some(&Unit::Bytes),
            "kind",
            &by_kind(&c.bytes_in),
        )?;
        counters(
            &mut enc,
            "sent",
            "Protocol message bytes sent, by kind",
            Some(&Unit::Bytes),
            "kind",
            &by_kind(&c.bytes_out),
        )?;
        counters(
            &mut enc,
            "rejected_messages",
            "Network input rejected, by reason",
            None,
            "reason",
            &c.rejected,
        )?;
        Ok(())
    }
}

/// One gauge with no labels.
fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(enc.encode_descriptor(name, &full_stop(help), unit, metric.metric_type())?)
}

/// A gauge family with one label.
fn gauges<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, &full_stop(help), None, MetricType::Gauge)?;
    for (value, v) in values {
        ConstGauge::new(v).encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// One counter with no labels (`_total` is added to the name).
fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(enc.encode_descriptor(name, &full_stop(help), unit, metric.metric_type())?)
}

/// A counter family with one label.
fn counters<'a, K: AsRef<str> + 'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    label: &str,
    values: impl IntoIterator<Item = (K, &'a u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, &full_stop(help), unit, MetricType::Counter)?;
    for (value, v) in values {
        ConstCounter::new(*v).encode(family.encode_family(&[(label, value.as_ref())])?)?;
    }
    Ok(())
}

/// Help text ends with a full stop, as `Registry::register` writes it.
fn full_stop(help: &str) -> String {
    if help.ends_with('.') {
        help.to_string()
    } else {
        format!("{help}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_name_with_quotes_backslashes_and_newlines_is_escaped_in_labels() {
        assert_eq!(escape_label_value("plain-name"), "plain-name");
        assert_eq!(escape_label_value("a\"b"), "a\\\"b");
        assert_eq!(escape_label_value("x\ny"), "x\\ny");
        assert_eq!(escape_label_value("c:\\d"), "c:\\\\d");
        assert!(!escape_label_value("evil\"}\n# HELP x").contains('\n'));
    }

    #[test]
    fn classic_text_names_the_total_series_of_counters_and_drops_units_and_eof() {
        let om = "# HELP s_writes Writes.\n# TYPE s_writes counter\ns_writes_total 3\n\
                  # HELP s_sent_bytes Sent.\n# TYPE s_sent_bytes counter\n# UNIT s_sent_bytes bytes\n\
                  s_sent_bytes_total{kind=\"delta\"} 7\n\
                  # HELP s_keys Keys.\n# TYPE s_keys gauge\ns_keys 2\n# EOF\n";
        let classic = to_classic_text(om);
        assert_eq!(
            classic,
            "# HELP s_writes_total Writes.\n# TYPE s_writes_total counter\ns_writes_total 3\n\
             # HELP s_sent_bytes_total Sent.\n# TYPE s_sent_bytes_total counter\n\
             s_sent_bytes_total{kind=\"delta\"} 7\n\
             # HELP s_keys Keys.\n# TYPE s_keys gauge\ns_keys 2\n"
        );
    }

    #[test]
    fn openmetrics_is_the_default_and_text_plain_alone_asks_for_classic_text() {
        let with = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(ACCEPT, accept.parse().unwrap());
            wants_classic_text(&h)
        };
        assert!(!wants_classic_text(&HeaderMap::new()));
        assert!(!with("*/*"));
        assert!(with("text/plain; version=0.0.4"));
        assert!(!with(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
    }
}
