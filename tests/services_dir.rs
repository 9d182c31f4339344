//! Services from files: a node watching a directory registers, updates and
//! deregisters instances as files are added, changed, broken, fixed and
//! removed, while it runs and across a restart.

#![cfg(feature = "node")]

use std::path::Path;
use std::time::Duration;

use starling::core::{HealthStatus, ServiceName, ServiceQuery, ServiceView};
use starling::http::{self, HttpLimits, HttpServer};
use starling::node::testing::{eventually, fast_protocol, launch, loopback_config, ns, ScratchDir};
use starling::node::{NodeConfig, NodeHandle};

const T: Duration = Duration::from_secs(30);

/// Write a file whole (rename over), as a deployment tool would.
fn put_file(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn web_file(port: u16) -> String {
    format!(
        "name = \"web\"\nnamespace = \"prod\"\naddress = \"127.0.0.1\"\nport = {port}\n\
         tags = [\"v2\"]\nweight = 40\n[metadata]\nversion = \"1.0\"\n"
    )
}

async fn instances(node: &NodeHandle, service: &str) -> Vec<ServiceView> {
    node.services(
        &ns("prod"),
        &ServiceName::new(service).unwrap(),
        ServiceQuery::default(),
    )
    .await
    .unwrap()
}

/// Wait until `service` has exactly the instances `want` as (id, port).
async fn wait_instances(node: &NodeHandle, service: &str, want: &[(&str, u16)]) {
    let want: Vec<(String, u16)> = want.iter().map(|(i, p)| (i.to_string(), *p)).collect();
    eventually(T, &format!("{service} instances {want:?}"), || {
        let (node, want) = (node.clone(), want.clone());
        async move {
            let got: Vec<(String, u16)> = instances(&node, service)
                .await
                .iter()
                .map(|v| (v.instance.as_str().to_string(), v.spec.port))
                .collect();
            got == want
        }
    })
    .await;
}

async fn metrics_text(server: &HttpServer) -> String {
    let url = format!("http://{}/metrics", server.local_addr());
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .expect("metrics answer")
            .body_mut()
            .read_to_string()
            .unwrap()
    })
    .await
    .unwrap()
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

