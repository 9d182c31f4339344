//! The network behaviour every node runs, its settings (gossipsub, Kademlia,
//! identify, probes, request-response, connection limits), and the names
//! derived from the cluster name.
//!
//! Gossipsub validates before it forwards: every received message waits
//! for the driver's verdict (`report_message_validation_result`, after the
//! engine took it in), and peer scoring penalises the peer that delivered
//! an invalid one (P4) until, below [`GRAYLIST_THRESHOLD`], everything it
//! sends is ignored.

use std::time::Duration;

use libp2p::gossipsub::{PeerScoreParams, PeerScoreThresholds, TopicScoreParams};
use libp2p::{
    allow_block_list, connection_limits, gossipsub, identify, identity, kad, mdns, request_response,
    StreamProtocol,
};
use prometheus_client::metrics::counter::Counter;

use super::codec::SyncCodec;

pub use derived::{Behaviour, BehaviourEvent};

#[allow(missing_docs)] // the derive generates an undocumented event enum
mod derived {
    use libp2p::swarm::behaviour::toggle::Toggle;
    use libp2p::swarm::NetworkBehaviour;
    use libp2p::{allow_block_list, connection_limits, gossipsub, identify, kad, mdns, request_response};

    use super::SyncCodec;

    /// Every behaviour a Starling node runs.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Peers blocked for fault injection (tests, the real-node simulator).
        pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
        /// Peers refused by the operator (config `deny_peers`).
        pub denied: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
        /// Connection limits (config `[limits]`), after the deny-list so a
        /// denied peer is counted as denied.
        pub limits: connection_limits::Behaviour,
        /// Heartbeats and deltas.
        pub gossipsub: gossipsub::Behaviour,
        /// LAN discovery (off with `--no-mdns`).
        pub mdns: Toggle<mdns::tokio::Behaviour>,
        /// Peer routing beyond the LAN.
        pub kad: kad::Behaviour<kad::store::MemoryStore>,
        /// Learn peers' listen addresses.
        pub identify: identify::Behaviour,
        /// Liveness of connections: the node's own probes (see
        /// `node::probe`).
        pub probe: libp2p_stream::Behaviour,
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
    /// Probe protocol (an 8-byte nonce echoed back).
    pub probe_protocol: StreamProtocol,
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
            probe_protocol: StreamProtocol::try_from_owned(format!("/starling/{cluster}/probe/1"))
                .expect("cluster names are validated to be protocol-safe"),
        }
    }
}

/// Gossipsub mesh degree per topic (low one less, high twice): each node
/// forwards a message to two peers besides the one it came from. A mesh
/// of 2 (low 2, high 4) over the partial view cut a heartbeat's copies
/// per node from about 2 to 1.4, but a killed node then cut some nodes'
/// only mesh path and its suspicion reached the last of 20 nodes through
/// lazy gossip 1.5 s later instead of 60 ms: not worth it.
const MESH_N: usize = 3;

/// How often Kademlia walks the network to refresh its routing table.
const KAD_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(600);

/// Slots per Kademlia bucket (libp2p's default is 20). libp2p-kad
/// allocates every one of its 256 buckets at this size up front (1.6 MB of
/// a node's heap at 20), while the table holds only the bootstrap peers
/// and mDNS finds (see `set_kbucket_inserts` below): members find each
/// other through membership gossip.
const KAD_BUCKET_SIZE: usize = 8;

/// Peers sent lazy gossip (IHAVE) each gossipsub heartbeat, at least.
/// Each IHAVE is a packet and its acknowledgement every second; 2 cost
/// about 0.45 KB/s per node on loopback at 20 nodes, 1 about half that.
const GOSSIP_LAZY: usize = 1;

/// Messages at least this long are announced with IDONTWANT to mesh peers
/// on arrival, so they do not send another copy (gossipsub 1.2). Not
/// heartbeats: the IDONTWANT went out just before the forwarded copy on the
/// same link (validation takes microseconds), a packet that saved nothing.
const IDONTWANT_MIN_BYTES: usize = 16 << 10;

/// A peer whose gossipsub score is below this is graylisted: every RPC it
/// sends is ignored until its score decays back above it. With the P4
/// weight below, that is a fourth invalid message delivered within a few
/// minutes (three in a row, fresh).
pub const GRAYLIST_THRESHOLD: f64 = -80.0;

/// P4: score per invalid message delivered, squared (`-10 n²` per topic).
const INVALID_MESSAGE_WEIGHT: f64 = -10.0;

/// The P4 counter decays to a tenth over this long (sampled every second).
const INVALID_MESSAGE_MEMORY: Duration = Duration::from_secs(600);

/// What the network layer bounds, from the node config.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NetLimits {
    /// Largest gossip message and anti-entropy frame, bytes.
    pub max_message_bytes: usize,
    /// Connection limits.
    pub connections: connection_limits::ConnectionLimits,
    /// Counts anti-entropy frames refused for their length prefix.
    pub oversized_frames: Counter,
    /// Where TCP connections count their bytes.
    pub wire: super::WireCounters,
    /// Where TCP connections' substreams count their bytes, by protocol.
    pub protocols: super::ProtocolCounters,
}

