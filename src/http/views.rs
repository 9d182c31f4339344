//! The server side of the schema: the node's values as [`api`] types.
//!
//! The core's types serialize for the peer-to-peer wire (node ids as bytes,
//! version ids as numbers); the API shows them the way people and scripts
//! quote them back: version ids as 16 hex digits, origins as libp2p peer
//! ids, values as a UTF-8 string when they are one and always as base64.

use super::api;
use crate::core::{CanaryView, Hlc, KvEntry, ServiceView, VersionInfo};
use crate::net::display_id;
use crate::node::{MemberView, NodeStatus, WatchItem, WriteResult};

/// A count as it goes on the wire.
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl From<Hlc> for api::Hlc {
    fn from(h: Hlc) -> Self {
        api::Hlc {
            logical: h.logical,
            wall_ms: h.wall_ms,
        }
    }
}

impl From<&VersionInfo> for api::Version {
    fn from(v: &VersionInfo) -> Self {
        api::Version {
            checksum: v.checksum,
            deleted: v.deleted,
            hlc: v.hlc.into(),
            id: v.id,
            origin: display_id(&v.origin),
            seq: v.seq,
            size: count(v.size),
        }
    }
}

impl From<&WriteResult> for api::WriteResponse {
    fn from(w: &WriteResult) -> Self {
        api::WriteResponse {
            hlc: w.hlc.into(),
            version: w.version,
        }
    }
}

impl From<&KvEntry> for api::KvEntry {
    fn from(e: &KvEntry) -> Self {
        api::KvEntry {
            canary: e.canary.as_ref().map(api::Canary::from),
            key: e.key.as_str().to_string(),
            namespace: e.namespace.as_str().to_string(),
            siblings: e
                .siblings
                .iter()
                .map(|(v, bytes)| api::Sibling {
                    content: api::Content::of(bytes.as_deref()),
                    version: v.into(),
                })
                .collect(),
            source: if e.served_from_canary() {
                api::Source::Canary
            } else {
                api::Source::Stable
            },
            content: api::Content::of(Some(&e.value)),
            version: (&e.version).into(),
        }
    }
}

impl From<&CanaryView> for api::Canary {
    fn from(c: &CanaryView) -> Self {
        api::Canary {
            active_here: c.active,
            key: c.key.as_str().to_string(),
            namespace: c.namespace.as_str().to_string(),
            percent: c.target.percent,
            selector: c.target.tags.clone(),
            target: c.target.to_string(),
            content: api::Content::of(Some(&c.value)),
            version: (&c.version).into(),
        }
    }
}

/// One entry of a key's history: a version, its bytes if still held, and
/// whether it is live.
pub(crate) fn history_entry(v: &VersionInfo, bytes: Option<&[u8]>, live: bool) -> api::HistoryEntry {
    api::HistoryEntry {
        live,
        content: api::Content::of(bytes),
        version: v.into(),
    }
}

impl From<&ServiceView> for api::ServiceInstance {
    fn from(s: &ServiceView) -> Self {
        api::ServiceInstance {
            address: s.spec.address.clone(),
            checks: Vec::new(),
            health: s.health,
            instance: s.instance.as_str().to_string(),
            metadata: s.spec.metadata.clone(),
            namespace: s.namespace.as_str().to_string(),
            owner: display_id(&s.owner),
            port: s.spec.port,
            reported_health: s.reported_health,
            service: s.service.as_str().to_string(),
            tags: s.spec.tags.clone(),
            ttl_ms: s.spec.ttl_ms,
            version: (&s.version).into(),
            weight: s.spec.weight,
        }
    }
}

// Destructured without `..`: a field added to the node's view must be
// placed in the API (or left out) on purpose.
impl From<&MemberView> for api::Member {
    fn from(m: &MemberView) -> Self {
        let MemberView {
            node_id,
            name,
            status,
            addrs,
            tags,
            incarnation,
        } = m;
        api::Member {
            node_id: node_id.clone(),
            name: name.clone(),
            status: *status,
            addrs: addrs.clone(),
            tags: tags.clone(),
            incarnation: *incarnation,
        }
    }
}

impl From<&NodeStatus> for api::Status {
    fn from(s: &NodeStatus) -> Self {
        let NodeStatus {
            node_id,
            name,
            cluster,
            listen_addrs,
            revision,
            keys,
            digest,
            members,
            connected_peers,
        } = s;
        api::Status {
            node_id: node_id.clone(),
            name: name.clone(),
            cluster: cluster.clone(),
            listen_addrs: listen_addrs.clone(),
            revision: *revision,
            keys: *keys,
            digest: digest.clone(),
            members: members.iter().map(|(k, n)| (k.clone(), count(*n))).collect(),
            connected_peers: count(*connected_peers),
        }
    }
}

impl From<&WatchItem> for api::WatchEvent {
    fn from(item: &WatchItem) -> Self {
        match item {
            WatchItem::Kv {
                revision,
                namespace,
                key,
                value,
                version,
                siblings,
            } => api::WatchEvent::Kv {
                deleted: value.is_none(),
                key: key.as_str().to_string(),
                namespace: namespace.as_str().to_string(),
                revision: *revision,
                siblings: count(*siblings),
                content: api::Content::of(value.as_deref()),
                version: version.as_ref().map(api::Version::from),
            },
            WatchItem::Service {
                revision,
                namespace,
                service,
                instance,
                view,
            } => api::WatchEvent::Service {
                deleted: view.is_none(),
                instance: instance.as_str().to_string(),
                namespace: namespace.as_str().to_string(),
                revision: *revision,
                service: service.as_str().to_string(),
                view: view.as_ref().map(api::ServiceInstance::from),
            },
            WatchItem::Member { revision, member } => api::WatchEvent::Member {
                member: member.into(),
                revision: *revision,
            },
        }
    }
}
