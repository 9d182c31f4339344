//! Loopback clusters of real nodes in one process, for integration tests
//! and the simulator's real mode (feature `test-utils`; not a stable API).
//!
//! Everything here stays on loopback: nodes listen on
//! `127.0.0.1` with an OS-chosen port, find each other through bootstrap
//! addresses, and run with mDNS off.
//!
//! Two levels:
//! * building blocks that return errors, for a harness that manages its
//!   own nodes (data directories, restarts, blocked peers):
//!   [`loopback_config`], [`launch`] (start and wait for the address),
//!   [`listen_addr`], [`wait_formed`], [`ScratchDir`];
//! * a [`Cluster`] of `n` nodes for tests, launched with
//!   [`Cluster::launch`] (errors) or [`Cluster::start`] (panics), with
//!   waits that panic with a message when a condition does not hold in
//!   time.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use starling::node::testing::{key, ns, Cluster};
//!
//! let mut c = Cluster::start(3, "demo").await;
//! c.node(0).put(&ns("app"), &key("k"), b"v".to_vec()).await.unwrap();
//! c.wait_value(&ns("app"), &key("k"), Some(b"v"), Duration::from_secs(30)).await;
//! c.shutdown_all().await;
//! # }
//! ```

use std::future::Future;
use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::core::{Config, Key, MemberStatus, Namespace};

use super::config::NodeConfig;
use super::error::NodeError;
use super::handle::NodeHandle;
use super::start::Node;

/// The listen address of a loopback node: TCP on an OS-chosen port.
pub const LOOPBACK_LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// How long [`launch`] waits for a started node's address.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Protocol settings fast enough for tests: heartbeat 200 ms, suspicion
/// after 1 s, anti-entropy every second.
pub fn fast_protocol(cluster: &str) -> Config {
    Config {
        cluster: cluster.into(),
        heartbeat_interval_ms: 200,
        suspect_timeout_ms: 1_000,
        sync_interval_ms: 1_000,
        sync_min_interval_ms: 200,
        sync_timeout_ms: 2_000,
        ..Config::default()
    }
}

/// A node config on loopback: data in `data_dir`, listening on
/// [`LOOPBACK_LISTEN`], no HTTP API, no DNS, mDNS off, dialling
/// `bootstrap`. (`Node::start` serves neither; a test that wants DNS
/// calls `crate::dns::serve` with port 0.)
pub fn loopback_config(data_dir: &Path, name: &str, protocol: Config, bootstrap: Vec<String>) -> NodeConfig {
    NodeConfig {
        data_dir: data_dir.to_path_buf(),
        listen: vec![LOOPBACK_LISTEN.into()],
        http: None,
        dns: None,
        bootstrap,
        name: Some(name.into()),
        mdns: false,
        protocol,
        ..NodeConfig::default()
    }
}

