//! The limits of docs/SECURITY.md ("Limits") crossed through real nodes on
//! loopback (mDNS off): each refusal is counted in
//! `starling_limit_exceeded_total{limit}` on `GET /metrics`, and the honest
//! cluster keeps working. A hostile member sends what its engine never
//! would through the `test-utils` hooks `NodeHandle::test_publish_raw` and
//! `NodeHandle::test_request_raw` (as in `tests/hostile_node.rs`).
#![cfg(feature = "node")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use starling::core::wire::{self, Message, SyncRequest};
use starling::core::{MemberStatus, NodeId, Topic};
use starling::http::{self, HttpLimits, HttpServer};
use starling::node::testing::{
    eventually, fast_protocol, key, launch, loopback_config, ns, wait_formed, ScratchDir,
};
use starling::node::{NodeConfig, NodeHandle};
use tokio::time::{sleep, timeout};

/// Formation, replication and counters are given this long.
const T: Duration = Duration::from_secs(30);

/// Nodes started by a test, with their scratch directories.
struct Nodes {
    nodes: Vec<NodeHandle>,
    servers: Vec<Option<HttpServer>>,
    _dirs: Vec<ScratchDir>,
}

impl Nodes {
    fn new() -> Self {
        Nodes {
            nodes: Vec::new(),
            servers: Vec::new(),
            _dirs: Vec::new(),
        }
    }

    /// Start a node named `name` in `cluster`, dialling `bootstrap`, with
    /// `tweak` applied to its config; serves HTTP on loopback. Returns its
    /// index and loopback address.
    async fn start(
        &mut self,
        cluster: &str,
        name: &str,
        bootstrap: Vec<String>,
        tweak: impl FnOnce(&mut NodeConfig),
    ) -> (usize, String) {
        let dir = ScratchDir::new().expect("a scratch directory");
        let mut protocol = fast_protocol(cluster);
        protocol.suspect_timeout_ms = 5_000;
        let mut config = loopback_config(dir.path(), name, protocol, bootstrap);
        tweak(&mut config);
        let limits = HttpLimits::from_config(&config);
        let (node, addr) = launch(config).await.expect("a loopback node starts");
        let server = http::serve(node.clone(), "127.0.0.1:0".parse().expect("addr"), limits)
            .await
            .expect("the HTTP API serves");
        self.nodes.push(node);
        self.servers.push(Some(server));
        self._dirs.push(dir);
        (self.nodes.len() - 1, addr)
    }

    fn node(&self, i: usize) -> &NodeHandle {
        &self.nodes[i]
    }

    fn base(&self, i: usize) -> String {
        let s = self.servers[i].as_ref().expect("serving");
        format!("http://{}", s.local_addr())
    }

    /// The value of sample `name{labels}` on node `i`'s `/metrics` (0 when
    /// absent).
    async fn metric(&self, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
        let base = self.base(i);
        let name = name.to_string();
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let text = scrape(&base);
            sample(&text, &name, &labels).unwrap_or(0.0)
        })
        .await
        .expect("the scrape thread")
    }

    async fn limit(&self, i: usize, limit: &str) -> f64 {
        self.metric(i, "starling_limit_exceeded_total", &[("limit", limit)])
            .await
    }

    async fn shutdown(mut self) {
        for s in self.servers.iter_mut() {
            if let Some(s) = s.take() {
                s.shutdown(Duration::from_secs(1)).await;
            }
        }
        for n in &self.nodes {
            let _ = n.stop_without_leave().await;
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// `GET /metrics` in the classic text format.
fn scrape(base: &str) -> String {
    let mut r = agent()
        .get(format!("{base}/metrics"))
        .header("Accept", "text/plain; version=0.0.4")
        .call()
        .expect("scrape reaches the server");
    assert_eq!(r.status().as_u16(), 200);
    r.body_mut().read_to_string().expect("metrics body")
}

/// The value of the sample `name` with exactly `labels` in `text`.
fn sample(text: &str, name: &str, labels: &[(String, String)]) -> Option<f64> {
    let want: BTreeMap<&str, &str> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, got) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((n, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or(rest);
                let got: BTreeMap<&str, &str> = inner
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k, v.trim_matches('"')))
                    .collect();
                (n, got)
            }
        };
        if n == name && got == want {
            return value.parse().ok();
        }
    }
    None
}

