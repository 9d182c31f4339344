//! Gray rollout end to end: three in-process nodes on loopback (mDNS off),
//! each with its HTTP API, retagged through `NodeHandle::reload`; a canary
//! set on one node is read only by the matching nodes, and promote / abort
//! converge everywhere.

use std::time::Duration;

use serde_json::Value;
use starling::http::{self, HttpLimits, HttpServer};
use starling::node::testing::{eventually, fast_protocol, loopback_config, Cluster};

/// One blocking HTTP call from a tokio test: `(status, JSON body)`.
async fn call(method: &'static str, url: String, body: Option<&'static str>) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let resp = match (method, body) {
            ("GET", _) => agent.get(&url).call(),
            ("PUT", b) => agent.put(&url).send(b.unwrap_or("").as_bytes()),
            ("POST", b) => agent.post(&url).send(b.unwrap_or("").as_bytes()),
            ("DELETE", _) => agent.delete(&url).call(),
            _ => unreachable!("method {method}"),
        };
        let mut resp = resp.expect("request reaches the server");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    })
    .await
    .expect("request task")
}

struct Apis {
    servers: Vec<HttpServer>,
}

impl Apis {
    fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.servers[i].local_addr())
    }

    async fn value(&self, i: usize, key: &str) -> Option<String> {
        let (status, v) = call("GET", self.url(i, &format!("/v1/kv/app/{key}")), None).await;
        (status == 200).then(|| v["value"].as_str().unwrap_or("").to_string())
    }

    async fn wait_values(&self, key: &str, want: [Option<&str>; 3]) {
        for (i, want) in want.into_iter().enumerate() {
            let want = want.map(str::to_string);
            eventually(
                Duration::from_secs(20),
                &format!("node {i} reads {key} = {want:?}"),
                || {
                    let want = want.clone();
                    async move { self.value(i, key).await == want }
                },
            )
            .await;
        }
    }
}

/// Three nodes tagged region=eu, region=eu, region=us, with their APIs.
async fn tagged_cluster(name: &str) -> (Cluster, Apis) {
    let cluster = Cluster::start(3, name).await;
    let mut servers = Vec::new();
    for (i, region) in ["eu", "eu", "us"].into_iter().enumerate() {
        let bootstrap = if i == 0 {
            vec![]
        } else {
            vec![cluster.seed_addr.clone()]
        };
        let mut cfg = loopback_config(
            cluster.dirs[i].path(),
            &format!("n{i}"),
            fast_protocol(name),
            bootstrap,
        );
        cfg.tags.insert("region".into(), region.into());
        cluster.node(i).reload(&cfg).await.expect("retag");
        let addr = "127.0.0.1:0".parse().unwrap();
        servers.push(
            http::serve(cluster.node(i).clone(), addr, HttpLimits::default())
                .await
                .expect("serve"),
        );
    }
    (cluster, Apis { servers })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_reaches_only_matching_nodes_and_promote_converges_everywhere() {
    let (mut cluster, apis) = tagged_cluster("canary-promote").await;
    let (s, _) = call("PUT", apis.url(2, "/v1/kv/app/feature"), Some("off")).await;
    assert_eq!(s, 200);
    apis.wait_values("feature", [Some("off"); 3]).await;

    let (s, v) = call(
        "PUT",
        apis.url(2, "/v1/canary/app/feature?selector=region=eu"),
        Some("on"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    apis.wait_values("feature", [Some("on"), Some("on"), Some("off")])
        .await;

    // Every node shows the canary; only the eu ones serve it.
    for (i, here) in [true, true, false].into_iter().enumerate() {
        let (s, v) = call("GET", apis.url(i, "/v1/canary/app/feature"), None).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["active_here"], here, "node {i}: {v}");
        assert_eq!(v["selector"]["region"], "eu");
        let (_, kv) = call("GET", apis.url(i, "/v1/kv/app/feature"), None).await;
        assert_eq!(kv["source"], if here { "canary" } else { "stable" }, "{kv}");
    }
    let (_, list) = call("GET", apis.url(2, "/v1/canary/app"), None).await;
    assert_eq!(list["canaries"].as_array().map(Vec::len), Some(1), "{list}");

    let (s, v) = call("POST", apis.url(0, "/v1/canary/app/feature/promote"), None).await;
    assert_eq!(s, 200, "{v}");
    apis.wait_values("feature", [Some("on"); 3]).await;
    for i in 0..3 {
        let url = apis.url(i, "/v1/canary/app/feature");
        eventually(Duration::from_secs(20), "the canary to end", || {
            let url = url.clone();
            async move { call("GET", url, None).await.0 == 404 }
        })
        .await;
    }
    let (s, v) = call("POST", apis.url(1, "/v1/canary/app/feature/promote"), None).await;
    assert_eq!(s, 404, "promoting twice: {v}");
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_restores_the_stable_value_and_bad_targets_are_refused() {
    let (mut cluster, apis) = tagged_cluster("canary-abort").await;
    call("PUT", apis.url(0, "/v1/kv/app/limits"), Some("100")).await;
    let (s, v) = call(
        "PUT",
        apis.url(0, "/v1/canary/app/limits?selector=region=us&percent=100"),
        Some("200"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    apis.wait_values("limits", [Some("100"), Some("100"), Some("200")])
        .await;

    let (s, v) = call("DELETE", apis.url(1, "/v1/canary/app/limits"), None).await;
    assert_eq!(s, 200, "{v}");
    apis.wait_values("limits", [Some("100"); 3]).await;

    for bad in ["", "?percent=0", "?percent=abc", "?selector=region"] {
        let (s, v) = call(
            "PUT",
            apis.url(0, &format!("/v1/canary/app/limits{bad}")),
            Some("x"),
        )
        .await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    let (s, _) = call("POST", apis.url(0, "/v1/canary/app/limits"), None).await;
    assert_eq!(s, 405);
    cluster.shutdown_all().await;
}
