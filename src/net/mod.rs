//! The libp2p side: the network behaviour, the anti-entropy codec, building
//! the swarm, the addresses a node advertises, and the mapping between
//! libp2p peer ids and core node ids. No protocol decisions are made here.
//!
//! Modules, none importing this one or each other in a circle:
//! `ids` and `codec` and `addrs` are leaves; `behaviour` uses `codec`;
//! `swarm` uses `behaviour`.

mod addrs;
mod behaviour;
mod codec;
mod ids;
mod swarm;

pub use addrs::advertised_addrs;
pub use behaviour::{Behaviour, BehaviourEvent, ClusterNames};
pub use codec::SyncCodec;
pub use ids::{display_id, node_id_of, peer_id_of};
pub use swarm::{build_swarm, SwarmError};
