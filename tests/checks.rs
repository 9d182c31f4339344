//! Active health checks against real listeners the tests start and stop on
//! loopback: an HTTP server, a TCP listener, commands. The owner's checks
//! write the instance's health, which every node of the cluster sees.

#![cfg(feature = "node")]

use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use starling::core::{
    CommandError, HealthStatus, InstanceId, Namespace, ServiceName, ServiceQuery, ServiceSpec,
};
use starling::http::{self, HttpLimits};
use starling::node::testing::{eventually, fast_protocol, launch, loopback_config, ns, Cluster, ScratchDir};
use starling::node::{CheckSpec, NodeError, NodeHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const T: Duration = Duration::from_secs(30);

fn spec(port: u16) -> ServiceSpec {
    ServiceSpec {
        address: "127.0.0.1".into(),
        port,
        tags: Default::default(),
        metadata: Default::default(),
        weight: 100,
        ttl_ms: None,
    }
}

fn names(svc: &str, inst: &str) -> (ServiceName, InstanceId) {
    (ServiceName::new(svc).unwrap(), InstanceId::new(inst).unwrap())
}

/// A tiny HTTP server answering every request with `code` (changeable),
/// stopped by aborting its task (which closes the listener).
struct TestServer {
    port: u16,
    code: Arc<AtomicU16>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let code = Arc::new(AtomicU16::new(200));
        let task = Some(tokio::spawn(serve(listener, code.clone())));
        TestServer { port, code, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.port)
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listen again on the same port.
    async fn resume(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.task = Some(tokio::spawn(serve(listener, self.code.clone())));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: TcpListener, code: Arc<AtomicU16>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let code = code.load(Ordering::SeqCst);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let answer = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = s.write_all(answer.as_bytes()).await;
        });
    }
}

/// Wait until every running node of `c` reports `inst` with `health`.
async fn wait_health_everywhere(
    nodes: &[NodeHandle],
    n: &Namespace,
    svc: &ServiceName,
    inst: &InstanceId,
    health: HealthStatus,
) {
    for node in nodes {
        let (node, n, svc, inst) = (node.clone(), n.clone(), svc.clone(), inst.clone());
        eventually(
            T,
            &format!("{inst} {} on {}", health.as_str(), node.peer_id()),
            || {
                let (node, n, svc, inst) = (node.clone(), n.clone(), svc.clone(), inst.clone());
                async move {
                    node.services(&n, &svc, ServiceQuery::default())
                        .await
                        .unwrap()
                        .iter()
                        .any(|v| v.instance == inst && v.health == health)
                }
            },
        )
        .await;
    }
}

