//! The libp2p side: the network behaviour, the anti-entropy codec, building
//! the swarm, the addresses a node advertises, and the mapping between
//! libp2p peer ids and core node ids. No protocol decisions are made here.
//!
//! Modules, none importing this one or each other in a circle:
//! `ids`, `codec`, `addrs` and `key` (the cluster key file) are leaves;
//! `behaviour` uses `codec`; `private` (the private-network handshake)
//! uses `key`; `protocols` (bytes per protocol) uses `behaviour`'s names;
//! `swarm` uses `behaviour`, `private` and `protocols`.

mod addrs;
mod behaviour;
mod codec;
mod counted;
mod ids;
mod key;
mod private;
mod protocols;
mod swarm;

pub use addrs::advertised_addrs;
pub use behaviour::{peer_score, Behaviour, BehaviourEvent, ClusterNames, NetLimits, GRAYLIST_THRESHOLD};
pub use codec::SyncCodec;
pub use counted::WireCounters;
pub use ids::{display_id, node_id_of, peer_id_of};
pub use key::{ClusterKey, ClusterKeyError};
pub use private::{KeyCheck, KeyMismatch};
pub use protocols::{ProtocolCounters, ProtocolLabel};
pub use swarm::{build_swarm, SwarmError};
