//! Embedding Starling in an edge gateway.
//!
//! The gateway keeps its routing table in Starling config keys, registers
//! itself as a service instance with a TTL, and follows route changes with a
//! watch — reading its last known routes from local state even when it
//! starts with no peers reachable.
//!
//! ```text
//! cargo run --example gateway -- [--data-dir DIR] [--bootstrap MULTIADDR]
//! ```

use std::time::Duration;

use futures::StreamExt;
use starling::core::{InstanceId, Key, Namespace, ServiceName, ServiceSpec};
use starling::node::{Node, NodeConfig, WatchFilter, WatchItem};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = NodeConfig::default();
    config.data_dir = arg("--data-dir")
        .unwrap_or_else(|| "./gateway-data".into())
        .into();
    config.http = None; // the gateway talks to the node through the handle
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.mdns = false;
    config.bootstrap = arg("--bootstrap").into_iter().collect();
    config.tags.insert("role".into(), "gateway".into());
    let node = Node::start(config).await?;
    println!("gateway node {}", node.peer_id());

    let ns = Namespace::new("edge")?;
    // Routes known from the last run are readable at once, offline.
    let routes = node.list(&ns, "routes/", 1000).await?;
    println!("{} routes restored from local state", routes.len());
    if routes.is_empty() {
        node.put(&ns, &Key::new("routes/api")?, b"http://10.0.0.7:8080".to_vec())
            .await?;
    }

    // Announce ourselves; the TTL keeps us honest if we hang.
    let svc = ServiceName::new("gateway")?;
    let inst = InstanceId::new(node.peer_id().chars().rev().take(12).collect::<String>())?;
    let spec = ServiceSpec {
        address: "127.0.0.1".into(),
        port: 8443,
        tags: ["edge".to_string()].into_iter().collect(),
        metadata: Default::default(),
        weight: 100,
        ttl_ms: Some(10_000),
    };
    node.register_service(&ns, &svc, &inst, spec).await?;

    // Follow route changes for a little while, heartbeating the instance.
    let mut watch = node
        .watch(
            WatchFilter::Kv {
                namespace: ns.clone(),
                prefix: "routes/".into(),
            },
            None,
        )
        .await?;
    let mut beat = tokio::time::interval(Duration::from_secs(3));
    let stop = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(stop);
    node.put(&ns, &Key::new("routes/api")?, b"http://10.0.0.8:8080".to_vec())
        .await?;
    loop {
        tokio::select! {
            Some(item) = watch.next() => match item {
                Ok(WatchItem::Kv { key, value, revision, .. }) => println!(
                    "route {key} -> {} (revision {revision})",
                    value.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_else(|| "<deleted>".into())
                ),
                Ok(_) => {}
                Err(e) => { eprintln!("watch ended: {e}"); break; }
            },
            _ = beat.tick() => node.heartbeat_service(&ns, &svc, &inst, None).await?,
            _ = &mut stop => break,
        }
    }
    node.shutdown().await?;
    Ok(())
}
