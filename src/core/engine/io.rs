//! What crosses the engine's boundary: the inputs a driver feeds, the local
//! commands inside them, and the actions the engine hands back.

use serde::{Deserialize, Serialize};

use crate::core::canary::CanaryTarget;
use crate::core::dots::Dot;
use crate::core::hlc::Hlc;
use crate::core::ids::{InstanceId, Key, Namespace, NodeId, ServiceName};
use crate::core::membership::NodeInfo;
use crate::core::persist::PersistBatch;
use crate::core::registry::{HealthStatus, ServiceSpec};
use crate::core::state::VersionId;
use crate::core::watch::WatchEvent;

/// The two gossip topics of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Topic {
    /// Heartbeats.
    Heartbeat,
    /// State deltas.
    Delta,
}

/// Something that happened to the node.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Input {
    /// Time passed; run timers.
    Tick,
    /// A gossip message authored by `from`.
    Gossip {
        /// The author (not the relaying peer).
        from: NodeId,
        /// The message bytes.
        bytes: Vec<u8>,
    },
    /// A point-to-point request from a peer; answer with [`Action::Respond`]
    /// carrying the same `id`.
    Request {
        /// The requesting peer.
        from: NodeId,
        /// Driver-chosen id for the reply channel.
        id: u64,
        /// The request bytes.
        bytes: Vec<u8>,
    },
    /// The answer to an [`Action::SendRequest`].
    Response {
        /// The answering peer.
        from: NodeId,
        /// The id of the request.
        id: u64,
        /// The response bytes.
        bytes: Vec<u8>,
    },
    /// An [`Action::SendRequest`] failed (unreachable, timeout, refused).
    RequestFailed {
        /// The id of the request.
        id: u64,
    },
    /// A connection to a peer opened.
    PeerConnected(NodeId),
    /// The last connection to a peer closed.
    PeerDisconnected(NodeId),
    /// First-hand evidence that a peer is gone: the driver lost its
    /// connection to it and could not re-establish it, or a liveness ping
    /// on its connection went unanswered. A member held alive is suspected
    /// at once and the suspicion gossiped (the subject, if it lives,
    /// refutes it); also counts as [`Input::PeerDisconnected`].
    PeerUnreachable(NodeId),
    /// A local client command; answered by [`Action::Reply`] with the same id.
    Command {
        /// Caller-chosen id, echoed in the reply.
        id: u64,
        /// What to do.
        command: Command,
    },
    /// The driver could not make a [`PersistBatch`] durable.
    PersistFailed {
        /// The batch id.
        batch: u64,
        /// Why (shown to the clients whose commands fail).
        reason: String,
    },
}

/// A precondition on a write (compare-and-set).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// The key must read as absent (never written, or deleted).
    Absent,
    /// The key's winning version must be this one.
    Version(VersionId),
}

/// A local client command.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// Write a config value.
    Put {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
        /// Value bytes.
        value: Vec<u8>,
        /// Optional precondition.
        expect: Option<Expect>,
    },
    /// Delete a config key.
    Delete {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
        /// Optional precondition.
        expect: Option<Expect>,
    },
    /// Write, as a new version, the content of an earlier version.
    Rollback {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
        /// The version whose content to restore.
        to: VersionId,
    },
    /// Settle concurrent writes: write the content of the live sibling
    /// `keep` as a new version, superseding every sibling.
    Resolve {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
        /// The live version whose content wins.
        keep: VersionId,
    },
    /// Register (or re-register) a service instance owned by this node.
    RegisterService {
        /// Namespace.
        namespace: Namespace,
        /// Service.
        service: ServiceName,
        /// Instance.
        instance: InstanceId,
        /// Address, tags, TTL...
        spec: ServiceSpec,
    },
    /// Refresh an owned instance's TTL, optionally reporting its health.
    HeartbeatService {
        /// Namespace.
        namespace: Namespace,
        /// Service.
        service: ServiceName,
        /// Instance.
        instance: InstanceId,
        /// Health to report (default passing).
        health: Option<HealthStatus>,
    },
    /// Remove a service instance.
    DeregisterService {
        /// Namespace.
        namespace: Namespace,
        /// Service.
        service: ServiceName,
        /// Instance.
        instance: InstanceId,
    },
    /// Start (or replace) a canary for a config key: `value` is read by
    /// the nodes `target` selects, the stable value by every other node.
    SetCanary {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
        /// The candidate value.
        value: Vec<u8>,
        /// Which nodes read it.
        target: CanaryTarget,
    },
    /// Make a key's canary value its stable value everywhere and end the
    /// canary.
    PromoteCanary {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
    },
    /// End a key's canary; every node reads the stable value again.
    AbortCanary {
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
    },
    /// Make `writers` the writers of `namespace` (this node must be an
    /// admin, see [`crate::core::Config::acl_admins`]). Every other node
    /// that wrote it so far keeps what it wrote; what it writes next is
    /// refused by every node.
    SetWriters {
        /// The governed namespace.
        namespace: Namespace,
        /// Its writers from now on.
        writers: Vec<NodeId>,
    },
    /// Remove the writer rule of `namespace`: open to every member again
    /// (this node must be an admin).
    ClearWriters {
        /// The governed namespace.
        namespace: Namespace,
    },
    /// Change this node's advertised addresses, name or tags.
    SetInfo(NodeInfo),
    /// Leave the cluster gracefully (final for this incarnation).
    Leave,
}