fn encode(cluster: &str, msg: Message) -> Vec<u8> {
    wire::encode(&msg, wire::cluster_id(cluster))
}

/// A well-formed pull that any node answers.
fn pull() -> Message {
    Message::SyncRequest(SyncRequest::telling_nothing())
}

/// `node` publishes `bytes` raw on `topic`, retrying while gossipsub has
/// no peer for it yet.
async fn publish(node: &NodeHandle, topic: Topic, bytes: Vec<u8>) {
    let mut last = String::new();
    for _ in 0..300 {
        match node.test_publish_raw(topic, bytes.clone()).await {
            Ok(()) => return,
            Err(e) => last = e,
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!("could not publish: {last}");
}

/// A write on `from` reaches every node of `to` within `T`.
async fn replicates(nodes: &Nodes, from: usize, to: &[usize], k: &str) {
    let (n, k) = (ns("app"), key(k));
    nodes
        .node(from)
        .put(&n, &k, b"honest".to_vec())
        .await
        .expect("an honest write");
    for &i in to {
        let node = nodes.node(i).clone();
        let (n, k) = (n.clone(), k.clone());
        eventually(T, &format!("{k} replicated to node {i}"), move || {
            let (node, n, k) = (node.clone(), n.clone(), k.clone());
            async move { node.get(&n, &k).await.expect("get").map(|e| e.value) == Some(b"honest".to_vec()) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_reaches_a_node_not_connected_to_its_author_through_validated_forwarding() {
    // A – B – C: A and C refuse each other, so what A gossips reaches C
    // only if B validates it and then forwards it.
    let cluster = "limits-line";
    let mut nodes = Nodes::new();
    let (a, a_addr) = nodes.start(cluster, "a", vec![], |_| {}).await;
    let (c, c_addr) = nodes.start(cluster, "c", vec![], |_| {}).await;
    let (a_id, c_id) = (nodes.node(a).node_id(), nodes.node(c).node_id());
    nodes.node(a).set_blocked_peers(vec![c_id]).await.expect("block");
    nodes.node(c).set_blocked_peers(vec![a_id]).await.expect("block");
    let (b, _) = nodes.start(cluster, "b", vec![a_addr, c_addr], |_| {}).await;
    let all = [
        nodes.node(a).clone(),
        nodes.node(b).clone(),
        nodes.node(c).clone(),
    ];
    wait_formed(&all, 3, T)
        .await
        .expect("a, b and c see each other alive");

    let deltas_in = |i: usize| {
        let node = nodes.node(i).clone();
        async move {
            let c = node.counters().await.expect("counters");
            c.messages_in.get("delta").copied().unwrap_or(0)
        }
    };
    let c_before = deltas_in(c).await;
    let b_sent_before = nodes.node(b).counters().await.expect("counters").deltas_sent;
    replicates(&nodes, a, &[b, c], "line").await;
    // C got a delta by gossip (anti-entropy carries no deltas) and B wrote
    // none: it was A's, forwarded by B after validation.
    let c_node = nodes.node(c).clone();
    eventually(T, "a delta arrives at c over gossip", move || {
        let c_node = c_node.clone();
        async move {
            let c = c_node.counters().await.expect("counters");
            c.messages_in.get("delta").copied().unwrap_or(0) > c_before
        }
    })
    .await;
    assert_eq!(
        nodes.node(b).counters().await.expect("counters").deltas_sent,
        b_sent_before,
        "b published no delta of its own"
    );
    assert!(
        nodes
            .metric(
                b,
                "starling_gossip_messages_validated_total",
                &[("topic", "delta"), ("result", "accept")]
            )
            .await
            >= 1.0
    );
    let peers = nodes.node(c).status().await.expect("status").connected_peers;
    assert_eq!(peers, 1, "c stays connected to b only");
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_invalid_gossip_gets_its_sender_graylisted_and_counted_while_honest_writes_flow() {
    let cluster = "limits-flood";
    let mut nodes = Nodes::new();
    let (h0, seed) = nodes.start(cluster, "honest0", vec![], |_| {}).await;
    let (h1, _) = nodes.start(cluster, "honest1", vec![seed.clone()], |_| {}).await;
    let (h2, _) = nodes.start(cluster, "honest2", vec![seed.clone()], |_| {}).await;
    let (bad, _) = nodes.start(cluster, "hostile", vec![seed], |_| {}).await;
    let honest = [h0, h1, h2];
    let all: Vec<NodeHandle> = (0..4).map(|i| nodes.node(i).clone()).collect();
    wait_formed(&all, 4, T)
        .await
        .expect("four nodes see each other alive");
    // Each honest node must hear the flood from the hostile node itself:
    // none forwards what it rejects.
    let hostile = nodes.node(bad).clone();
    eventually(T, "the hostile node is connected to every honest node", || {
        let hostile = hostile.clone();
        async move { hostile.status().await.expect("status").connected_peers == 3 }
    })
    .await;
    sleep(Duration::from_secs(1)).await; // gossipsub learns the subscriptions

    for i in 0..20u32 {
        // Distinct bytes (gossipsub drops a repeated message unseen).
        let junk = format!("not a starling message #{i}").into_bytes();
        publish(nodes.node(bad), Topic::Delta, junk).await;
    }
    for &i in &honest {
        eventually(T, &format!("honest{i} graylists the hostile node"), || async {
            nodes.limit(i, "gossip_graylist").await >= 1.0
        })
        .await;
        let rejected = nodes
            .metric(
                i,
                "starling_gossip_messages_validated_total",
                &[("topic", "delta"), ("result", "reject")],
            )
            .await;
        assert!(rejected >= 3.0, "honest{i} rejected {rejected} messages");
        // Once graylisted, the rest of the flood is dropped unseen.
        assert!(rejected < 20.0, "honest{i} judged every message: {rejected}");
        assert_eq!(
            nodes.metric(i, "starling_gossip_graylisted_peers", &[]).await,
            1.0
        );
    }
    replicates(&nodes, h1, &[h0, h2], "after-flood").await;
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_heartbeat_is_rejected_before_the_engine_and_counted() {
    let cluster = "limits-heartbeat";
    let mut nodes = Nodes::new();
    let (h0, seed) = nodes.start(cluster, "honest0", vec![], |_| {}).await;
    let (bad, _) = nodes.start(cluster, "hostile", vec![seed], |_| {}).await;
    let all = [nodes.node(h0).clone(), nodes.node(bad).clone()];
    wait_formed(&all, 2, T)
        .await
        .expect("two nodes see each other alive");
    let limit = NodeConfig::default().limits.heartbeat_max_bytes;
    // Formed can mean "learned by anti-entropy": wait for gossip too.
    eventually(T, "heartbeats arrive over gossip", || async {
        let c = nodes.node(h0).counters().await.expect("counters");
        c.messages_in.get("heartbeat").copied().unwrap_or(0) > 0
    })
    .await;
    let engine_before = nodes.node(h0).counters().await.expect("counters");
    // Real heartbeats (announcing ones carry the record and its signature)
    // are far below the default limit.
    let total = engine_before.bytes_in.get("heartbeat").copied().unwrap_or(0);
    let count = engine_before.messages_in.get("heartbeat").copied().unwrap_or(0);
    assert!(count > 0, "heartbeats arrived");
    let average = total / count;
    eprintln!("average heartbeat: {average} bytes over {count}");
    assert!(
        average * 8 < limit as u64,
        "average heartbeat {average} bytes vs limit {limit}"
    );

    publish(nodes.node(bad), Topic::Heartbeat, vec![0xAB; limit + 1]).await;
    eventually(T, "the oversized heartbeat is counted", || async {
        nodes.limit(h0, "heartbeat_size").await >= 1.0
    })
    .await;
    assert_eq!(
        nodes
            .metric(
                h0,
                "starling_gossip_messages_validated_total",
                &[("topic", "heartbeat"), ("result", "reject")]
            )
            .await,
        1.0
    );
    let engine_after = nodes.node(h0).counters().await.expect("counters");
    assert_eq!(
        engine_after.rejected, engine_before.rejected,
        "the engine never saw it (refused before decoding)"
    );
    // Honest heartbeats still pass: the hostile node stays alive on h0.
    let members = nodes.node(h0).members().await.expect("members");
    assert!(
        members.iter().all(|m| m.status == MemberStatus::Alive),
        "{members:?}"
    );
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_request_flood_is_refused_at_once_past_the_peer_rate_and_the_cluster_still_converges() {
    let cluster = "limits-sync";
    let mut nodes = Nodes::new();
    let (h0, seed) = nodes.start(cluster, "honest0", vec![], |_| {}).await;
    let (h1, _) = nodes.start(cluster, "honest1", vec![seed.clone()], |_| {}).await;
    let (bad, _) = nodes.start(cluster, "hostile", vec![seed], |_| {}).await;
    let all: Vec<NodeHandle> = (0..3).map(|i| nodes.node(i).clone()).collect();
    wait_formed(&all, 3, T)
        .await
        .expect("three nodes see each other alive");
    let target: NodeId = nodes.node(h0).node_id();
    let burst = NodeConfig::default().limits.sync_requests_burst as usize;

    const FLOOD: usize = 60;
    let bytes = encode(cluster, pull());
    let hostile = nodes.node(bad).clone();
    let answers = futures::future::join_all((0..FLOOD).map(|_| {
        let (hostile, bytes) = (hostile.clone(), bytes.clone());
        // Refused requests fail fast: far inside the 2 s sync timeout.
        async move {
            timeout(
                Duration::from_millis(1_900),
                hostile.test_request_raw(target, bytes),
            )
            .await
        }
    }))
    .await;
    let timed_out = answers.iter().filter(|a| a.is_err()).count();
    let answered = answers.iter().filter(|a| matches!(a, Ok(Ok(_)))).count();
    let refused = answers.iter().filter(|a| matches!(a, Ok(Err(_)))).count();
    assert_eq!(timed_out, 0, "no refused request waits out a timeout");
    assert!(answered >= 1, "the first requests are answered");
    assert!(
        answered <= burst + 10,
        "{answered} of {FLOOD} answered: more than a burst of {burst} plus the rate"
    );
    assert_eq!(answered + refused, FLOOD);
    let counted = nodes.limit(h0, "sync_rate").await;
    assert!(counted >= refused as f64, "{counted} counted, {refused} refused");

    replicates(&nodes, h1, &[h0], "after-sync-flood").await;
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_incoming_limit_are_refused_and_counted() {
    let cluster = "limits-conns";
    let mut nodes = Nodes::new();
    let (x, seed) = nodes
        .start(cluster, "x", vec![], |c| c.limits.connections_max_incoming = 1)
        .await;
    let (a, _) = nodes.start(cluster, "a", vec![seed.clone()], |_| {}).await;
    wait_formed(&[nodes.node(x).clone(), nodes.node(a).clone()], 2, T)
        .await
        .expect("x and a see each other");
    let (b, _) = nodes.start(cluster, "b", vec![seed], |_| {}).await;
    eventually(T, "x refuses b's connection and counts it", || async {
        nodes.limit(x, "connections").await >= 1.0
    })
    .await;
    // The limit bounds x's inbound connections at any moment, not who
    // holds them: once the partial view replaces a's link to x (a closes
    // links it did not choose), b's next bootstrap dial may get in, so
    // whether b is connected later is not asserted. x still holds a.
    let x_members = nodes.node(x).members().await.expect("members");
    let a_id = nodes.node(a).peer_id();
    assert!(
        x_members.iter().any(|m| m.node_id == a_id),
        "x keeps a: {x_members:?}"
    );
    let _ = b;
    nodes.shutdown().await;
}

/// Open `path` on `base` as a server-sent event stream; the reader once
/// the head is in (200), or the status and body.
fn open_watch(base: &str, path: &str) -> Result<BufReader<ureq::BodyReader<'static>>, (u16, String)> {
    let mut r = agent()
        .get(format!("{base}{path}"))
        .header("Accept", "text/event-stream")
        .call()
        .expect("the server answers");
    let status = r.status().as_u16();
    if status != 200 {
        return Err((status, r.body_mut().read_to_string().unwrap_or_default()));
    }
    let mut reader = BufReader::new(r.into_body().into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).expect("the opening comment");
    assert!(first.starts_with(": watching"), "{first:?}");
    Ok(reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_past_the_cap_get_503_and_are_counted_and_a_slot_frees_when_one_ends() {
    let mut nodes = Nodes::new();
    let (n, _) = nodes
        .start("limits-watch", "solo", vec![], |c| c.limits.http_max_watchers = 2)
        .await;
    let base = nodes.base(n);
    let b = base.clone();
    let (held, over, long_poll_over) = tokio::task::spawn_blocking(move || {
        let one = open_watch(&b, "/v1/watch/members").expect("first watch");
        // A blocking query holds the second slot for about a second.
        let b2 = b.clone();
        let blocking = std::thread::spawn(move || {
            agent()
                .get(format!("{b2}/v1/kv/app?index=999999&wait=1500ms"))
                .call()
                .expect("the blocking query answers")
                .status()
                .as_u16()
        });
        std::thread::sleep(Duration::from_millis(400));
        let over = open_watch(&b, "/v1/watch/kv/app")
            .err()
            .expect("a third is refused");
        let long_poll_over = agent()
            .get(format!("{b}/v1/kv/app?index=999999&wait=1s"))
            .call()
            .expect("answers");
        let long_poll_over = long_poll_over.status().as_u16();
        assert_eq!(blocking.join().expect("the blocking query thread"), 200);
        (one, over, long_poll_over)
    })
    .await
    .expect("the client thread");
    assert_eq!(over.0, 503, "{}", over.1);
    assert!(over.1.contains("too_many_watchers"), "{}", over.1);
    assert_eq!(long_poll_over, 503);
    assert_eq!(nodes.limit(n, "http_watchers").await, 2.0);
    // The blocking query is done: its slot takes a new watch.
    let b = base.clone();
    let again = tokio::task::spawn_blocking(move || open_watch(&b, "/v1/watch/kv/app").map(|_| ()))
        .await
        .expect("the client thread");
    assert!(again.is_ok(), "{again:?}");
    drop(held);
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413_and_counted_with_or_without_a_length() {
    let mut nodes = Nodes::new();
    let (n, _) = nodes
        .start("limits-body", "solo", vec![], |c| c.http_max_body_bytes = 4096)
        .await;
    let base = nodes.base(n);
    let addr = base.trim_start_matches("http://").to_string();
    let b = base.clone();
    let (declared, chunked, small) = tokio::task::spawn_blocking(move || {
        let declared = agent()
            .put(format!("{b}/v1/kv/app/big"))
            .send(&vec![b'x'; 5000][..])
            .expect("answers")
            .status()
            .as_u16();
        // Chunked: no Content-Length, so the limit bites while reading.
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let chunk = vec![b'y'; 3000];
        write!(
            s,
            "PUT /v1/kv/app/chunked HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .expect("head");
        // The server may answer 413 and close before the body ends: a
        // write then fails (broken pipe or reset), which is the limit
        // biting, not a client error.
        let mut cut_off = false;
        let mut send = |bytes: &[u8]| {
            if !cut_off {
                if let Err(e) = s.write_all(bytes) {
                    assert!(
                        matches!(
                            e.kind(),
                            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                        ),
                        "writing the body: {e}"
                    );
                    cut_off = true;
                }
            }
        };
        for _ in 0..2 {
            send(format!("{:x}\r\n", chunk.len()).as_bytes());
            send(&chunk);
            send(b"\r\n");
        }
        send(b"0\r\n\r\n");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        // A reset may discard the answer the server sent before closing;
        // the counter below still shows the refusal.
        let chunked = if answer.is_empty() && cut_off {
            "413".to_string()
        } else {
            answer.split(' ').nth(1).unwrap_or("").to_string()
        };
        let small = agent()
            .put(format!("{b}/v1/kv/app/small"))
            .send(&b"fits"[..])
            .expect("answers")
            .status()
            .as_u16();
        (declared, chunked, small)
    })
    .await
    .expect("the client thread");
    assert_eq!(declared, 413);
    assert_eq!(chunked, "413");
    assert_eq!(small, 200);
    assert_eq!(nodes.limit(n, "http_body_size").await, 2.0);
    nodes.shutdown().await;
}
