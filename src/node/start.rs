//! Starting a node: open its data directory, restore its state and
//! identity, build the swarm, listen, and spawn the driver task.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use crate::core::crypto::{Ed25519Keys, SharedKeys};
use crate::core::{Engine, NodeInfo};
use crate::net::{build_swarm, node_id_of, ClusterKey, ClusterNames, KeyCheck, NetLimits};
use crate::store::{IdentityError, Store};

use super::checks::Checks;
use super::clock::wall_ms;
use super::config::{default_listen, NodeConfig, NodeConfigError};
use super::driver::Driver;
use super::error::NodeError;
use super::handle::NodeHandle;
use super::metrics::{Limit, NodeMetrics};
use super::picker::Picker;
use super::services_dir;

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
        // Read the key before opening anything: a bad key file changes nothing.
        let cluster_key = match &config.cluster_key_file {
            Some(path) => Some(ClusterKey::load(path)?),
            None => None,
        };
        // The identity is read, migrated or made under the store's lock; a
        // key file or directory open to other users is refused here.
        let mut store = Store::open(&config.data_dir)?;
        let mut secret = store.identity_secret()?;
        let signer: SharedKeys = Arc::new(Ed25519Keys::from_secret(secret));
        let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).map_err(|e| {
            IdentityError::Format {
                path: config.data_dir.clone(),
                reason: e.to_string(),
            }
        })?;
        let peer_id = key.public().to_peer_id();
        let me = node_id_of(&peer_id).expect("an ed25519 peer id always maps to a node id");
        let mut snapshot = store.load()?;
        // After a crash, lazy member commits it lost may have issued
        // revisions past the stored one: never issue one twice.
        snapshot.meta.revision = store.resume_revision(&snapshot);
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
        let metrics = Arc::new(NodeMetrics::new());
        let check = cluster_key.map(|k| KeyCheck::new(k, metrics.key_mismatches.clone()));
        let l = &config.limits;
        let mut net_limits = NetLimits::new(
            config.protocol.max_message_bytes,
            l.connections_max_incoming,
            l.connections_max_pending_incoming,
            l.connections_max_per_peer,
            metrics.limit(Limit::SyncFrameSize),
        );
        net_limits.wire = metrics.wire.clone();
        net_limits.protocols = metrics.protocols.clone();
        let mut swarm = build_swarm(
            key,
            &names,
            config.mdns,
            &net_limits,
            Duration::from_millis(config.protocol.sync_timeout_ms),
            check,
        )?;
        let listen = listen_addrs(&config, cluster_key.is_some())?;
        for addr in listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|source| NodeError::Listen { addr, source })?;
        }
        let bootstrap = parse_addrs("bootstrap", &config.bootstrap)?;
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let denied: BTreeSet<PeerId> = config.deny_peers.iter().filter_map(|p| p.parse().ok()).collect();
        let driver = Driver::new(engine, swarm, store, names, rx, bootstrap, info)
            .with_admission(metrics, denied)
            .with_limits(&config.limits);
        let metrics = driver.latency_metrics();
        // Every line the node's task logs carries its id.
        tokio::spawn(tracing::Instrument::instrument(
            driver.run(),
            tracing::info_span!("node", id = %peer_id),
        ));
        tracing::info!(node_id = %peer_id, cluster = %config.protocol.cluster, "node started");
        match &cluster_key {
            Some(k) => tracing::info!(
                fingerprint = %k.fingerprint(),
                "cluster key loaded: only nodes with the same key can connect (TCP only)"
            ),
            None => tracing::warn!(
                "no cluster key: this cluster is open to anyone who can reach this node's port \
                 (and, with mDNS on, to any host on the LAN using the same cluster name), who can \
                 then read and change all its state. Make a key with `starling keygen`, copy the \
                 file to every node and start each with --cluster-key FILE \
                 (config: cluster_key_file)"
            ),
        }
        let handle = NodeHandle {
            tx,
            node: me,
            metrics,
            picker: Arc::new(Picker::new(xxhash_rust::xxh3::xxh3_64(me.as_bytes()))),
            checks: Arc::new(Checks::open(&config.data_dir, config.http_command_checks)),
        };
        // Health checks of the instances this node still owns, then the
        // service files (both after the driver runs: they read through it).
        if let Err(e) = handle.checks.restore(&handle).await {
            tracing::error!(error = %e, "cannot re-arm health checks");
        }
        if let Some(dir) = &config.services_dir {
            services_dir::spawn(handle.clone(), dir.clone());
        }
        Ok(handle)
    }
}

/// The addresses to listen on: `listen`, except that a keyed node drops
/// the QUIC entry of the built-in default set (validation refuses QUIC
/// addresses set explicitly with a key).
fn listen_addrs(config: &NodeConfig, keyed: bool) -> Result<Vec<Multiaddr>, NodeError> {
    let addrs = parse_addrs("listen", &config.listen)?;
    if !keyed || config.listen != default_listen() {
        return Ok(addrs);
    }
    let (udp, tcp): (Vec<Multiaddr>, Vec<Multiaddr>) = addrs
        .into_iter()
        .partition(|a| a.iter().any(|p| matches!(p, Protocol::Udp(_))));
    for a in &udp {
        tracing::info!(addr = %a, "not listening on QUIC: a node with a cluster key connects over TCP only");
    }
    Ok(tcp)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyed_node_drops_quic_from_the_default_listen_set_only() {
        let config = NodeConfig::default();
        let keyed = listen_addrs(&config, true).unwrap();
        assert!(!keyed.is_empty());
        assert!(keyed
            .iter()
            .all(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_)))));
        assert!(keyed
            .iter()
            .all(|a| !a.iter().any(|p| matches!(p, Protocol::Udp(_)))));
        assert_eq!(
            listen_addrs(&config, false).unwrap().len(),
            config.listen.len(),
            "an open node listens on every default address"
        );
        let explicit = NodeConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            ..NodeConfig::default()
        };
        assert_eq!(listen_addrs(&explicit, true).unwrap().len(), 1);
    }
}