impl Command {
    /// The namespace a client write (config key, service instance,
    /// canary) writes; `None` for the node's own commands and the writer
    /// rule commands, which are judged on their own.
    pub(super) fn written_namespace(&self) -> Option<&Namespace> {
        match self {
            Command::Put { namespace, .. }
            | Command::Delete { namespace, .. }
            | Command::Rollback { namespace, .. }
            | Command::Resolve { namespace, .. }
            | Command::RegisterService { namespace, .. }
            | Command::HeartbeatService { namespace, .. }
            | Command::DeregisterService { namespace, .. }
            | Command::SetCanary { namespace, .. }
            | Command::PromoteCanary { namespace, .. }
            | Command::AbortCanary { namespace, .. } => Some(namespace),
            Command::SetWriters { .. }
            | Command::ClearWriters { .. }
            | Command::SetInfo(_)
            | Command::Leave => None,
        }
    }
}

/// A successful command's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CommandOutput {
    /// A version was written (and is durable).
    Written {
        /// Its id.
        version: VersionId,
        /// Its stamp.
        hlc: Hlc,
        /// Its dot: this node and the sequence number it gave the write.
        dot: Dot,
    },
    /// Done; nothing to report.
    Done,
}

/// Why a command failed. State is unchanged unless the variant says so.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CommandError {
    /// The precondition did not hold; `current` is the winning version now.
    #[error("version conflict: current version is {current:?}")]
    Conflict {
        /// The current winner, if any.
        current: Option<VersionId>,
    },
    /// Key, version or instance not found.
    #[error("not found")]
    NotFound,
    /// Invalid argument.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Value over the size limit.
    #[error("value of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Given size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Only the owner node may do this.
    #[error("instance is owned by node {0}")]
    NotOwner(String),
    /// A writer rule (or the admin list) does not allow this node to do
    /// this.
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// The node has left the cluster.
    #[error("node has left the cluster")]
    Left,
    /// The write could not be made durable; it was undone.
    #[error("not durable: {0}")]
    NotDurable(String),
}

/// Something the driver must do.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Action {
    /// Make this durable before executing the actions after it.
    Persist(PersistBatch),
    /// Publish on a gossip topic.
    Publish {
        /// Which topic.
        topic: Topic,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Send a point-to-point request; answer comes as [`Input::Response`]
    /// or [`Input::RequestFailed`] with the same id.
    SendRequest {
        /// The peer.
        to: NodeId,
        /// Engine-chosen id.
        id: u64,
        /// The request.
        bytes: Vec<u8>,
    },
    /// Answer an [`Input::Request`].
    Respond {
        /// The request's id.
        id: u64,
        /// The response.
        bytes: Vec<u8>,
    },
    /// Tell watchers.
    Notify(WatchEvent),
    /// Answer an [`Input::Command`].
    Reply {
        /// The command's id.
        id: u64,
        /// Its result.
        result: Result<CommandOutput, CommandError>,
    },
}
