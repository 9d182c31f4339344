//! Starting a node: open its data directory, restore its state and
//! identity, build the swarm, listen, and spawn the driver task.

use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use tokio::sync::mpsc;

use crate::core::crypto::{Ed25519Keys, SharedKeys};
use crate::core::{Engine, NodeInfo};
use crate::net::{build_swarm, node_id_of, ClusterNames};
use crate::store::Store;

use super::clock::wall_ms;
use super::config::{NodeConfig, NodeConfigError};
use super::driver::Driver;
use super::error::NodeError;
use super::handle::NodeHandle;

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
        config.validate().map_err(NodeError::Config)?;
        let mut store = Store::open(&config.data_dir)?;
        let mut secret = store.identity_secret()?;
        let signer: SharedKeys = Arc::new(Ed25519Keys::from_secret(secret));
        let key =
            libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).map_err(|e| NodeError::Identity {
                data_dir: config.data_dir.clone(),
                reason: e.to_string(),
            })?;
        let peer_id = key.public().to_peer_id();
        let me = node_id_of(&peer_id).expect("an ed25519 peer id always maps to a node id");
        let snapshot = store.load()?;
        let info = NodeInfo {
            name: config.effective_name(),
            addrs: Vec::new(),
            tags: config.tags.clone(),
        };
        let now = wall_ms();
        let seed = u64::from_le_bytes(me.as_bytes()[..8].try_into().expect("8 bytes")) ^ now;
        debug_assert_eq!(signer.id(), me, "the engine signs as the libp2p identity");
        let engine = Engine::new(
            config.protocol.clone(),
            signer,
            info.clone(),
            now,
            seed,
            Some(snapshot),
        )
        .map_err(NodeError::Protocol)?;
        let names = ClusterNames::new(&config.protocol.cluster);
        let mut swarm = build_swarm(
            key,
            &names,
            config.mdns,
            config.protocol.max_message_bytes,
            Duration::from_millis(config.protocol.sync_timeout_ms),
        )?;
        for addr in parse_addrs("listen", &config.listen)? {
            swarm
                .listen_on(addr.clone())
                .map_err(|source| NodeError::Listen { addr, source })?;
        }
        let bootstrap = parse_addrs("bootstrap", &config.bootstrap)?;
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let driver = Driver::new(engine, swarm, store, names, rx, bootstrap, info);
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

/// Parse the multiaddrs of config field `field` (already validated, so an
/// error here names the field like validation does).
fn parse_addrs(field: &str, addrs: &[String]) -> Result<Vec<Multiaddr>, NodeError> {
    addrs
        .iter()
        .map(|a| {
            a.parse().map_err(|e| {
                NodeError::Config(NodeConfigError::Field {
                    field: field.into(),
                    reason: format!("{a:?} is not a multiaddr: {e}"),
                })
            })
        })
        .collect()
}
