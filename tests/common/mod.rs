//! Shared helpers for the multi-node tests: loopback only, mDNS off,
//! bootstrap peers, fast protocol timers, bounded waits.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use starling::core::{Config, Key, Namespace};
use starling::node::{Node, NodeConfig, NodeHandle};

/// Protocol settings fast enough for tests (heartbeat 200 ms).
pub fn fast_protocol(cluster: &str) -> Config {
    let mut p = Config::default();
    p.cluster = cluster.into();
    p.heartbeat_interval_ms = 200;
    p.suspect_timeout_ms = 1_000;
    p.sync_interval_ms = 1_000;
    p.sync_min_interval_ms = 200;
    p.sync_timeout_ms = 2_000;
    p
}

/// A node config on loopback with mDNS off.
pub fn loopback_config(dir: &Path, name: &str, cluster: &str, bootstrap: Vec<String>) -> NodeConfig {
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    c.http = None;
    c.bootstrap = bootstrap;
    c.name = Some(name.into());
    c.mdns = false;
    c.protocol = fast_protocol(cluster);
    c
}

/// Wait until `check` returns true, polling every 50 ms, or panic after
/// `timeout` with `what`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node's first listen address (with /p2p/), waiting for it.
pub async fn listen_addr(node: &NodeHandle) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = node.status().await.expect("status");
        if let Some(a) = st.listen_addrs.iter().find(|a| a.contains("127.0.0.1")) {
            return a.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "node never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running cluster of in-process nodes, each with its own data dir.
pub struct Cluster {
    pub nodes: Vec<Option<NodeHandle>>,
    pub dirs: Vec<tempfile::TempDir>,
    pub cluster: String,
    pub seed_addr: String,
}

impl Cluster {
    /// Start `n` nodes; all bootstrap from node 0.
    pub async fn start(n: usize, cluster: &str) -> Cluster {
        let mut dirs = Vec::new();
        let mut nodes = Vec::new();
        let d0 = tempfile::tempdir().unwrap();
        let first = Node::start(loopback_config(d0.path(), "n0", cluster, vec![]))
            .await
            .expect("start n0");
        let seed_addr = listen_addr(&first).await;
        dirs.push(d0);
        nodes.push(Some(first));
        for i in 1..n {
            let d = tempfile::tempdir().unwrap();
            let cfg = loopback_config(d.path(), &format!("n{i}"), cluster, vec![seed_addr.clone()]);
            nodes.push(Some(Node::start(cfg).await.expect("start node")));
            dirs.push(d);
        }
        let c = Cluster {
            nodes,
            dirs,
            cluster: cluster.into(),
            seed_addr,
        };
        c.wait_members_alive(n, Duration::from_secs(30)).await;
        c
    }

    pub fn node(&self, i: usize) -> &NodeHandle {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn running(&self) -> impl Iterator<Item = &NodeHandle> {
        self.nodes.iter().flatten()
    }

    /// Wait until every running node sees `n` alive members.
    pub async fn wait_members_alive(&self, n: usize, timeout: Duration) {
        for node in self.running() {
            let node = node.clone();
            eventually(
                timeout,
                &format!("{n} alive members on {}", node.peer_id()),
                || {
                    let node = node.clone();
                    async move {
                        let m = node.members().await.unwrap();
                        m.iter()
                            .filter(|m| m.status == starling::core::MemberStatus::Alive)
                            .count()
                            == n
                    }
                },
            )
            .await;
        }
    }

    /// Wait until every running node reads `value` for the key.
    pub async fn wait_value(&self, ns: &Namespace, key: &Key, value: Option<&[u8]>, timeout: Duration) {
        for node in self.running() {
            let node = node.clone();
            let (ns, key) = (ns.clone(), key.clone());
            let want = value.map(|v| v.to_vec());
            eventually(
                timeout,
                &format!("{key} = {want:?} on {}", node.peer_id()),
                || {
                    let (node, ns, key, want) = (node.clone(), ns.clone(), key.clone(), want.clone());
                    async move { node.get(&ns, &key).await.unwrap().map(|e| e.value) == want }
                },
            )
            .await;
        }
    }

    /// Wait until every running node has the same state digest.
    pub async fn wait_converged(&self, timeout: Duration) {
        let nodes: Vec<NodeHandle> = self.running().cloned().collect();
        eventually(timeout, "equal digests on all running nodes", || {
            let nodes = nodes.clone();
            async move {
                let mut digests = Vec::new();
                for n in &nodes {
                    digests.push(n.status().await.unwrap().digest);
                }
                digests.windows(2).all(|w| w[0] == w[1])
            }
        })
        .await;
    }

    /// Start node `i` again from its data dir.
    pub async fn restart(&mut self, i: usize) {
        let cfg = loopback_config(
            self.dirs[i].path(),
            &format!("n{i}"),
            &self.cluster,
            vec![self.seed_addr.clone()],
        );
        self.nodes[i] = Some(Node::start(cfg).await.expect("restart"));
    }

    pub async fn shutdown_all(&mut self) {
        for n in self.nodes.iter_mut() {
            if let Some(n) = n.take() {
                let _ = n.stop_without_leave().await;
            }
        }
    }
}

pub fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

pub fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}