impl NetLimits {
    /// Limits of `max_message_bytes` per message, at most
    /// `max_incoming` established and `max_pending_incoming` pending
    /// inbound connections and `max_per_peer` with one peer.
    pub fn new(
        max_message_bytes: usize,
        max_incoming: u32,
        max_pending_incoming: u32,
        max_per_peer: u32,
        oversized_frames: Counter,
    ) -> Self {
        NetLimits {
            max_message_bytes,
            connections: connection_limits::ConnectionLimits::default()
                .with_max_established_incoming(Some(max_incoming))
                .with_max_pending_incoming(Some(max_pending_incoming))
                .with_max_established_per_peer(Some(max_per_peer)),
            oversized_frames,
            wire: super::WireCounters::default(),
            protocols: super::ProtocolCounters::default(),
        }
    }
}

/// Gossipsub peer scoring: only P4 (invalid messages) on both topics, plus
/// gossipsub's own behaviour penalty (P7: broken IWANT promises, GRAFT
/// floods). No positive scores (nothing to earn that would absorb
/// penalties), no mesh-delivery penalty (P3: the delta topic is quiet by
/// nature) and no IP colocation penalty (P6: nodes behind one NAT, or a
/// whole test cluster on loopback, share an address).
pub fn peer_score(names: &ClusterNames) -> (PeerScoreParams, PeerScoreThresholds) {
    let topic = TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: gossipsub::score_parameter_decay(INVALID_MESSAGE_MEMORY),
        ..TopicScoreParams::default()
    };
    let mut params = PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        app_specific_weight: 0.0,
        ..PeerScoreParams::default()
    };
    for t in [&names.heartbeat_topic, &names.delta_topic] {
        params.topics.insert(t.hash(), topic.clone());
    }
    let thresholds = PeerScoreThresholds {
        graylist_threshold: GRAYLIST_THRESHOLD,
        ..PeerScoreThresholds::default()
    };
    (params, thresholds)
}

impl Behaviour {
    /// Build the behaviour for `key` in the named cluster.
    pub fn new(
        key: &identity::Keypair,
        names: &ClusterNames,
        enable_mdns: bool,
        limits: &NetLimits,
        sync_timeout: Duration,
    ) -> Result<Self, String> {
        let peer_id = key.public().to_peer_id();
        let max_message_bytes = limits.max_message_bytes;
        // A small mesh over a partial view, no flooding of own publishes
        // (they go to the mesh, topped up with random subscribers while
        // the mesh is forming), IDONTWANT for anything bigger than a
        // heartbeat-sized message, and lazy gossip to few peers: one copy
        // of a message per node or little more, whatever the cluster size.
        let gossip_cfg = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(Duration::from_secs(1))
            .mesh_n(MESH_N)
            .mesh_n_low(MESH_N - 1)
            .mesh_n_high(2 * MESH_N)
            .mesh_outbound_min(1)
            .gossip_lazy(GOSSIP_LAZY)
            .gossip_factor(0.1)
            .flood_publish(false)
            .idontwant_message_size_threshold(IDONTWANT_MIN_BYTES)
            .validation_mode(gossipsub::ValidationMode::Strict)
            // Nothing is forwarded before the engine has judged it.
            .validate_messages()
            .message_id_fn(|m: &gossipsub::Message| {
                gossipsub::MessageId::from(xxhash_rust::xxh3::xxh3_128(&m.data).to_be_bytes().to_vec())
            })
            .max_transmit_size(max_message_bytes.min(64 << 20))
            .build()
            .map_err(|e| format!("gossipsub config: {e}"))?;
        let mut gossipsub =
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gossip_cfg)
                .map_err(|e| format!("gossipsub: {e}"))?;
        let (params, thresholds) = peer_score(names);
        gossipsub
            .with_peer_score(params, thresholds)
            .map_err(|e| format!("gossipsub peer score: {e}"))?;
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
        // Members carry their addresses and the driver dials what it needs:
        // Kademlia finds peers beyond the bootstrap list at start, and a
        // random walk every ten minutes keeps its table fresh. (Every minute,
        // each walk opened connections and handshakes to a dozen peers: the
        // largest idle cost that grew with the cluster.)
        kad_cfg.set_periodic_bootstrap_interval(Some(KAD_BOOTSTRAP_INTERVAL));
        // Only the peers the driver adds go into the routing table (the
        // bootstrap list and mDNS finds), not every peer that connects or
        // identifies itself: libp2p-kad walks the network again whenever a
        // peer is inserted into a table of fewer than 20, each walk dialing
        // the peers it finds, and a 50-node join opened ~1,600 connections
        // (~480 without) and spent 4.5x the CPU (docs/PERFORMANCE.md
        // "Join at 50 nodes"). Members find each other through membership
        // gossip, which carries every member's addresses.
        kad_cfg.set_kbucket_inserts(kad::BucketInserts::Manual);
        kad_cfg.set_kbucket_size(std::num::NonZeroUsize::new(KAD_BUCKET_SIZE).expect("a positive constant"));
        let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
        // LAN nodes rarely learn a confirmed external address: serve anyway.
        kad.set_mode(Some(kad::Mode::Server));
        let identify = identify::Behaviour::new(
            identify::Config::new("/starling/id/1".into(), key.public())
                .with_agent_version(format!("starling/{}", env!("CARGO_PKG_VERSION"))),
        );
        let sync = request_response::Behaviour::with_codec(
            SyncCodec::new(max_message_bytes, limits.oversized_frames.clone()),
            [(
                names.sync_protocol.clone(),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default().with_request_timeout(sync_timeout),
        );
        Ok(Behaviour {
            blocked: allow_block_list::Behaviour::default(),
            denied: allow_block_list::Behaviour::default(),
            limits: connection_limits::Behaviour::new(limits.connections.clone()),
            gossipsub,
            mdns: mdns.into(),
            kad,
            identify,
            probe: libp2p_stream::Behaviour::new(),
            sync,
        })
    }
}