async fn start(data: &Path, services: &Path) -> (NodeHandle, HttpServer, NodeConfig) {
    let mut config = loopback_config(data, "files", fast_protocol("services-dir"), vec![]);
    config.services_dir = Some(services.to_path_buf());
    let (node, _) = launch(config.clone()).await.unwrap();
    let server = http::serve(
        node.clone(),
        "127.0.0.1:0".parse().unwrap(),
        HttpLimits::from_config(&config),
    )
    .await
    .unwrap();
    (node, server, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_files_register_update_survive_breakage_and_deregister_while_the_node_runs() {
    let data = ScratchDir::new().unwrap();
    let services = ScratchDir::new().unwrap();
    let dir = services.path();
    let (node, server, _) = start(data.path(), dir).await;

    // Add.
    put_file(dir, "web-1.toml", &web_file(8080));
    wait_instances(&node, "web", &[("web-1", 8080)]).await;
    let v = &instances(&node, "web").await[0];
    assert_eq!(v.spec.weight, 40);
    assert!(v.spec.tags.contains("v2"));
    assert_eq!(v.spec.metadata.get("version").map(String::as_str), Some("1.0"));

    // Change.
    put_file(dir, "web-1.toml", &web_file(8081));
    wait_instances(&node, "web", &[("web-1", 8081)]).await;

    // Break: an error is counted once, the registration stays.
    put_file(dir, "web-1.toml", "name = \"web\"\nport = \n");
    eventually(T, "a parse error counted", || {
        let server = &server;
        async move {
            metric(
                &metrics_text(server).await,
                "starling_service_file_errors_total{reason=\"parse\"}",
            ) == 1
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    wait_instances(&node, "web", &[("web-1", 8081)]).await;
    let text = metrics_text(&server).await;
    assert_eq!(
        metric(&text, "starling_service_file_errors_total{reason=\"parse\"}"),
        1,
        "an unchanged broken file is reported once"
    );

    // Fix.
    put_file(dir, "web-1.toml", &web_file(8082));
    wait_instances(&node, "web", &[("web-1", 8082)]).await;

    // A file with a check; its id is explicit.
    put_file(
        dir,
        "api.toml",
        "name = \"api\"\nnamespace = \"prod\"\nid = \"api-1\"\naddress = \"127.0.0.1\"\nport = 9000\n\
         [[checks]]\ncommand = [\"sh\", \"-c\", \"exit 2\"]\ninterval_ms = 200\n",
    );
    wait_instances(&node, "api", &[("api-1", 9000)]).await;
    eventually(T, "api-1 critical from its check", || {
        let node = node.clone();
        async move { instances(&node, "api").await[0].health == HealthStatus::Critical }
    })
    .await;
    assert_eq!(node.check_statuses(None).len(), 1);

    // A second file declaring the same instance is refused and counted.
    put_file(
        dir,
        "api-copy.toml",
        "name = \"api\"\nnamespace = \"prod\"\nid = \"api-1\"\naddress = \"127.0.0.1\"\nport = 9999\n",
    );
    eventually(T, "a duplicate counted", || {
        let server = &server;
        async move {
            metric(
                &metrics_text(server).await,
                "starling_service_file_errors_total{reason=\"duplicate\"}",
            ) == 1
        }
    })
    .await;
    wait_instances(&node, "api", &[("api-1", 9000)]).await;
    std::fs::remove_file(dir.join("api-copy.toml")).unwrap();

    // Delete.
    std::fs::remove_file(dir.join("web-1.toml")).unwrap();
    wait_instances(&node, "web", &[]).await;
    wait_instances(&node, "api", &[("api-1", 9000)]).await;
    // Counted once the deregistration returns (just after it shows).
    eventually(T, "one deregistration counted", || {
        let server = &server;
        async move {
            let text = metrics_text(server).await;
            metric(
                &text,
                "starling_service_file_changes_total{action=\"deregister\"}",
            ) == 1
                && metric(&text, "starling_service_file_changes_total{action=\"register\"}") == 4
        }
    })
    .await;
    server.shutdown(Duration::from_secs(1)).await;
    node.stop_without_leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_removed_while_the_node_was_down_deregisters_at_start_and_checks_come_back() {
    let data = ScratchDir::new().unwrap();
    let services = ScratchDir::new().unwrap();
    let dir = services.path();
    put_file(dir, "web-1.toml", &web_file(8080));
    put_file(
        dir,
        "job-1.toml",
        "name = \"job\"\nnamespace = \"prod\"\naddress = \"127.0.0.1\"\nport = 1\n\
         [[checks]]\ncommand = [\"true\"]\ninterval_ms = 200\n",
    );
    let (node, server, _) = start(data.path(), dir).await;
    wait_instances(&node, "web", &[("web-1", 8080)]).await;
    wait_instances(&node, "job", &[("job-1", 1)]).await;
    server.shutdown(Duration::from_secs(1)).await;
    node.stop_without_leave().await.unwrap();

    std::fs::remove_file(dir.join("web-1.toml")).unwrap();
    let (node, server, _) = start(data.path(), dir).await;
    assert_eq!(
        node.check_statuses(None).len(),
        1,
        "job-1's check re-armed at start"
    );
    wait_instances(&node, "web", &[]).await;
    wait_instances(&node, "job", &[("job-1", 1)]).await;
    // The unchanged file was not registered again.
    eventually(T, "the removed file's deregistration counted", || {
        let server = &server;
        async move {
            metric(
                &metrics_text(server).await,
                "starling_service_file_changes_total{action=\"deregister\"}",
            ) == 1
        }
    })
    .await;
    let text = metrics_text(&server).await;
    assert_eq!(
        metric(&text, "starling_service_file_changes_total{action=\"register\"}"),
        0
    );
    server.shutdown(Duration::from_secs(1)).await;
    node.stop_without_leave().await.unwrap();
}