/// Why a loopback node or cluster could not be launched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// A scratch data directory could not be created.
    #[error("scratch directory: {0}")]
    ScratchDir(#[from] io::Error),
    /// A node failed to start (or stopped while being waited on).
    #[error("node {name}: {source}")]
    Node {
        /// The node's name.
        name: String,
        /// Why.
        source: NodeError,
    },
    /// A node started but advertised no loopback address in time; it was
    /// stopped.
    #[error("node {name} never listened on loopback within {timeout:?}")]
    NeverListened {
        /// The node's name.
        name: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// Not every node saw every other one alive in time.
    #[error("the cluster of {size} nodes did not form within {timeout:?}")]
    NotFormed {
        /// The cluster size.
        size: usize,
        /// How long it was given.
        timeout: Duration,
    },
}

/// `node`'s loopback address (ending in `/p2p/<id>`), waiting up to
/// `timeout` for it to listen.
pub async fn listen_addr(node: &NodeHandle, timeout: Duration) -> Result<String, LaunchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = node.status().await.map_err(|source| LaunchError::Node {
            name: node.peer_id(),
            source,
        })?;
        if let Some(a) = status.listen_addrs.iter().find(|a| a.contains("/ip4/127.0.0.1/")) {
            return Ok(a.clone());
        }
        if Instant::now() > deadline {
            return Err(LaunchError::NeverListened {
                name: status.name,
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Start a node and wait for its loopback address. A node that never
/// listens is stopped (without a leave) before the error is returned.
pub async fn launch(config: NodeConfig) -> Result<(NodeHandle, String), LaunchError> {
    let name = config.effective_name();
    let node = Node::start(config)
        .await
        .map_err(|source| LaunchError::Node { name, source })?;
    match listen_addr(&node, LISTEN_TIMEOUT).await {
        Ok(addr) => Ok((node, addr)),
        Err(e) => {
            let _ = node.stop_without_leave().await;
            Err(e)
        }
    }
}

/// Wait until every one of `nodes` sees at least `n` members alive
/// (itself included), polling every 50 ms.
pub async fn wait_formed(nodes: &[NodeHandle], n: usize, timeout: Duration) -> Result<(), LaunchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut formed = true;
        for node in nodes {
            if alive_members(node).await < n {
                formed = false;
                break;
            }
        }
        if formed {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LaunchError::NotFormed { size: n, timeout });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Members `node` holds alive (0 if it stopped).
async fn alive_members(node: &NodeHandle) -> usize {
    node.members()
        .await
        .map(|m| m.iter().filter(|m| m.status == MemberStatus::Alive).count())
        .unwrap_or(0)
}

/// Wait until `check` returns true, polling every 50 ms, or panic after
/// `timeout` naming `what`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node's admission counters (what `GET /metrics` shows as
/// `starling_cluster_key_mismatches_total` and
/// `starling_denied_connections_total`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmissionCounts {
    /// Connections that failed the cluster key check.
    pub key_mismatches: u64,
    /// Connections from denied peers refused.
    pub denied_refused_inbound: u64,
    /// Dials to denied peers refused.
    pub denied_refused_outbound: u64,
    /// Denied peers disconnected when the deny-list named them.
    pub denied_closed: u64,
}

/// `node`'s admission counters.
pub fn admission_counts(node: &NodeHandle) -> AdmissionCounts {
    use super::metrics::DeniedEvent;
    let m = node.latency_metrics();
    AdmissionCounts {
        key_mismatches: m.key_mismatches.get(),
        denied_refused_inbound: m.denied_count(DeniedEvent::RefusedInbound),
        denied_refused_outbound: m.denied_count(DeniedEvent::RefusedOutbound),
        denied_closed: m.denied_count(DeniedEvent::Closed),
    }
}

/// A namespace from a literal (panics if invalid).
pub fn ns(s: &str) -> Namespace {
    Namespace::new(s).expect("a valid namespace")
}

/// A key from a literal (panics if invalid).
pub fn key(s: &str) -> Key {
    Key::new(s).expect("a valid key")
}

/// A fresh, empty directory under the system temp directory, removed with
/// everything in it when dropped (`tempfile`'s `TempDir`). Stop the node
/// using it first.
pub type ScratchDir = tempfile::TempDir;

/// Whom each node of a [`Cluster`] dials at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bootstrap {
    /// Every node dials node 0.
    First,
    /// Node `i` dials nodes `0..min(i, k)`: the first `k` nodes are seeds.
    Seeds(usize),
    /// Node `i` dials node 0 and node `i - 1`.
    FirstAndPrevious,
}

impl Bootstrap {
    /// The addresses node `i` dials, given the addresses of the nodes
    /// started before it (`earlier[j]` is node `j`'s).
    pub fn for_node(self, i: usize, earlier: &[String]) -> Vec<String> {
        let picks: Vec<usize> = match self {
            Bootstrap::First => vec![0],
            Bootstrap::Seeds(k) => (0..i.min(k.max(1))).collect(),
            Bootstrap::FirstAndPrevious => {
                let mut v = vec![0, i.saturating_sub(1)];
                v.dedup();
                v
            }
        };
        picks
            .into_iter()
            .filter(|&j| j < i)
            .filter_map(|j| earlier.get(j).cloned())
            .collect()
    }
}

/// How to launch a [`Cluster`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterSpec {
    /// Number of nodes.
    pub size: usize,
    /// Every node's protocol settings.
    pub protocol: Config,
    /// Whom each node dials.
    pub bootstrap: Bootstrap,
    /// How long every node may take to see every other one alive.
    pub formation_timeout: Duration,
}

impl ClusterSpec {
    /// `size` nodes with `protocol`, all dialling node 0, 30 s to form.
    pub fn new(size: usize, protocol: Config) -> ClusterSpec {
        ClusterSpec {
            size,
            protocol,
            bootstrap: Bootstrap::First,
            formation_timeout: Duration::from_secs(30),
        }
    }
}

/// A running cluster of in-process loopback nodes, each with its own data
/// directory. Node `i` is named `n{i}`.
pub struct Cluster {
    /// The nodes; `None` once a test took or stopped one.
    pub nodes: Vec<Option<NodeHandle>>,
    /// Their data directories.
    pub dirs: Vec<ScratchDir>,
    /// Their loopback addresses (as first started).
    pub addrs: Vec<String>,
    /// Their protocol settings.
    pub protocol: Config,
    /// Node 0's address, which a restarted node dials.
    pub seed_addr: String,
}

impl Cluster {
    /// Start `n` nodes of cluster `cluster` with [`fast_protocol`], all
    /// dialling node 0, and wait until each sees all `n` alive; panics if
    /// that fails.
    pub async fn start(n: usize, cluster: &str) -> Cluster {
        Cluster::launch(ClusterSpec::new(n, fast_protocol(cluster)))
            .await
            .unwrap_or_else(|e| panic!("cluster {cluster:?} of {n} nodes: {e}"))
    }

    /// Start the nodes `spec` describes, one after the other, and wait until
    /// each sees every node alive. On error every node started is stopped.
    pub async fn launch(spec: ClusterSpec) -> Result<Cluster, LaunchError> {
        let mut c = Cluster {
            nodes: Vec::new(),
            dirs: Vec::new(),
            addrs: Vec::new(),
            protocol: spec.protocol.clone(),
            seed_addr: String::new(),
        };
        let started = c.launch_nodes(&spec).await;
        let formed = match started {
            Ok(()) => {
                let nodes: Vec<NodeHandle> = c.running().cloned().collect();
                wait_formed(&nodes, spec.size, spec.formation_timeout).await
            }
            Err(e) => Err(e),
        };
        match formed {
            Ok(()) => Ok(c),
            Err(e) => {
                c.shutdown_all().await;
                Err(e)
            }
        }
    }

    async fn launch_nodes(&mut self, spec: &ClusterSpec) -> Result<(), LaunchError> {
        for i in 0..spec.size {
            let dir = ScratchDir::new()?;
            let bootstrap = spec.bootstrap.for_node(i, &self.addrs);
            let config = loopback_config(dir.path(), &format!("n{i}"), spec.protocol.clone(), bootstrap);
            let (node, addr) = launch(config).await?;
            if i == 0 {
                self.seed_addr = addr.clone();
            }
            self.nodes.push(Some(node));
            self.dirs.push(dir);
            self.addrs.push(addr);
        }
        Ok(())
    }

    /// Node `i` (panics if it is not running).
    pub fn node(&self, i: usize) -> &NodeHandle {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// The running nodes.
    pub fn running(&self) -> impl Iterator<Item = &NodeHandle> {
        self.nodes.iter().flatten()
    }

    /// The config node `i` restarts with: its data directory, dialling
    /// [`Cluster::seed_addr`].
    pub fn node_config(&self, i: usize) -> NodeConfig {
        loopback_config(
            self.dirs[i].path(),
            &format!("n{i}"),
            self.protocol.clone(),
            vec![self.seed_addr.clone()],
        )
    }

    /// Wait until every running node sees exactly `n` members alive.
    pub async fn wait_members_alive(&self, n: usize, timeout: Duration) {
        for node in self.running() {
            let node = node.clone();
            eventually(
                timeout,
                &format!("{n} alive members on {}", node.peer_id()),
                || {
                    let node = node.clone();
                    async move { alive_members(&node).await == n }
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
                    async move { node.get(&ns, &key).await.expect("get").map(|e| e.value) == want }
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
                    digests.push(n.status().await.expect("status").digest);
                }
                digests.windows(2).all(|w| w[0] == w[1])
            }
        })
        .await;
    }

    /// Start node `i` again on its data directory (panics if it fails).
    pub async fn restart(&mut self, i: usize) {
        let node = Node::start(self.node_config(i))
            .await
            .unwrap_or_else(|e| panic!("restarting n{i}: {e}"));
        self.nodes[i] = Some(node);
    }

    /// Stop every running node without a leave.
    pub async fn shutdown_all(&mut self) {
        for n in self.nodes.iter_mut() {
            if let Some(n) = n.take() {
                let _ = n.stop_without_leave().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|j| format!("a{j}")).collect()
    }

    #[test]
    fn bootstrap_topologies_dial_only_nodes_started_earlier() {
        let earlier = addrs(5);
        assert!(Bootstrap::First.for_node(0, &earlier[..0]).is_empty());
        assert_eq!(Bootstrap::First.for_node(4, &earlier[..4]), ["a0"]);
        assert_eq!(Bootstrap::Seeds(2).for_node(1, &earlier[..1]), ["a0"]);
        assert_eq!(Bootstrap::Seeds(2).for_node(4, &earlier[..4]), ["a0", "a1"]);
        assert_eq!(Bootstrap::FirstAndPrevious.for_node(1, &earlier[..1]), ["a0"]);
        assert_eq!(
            Bootstrap::FirstAndPrevious.for_node(4, &earlier[..4]),
            ["a0", "a3"]
        );
    }

    #[test]
    fn a_loopback_config_is_valid_and_stays_on_loopback() {
        let c = loopback_config(Path::new("/tmp/x"), "n0", fast_protocol("t"), vec![]);
        c.validate().unwrap();
        assert!(!c.mdns && c.http.is_none());
        assert_eq!(c.listen, [LOOPBACK_LISTEN]);
    }
}