async fn version_of(
    node: &NodeHandle,
    n: &Namespace,
    svc: &ServiceName,
    inst: &InstanceId,
) -> Option<String> {
    node.services(n, svc, ServiceQuery::default())
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.instance == *inst)
        .map(|v| format!("{:?}", v.version))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_turns_the_instance_critical_everywhere_when_its_server_stops_and_passing_when_back() {
    let mut c = Cluster::start(3, "checks-http").await;
    let nodes: Vec<NodeHandle> = c.running().cloned().collect();
    let mut server = TestServer::start().await;
    let n = ns("prod");
    let (svc, inst) = names("web", "web-1");
    let check = CheckSpec::http(server.url())
        .with_interval_ms(200)
        .with_timeout_ms(500)
        .with_failures_before_critical(2);
    c.node(0)
        .register_service_with_checks(&n, &svc, &inst, spec(server.port), vec![check])
        .await
        .unwrap();
    wait_health_everywhere(&nodes, &n, &svc, &inst, HealthStatus::Passing).await;
    eventually(T, "the owner shows the check passing", || {
        let node = c.node(0).clone();
        async move {
            node.check_statuses(None)
                .iter()
                .any(|s| s.status == Some(HealthStatus::Passing) && s.output.contains("200") && s.runs >= 1)
        }
    })
    .await;

    // Health is written on a change only: several passing runs later the
    // registration's version is the same.
    let before = version_of(c.node(0), &n, &svc, &inst).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let runs = c.node(0).check_statuses(None)[0].runs;
    assert!(runs >= 3, "the check kept running ({runs} runs)");
    assert_eq!(
        version_of(c.node(0), &n, &svc, &inst).await,
        before,
        "no write while passing"
    );

    server.stop();
    wait_health_everywhere(&nodes, &n, &svc, &inst, HealthStatus::Critical).await;
    let status = &c.node(0).check_statuses(Some(&n))[0];
    assert_eq!(status.status, Some(HealthStatus::Critical));
    assert!(status.consecutive_failures >= 2, "{status:?}");
    assert!(
        status.last_error.as_deref().is_some_and(|e| e.contains("GET")),
        "{status:?}"
    );
    assert!(
        c.node(1).check_statuses(None).is_empty(),
        "only the owner runs checks"
    );

    server.resume().await;
    wait_health_everywhere(&nodes, &n, &svc, &inst, HealthStatus::Passing).await;

    server.code.store(429, Ordering::SeqCst);
    wait_health_everywhere(&nodes, &n, &svc, &inst, HealthStatus::Warning).await;
    server.code.store(500, Ordering::SeqCst);
    wait_health_everywhere(&nodes, &n, &svc, &inst, HealthStatus::Critical).await;
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_check_follows_a_listener_the_test_opens_and_closes() {
    let mut c = Cluster::start(2, "checks-tcp").await;
    let nodes: Vec<NodeHandle> = c.running().cloned().collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let n = ns("prod");
    let (svc, inst) = names("db", "db-1");
    let check = CheckSpec::tcp(format!("127.0.0.1:{port}"))
        .with_interval_ms(200)
        .with_timeout_ms(500);
    c.node(1)
        .register_service_with_checks(&n, &svc, &inst, spec(port), vec![check])
        .await
        .unwrap();
    wait_health_everywhere(&nodes, &n, &svc, &inst, HealthStatus::Passing).await;
    drop(listener);
    wait_health_everywhere(&nodes, &n, &svc, &inst, HealthStatus::Critical).await;
    let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    wait_health_everywhere(&nodes, &n, &svc, &inst, HealthStatus::Passing).await;
    c.shutdown_all().await;
}

/// A command check whose exit code is the content of `file`.
fn exit_code_check(file: &Path) -> CheckSpec {
    CheckSpec::command(["sh", "-c", &format!("exit $(cat {})", file.display())])
        .with_interval_ms(200)
        .with_timeout_ms(2_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_check_maps_exit_codes_and_is_rearmed_after_a_restart() {
    let mut c = Cluster::start(1, "checks-command").await;
    let scratch = ScratchDir::new().unwrap();
    let code = scratch.path().join("code");
    std::fs::write(&code, "0").unwrap();
    let n = ns("prod");
    let (svc, inst) = names("job", "job-1");
    c.node(0)
        .register_service_with_checks(&n, &svc, &inst, spec(1), vec![exit_code_check(&code)])
        .await
        .unwrap();
    let nodes: Vec<NodeHandle> = c.running().cloned().collect();
    wait_health_everywhere(&nodes, &n, &svc, &inst, HealthStatus::Passing).await;
    std::fs::write(&code, "1").unwrap();
    wait_health_everywhere(&nodes, &n, &svc, &inst, HealthStatus::Warning).await;
    std::fs::write(&code, "2").unwrap();
    wait_health_everywhere(&nodes, &n, &svc, &inst, HealthStatus::Critical).await;
    let status = &c.node(0).check_statuses(None)[0];
    assert!(status.output.contains("exit 2"), "{status:?}");

    // Restart: the check definition was kept with the registration.
    std::fs::write(&code, "0").unwrap();
    let node = c.nodes[0].take().unwrap();
    node.stop_without_leave().await.unwrap();
    c.restart(0).await;
    let nodes: Vec<NodeHandle> = c.running().cloned().collect();
    assert_eq!(c.node(0).check_statuses(None).len(), 1, "re-armed at start");
    wait_health_everywhere(&nodes, &n, &svc, &inst, HealthStatus::Passing).await;
    std::fs::write(&code, "2").unwrap();
    wait_health_everywhere(&nodes, &n, &svc, &inst, HealthStatus::Critical).await;
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_critical_past_its_deregister_delay_is_deregistered_everywhere() {
    let mut c = Cluster::start(2, "checks-dereg").await;
    let n = ns("prod");
    let (svc, inst) = names("batch", "batch-1");
    let check = CheckSpec::command(["sh", "-c", "exit 2"])
        .with_interval_ms(200)
        .with_deregister_critical_after_ms(600);
    c.node(0)
        .register_service_with_checks(&n, &svc, &inst, spec(1), vec![check])
        .await
        .unwrap();
    for node in c.running() {
        let (node, n, svc) = (node.clone(), n.clone(), svc.clone());
        eventually(T, "the instance is gone on every node", || {
            let (node, n, svc) = (node.clone(), n.clone(), svc.clone());
            async move {
                node.services(&n, &svc, ServiceQuery::default())
                    .await
                    .unwrap()
                    .is_empty()
            }
        })
        .await;
    }
    eventually(T, "its check stopped", || {
        let node = c.node(0).clone();
        async move { node.check_statuses(None).is_empty() }
    })
    .await;
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_stop_on_deregistration_and_refuse_heartbeats_ttls_and_bad_definitions() {
    let mut c = Cluster::start(1, "checks-rules").await;
    let node = c.node(0).clone();
    let n = ns("prod");
    let (svc, inst) = names("api", "api-1");
    let check = CheckSpec::command(["true"]).with_interval_ms(200);
    node.register_service_with_checks(&n, &svc, &inst, spec(1), vec![check.clone()])
        .await
        .unwrap();
    let refused = node
        .heartbeat_service(&n, &svc, &inst, Some(HealthStatus::Critical))
        .await;
    assert!(
        matches!(&refused, Err(NodeError::Command(CommandError::Invalid(m))) if m.contains("checks")),
        "{refused:?}"
    );
    let mut with_ttl = spec(1);
    with_ttl.ttl_ms = Some(5_000);
    let (_, other) = names("api", "api-2");
    let refused = node
        .register_service_with_checks(&n, &svc, &other, with_ttl, vec![check.clone()])
        .await;
    assert!(
        matches!(refused, Err(NodeError::Command(CommandError::Invalid(_)))),
        "{refused:?}"
    );
    let refused = node
        .register_service_with_checks(&n, &svc, &other, spec(1), vec![CheckSpec::http("https://x/")])
        .await;
    assert!(
        matches!(refused, Err(NodeError::Command(CommandError::Invalid(_)))),
        "{refused:?}"
    );
    assert!(
        node.services(&n, &svc, ServiceQuery::default())
            .await
            .unwrap()
            .len()
            == 1,
        "nothing registered"
    );

    // Re-registering without checks stops them; so does a deregistration.
    node.register_service(&n, &svc, &inst, spec(1)).await.unwrap();
    assert!(node.check_statuses(None).is_empty());
    node.heartbeat_service(&n, &svc, &inst, None).await.unwrap();
    node.register_service_with_checks(&n, &svc, &inst, spec(1), vec![check])
        .await
        .unwrap();
    assert_eq!(node.check_statuses(None).len(), 1);
    node.deregister_service(&n, &svc, &inst).await.unwrap();
    assert!(node.check_statuses(None).is_empty());
    c.shutdown_all().await;
}

/// `GET url` → (status, JSON or text body).
async fn http_get(url: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let mut r = agent.get(&url).call().expect("request");
        (r.status().as_u16(), r.body_mut().read_to_string().expect("body"))
    })
    .await
    .unwrap()
}

async fn http_put_json(url: String, body: Value) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let mut r = agent
            .put(&url)
            .content_type("application/json")
            .send(body.to_string())
            .expect("request");
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_registered_over_http_show_in_the_api_and_metrics() {
    let dir = ScratchDir::new().unwrap();
    let mut config = loopback_config(dir.path(), "h", fast_protocol("checks-api"), vec![]);
    config.http_command_checks = true;
    let (node, _) = launch(config.clone()).await.unwrap();
    let server = http::serve(
        node.clone(),
        "127.0.0.1:0".parse().unwrap(),
        HttpLimits::from_config(&config),
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    let web = TestServer::start().await;
    let body = json!({
        "address": "127.0.0.1",
        "port": web.port,
        "tags": ["v2"],
        "checks": [
            {"name": "health", "http": web.url(), "interval_ms": 200, "timeout_ms": 500},
            {"command": ["sh", "-c", "echo degraded; exit 1"], "interval_ms": 200}
        ]
    });
    let (status, answer) = http_put_json(format!("{base}/v1/services/prod/web/web-1"), body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let mut bad = body.clone();
    bad["checks"][0]["intervall_ms"] = json!(5);
    let (status, answer) = http_put_json(format!("{base}/v1/services/prod/web/web-2"), bad).await;
    assert_eq!(status, 400, "{answer}");
    let mut bad = body;
    bad["ttl_ms"] = json!(1000);
    let (status, answer) = http_put_json(format!("{base}/v1/services/prod/web/web-2"), bad).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_checks")),
        "{answer}"
    );

    // The worst check (the command's warning) is the instance's health.
    let list_url = format!("{base}/v1/services/prod/web");
    eventually(T, "web-1 warning through HTTP", || {
        let url = list_url.clone();
        async move {
            let (_, text) = http_get(url).await;
            let v: Value = serde_json::from_str(&text).unwrap();
            v["instances"][0]["health"] == "warning"
        }
    })
    .await;
    let (_, text) = http_get(list_url).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    let checks = v["instances"][0]["checks"]
        .as_array()
        .expect("the owner shows the checks");
    assert_eq!(checks.len(), 2, "{v}");
    assert_eq!(checks[0]["name"], "health");
    assert_eq!(checks[1]["name"], "command-2");

    let (status, text) = http_get(format!("{base}/v1/checks/prod")).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let command = &v["checks"][1];
    assert_eq!(command["status"], "warning", "{v}");
    assert_eq!(command["output"], "exit 1: degraded", "{v}");
    assert_eq!(command["last_error"], "exit 1: degraded", "{v}");
    assert_eq!(v["checks"][0]["status"], "passing", "{v}");

    let (_, metrics) = http_get(format!("{base}/metrics")).await;
    let runs = metric(
        &metrics,
        "starling_check_runs_total{kind=\"command\",result=\"warning\"}",
    );
    assert!(runs >= 1.0, "{metrics}");
    assert!(
        metric(
            &metrics,
            "starling_check_status_changes_total{status=\"warning\"}"
        ) >= 1.0
    );
    assert_eq!(metric(&metrics, "starling_checks{status=\"passing\"}"), 1.0);
    assert_eq!(metric(&metrics, "starling_checks{status=\"warning\"}"), 1.0);
    server.shutdown(Duration::from_secs(1)).await;
    node.shutdown().await.unwrap();
}

/// The value of a series in a metrics text (panics if absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_checks_over_http_are_refused_unless_the_node_allows_them() {
    let dir = ScratchDir::new().unwrap();
    let config = loopback_config(dir.path(), "h", fast_protocol("checks-no-cmd"), vec![]);
    assert!(!config.http_command_checks, "off by default");
    let (node, _) = launch(config.clone()).await.unwrap();
    let server = http::serve(
        node.clone(),
        "127.0.0.1:0".parse().unwrap(),
        HttpLimits::from_config(&config),
    )
    .await
    .unwrap();
    let url = format!("http://{}/v1/services/prod/web/web-1", server.local_addr());
    let body = json!({"address": "127.0.0.1", "port": 1, "checks": [{"command": ["true"]}]});
    let (status, answer) = http_put_json(url.clone(), body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (403, Some("command_checks_disabled")),
        "{answer}"
    );
    let (svc, _) = names("web", "web-1");
    assert!(node
        .services(&ns("prod"), &svc, ServiceQuery::default())
        .await
        .unwrap()
        .is_empty());
    let body = json!({"address": "127.0.0.1", "port": 1, "checks": [{"tcp": "127.0.0.1:1"}]});
    let (status, answer) = http_put_json(url, body).await;
    assert_eq!(status, 200, "other kinds are fine: {answer}");
    server.shutdown(Duration::from_secs(1)).await;
    node.shutdown().await.unwrap();
}
