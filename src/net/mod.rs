//! The libp2p side: the network behaviour, the anti-entropy codec, and the
//! mapping between libp2p peer ids and core node ids. No protocol decisions
//! are made here.

use std::io;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{
    allow_block_list, gossipsub, identify, identity, kad, mdns, ping, request_response, PeerId,
    StreamProtocol,
};

use crate::core::NodeId;

/// The node id of a libp2p peer: its ed25519 public key. `None` for peers
/// with other key types (they cannot take part).
pub fn node_id_of(peer: &PeerId) -> Option<NodeId> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None; // not an identity multihash: key not inlined
    }
    let pk = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    let ed = pk.try_into_ed25519().ok()?;
    Some(NodeId(ed.to_bytes()))
}

/// The libp2p peer id of a node id.
pub fn peer_id_of(node: &NodeId) -> Option<PeerId> {
    let ed = identity::ed25519::PublicKey::try_from_bytes(node.as_bytes()).ok()?;
    Some(identity::PublicKey::from(ed).to_peer_id())
}

/// The peer id as text, or the hex node id if it is not a valid key.
pub fn display_id(node: &NodeId) -> String {
    peer_id_of(node).map_or_else(|| node.to_string(), |p| p.to_string())
}

/// Request-response codec for anti-entropy: a 4-byte big-endian length and
/// the core's envelope bytes, with the length checked before reading.
#[derive(Clone, Debug)]
pub struct SyncCodec {
    max_bytes: usize,
}

impl SyncCodec {
    /// A codec refusing frames over `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        SyncCodec { max_bytes }
    }
}

async fn read_frame<T: futures::AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds limit {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: futures::AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_bytes).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_bytes).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Vec<u8>) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Vec<u8>) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

pub use behaviour::{Behaviour, BehaviourEvent};

#[allow(missing_docs)] // the derive generates an undocumented event enum
mod behaviour {
    use libp2p::swarm::behaviour::toggle::Toggle;
    use libp2p::swarm::NetworkBehaviour;
    use libp2p::{allow_block_list, gossipsub, identify, kad, mdns, ping, request_response};

    use super::SyncCodec;

    /// Every behaviour a Starling node runs.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Peers blocked for fault injection (tests, the real-node simulator).
        pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
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
            gossipsub,
            mdns: mdns.into(),
            kad,
            identify,
            ping,
            sync,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_and_node_ids_map_one_to_one() {
        let key = identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let node = node_id_of(&peer).unwrap();
        assert_eq!(peer_id_of(&node), Some(peer));
    }
}
