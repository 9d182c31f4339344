//! What a [`NodeHandle`](super::NodeHandle) asks of the driver task, and
//! the reply channels it waits on. Imports only the leaves `types` and
//! `watch`.

use std::collections::{BTreeMap, BTreeSet};

use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

#[cfg(feature = "test-utils")]
use crate::core::Topic;
use crate::core::{
    Command, CommandError, CommandOutput, Config, ConfigError, Engine, NodeId, SnapshotRequired,
};

use super::types::{DriverView, WatchFilter};
use super::watch::WatchStream;

/// A read-only job run on the driver task against the engine.
pub(crate) type ReadFn = Box<dyn FnOnce(&Engine, &DriverView) + Send>;

/// A request to the driver task. Each carries the channel its answer goes
/// back on; a dropped channel means the node stopped.
pub(crate) enum Request {
    /// Run a local command (write, register, leave...).
    Command {
        command: Command,
        reply: oneshot::Sender<Result<CommandOutput, CommandError>>,
    },
    /// Run a read against the engine and the driver's facts.
    Read(ReadFn),
    /// Open a watch.
    Watch {
        filter: WatchFilter,
        since: Option<u64>,
        reply: oneshot::Sender<Result<WatchStream, SnapshotRequired>>,
    },
    /// Apply new protocol settings.
    Reconfigure {
        config: Config,
        reply: oneshot::Sender<Result<(), ConfigError>>,
    },
    /// Replace the set of blocked peers (fault injection).
    SetBlocked {
        peers: Vec<NodeId>,
        reply: oneshot::Sender<()>,
    },
    /// Replace the set of denied peers (config `deny_peers`).
    SetDenied {
        peers: BTreeSet<PeerId>,
        reply: oneshot::Sender<()>,
    },
    /// Apply a reloaded name, tags and bootstrap peers.
    Retune {
        name: String,
        tags: BTreeMap<String, String>,
        bootstrap: Vec<Multiaddr>,
        reply: oneshot::Sender<()>,
    },
    /// Stop the node, announcing a leave first if `leave`.
    Shutdown { leave: bool, reply: oneshot::Sender<()> },
    /// Test hook (feature `test-utils`): publish bytes the engine did not
    /// produce; the reply says whether gossipsub took them.
    #[cfg(feature = "test-utils")]
    RawPublish {
        topic: Topic,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Test hook (feature `test-utils`): send bytes the engine did not
    /// produce as a sync request. The answer (or failure) goes back on
    /// `reply`, never to the engine.
    #[cfg(feature = "test-utils")]
    RawSync {
        to: NodeId,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
}
