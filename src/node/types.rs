//! The types a node's API shows and the driver's facts reads may need. A
//! leaf: it imports nothing else from `node`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::{
    Dot, Hlc, InstanceId, Key, Member, MemberStatus, Namespace, ServiceName, ServiceView, VersionId,
    VersionInfo,
};
use crate::net::display_id;

/// A write that is now durable on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// The new version's id.
    pub version: VersionId,
    /// Its HLC stamp.
    pub hlc: Hlc,
    /// Its dot: this node's id and the sequence number it gave the write.
    /// Not part of the HTTP response.
    pub dot: Dot,
}

/// A member as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// libp2p peer id.
    pub node_id: String,
    /// Name.
    pub name: String,
    /// alive / suspect / dead / left.
    pub status: MemberStatus,
    /// Advertised addresses.
    pub addrs: Vec<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Incarnation.
    pub incarnation: u64,
}

impl MemberView {
    pub(crate) fn of(m: &Member) -> Self {
        MemberView {
            node_id: display_id(&m.node),
            name: m.info.name.clone(),
            status: m.status,
            addrs: m.info.addrs.clone(),
            tags: m.info.tags.clone(),
            incarnation: m.incarnation,
        }
    }
}

/// The local node's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// libp2p peer id.
    pub node_id: String,
    /// Name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// Listen addresses, each ending in `/p2p/<node_id>`.
    pub listen_addrs: Vec<String>,
    /// Latest watch revision.
    pub revision: u64,
    /// Keys held (including deleted ones awaiting collection).
    pub keys: u64,
    /// State digest (equal on converged nodes).
    pub digest: String,
    /// Members by status.
    pub members: BTreeMap<String, usize>,
    /// Connected peers.
    pub connected_peers: usize,
}

/// The writer rules in force on a node ([`super::NodeHandle::writer_rules`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclView {
    /// Peer ids that may change the rules (`protocol.acl_admins`).
    pub admins: Vec<String>,
    /// The writers of each governed namespace; a namespace not listed is
    /// open to every member.
    pub rules: BTreeMap<String, Vec<WriterView>>,
}

/// One writer of a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterView {
    /// Its peer id.
    pub node_id: String,
    /// The highest sequence number of its own accepted in the namespace
    /// (`None`: no bound; a bound keeps what a former writer wrote).
    pub until_seq: Option<u64>,
}

/// What a watch follows.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchFilter {
    /// Config keys of a namespace starting with a prefix.
    Kv {
        /// Namespace.
        namespace: Namespace,
        /// Key prefix ("" for all).
        prefix: String,
    },
    /// Instances of one service (or every service if `None`).
    Services {
        /// Namespace.
        namespace: Namespace,
        /// Service.
        service: Option<ServiceName>,
    },
    /// Membership changes.
    Members,
}

impl WatchFilter {
    /// The kind label of this filter (`kv`, `services`, `members`).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            WatchFilter::Kv { .. } => "kv",
            WatchFilter::Services { .. } => "services",
            WatchFilter::Members => "members",
        }
    }
}

/// One change delivered to a watcher. Values are read when the event is
/// delivered, so a replayed event shows the key's value at that moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum WatchItem {
    /// A config key changed.
    Kv {
        /// Node-local revision of the change.
        revision: u64,
        /// Namespace.
        namespace: Namespace,
        /// Key.
        key: Key,
        /// The value now (`None` if deleted).
        value: Option<Vec<u8>>,
        /// The winning version now.
        version: Option<VersionInfo>,
        /// Number of live siblings.
        siblings: usize,
    },
    /// A service instance changed.
    Service {
        /// Node-local revision of the change.
        revision: u64,
        /// Namespace.
        namespace: Namespace,
        /// Service.
        service: ServiceName,
        /// Instance.
        instance: InstanceId,
        /// The instance now (`None` if deregistered).
        view: Option<ServiceView>,
    },
    /// A member changed.
    Member {
        /// Node-local revision of the change.
        revision: u64,
        /// The member now.
        member: MemberView,
    },
}

impl WatchItem {
    /// The revision of the change.
    pub fn revision(&self) -> u64 {
        match self {
            WatchItem::Kv { revision, .. }
            | WatchItem::Service { revision, .. }
            | WatchItem::Member { revision, .. } => *revision,
        }
    }
}

/// Why a watch ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The watcher did not keep up; its queue filled and it was dropped.
    #[error("watcher dropped: fell more than {0} events behind")]
    TooSlow(usize),
    /// The node stopped.
    #[error("node stopped")]
    Stopped,
}

/// Driver-side facts a read may need (the engine has the rest).
#[derive(Clone, Debug, Default)]
pub(crate) struct DriverView {
    /// Advertised listen addresses, each ending in `/p2p/<id>`.
    pub listen_addrs: Vec<String>,
    /// Connected libp2p peers.
    pub connected_peers: usize,
    /// Open watchers by kind (`kv`, `services`, `members`).
    pub watchers: BTreeMap<&'static str, usize>,
}
