//! Cluster benchmark: N real libp2p nodes in one process on loopback.
//!
//! ```text
//! cargo run --release --example cluster_bench -- [--nodes 5,20,50] [--writes 200]
//! ```
//! For each N it reports: write-to-visible-everywhere latency (p50/p99/max,
//! measured with watches on every node), time to heal a half/half partition
//! (from unblocking to equal digests everywhere), idle protocol bytes per
//! second per node, and the process RSS divided by N.

#![allow(clippy::disallowed_methods)] // a benchmark driver: measures real time

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use starling::core::{Config, Key, Namespace};
use starling::node::{Node, NodeConfig, NodeHandle, WatchFilter, WatchItem};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn protocol(cluster: &str) -> Config {
    let mut p = Config::default();
    p.cluster = cluster.into();
    p
}

async fn start(n: usize, dirs: &[tempfile::TempDir], cluster: &str) -> Vec<NodeHandle> {
    let mut nodes: Vec<NodeHandle> = Vec::new();
    let mut seeds: Vec<String> = Vec::new();
    for (i, dir) in dirs.iter().enumerate().take(n) {
        let mut c = NodeConfig::default();
        c.data_dir = dir.path().to_path_buf();
        c.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        c.http = None;
        c.mdns = false;
        c.name = Some(format!("bench{i}"));
        // Bootstrap from the first node and one recent node.
        c.bootstrap = seeds
            .iter()
            .take(1)
            .chain(seeds.iter().rev().take(1))
            .cloned()
            .collect();
        c.protocol = protocol(cluster);
        let node = Node::start(c).await.expect("start node");
        let addr = loop {
            let st = node.status().await.unwrap();
            if let Some(a) = st.listen_addrs.into_iter().find(|a| a.contains("127.0.0.1")) {
                break a;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        seeds.push(addr);
        nodes.push(node);
    }
    nodes
}

async fn wait_all_alive(nodes: &[NodeHandle], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let mut ok = true;
        for n in nodes {
            let alive = n
                .members()
                .await
                .unwrap()
                .iter()
                .filter(|m| m.status == starling::core::MemberStatus::Alive)
                .count();
            if alive != nodes.len() {
                ok = false;
                break;
            }
        }
        if ok {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn wait_converged(nodes: &[NodeHandle], timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let mut digests = Vec::new();
        for n in nodes {
            digests.push(n.status().await.unwrap().digest);
        }
        if digests.windows(2).all(|w| w[0] == w[1]) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .map_or(0, |kb| kb * 1024)
}

async fn bytes_out_total(nodes: &[NodeHandle]) -> u64 {
    let mut total = 0;
    for n in nodes {
        total += n.counters().await.unwrap().bytes_out.values().sum::<u64>();
    }
    total
}

async fn run(n: usize, writes: usize) {
    let cluster = format!("bench-{n}");
    let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let t0 = Instant::now();
    let nodes = start(n, &dirs, &cluster).await;
    if !wait_all_alive(&nodes, Duration::from_secs(120)).await {
        println!("N={n}: cluster did not form within 120 s");
        return;
    }
    let formed = t0.elapsed();
    let ns = Namespace::new("bench").unwrap();

    // Latency: every node watches the namespace and records arrival times.
    let arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    for node in &nodes {
        let mut w = node
            .watch(
                WatchFilter::Kv {
                    namespace: ns.clone(),
                    prefix: String::new(),
                },
                None,
            )
            .await
            .unwrap();
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Some(Ok(item)) = w.next().await {
                if let WatchItem::Kv { key, .. } = item {
                    arrivals
                        .lock()
                        .unwrap()
                        .entry(key.to_string())
                        .or_default()
                        .push(Instant::now());
                }
            }
        });
    }
    let mut started = Vec::new();
    for i in 0..writes {
        let k = Key::new(format!("k{i}")).unwrap();
        let node = &nodes[i % n];
        let at = Instant::now();
        node.put(&ns, &k, vec![b'x'; 64]).await.unwrap();
        started.push((k.to_string(), at));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut lat = Vec::new();
    let mut incomplete = 0;
    {
        let arr = arrivals.lock().unwrap();
        for (k, at) in &started {
            match arr.get(k) {
                Some(v) if v.len() >= n => {
                    let last = v.iter().max().unwrap();
                    lat.push(last.duration_since(*at).as_secs_f64() * 1000.0);
                }
                _ => incomplete += 1,
            }
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());

    // Idle traffic: protocol bytes sent over 10 s of quiet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b1 = bytes_out_total(&nodes).await;
    let idle = Duration::from_secs(10);
    tokio::time::sleep(idle).await;
    let b2 = bytes_out_total(&nodes).await;
    let idle_bps = (b2 - b1) as f64 / idle.as_secs_f64() / n as f64;

    // Partition half/half, write on both sides, heal, time to converge.
    let ids: Vec<_> = nodes.iter().map(|h| h.node_id()).collect();
    let half = n / 2;
    for (i, node) in nodes.iter().enumerate() {
        let other: Vec<_> = if i < half {
            ids[half..].to_vec()
        } else {
            ids[..half].to_vec()
        };
        node.set_blocked_peers(other).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, node) in nodes.iter().enumerate().take(n) {
        let k = Key::new(format!("split/{i}")).unwrap();
        node.put(&ns, &k, b"during partition".to_vec()).await.unwrap();
    }
    for node in &nodes {
        node.set_blocked_peers(vec![]).await.unwrap();
    }
    let heal = wait_converged(&nodes, Duration::from_secs(120)).await;
    let rss = rss_bytes() as f64 / n as f64;

    println!(
        "N={n:>3}  formed {:>6.1}s  write->all p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  ({} of {} writes not seen everywhere)  heal {}  idle {:>7.0} B/s/node  RSS/node {:>5.1} MiB",
        formed.as_secs_f64(),
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        incomplete,
        writes,
        heal.map_or("did not converge in 120 s".to_string(), |d| format!("{:.2} s", d.as_secs_f64())),
        idle_bps,
        rss / (1024.0 * 1024.0),
    );
    for node in &nodes {
        let _ = node.stop_without_leave().await;
    }
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = arg("--nodes", "5,20,50")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let writes: usize = arg("--writes", "200").parse().unwrap_or(200);
    for n in sizes {
        run(n, writes).await;
    }
}
