//! The network behaviour every node runs, its settings (gossipsub, Kademlia,
//! identify, ping, request-response), and the names derived from the
//! cluster name.

use std::time::Duration;

use libp2p::{
    allow_block_list, gossipsub, identify, identity, kad, mdns, ping, request_response, StreamProtocol,
};

use super::codec::SyncCodec;

pub use derived::{Behaviour, BehaviourEvent};

#[allow(missing_docs)] // the derive generates an undocumented event enum
mod derived {
    use libp2p::swarm::behaviour::toggle::Toggle;
    use libp2p::swarm::NetworkBehaviour;
    use libp2p::{allow_block_list, gossipsub, identify, kad, mdns, ping, request_response};

    use super::SyncCodec;

    /// Every behaviour a Starling node runs.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Peers blocked for fault injection (tests, the real-node simulator).
        pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
        /// Peers refused by the operator (config `deny_peers`).
        pub denied: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
        /// Heartbeats and deltas.
        pub gossipsub: gossipsub::Behaviour,
        /// LAN discovery (off with `--no-mdns`).
        pub mdns: Toggle<mdns::tokio::Behaviour>,
        /// Peer routing beyond the LAN.
        pub kad: kad::Behaviour<kad::store::MemoryStore>,
        /// Learn peers' listen addresses.
        pub identify: identify::Behaviour,
        /// Liveness of connections.
        pub ping: ping::Behaviour,
        /// Anti-entropy.
        pub sync: request_response::Behaviour<SyncCodec>,
    }
}

/// Names derived from the cluster name, so clusters never cross.
#[derive(Clone, Debug)]
pub struct ClusterNames {
    /// Heartbeat topic.
    pub heartbeat_topic: gossipsub::IdentTopic,
    /// Delta topic.
    pub delta_topic: gossipsub::IdentTopic,
    /// Anti-entropy protocol.
    pub sync_protocol: StreamProtocol,
    /// Kademlia protocol.
    pub kad_protocol: StreamProtocol,
}

impl ClusterNames {
    /// Names for `cluster`.
    pub fn new(cluster: &str) -> Self {
        ClusterNames {
            heartbeat_topic: gossipsub::IdentTopic::new(format!("starling/{cluster}/heartbeat/1")),
            delta_topic: gossipsub::IdentTopic::new(format!("starling/{cluster}/delta/1")),
            sync_protocol: StreamProtocol::try_from_owned(format!("/starling/{cluster}/sync/1"))
                .expect("cluster names are validated to be protocol-safe"),
            kad_protocol: StreamProtocol::try_from_owned(format!("/starling/{cluster}/kad/1"))
                .expect("cluster names are validated to be protocol-safe"),
        }
    }
}

impl Behaviour {
    /// Build the behaviour for `key` in the named cluster.
    pub fn new(
        key: &identity::Keypair,
        names: &ClusterNames,
        enable_mdns: bool,
        max_message_bytes: usize,
        sync_timeout: Duration,
    ) -> Result<Self, String> {
        let peer_id = key.public().to_peer_id();
        let gossip_cfg = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(Duration::from_millis(500))
            .validation_mode(gossipsub::ValidationMode::Strict)
            .message_id_fn(|m: &gossipsub::Message| {
                gossipsub::MessageId::from(xxhash_rust::xxh3::xxh3_128(&m.data).to_be_bytes().to_vec())
            })
            .max_transmit_size(max_message_bytes.min(64 << 20))
            .build()
            .map_err(|e| format!("gossipsub config: {e}"))?;
        let mut gossipsub =
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gossip_cfg)
                .map_err(|e| format!("gossipsub: {e}"))?;
        gossipsub
            .subscribe(&names.heartbeat_topic)
            .map_err(|e| format!("subscribe: {e}"))?;
        gossipsub
            .subscribe(&names.delta_topic)
            .map_err(|e| format!("subscribe: {e}"))?;
        let mdns = if enable_mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| format!("mdns: {e}"))?,
            )
        } else {
            None
        };
        let mut kad_cfg = kad::Config::new(names.kad_protocol.clone());
        kad_cfg.set_periodic_bootstrap_interval(Some(Duration::from_secs(60)));
        let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
        // LAN nodes rarely learn a confirmed external address: serve anyway.
        kad.set_mode(Some(kad::Mode::Server));
        let identify = identify::Behaviour::new(
            identify::Config::new("/starling/id/1".into(), key.public())
                .with_agent_version(format!("starling/{}", env!("CARGO_PKG_VERSION"))),
        );
        let ping = ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5)));
        let sync = request_response::Behaviour::with_codec(
            SyncCodec::new(max_message_bytes),
            [(
                names.sync_protocol.clone(),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default().with_request_timeout(sync_timeout),
        );
        Ok(Behaviour {
            blocked: allow_block_list::Behaviour::default(),
            denied: allow_block_list::Behaviour::default(),
            gossipsub,
            mdns: mdns.into(),
            kad,
            identify,
            ping,
            sync,
        })
    }
}
