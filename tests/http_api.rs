//! The HTTP API through the real server: one in-process node per test on
//! loopback (mDNS off), its HTTP API on 127.0.0.1 with an OS-chosen port,
//! driven by a blocking HTTP client from the test thread.
#![allow(clippy::disallowed_methods)] // a test's timeouts read the wall clock

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use starling::http::{self, HttpLimits, HttpServer};
use starling::node::{Node, NodeConfig, NodeHandle};

/// A node and its HTTP API on their own runtime; stopped on drop.
struct TestNode {
    rt: tokio::runtime::Runtime,
    node: NodeHandle,
    server: Option<HttpServer>,
    base: String,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

/// An answer read whole.
struct Answer {
    status: u16,
    index: Option<u64>,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the status and that the body is a JSON error with `code`.
    fn expect_error(&self, status: u16, code: &str) -> Value {
        let v = self.json();
        assert_eq!(self.status, status, "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        v
    }
}

impl TestNode {
    fn start() -> TestNode {
        TestNode::start_with(|_| {})
    }

    fn start_with(tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = NodeConfig::default();
        config.data_dir = dir.path().to_path_buf();
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        config.mdns = false;
        config.name = Some("http-test".into());
        config.http = Some("127.0.0.1:0".parse().expect("addr"));
        tweak(&mut config);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (node, server) = rt.block_on(async {
            let node = Node::start(config.clone()).await.expect("node starts");
            let server = http::serve(
                node.clone(),
                config.http.expect("http addr"),
                HttpLimits::from_config(&config),
            )
            .await
            .expect("http serves");
            (node, server)
        });
        let base = format!("http://{}", server.local_addr());
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        TestNode {
            rt,
            node,
            server: Some(server),
            base,
            agent,
            _dir: dir,
        }
    }

    fn read(&self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut r = r.expect("request reaches the server");
        let status = r.status().as_u16();
        let index = r
            .headers()
            .get("x-starling-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .expect("body");
        Answer {
            status,
            index,
            content_type,
            body,
        }
    }

    fn get(&self, path: &str) -> Answer {
        self.read(self.agent.get(format!("{}{path}", self.base)).call())
    }

    fn put(&self, path: &str, body: &[u8]) -> Answer {
        self.read(self.agent.put(format!("{}{path}", self.base)).send(body))
    }

    fn put_json(&self, path: &str, body: &Value) -> Answer {
        self.read(
            self.agent
                .put(format!("{}{path}", self.base))
                .content_type("application/json")
                .send(body.to_string()),
        )
    }

    fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.read(
            self.agent
                .post(format!("{}{path}", self.base))
                .content_type("application/json")
                .send(body.to_string()),
        )
    }

    fn delete(&self, path: &str) -> Answer {
        self.read(self.agent.delete(format!("{}{path}", self.base)).call())
    }

    /// Write and return the new version id.
    fn write(&self, path: &str, value: &[u8]) -> String {
        let a = self.put(path, value);
        let v = a.json();
        assert_eq!(a.status, 200, "{v}");
        v["version"].as_str().expect("version").to_string()
    }

    fn revision(&self) -> u64 {
        self.get("/v1/health").json()["revision"]
            .as_u64()
            .expect("revision")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let node = self.node.clone();
        let server = self.server.take();
        self.rt.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await;
            if let Some(s) = server {
                s.shutdown(Duration::from_secs(2)).await;
            }
        });
    }
}

/// Server-sent events read from a stream: `(id, event, data)`.
struct Sse {
    lines: std::io::Lines<BufReader<ureq::BodyReader<'static>>>,
}

