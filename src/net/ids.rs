//! The mapping between libp2p peer ids and core node ids.

use libp2p::{identity, PeerId};

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

    #[test]
    fn the_core_writes_and_reads_node_ids_as_libp2p_peer_ids() {
        for _ in 0..3 {
            let peer = identity::Keypair::generate_ed25519().public().to_peer_id();
            let node = node_id_of(&peer).unwrap();
            assert_eq!(node.peer_id_text(), peer.to_string());
            assert_eq!(NodeId::parse(&peer.to_string()), Some(node));
            assert_eq!(NodeId::parse(&node.to_string()), Some(node));
        }
        assert_eq!(NodeId::parse("12D3KooWnotapeerid"), None);
        assert_eq!(NodeId::parse(""), None);
    }
}
