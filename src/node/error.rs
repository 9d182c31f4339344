//! Why a node operation failed. A leaf: it imports only the config types.

use std::io;

use libp2p::{Multiaddr, TransportError};

use crate::core::{CommandError, ConfigError, SnapshotRequired};
use crate::net::{ClusterKeyError, SwarmError};
use crate::store::{IdentityError, StoreError};

use super::config::{NodeConfigError, ReloadError};

/// Why a node operation failed. Each variant says what state changed and
/// what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The command was refused or failed; see [`CommandError`] (each of its
    /// variants says whether anything was written).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Resuming a watch from a revision no longer held. No watch was
    /// opened; read the current state and watch from now.
    #[error(transparent)]
    SnapshotRequired(#[from] SnapshotRequired),
    /// The node is shutting down or has stopped. Nothing was done; start a
    /// node again on its data directory to go on.
    #[error("node stopped")]
    Stopped,
    /// Start-up: the configuration is invalid. Nothing was opened or
    /// changed; fix the field the message names and start again.
    #[error(transparent)]
    Config(NodeConfigError),
    /// Start-up: the data directory could not be opened, locked or read
    /// (see [`StoreError`]: each case says what to do). No node runs and
    /// nothing on disk changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Start-up: the node identity key (`DATA_DIR/identity/node.key`) is
    /// accessible to other users, unreadable, invalid or lost (see
    /// [`IdentityError`]: each case says what changed and what to do). No
    /// node runs.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Start-up: the engine refused the protocol settings. No node runs;
    /// nothing changed. Fix the `[protocol]` field the message names.
    #[error(transparent)]
    Protocol(ConfigError),
    /// Start-up: the cluster key file (`cluster_key_file`) is missing,
    /// unreadable, accessible to other users, or not a key file (see
    /// [`ClusterKeyError`]). No node runs; nothing was opened or changed.
    /// Fix the file the message names (or make one with `starling keygen`).
    #[error(transparent)]
    ClusterKey(#[from] ClusterKeyError),
    /// Start-up: the libp2p transport or behaviours could not be built (see
    /// [`SwarmError`]). No node runs; the data directory was released.
    /// Usually a system limit or, with mDNS on, no usable multicast
    /// interface: retry, or start with mDNS off.
    #[error(transparent)]
    Transport(#[from] SwarmError),
    /// Start-up: a configured listen address cannot be bound (in use, not a
    /// local address, not permitted). No node runs; the data directory was
    /// released. Choose another address or port.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        source: TransportError<io::Error>,
    },
    /// A reload or reconfigure was refused (see [`ReloadError`]). Nothing
    /// was applied: the running settings stay in force.
    #[error(transparent)]
    Reload(#[from] ReloadError),
    /// The node answered a command with output of another kind: a bug in
    /// Starling. The command may have been applied; read the key back.
    #[error("unexpected command output {0}")]
    UnexpectedOutput(String),
}
