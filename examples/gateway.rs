//! Embedding Starling in an edge gateway.
//!
//! The gateway keeps its routing table in Starling config keys, registers
//! itself as a service instance with a TTL, routes requests to the
//! instances of an upstream service with `NodeHandle::pick` (sticky by user
//! with consistent hashing, smooth weighted round robin, least outstanding
//! requests), and follows route changes with a watch — reading its last
//! known routes from local state even when it starts with no peers
//! reachable.
//!
//! ```text
//! cargo run --example gateway -- [--data-dir DIR] [--bootstrap MULTIADDR]
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use starling::core::{InstanceId, Key, Namespace, PickOptions, ServiceName, ServiceSpec, Strategy};
use starling::node::{Node, NodeConfig, NodeHandle, WatchFilter, WatchItem};

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

    route_simulated_requests(&node, &ns).await?;

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

/// Register three upstream instances of `api` (weights 50 / 30 / 20) and
/// route simulated requests to them three ways, printing where they went.
/// In a deployment each upstream registers itself from its own node and
/// every gateway node sees them by gossip.
async fn route_simulated_requests(
    node: &NodeHandle,
    ns: &Namespace,
) -> Result<(), Box<dyn std::error::Error>> {
    let api = ServiceName::new("api")?;
    for (id, port, weight) in [("api-1", 9001, 50), ("api-2", 9002, 30), ("api-3", 9003, 20)] {
        let spec = ServiceSpec {
            address: "127.0.0.1".into(),
            port,
            tags: Default::default(),
            metadata: Default::default(),
            weight,
            ttl_ms: None,
        };
        node.register_service(ns, &api, &InstanceId::new(id)?, spec)
            .await?;
    }

    // Sticky sessions: every request of a user goes to the same upstream
    // (rendezvous hashing: only ~1/N of users move when an upstream goes).
    let mut per_user: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    let mut hashed = BTreeMap::<String, u32>::new();
    for r in 0..1_000 {
        let user = format!("user-{}", r % 40);
        let by_user = PickOptions::new(Strategy::Hash { key: user.clone() });
        let picked = node.pick(ns, &api, by_user).await?.ok_or("no upstream")?;
        let to = picked.instance().instance.as_str().to_string();
        *per_user.entry(user).or_default().entry(to.clone()).or_default() += 1;
        *hashed.entry(to).or_default() += 1;
    }
    let sticky = per_user.values().all(|upstreams| upstreams.len() == 1);
    println!("hash by user:  {hashed:?} (each of 40 users on one upstream: {sticky})");

    // Smooth weighted round robin: shares exactly 5:3:2, interleaved.
    let mut order = String::new();
    let mut rr = BTreeMap::<String, u32>::new();
    for _ in 0..1_000 {
        let picked = node
            .pick(ns, &api, PickOptions::new(Strategy::RoundRobin))
            .await?
            .ok_or("no upstream")?;
        let to = picked.instance().instance.as_str().to_string();
        if order.len() < 10 {
            order.push(to.chars().last().unwrap_or('?'));
        }
        *rr.entry(to).or_default() += 1;
    }
    println!("round robin:   {rr:?} (first ten: {order})");

    // Least outstanding: a request is in flight while its `Picked` lives;
    // keep 8 in flight, ending the oldest each time a new one starts.
    let mut in_flight = VecDeque::new();
    let mut lo = BTreeMap::<String, u32>::new();
    for _ in 0..1_000 {
        let picked = node
            .pick(ns, &api, PickOptions::new(Strategy::LeastOutstanding))
            .await?
            .ok_or("no upstream")?;
        *lo.entry(picked.instance().instance.as_str().to_string())
            .or_default() += 1;
        in_flight.push_back(picked);
        if in_flight.len() > 8 {
            in_flight.pop_front(); // that request ended
        }
    }
    println!("least outstanding: {lo:?}");
    Ok(())
}
