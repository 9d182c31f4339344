//! The sans-IO protocol core: replicated state and the engine that decides
//! what to send. Nothing here reads a clock, opens a socket or draws ambient
//! randomness; the libp2p node and the simulator both drive this code.
//!
//! # The protocol
//! * **Writes.** A local write gets a *dot* `(node, seq)`, an [`Hlc`] stamp
//!   and a per-key causal context (the join of the contexts of the versions
//!   it replaces). It is applied, persisted, then pushed at once as a
//!   [`Delta`](wire::Delta) on the cluster's delta topic.
//! * **Concurrency.** Two writes to one key where neither writer had seen
//!   the other's are *siblings*: both are kept and visible; a plain read
//!   returns the one with the highest `(hlc, origin)`. The next write to the
//!   key supersedes every sibling it saw.
//! * **Heartbeats.** Every interval a node publishes its own member record
//!   and a digest of its state. Peers feed arrivals into a phi-accrual
//!   detector; a member whose heartbeats stop is suspected, then declared
//!   dead; a member that hears it is suspected refutes by raising its
//!   incarnation. The interval grows with cluster size so each node receives
//!   about `heartbeat_fanin` heartbeats per base interval.
//! * **Anti-entropy.** A heartbeat whose digest differs from ours (or a new
//!   connection, or a periodic timer) starts a sync with that peer: we send
//!   our knowledge (dots seen) and per-bucket hashes; the peer answers with
//!   every version we have not seen, its own knowledge, and for the buckets
//!   that differ the list of dots it holds; we merge, drop versions the peer
//!   has seen and superseded, and push back what the peer has not seen. Gossip
//!   is the fast path; anti-entropy is what makes the cluster converge.
//! * **Deletes.** A delete writes a tombstone. Tombstoned keys are collected
//!   after `tombstone_ttl_ms`, and only once the collecting node's knowledge
//!   holds every write the tombstone supersedes; their dots stay in
//!   knowledge, so a version a node has seen is never taken back — a deleted
//!   value held by a node that missed the delete is dropped by that node at
//!   its next sync instead of resurrecting.
//!
//! # Example: a write, a missed delta, and anti-entropy repair
//! ```
//! use std::sync::Arc;
//! use starling::core::crypto::Ed25519Keys;
//! use starling::core::{Action, Command, Config, Engine, Input, Key, Namespace, NodeInfo};
//!
//! let cfg = Config::default();
//! // Each node signs what it writes with its own ed25519 key (its id).
//! let (ka, kb) = (Arc::new(Ed25519Keys::from_secret([1; 32])), Arc::new(Ed25519Keys::from_secret([2; 32])));
//! let mut a = Engine::new(cfg.clone(), ka, NodeInfo::default(), 1_000, 1, None).unwrap();
//! let mut b = Engine::new(cfg, kb, NodeInfo::default(), 1_000, 2, None).unwrap();
//! let ns = Namespace::new("prod").unwrap();
//! let key = Key::new("db/url").unwrap();
//!
//! // A writes; the delta it publishes is lost on the way to B.
//! let actions = a.handle(1_000, Input::Command {
//!     id: 1,
//!     command: Command::Put { namespace: ns.clone(), key: key.clone(), value: b"pg://a".to_vec(), expect: None },
//! });
//! assert!(matches!(actions[0], Action::Persist(_)));
//! assert!(b.kv_get(&ns, &key).is_none());
//!
//! // A heartbeat from A shows B a different digest: B asks A for a sync.
//! let hb = a.handle(2_000, Input::Tick).into_iter().find_map(|act| match act {
//!     Action::Publish { bytes, .. } => Some(bytes),
//!     _ => None,
//! }).unwrap();
//! let mut to_a: Vec<(u64, Vec<u8>)> = b.handle(2_001, Input::Gossip { from: a.node_id(), bytes: hb })
//!     .into_iter().filter_map(|act| match act {
//!         Action::SendRequest { id, bytes, .. } => Some((id, bytes)),
//!         _ => None,
//!     }).collect();
//! // Carry requests and responses between the two until the exchange ends.
//! while let Some((id, bytes)) = to_a.pop() {
//!     for act in a.handle(2_002, Input::Request { from: b.node_id(), id: 7, bytes }) {
//!         if let Action::Respond { bytes, .. } = act {
//!             for act in b.handle(2_003, Input::Response { from: a.node_id(), id, bytes }) {
//!                 if let Action::SendRequest { id, bytes, .. } = act {
//!                     to_a.push((id, bytes));
//!                 }
//!             }
//!         }
//!     }
//! }
//! assert_eq!(b.kv_get(&ns, &key).unwrap().value, b"pg://a");
//! assert_eq!(a.digest(), b.digest());
//! ```

pub mod acl;
mod canary;
mod config;
pub mod crypto;
mod dots;
mod engine;
mod hlc;
mod ids;
mod membership;
mod persist;
mod phi;
mod pick;
mod pool;
mod registry;
mod runtime;
mod state;
#[cfg(feature = "test-utils")]
pub mod testing;
mod watch;
pub mod wire;

pub use canary::{cohort_bucket, CanarySpec, CanaryTarget};
pub use config::{Config, ConfigError};
pub use dots::{Context, Dot, DotRange, Knowledge, PeerKnowledge};
pub use engine::{
    Action, CanaryView, Command, CommandError, CommandOutput, Counters, Engine, Expect, Input, KvEntry,
    RejectReason, ServiceView, Topic, VersionInfo,
};
pub use hlc::{Hlc, HlcClock, HlcError};
pub use ids::{IdError, InstanceId, Key, Namespace, NodeId, ServiceName, StateKey};
pub use membership::{
    Member, MemberStatus, Membership, NodeInfo, MAX_NODE_ADDRS, MAX_NODE_FIELD_BYTES, MAX_NODE_TAGS,
    MAX_NODE_TAG_KEY_BYTES,
};
pub use persist::{MemoryStore, PersistBatch, PersistedMeta, Snapshot};
pub use phi::PhiDetector;
#[cfg(all(test, feature = "node"))]
pub(crate) use pick::test_view;
pub use pick::{
    candidates, instance_zone, Candidates, PickError, PickOptions, PickState, Strategy, ZonePreference,
};
pub use pool::SharedPool;
pub use registry::{HealthStatus, ServiceInstance, ServiceQuery, ServiceSpec};
pub use runtime::{RequestRefused, Runtime};
pub use state::{
    encoded_len, Digest, Grave, KeyLimit, KeyOrder, KeyState, MergeOutcome, Payload, ReplicatedState,
    Version, VersionId, BUCKETS, MAX_KEY_BYTES,
};
pub use watch::{SnapshotRequired, WatchChange, WatchEvent, WatchLog};
