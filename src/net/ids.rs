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
}
