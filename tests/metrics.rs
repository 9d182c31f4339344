//! `GET /metrics` through the real server: nodes on loopback (mDNS off),
//! scraped with a blocking HTTP client from the test thread; the output is
//! checked by Prometheus' own `promtool check metrics` (Debian package
//! `prometheus`; a missing promtool fails the test).
#![allow(clippy::disallowed_methods)] // a test's timeouts read the wall clock

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use starling::http::{self, HttpLimits, HttpServer};
use starling::node::testing::{fast_protocol, key, loopback_config, ns, Cluster};
use starling::node::{Node, NodeHandle, WatchFilter};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One sample line: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One scrape.
struct Scrape {
    content_type: String,
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the one sample named `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} matches several samples: {found:?}"
        );
        found.first().map(|s| s.value)
    }

    /// Like [`Scrape::value`], failing the test when absent.
    fn expect(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{}", self.text))
    }

    fn names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }
}

/// Parse the sample lines of either text format.
fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                let labels = inner
                    .split("\",")
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once("=\"")
                            .unwrap_or_else(|| panic!("bad label in {line:?}"));
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name, labels)
            }
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// `GET /metrics`, in the classic text format when `classic`.
fn scrape(base: &str, classic: bool) -> Scrape {
    let mut req = agent().get(format!("{base}/metrics"));
    if classic {
        req = req.header("Accept", "text/plain; version=0.0.4");
    }
    let mut r = req.call().expect("scrape reaches the server");
    assert_eq!(r.status().as_u16(), 200);
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r.body_mut().read_to_string().expect("metrics body");
    let samples = parse_samples(&text);
    Scrape {
        content_type,
        text,
        samples,
    }
}

/// Pipe `text` into `promtool check metrics`; fail on any problem it
/// reports, or if promtool is not installed.
fn promtool_check(text: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool not found on PATH: it validates the /metrics output. Install Debian's \
             `prometheus` package (apt-get install prometheus; .ci/run does this)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- input ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn serve(node: &NodeHandle) -> HttpServer {
    http::serve(
        node.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        HttpLimits::default(),
    )
    .await
    .expect("http serves")
}

/// Scrape until `done` holds, or fail after `timeout`.
fn scrape_until(base: &str, timeout: Duration, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + timeout;
    loop {
        let s = scrape(base, true);
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}:\n{}",
            s.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every family the README lists, as sample names of the classic format.
const EXPECTED_SAMPLES: &[&str] = &[
    "starling_build_info",
    "starling_members",
    "starling_keys",
    "starling_service_instances",
    "starling_connected_peers",
    "starling_watchers",
    "starling_syncs_in_flight",
    "starling_writes_total",
    "starling_merges_total",
    "starling_versions_dropped_total",
    "starling_deltas_sent_total",
    "starling_syncs_started_total",
    "starling_syncs_completed_total",
    "starling_syncs_failed_total",
    "starling_syncs_served_total",
    "starling_heartbeats_sent_total",
    "starling_heartbeats_received_total",
    "starling_tombstones_collected_total",
    "starling_persist_failures_total",
    "starling_messages_received_total",
    "starling_messages_sent_total",
    "starling_received_bytes_total",
    "starling_sent_bytes_total",
    "starling_heartbeat_delay_seconds_count",
    "starling_heartbeat_interval_seconds_count",
    "starling_sync_latency_seconds_count",
    "starling_sync_latency_seconds_bucket",
    "starling_http_requests_total",
    "starling_cluster_key_mismatches_total",
    "starling_denied_connections_total",
    "starling_limit_exceeded_total",
    "starling_gossip_messages_validated_total",
    "starling_gossip_graylisted_peers",
];

#[test]
fn metrics_of_one_node_count_its_writes_state_and_requests_and_pass_promtool() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, server) = rt.block_on(async {
        let node = Node::start(loopback_config(
            dir.path(),
            "solo",
            fast_protocol("metrics-solo"),
            vec![],
        ))
        .await
        .expect("node starts");
        let server = serve(&node).await;
        (node, server)
    });
    let base = format!("http://{}", server.local_addr());
    let a = agent();

    for i in 0..5 {
        let r = a
            .put(format!("{base}/v1/kv/prod/k{i}"))
            .send(format!("v{i}").as_bytes())
            .expect("put");
        assert_eq!(r.status().as_u16(), 200);
    }
    let r = a.delete(format!("{base}/v1/kv/prod/k0")).call().expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    let r = a
        .put(format!("{base}/v1/services/prod/api/api-1"))
        .content_type("application/json")
        .send(r#"{"address":"10.0.0.7","port":8080}"#)
        .expect("register");
    assert_eq!(r.status().as_u16(), 200);
    let r = a.get(format!("{base}/v1/no-such-endpoint")).call().expect("404");
    assert_eq!(r.status().as_u16(), 404);
    let writes_done = 7.0; // five puts, one delete, one registration
    let _watch = rt
        .block_on(node.watch(WatchFilter::Members, None))
        .expect("watch");

    let om = scrape(&base, false);
    assert_eq!(om.content_type, OPENMETRICS);
    assert!(
        om.text.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF:\n{}",
        om.text
    );
    assert!(
        om.text.contains("# TYPE starling_writes counter\n"),
        "{}",
        om.text
    );
    assert!(
        om.text.contains("# UNIT starling_sync_latency_seconds seconds\n"),
        "{}",
        om.text
    );

    let s = scrape(&base, true);
    assert!(
        s.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        s.content_type
    );
    promtool_check(&s.text);
    assert_eq!(s.names(), om.names(), "both formats carry the same series");
    for name in EXPECTED_SAMPLES {
        assert!(s.names().contains(name), "no {name} in:\n{}", s.text);
    }

    assert!(s.expect("starling_writes_total", &[]) >= writes_done);
    assert_eq!(s.expect("starling_members", &[("status", "alive")]), 1.0);
    for status in ["suspect", "dead", "left"] {
        assert_eq!(s.expect("starling_members", &[("status", status)]), 0.0);
    }
    assert_eq!(
        s.expect("starling_keys", &[]),
        4.0,
        "five keys written, one deleted"
    );
    assert_eq!(
        s.expect("starling_service_instances", &[("health", "passing")]),
        1.0
    );
    assert_eq!(
        s.expect("starling_service_instances", &[("health", "critical")]),
        0.0
    );
    assert_eq!(s.expect("starling_watchers", &[("kind", "members")]), 1.0);
    assert_eq!(s.expect("starling_watchers", &[("kind", "kv")]), 0.0);
    assert_eq!(s.expect("starling_connected_peers", &[]), 0.0);
    assert_eq!(
        s.expect("starling_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    assert_eq!(s.expect("starling_persist_failures_total", &[]), 0.0);
    assert_eq!(
        s.expect("starling_messages_sent_total", &[("kind", "sync_request")]),
        0.0
    );
    let kv_route = [
        ("method", "PUT"),
        ("route", "/v1/kv/{namespace}/{*key}"),
        ("status", "200"),
    ];
    assert!(s.expect("starling_http_requests_total", &kv_route) >= 5.0);
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert_eq!(s.expect("starling_http_requests_total", &unmatched), 1.0);
    let scrapes = [("method", "GET"), ("route", "/metrics"), ("status", "200")];
    assert!(s.expect("starling_http_requests_total", &scrapes) >= 1.0);
    assert!(
        s.value("starling_peer_convergence_age_seconds", &[]).is_none(),
        "no peer, no convergence series"
    );

    rt.block_on(async {
        let _ = node.shutdown().await;
        server.shutdown(Duration::from_secs(2)).await;
    });
}

/// Other nodes' member records are committed without an fsync and made
/// durable by one commit within a second; with no write to carry them,
/// that commit is counted.
#[test]
fn member_records_learned_without_writes_are_made_durable_and_counted() {
    let rt = runtime();
    let mut cluster = rt.block_on(Cluster::start(3, "metrics-lazy"));
    let server = rt.block_on(serve(cluster.node(0)));
    let base = format!("http://{}", server.local_addr());
    let s = scrape_until(
        &base,
        Duration::from_secs(20),
        "every member alive and a durable commit of member records",
        |s| {
            s.value("starling_members", &[("status", "alive")]) == Some(3.0)
                && s.value("starling_store_syncs_total", &[("outcome", "ok")]) >= Some(1.0)
        },
    );
    assert_eq!(
        s.expect("starling_store_syncs_total", &[("outcome", "failed")]),
        0.0
    );
    rt.block_on(async {
        server.shutdown(Duration::from_secs(2)).await;
        cluster.shutdown_all().await;
    });
}

#[test]
fn metrics_of_a_two_node_cluster_show_heartbeat_and_sync_latency_and_convergence() {
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(2, "metrics-pair"));
    let server = rt.block_on(serve(cluster.node(0)));
    let base = format!("http://{}", server.local_addr());
    let (ns, k) = (ns("prod"), key("feature/x"));
    rt.block_on(async {
        cluster.node(1).put(&ns, &k, b"on".to_vec()).await.expect("put");
        cluster
            .wait_value(&ns, &k, Some(b"on"), Duration::from_secs(20))
            .await;
    });
    let peer = cluster.node(1).peer_id();
    let peer_tail = &peer[peer.len() - 8..];

    let s = scrape_until(
        &base,
        Duration::from_secs(30),
        "heartbeats, a timed sync and a convergence with the peer",
        |s| {
            s.value("starling_heartbeat_interval_seconds_count", &[]) >= Some(1.0)
                && s.value("starling_heartbeat_delay_seconds_count", &[]) >= Some(1.0)
                && s.value("starling_sync_latency_seconds_count", &[]) >= Some(1.0)
                && s.value("starling_peer_convergence_age_seconds", &[("peer", peer_tail)])
                    .is_some()
        },
    );
    promtool_check(&s.text);

    assert_eq!(s.expect("starling_members", &[("status", "alive")]), 2.0);
    assert_eq!(s.expect("starling_connected_peers", &[]), 1.0);
    assert_eq!(s.expect("starling_keys", &[]), 1.0);
    assert!(s.expect("starling_merges_total", &[("result", "merged")]) >= 1.0);
    assert!(s.expect("starling_heartbeats_received_total", &[]) >= 1.0);
    assert!(s.expect("starling_messages_received_total", &[("kind", "heartbeat")]) >= 1.0);
    assert!(s.expect("starling_received_bytes_total", &[("kind", "heartbeat")]) > 0.0);
    // Node 0 started alone: what it published then (its own record) found
    // no subscribed peer and was held, then sent once node 1 subscribed.
    assert!(s.expect("starling_gossip_held_total", &[("outcome", "sent")]) >= 1.0);
    assert_eq!(
        s.expect("starling_store_syncs_total", &[("outcome", "failed")]),
        0.0
    );
    // Bytes by protocol: every series exists; the sync and gossip streams
    // carried bytes both ways; all of them are less than the connections'
    // bytes, which add the noise and yamux framing (and the handshakes).
    for direction in ["in", "out"] {
        let mut sum = 0.0;
        for protocol in ["gossip", "sync", "probe", "kad", "identify", "other"] {
            sum += s.expect(
                "starling_protocol_bytes_total",
                &[("protocol", protocol), ("direction", direction)],
            );
        }
        for protocol in ["sync", "gossip"] {
            let bytes = s.expect(
                "starling_protocol_bytes_total",
                &[("protocol", protocol), ("direction", direction)],
            );
            assert!(bytes > 0.0, "{protocol} {direction}: {bytes}");
        }
        let wire = s.expect("starling_wire_bytes_total", &[("direction", direction)]);
        assert!(sum < wire, "{direction}: protocol bytes {sum}, wire bytes {wire}");
    }
    let age = s.expect(
        "starling_peer_convergence_age_seconds",
        &[("peer", peer_tail), ("name", "n1")],
    );
    assert!((0.0..30.0).contains(&age), "convergence age {age}");
    // Every latency lands in the +Inf bucket, and the sum is a duration.
    let timed = s.expect("starling_sync_latency_seconds_count", &[]);
    assert_eq!(
        s.expect("starling_sync_latency_seconds_bucket", &[("le", "+Inf")]),
        timed
    );
    let sum = s.expect("starling_sync_latency_seconds_sum", &[]);
    assert!(
        sum >= 0.0 && sum / timed < 20.0,
        "sync latency sum {sum} over {timed}"
    );

    rt.block_on(async {
        server.shutdown(Duration::from_secs(2)).await;
        let mut cluster = cluster;
        cluster.shutdown_all().await;
    });
}
