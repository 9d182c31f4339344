//! The node: start one, talk to it through a [`NodeHandle`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use starling::core::{Key, Namespace};
//! use starling::node::{Node, NodeConfig};
//!
//! let mut config = NodeConfig::default();
//! config.data_dir = "/var/lib/gateway/starling".into();
//! config.mdns = false;
//! config.bootstrap = vec!["/ip4/10.0.0.5/tcp/4001/p2p/12D3KooW...".into()];
//! let node = Node::start(config).await?;
//! let ns = Namespace::new("prod")?;
//! node.put(&ns, &Key::new("routes/v1")?, b"upstream=a".to_vec()).await?;
//! let entry = node.get(&ns, &Key::new("routes/v1")?).await?;
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

mod config;
mod driver;
mod handle;
pub(crate) mod metrics;

use std::time::Duration;

use libp2p::Multiaddr;
use tokio::sync::mpsc;

use crate::core::{Engine, NodeInfo};
use crate::net::{node_id_of, ClusterNames};
use crate::store::Store;

pub use config::{LogFormat, NodeConfig, NodeConfigError};
pub use handle::{
    MemberView, NodeError, NodeHandle, NodeStatus, WatchError, WatchFilter, WatchItem, WatchStream,
    WriteResult,
};

/// Capacity of the handle → node request queue.
const REQUEST_QUEUE: usize = 1024;

/// Starts nodes.
#[derive(Debug)]
#[non_exhaustive]
pub struct Node;

impl Node {
    /// Start a node: open (or create) its data directory, restore its state
    /// and identity, listen, dial bootstrap peers, and run it on a tokio
    /// task. Local reads work at once, with no peers.
    pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
        config.validate().map_err(|e| NodeError::Startup(e.to_string()))?;
        let startup = |e: String| NodeError::Startup(e);
        let mut store = Store::open(&config.data_dir).map_err(|e| startup(e.to_string()))?;
        let secret = store.identity_secret().map_err(|e| startup(e.to_string()))?;
        let mut secret_bytes = secret;
        let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret_bytes)
            .map_err(|e| startup(format!("identity key in {}: {e}", config.data_dir.display())))?;
        let peer_id = key.public().to_peer_id();
        let me = node_id_of(&peer_id).expect("an ed25519 peer id always maps to a node id");
        let snapshot = store.load().map_err(|e| startup(e.to_string()))?;
        let info = NodeInfo {
            name: config.effective_name(),
            addrs: Vec::new(),
            tags: config.tags.clone(),
        };
        let now = driver::wall_ms();
        let seed = u64::from_le_bytes(me.as_bytes()[..8].try_into().expect("8 bytes")) ^ now;
        let engine = Engine::new(
            config.protocol.clone(),
            me,
            info.clone(),
            now,
            seed,
            Some(snapshot),
        )
        .map_err(|e| startup(e.to_string()))?;
        let names = ClusterNames::new(&config.protocol.cluster);
        let mut swarm = driver::build_swarm(
            key,
            &names,
            config.mdns,
            config.protocol.max_message_bytes,
            Duration::from_millis(config.protocol.sync_timeout_ms),
        )
        .map_err(startup)?;
        for a in &config.listen {
            let addr: Multiaddr = a
                .parse()
                .map_err(|e| startup(format!("listen address {a:?}: {e}")))?;
            swarm
                .listen_on(addr.clone())
                .map_err(|e| startup(format!("cannot listen on {addr}: {e}")))?;
        }
        let bootstrap = config
            .bootstrap
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|e| startup(format!("bootstrap address {a:?}: {e}")))
            })
            .collect::<Result<Vec<Multiaddr>, _>>()?;
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let driver = driver::Driver::new(engine, swarm, store, names, rx, bootstrap, info);
        let metrics = driver.latency_metrics();
        // Every line the node's task logs carries its id.
        tokio::spawn(tracing::Instrument::instrument(
            driver.run(),
            tracing::info_span!("node", id = %peer_id),
        ));
        tracing::info!(node_id = %peer_id, cluster = %config.protocol.cluster, "node started");
        Ok(NodeHandle {
            tx,
            node: me,
            metrics,
        })
    }
}