impl Sse {
    fn open(node: &TestNode, path: &str) -> Result<Sse, Answer> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .build()
            .into();
        let r = agent
            .get(format!("{}{path}", node.base))
            .call()
            .expect("watch request");
        if r.status() != 200 {
            return Err(node.read(Ok(r)));
        }
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Ok(Sse {
            lines: BufReader::new(r.into_body().into_reader()).lines(),
        })
    }

    /// The next event that carries data (comments and keep-alives skipped).
    fn next(&mut self) -> (Option<u64>, String, Value) {
        let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
        loop {
            let line = self.lines.next().expect("stream open").expect("stream readable");
            if line.is_empty() {
                if !data.is_empty() {
                    return (id, event, serde_json::from_str(&data).expect("JSON data"));
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }
}

#[test]
fn health_reports_identity_listen_addrs_and_counts() {
    let n = TestNode::start();
    let a = n.get("/v1/health");
    assert_eq!(a.status, 200);
    assert!(a.content_type.starts_with("application/json"));
    let v = a.json();
    let id = v["node_id"].as_str().unwrap();
    assert_eq!(id, n.node.peer_id());
    assert_eq!(v["name"], "http-test");
    assert_eq!(v["cluster"], NodeConfig::default().protocol.cluster);
    for key in ["revision", "keys", "digest", "members", "connected_peers"] {
        assert!(!v[key].is_null(), "missing {key}: {v}");
    }
    // The listen address shows up once the swarm reports it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = n.get("/v1/health").json();
        let addrs: Vec<String> = serde_json::from_value(v["listen_addrs"].clone()).unwrap();
        if !addrs.is_empty() {
            assert!(
                addrs.iter().all(|a| a.ends_with(&format!("/p2p/{id}"))),
                "{addrs:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no listen address reported");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn put_get_delete_round_trip_with_versions_and_404s() {
    let n = TestNode::start();
    n.get("/v1/kv/prod/routes/v1").expect_error(404, "not_found");

    let put = n.put("/v1/kv/prod/routes/v1", b"upstream=a");
    let w = put.json();
    assert_eq!(put.status, 200, "{w}");
    let version = w["version"].as_str().unwrap().to_string();
    assert_eq!(version.len(), 16);
    assert!(w["hlc"]["wall_ms"].as_u64().unwrap() > 0);

    let v = n.get("/v1/kv/prod/routes/v1").json();
    assert_eq!(v["namespace"], "prod");
    assert_eq!(v["key"], "routes/v1");
    assert_eq!(v["value"], "upstream=a");
    assert_eq!(v["value_base64"], "dXBzdHJlYW09YQ==");
    assert_eq!(v["version"]["id"], version.as_str());
    assert_eq!(v["version"]["origin"], n.node.peer_id().as_str());
    assert_eq!(v["version"]["size"], 10);
    for field in ["hlc", "seq", "checksum"] {
        assert!(!v["version"][field].is_null(), "{v}");
    }
    assert_eq!(v["siblings"].as_array().unwrap().len(), 1);

    let d = n.delete("/v1/kv/prod/routes/v1");
    assert_eq!(d.status, 200, "{}", d.json());
    n.get("/v1/kv/prod/routes/v1").expect_error(404, "not_found");
    n.get("/v1/kv/prod/routes/v1?raw=true")
        .expect_error(404, "not_found");
    n.delete("/v1/kv/prod/routes/v1").expect_error(404, "not_found");
    n.delete("/v1/kv/prod/never/written")
        .expect_error(404, "not_found");
}

#[test]
fn raw_reads_return_exactly_the_stored_bytes_even_when_not_utf8() {
    let n = TestNode::start();
    let bytes: Vec<u8> = vec![0xff, 0x00, 0xfe, b'\n', 0x80, b'a'];
    n.write("/v1/kv/bin/blob", &bytes);
    let raw = n.get("/v1/kv/bin/blob?raw=true");
    assert_eq!(raw.status, 200);
    assert_eq!(raw.content_type, "application/octet-stream");
    assert_eq!(raw.body, bytes);
    let v = n.get("/v1/kv/bin/blob").json();
    assert!(v["value"].is_null(), "non-UTF-8 has no text form: {v}");
    assert_eq!(v["value_base64"], "/wD+CoBh");
    // An empty value is a value, not a deletion.
    n.write("/v1/kv/bin/empty", b"");
    let raw = n.get("/v1/kv/bin/empty?raw=true");
    assert_eq!((raw.status, raw.body.len()), (200, 0));
}

#[test]
fn invalid_namespaces_keys_and_queries_are_400_with_json_errors() {
    let n = TestNode::start();
    n.put("/v1/kv/bad%20ns/k", b"x")
        .expect_error(400, "invalid_namespace");
    n.get("/v1/kv/-leading-dash/k")
        .expect_error(400, "invalid_namespace");
    n.put("/v1/kv/prod/a//b", b"x").expect_error(400, "invalid_key");
    n.put("/v1/kv/prod/trailing/", b"x")
        .expect_error(400, "invalid_key");
    n.put("/v1/kv/prod/k?cas=nothex", b"x")
        .expect_error(400, "invalid_version");
    n.get("/v1/kv/prod?limit=many").expect_error(400, "invalid_query");
    n.get("/v1/kv/prod?index=1&wait=forever")
        .expect_error(400, "invalid_query");
    n.get("/v1/kv/prod/k?raw=maybe")
        .expect_error(400, "invalid_query");
    n.get("/v1/nothing/here").expect_error(404, "not_found");
    n.read(n.agent.patch(format!("{}/v1/health", n.base)).send(&b"x"[..]))
        .expect_error(405, "method_not_allowed");
}

#[test]
fn compare_and_set_conflicts_are_409_with_the_current_version() {
    let n = TestNode::start();
    let v1 = n.write("/v1/kv/prod/flag?cas=absent", b"on");
    let c = n
        .put("/v1/kv/prod/flag?cas=absent", b"again")
        .expect_error(409, "conflict");
    assert_eq!(c["current_version"], v1.as_str());
    let v2 = n.write(&format!("/v1/kv/prod/flag?cas={v1}"), b"off");
    let c = n
        .put(&format!("/v1/kv/prod/flag?cas={v1}"), b"stale")
        .expect_error(409, "conflict");
    assert_eq!(c["current_version"], v2.as_str());
    assert_eq!(n.get("/v1/kv/prod/flag").json()["value"], "off");
    n.read(
        n.agent
            .delete(format!("{}/v1/kv/prod/flag?cas={v1}", n.base))
            .call(),
    )
    .expect_error(409, "conflict");
}

#[test]
fn bodies_over_the_http_limit_and_values_over_the_engine_limit_are_413() {
    let n = TestNode::start_with(|c| {
        c.http_max_body_bytes = 4096;
        c.protocol.max_value_bytes = 1000;
    });
    n.put("/v1/kv/prod/big", &vec![b'x'; 8192])
        .expect_error(413, "too_large");
    n.put("/v1/kv/prod/big", &vec![b'x'; 2000])
        .expect_error(413, "too_large");
    n.write("/v1/kv/prod/big", &vec![b'x'; 1000]);
    n.put_json(
        "/v1/services/prod/api/i1",
        &json!({"address": "x".repeat(5000), "port": 1}),
    )
    .expect_error(413, "too_large");
}

#[test]
fn list_by_prefix_in_key_order_with_limit() {
    let n = TestNode::start();
    for k in ["app/b", "app/a", "app/c/d", "other/x"] {
        n.write(&format!("/v1/kv/prod/{k}"), k.as_bytes());
    }
    n.write("/v1/kv/staging/app/z", b"z");
    let a = n.get("/v1/kv/prod?prefix=app/");
    assert_eq!(a.status, 200);
    assert!(a.index.is_some(), "lists carry X-Starling-Index");
    let v = a.json();
    let keys: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["app/a", "app/b", "app/c/d"]);
    assert_eq!(v["truncated"], false);
    assert_eq!(v["entries"][0]["value"], "app/a");

    let v = n.get("/v1/kv/prod?prefix=app/&limit=2").json();
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    assert_eq!(v["truncated"], true);
    let all = n.get("/v1/kv/prod").json();
    assert_eq!(all["entries"].as_array().unwrap().len(), 4);
    let none = n.get("/v1/kv/empty-ns").json();
    assert_eq!(none["entries"].as_array().unwrap().len(), 0);
}

#[test]
fn history_lists_versions_and_rollback_writes_an_old_value_again() {
    let n = TestNode::start();
    let v1 = n.write("/v1/kv/prod/cfg/db", b"host=a");
    let v2 = n.write("/v1/kv/prod/cfg/db", b"host=b");
    let h = n.get("/v1/kv/prod/cfg/db/history");
    let hv = h.json();
    assert_eq!(h.status, 200, "{hv}");
    assert_eq!(hv["key"], "cfg/db");
    let versions = hv["versions"].as_array().unwrap();
    let ids: Vec<&str> = versions
        .iter()
        .map(|e| e["version"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [v2.as_str(), v1.as_str()]);
    assert_eq!(versions[0]["live"], true);
    assert_eq!(versions[1]["value"], "host=a");
    for field in ["hlc", "origin", "checksum", "size"] {
        assert!(!versions[1]["version"][field].is_null(), "{hv}");
    }
    // The explicit form gives the same answer.
    assert_eq!(n.get("/v1/kv/prod/cfg/db?history=true").json(), hv);

    let r = n.post_json("/v1/kv/prod/cfg/db/rollback", &json!({ "version": v1 }));
    let rv = r.json();
    assert_eq!(r.status, 200, "{rv}");
    let v3 = rv["version"].as_str().unwrap();
    assert!(v3 != v1 && v3 != v2, "rollback is a new version");
    let now = n.get("/v1/kv/prod/cfg/db").json();
    assert_eq!(now["value"], "host=a");
    assert_eq!(now["version"]["id"], v3);

    n.post_json(
        "/v1/kv/prod/cfg/db/rollback",
        &json!({ "version": "00000000000000ff" }),
    )
    .expect_error(404, "not_found");
    n.post_json("/v1/kv/prod/cfg/db/rollback", &json!({ "version": "xyz" }))
        .expect_error(400, "invalid_version");
    n.post_json("/v1/kv/prod/cfg/db/rollback", &json!({ "nope": 1 }))
        .expect_error(400, "invalid_json");
    n.post_json("/v1/kv/prod/cfg/db", &json!({ "version": v1 }))
        .expect_error(405, "method_not_allowed");
    n.get("/v1/kv/prod/never/history").expect_error(404, "not_found");

    // A key whose last segment is `history` is still reachable.
    n.write("/v1/kv/prod/audit/history", b"log");
    assert_eq!(
        n.get("/v1/kv/prod/audit/history?literal=true").json()["value"],
        "log"
    );
    assert_eq!(
        n.get("/v1/kv/prod/audit/history/history").json()["key"],
        "audit/history"
    );
}

#[test]
fn services_register_list_filter_heartbeat_and_deregister() {
    let n = TestNode::start();
    let spec = |port: u16, tags: &[&str]| {
        json!({"address": "10.0.0.1", "port": port, "tags": tags,
               "metadata": {"zone": "a"}, "weight": 50, "ttl_ms": 60000})
    };
    let r = n.put_json("/v1/services/prod/api/i1", &spec(8080, &["v1", "eu"]));
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["version"].as_str().unwrap().len(), 16);
    n.put_json("/v1/services/prod/api/i2", &spec(8081, &["v2", "eu"]));
    n.put_json("/v1/services/prod/web/w1", &json!({"address": "h", "port": 80}));

    let names = n.get("/v1/services/prod").json();
    assert_eq!(names["services"], json!(["api", "web"]));

    let all = n.get("/v1/services/prod/api").json();
    let inst = all["instances"].as_array().unwrap();
    assert_eq!(inst.len(), 2);
    assert_eq!(inst[0]["instance"], "i1");
    assert_eq!(inst[0]["port"], 8080);
    assert_eq!(inst[0]["weight"], 50);
    assert_eq!(inst[0]["metadata"]["zone"], "a");
    assert_eq!(inst[0]["health"], "passing");
    assert_eq!(inst[0]["owner"], n.node.peer_id().as_str());

    let eu_v2 = n.get("/v1/services/prod/api?tag=eu&tag=v2").json();
    let ids: Vec<&str> = eu_v2["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["i2"]);

    let hb = n.put_json(
        "/v1/services/prod/api/i1/heartbeat",
        &json!({"health": "critical"}),
    );
    assert_eq!(hb.status, 200, "{}", hb.json());
    let healthy = n.get("/v1/services/prod/api?healthy=true").json();
    let ids: Vec<&str> = healthy["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["i2"]);
    // An empty heartbeat reports passing again.
    assert_eq!(n.put("/v1/services/prod/api/i1/heartbeat", b"").status, 200);
    assert_eq!(
        n.get("/v1/services/prod/api?healthy=true").json()["instances"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    n.put_json(
        "/v1/services/prod/api/i3",
        &json!({"address": "h", "port": 1, "weight": 200}),
    )
    .expect_error(400, "invalid_spec");
    n.put_json("/v1/services/prod/api/i3", &json!({"port": 1}))
        .expect_error(400, "invalid_json");
    n.put("/v1/services/prod/api/i3", b"{not json")
        .expect_error(400, "invalid_json");
    n.put_json("/v1/services/prod/api/i3/heartbeat", &json!({"health": "fine"}))
        .expect_error(400, "invalid_json");
    n.put_json(
        "/v1/services/prod/bad%20name/i3",
        &json!({"address": "h", "port": 1}),
    )
    .expect_error(400, "invalid_service");
    n.put("/v1/services/prod/api/nope/heartbeat", b"")
        .expect_error(404, "not_found");

    let d = n.delete("/v1/services/prod/api/i1");
    assert_eq!(d.status, 200, "{}", d.json());
    let left = n.get("/v1/services/prod/api").json();
    assert_eq!(left["instances"].as_array().unwrap().len(), 1);
    n.delete("/v1/services/prod/api/i1")
        .expect_error(404, "not_found");
}

#[test]
fn members_lists_the_local_node_alive() {
    let n = TestNode::start();
    let v = n.get("/v1/members").json();
    let members = v.as_array().expect("an array");
    let me = members
        .iter()
        .find(|m| m["node_id"] == n.node.peer_id().as_str())
        .expect("self is a member");
    assert_eq!(me["name"], "http-test");
    assert_eq!(me["status"], "alive");
    for field in ["addrs", "tags", "incarnation"] {
        assert!(!me[field].is_null(), "{me}");
    }
}

#[test]
fn kv_watch_streams_exactly_the_changes_after_since() {
    let n = TestNode::start();
    n.write("/v1/kv/prod/app/before", b"0");
    let since = n.revision();
    n.write("/v1/kv/prod/app/one", b"1");
    n.write("/v1/kv/prod/other/skip", b"x");
    n.write("/v1/kv/staging/app/skip", b"x");
    n.write("/v1/kv/prod/app/two", b"2");
    let mut sse = Sse::open(&n, &format!("/v1/watch/kv/prod?prefix=app/&since={since}"))
        .unwrap_or_else(|a| panic!("watch refused: {}", a.json()));
    let (id1, _, e1) = sse.next();
    let (id2, _, e2) = sse.next();
    assert_eq!(
        (e1["key"].as_str(), e1["value"].as_str()),
        (Some("app/one"), Some("1"))
    );
    assert_eq!(
        (e2["key"].as_str(), e2["value"].as_str()),
        (Some("app/two"), Some("2"))
    );
    assert_eq!(e1["type"], "kv");
    assert!(id1.unwrap() > since && id2.unwrap() > id1.unwrap());
    assert_eq!(id1, e1["revision"].as_u64());
    // Live changes follow the replay, deletions included.
    n.delete("/v1/kv/prod/app/one");
    n.write("/v1/kv/prod/other/skip2", b"x");
    n.write("/v1/kv/prod/app/three", b"3");
    let (_, _, e3) = sse.next();
    assert_eq!(
        (e3["key"].as_str(), e3["deleted"].as_bool()),
        (Some("app/one"), Some(true))
    );
    assert!(e3["value"].is_null());
    let (_, _, e4) = sse.next();
    assert_eq!(e4["key"], "app/three");
}

#[test]
fn service_watch_streams_instance_changes() {
    let n = TestNode::start();
    let since = n.revision();
    n.put_json("/v1/services/prod/api/i1", &json!({"address": "h", "port": 1}));
    n.put_json("/v1/services/prod/web/w1", &json!({"address": "h", "port": 2}));
    let mut sse = Sse::open(&n, &format!("/v1/watch/services/prod/api?since={since}"))
        .unwrap_or_else(|a| panic!("watch refused: {}", a.json()));
    let (_, _, e) = sse.next();
    assert_eq!(
        (e["type"].as_str(), e["instance"].as_str()),
        (Some("service"), Some("i1"))
    );
    assert_eq!(e["view"]["port"], 1);
    n.delete("/v1/services/prod/api/i1");
    let (_, _, e) = sse.next();
    assert_eq!(
        (e["instance"].as_str(), e["deleted"].as_bool()),
        (Some("i1"), Some(true))
    );
}

#[test]
fn watching_from_a_compacted_revision_is_410_with_the_current_revision() {
    let n = TestNode::start_with(|c| c.protocol.watch_log_capacity = 2);
    for i in 0..6 {
        n.write(&format!("/v1/kv/prod/k{i}"), b"v");
    }
    let current = n.revision();
    let a = match Sse::open(&n, "/v1/watch/kv/prod?since=1") {
        Ok(_) => panic!("a compacted revision must not stream"),
        Err(a) => a,
    };
    let v = a.expect_error(410, "snapshot_required");
    assert_eq!(v["current_revision"].as_u64(), Some(current));
    n.get("/v1/watch/kv/prod?since=soon")
        .expect_error(400, "invalid_query");
}

#[test]
fn blocking_list_returns_on_a_change_and_on_timeout() {
    let n = TestNode::start();
    n.write("/v1/kv/prod/app/a", b"1");
    let first = n.get("/v1/kv/prod?prefix=app/");
    let index = first.index.expect("index header");

    // Timeout: nothing changes under the prefix (a change elsewhere does
    // not count).
    n.write("/v1/kv/prod/other/x", b"1");
    let started = Instant::now();
    let a = n.get(&format!("/v1/kv/prod?prefix=app/&index={index}&wait=400ms"));
    assert_eq!(a.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.json()["entries"].as_array().unwrap().len(), 1);

    // Change: answers as soon as a matching key is written.
    let index = a.index.expect("index header");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let started = Instant::now();
            let a = n.get(&format!("/v1/kv/prod?prefix=app/&index={index}&wait=20s"));
            (a, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        n.write("/v1/kv/prod/app/b", b"2");
        let (a, took) = waiter.join().unwrap();
        assert_eq!(a.status, 200);
        assert!(took < Duration::from_secs(10), "blocked {took:?} after a change");
        assert!(a.index.unwrap() > index);
        assert_eq!(a.json()["entries"].as_array().unwrap().len(), 2);
    });
}

#[test]
fn a_stopped_node_answers_503() {
    let n = TestNode::start();
    n.rt.block_on(n.node.shutdown()).unwrap();
    n.get("/v1/health").expect_error(503, "stopped");
    n.put("/v1/kv/prod/k", b"v").expect_error(503, "stopped");
}

#[test]
fn requests_over_the_rate_limit_get_429() {
    let n = TestNode::start_with(|c| c.http_rate_limit = 2);
    let statuses: Vec<u16> = (0..6).map(|_| n.get("/v1/health").status).collect();
    assert_eq!(statuses[0], 200);
    let limited = n.get("/v1/members");
    if limited.status == 200 {
        panic!("7 requests at once all passed a 2/s limit: {statuses:?}");
    }
    limited.expect_error(429, "rate_limited");
}

#[test]
fn resolve_writes_a_chosen_sibling_or_value_over_every_sibling() {
    let n = TestNode::start();
    let v1 = n.write("/v1/kv/prod/pick", b"a");
    let r = n.post_json("/v1/kv/prod/pick/resolve", &json!({ "value": "b" }));
    assert_eq!(r.status, 200, "{}", r.json());
    let now = n.get("/v1/kv/prod/pick").json();
    assert_eq!(now["value"], "b");
    assert_eq!(now["siblings"].as_array().unwrap().len(), 1);
    // v1 is no longer a live sibling.
    n.post_json("/v1/kv/prod/pick/resolve", &json!({ "version": v1 }))
        .expect_error(404, "not_found");
    let current = now["version"]["id"].as_str().unwrap();
    let r = n.post_json("/v1/kv/prod/pick/resolve", &json!({ "version": current }));
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(n.get("/v1/kv/prod/pick").json()["value"], "b");
    n.post_json("/v1/kv/prod/pick/resolve", &json!({}))
        .expect_error(400, "invalid_body");
}

#[test]
fn member_watch_streams_membership_changes() {
    let n = TestNode::start();
    let mut sse =
        Sse::open(&n, "/v1/watch/members?since=0").unwrap_or_else(|a| panic!("watch refused: {}", a.json()));
    let (id, _, e) = sse.next();
    assert!(id.is_some());
    assert_eq!(e["type"], "member");
    assert_eq!(e["member"]["node_id"], n.node.peer_id().as_str());
}

#[test]
fn service_picks_choose_one_eligible_instance_by_strategy() {
    // The node has zone tag z1: a pick with no `zone` prefers z1.
    let n = TestNode::start_with(|c| {
        c.tags.insert("zone".into(), "z1".into());
    });
    let inst = |zone: &str, tags: &[&str]| json!({"address": "10.0.0.1", "port": 80, "tags": tags, "metadata": {"zone": zone}});
    for (id, zone, tags) in [
        ("a", "z1", &["v1"][..]),
        ("b", "z2", &["v1"]),
        ("c", "z2", &["v2"]),
    ] {
        let r = n.put_json(&format!("/v1/services/prod/api/{id}"), &inst(zone, tags));
        assert_eq!(r.status, 200, "{}", r.json());
    }
    let picked = |q: &str| {
        let a = n.get(&format!("/v1/services/prod/api?{q}"));
        let v = a.json();
        assert_eq!(a.status, 200, "{q}: {v}");
        v["instance"].as_str().expect("one instance").to_string()
    };

    // The same key goes to the same instance, over the whole service.
    for key in ["k", "user-1", "user-2"] {
        let q = format!("pick=hash&key={key}&zone=");
        assert_eq!(picked(&q), picked(&q), "{key}");
    }
    // Round robin over equal weights visits every instance in a cycle.
    let cycle: std::collections::BTreeSet<String> =
        (0..3).map(|_| picked("pick=round_robin&zone=")).collect();
    assert_eq!(cycle.len(), 3, "{cycle:?}");
    // Locality: this node's zone by default, another zone when asked.
    for _ in 0..5 {
        assert_eq!(picked("pick=random"), "a");
        assert_ne!(picked("pick=least_outstanding&zone=z2"), "a");
    }
    // Tags are required; health: critical never, passing before warning.
    assert_eq!(picked("pick=random&tag=v2"), "c");
    n.put_json(
        "/v1/services/prod/api/c/heartbeat",
        &json!({"health": "critical"}),
    );
    n.get("/v1/services/prod/api?pick=random&tag=v2")
        .expect_error(404, "not_found");
    n.put_json("/v1/services/prod/api/a/heartbeat", &json!({"health": "warning"}));
    for _ in 0..5 {
        assert_eq!(picked("pick=random"), "b", "passing b before warning a");
    }

    n.get("/v1/services/prod/api?pick=bogus")
        .expect_error(400, "invalid_pick");
    n.get("/v1/services/prod/api?pick=hash")
        .expect_error(400, "invalid_pick");
    let none = n
        .get("/v1/services/prod/nothing?pick=random")
        .expect_error(404, "not_found");
    assert!(none["error"].as_str().unwrap().contains("prod/nothing"), "{none}");
    // Without `pick` the list is unchanged.
    assert_eq!(
        n.get("/v1/services/prod/api").json()["instances"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}
