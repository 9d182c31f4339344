//! The HTTP API's schema: every JSON body the server writes or reads.
//!
//! The server builds these types from the node's values and serializes them;
//! the CLI client deserializes the same types, so a field renamed on one
//! side is a compile error on the other. Tests pin the exact JSON.
//!
//! Conventions on the wire:
//! - version ids and checksums are 16 lower-case hex digits, node ids are
//!   libp2p peer ids, HLC stamps are `{"logical", "wall_ms"}`;
//! - a value is carried twice, as UTF-8 text (`value`, `null` when it is not
//!   UTF-8 or absent) and as standard base64 (`value_base64`, `null` when
//!   absent): see [`Content`];
//! - fields are declared in the order the server writes them, so answers
//!   are byte for byte what they were before these types existed
//!   (alphabetical, except for [`Member`]); watch events are written by
//!   [`event_data`], with every object's keys sorted (`type` included);
//! - optional fields marked "omitted when ..." are left out, the others are
//!   always present and `null` when empty.
//!
//! | Endpoint | Request body | Response body |
//! |---|---|---|
//! | `GET /v1/health` | | [`Status`] |
//! | `GET /v1/members` | | a list of [`Member`] |
//! | `GET /v1/kv/{ns}` | | [`KvList`] |
//! | `GET /v1/kv/{ns}/{key}` | | [`KvEntry`] |
//! | `GET /v1/kv/{ns}/{key}/history` | | [`History`] |
//! | `PUT`/`DELETE /v1/kv/{ns}/{key}` | the value's bytes | [`WriteResponse`] |
//! | `POST /v1/kv/{ns}/{key}/rollback`, `.../resolve` | [`VersionRequest`] | [`WriteResponse`] |
//! | `GET /v1/canary/{ns}` | | [`CanaryList`] |
//! | `GET /v1/canary/{ns}/{key}` | | [`Canary`] |
//! | `PUT`/`DELETE /v1/canary/{ns}/{key}`, `POST .../promote`, `.../abort` | the value's bytes (`PUT`) | [`WriteResponse`] |
//! | `GET /v1/services/{ns}` | | [`ServiceNames`] |
//! | `GET /v1/services/{ns}/{service}` | | [`ServiceList`] |
//! | `GET /v1/services/{ns}/{service}?pick=...` | | [`ServiceInstance`] (the one picked) |
//! | `PUT /v1/services/{ns}/{service}/{instance}` | [`RegisterRequest`] | [`WriteResponse`] |
//! | `DELETE /v1/services/{ns}/{service}/{instance}` | | [`WriteResponse`] |
//! | `PUT /v1/services/{ns}/{service}/{instance}/heartbeat` | [`HeartbeatRequest`] (optional) | [`HeartbeatResponse`] |
//! | `GET /v1/checks/{ns}` | | [`CheckList`] |
//! | `GET /v1/watch/...` | | server-sent events, each `data:` a [`WatchEvent`] (an [`ErrorBody`] for `event: error`) |
//! | any failure | | [`ErrorBody`] with a 4xx or 5xx status |

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::core::{HealthStatus, MemberStatus, ServiceSpec, VersionId};
pub use crate::node::{CheckSpec, CheckStatus};

/// Header carrying the node's revision on lists and watches (the next
/// `index` of a blocking list).
pub const INDEX_HEADER: &str = "x-starling-index";
/// Header carrying the version id of a `?raw=true` read.
pub const VERSION_HEADER: &str = "x-starling-version";

/// The `data:` line of a server-sent event ([`WatchEvent`] or
/// [`ErrorBody`]): compact JSON, every object's keys in alphabetical order.
pub fn event_data<T: Serialize>(value: &T) -> String {
    // Through a `serde_json::Value`, whose objects keep their keys sorted.
    serde_json::to_value(value)
        .expect("API types are plain data and always serialize")
        .to_string()
}

/// A hybrid logical clock stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hlc {
    /// Logical counter, for events within one millisecond.
    pub logical: u32,
    /// Milliseconds since the Unix epoch.
    pub wall_ms: u64,
}

/// One version of a key or service instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Content checksum (16 hex digits).
    #[serde(with = "hex_u64")]
    pub checksum: u64,
    /// Whether the version is a deletion.
    pub deleted: bool,
    /// Its HLC stamp.
    pub hlc: Hlc,
    /// Its id (16 hex digits), as `?cas=` and rollback take it.
    #[serde(with = "version_id")]
    pub id: VersionId,
    /// The node that wrote it (a libp2p peer id).
    pub origin: String,
    /// The origin's sequence number.
    pub seq: u64,
    /// Content size in bytes.
    pub size: u64,
}

/// A value as text and as base64; both `null` when there is none (a
/// deletion). Flattened into the objects that carry a value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// The value as UTF-8 text; `null` if it is not UTF-8 or absent.
    pub value: Option<String>,
    /// The value's bytes in standard base64; `null` if absent.
    pub value_base64: Option<String>,
}

impl Content {
    /// Encode bytes (`None` for no value).
    pub fn of(bytes: Option<&[u8]>) -> Self {
        match bytes {
            Some(bytes) => Content {
                value: std::str::from_utf8(bytes).ok().map(str::to_string),
                value_base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            },
            None => Content::default(),
        }
    }

    /// The bytes (`None` for no value): the text if present, else the
    /// decoded base64.
    pub fn bytes(&self) -> Result<Option<Vec<u8>>, base64::DecodeError> {
        match (&self.value, &self.value_base64) {
            (Some(text), _) => Ok(Some(text.as_bytes().to_vec())),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD.decode(b64).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// Where a read value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The stable (winning) value.
    Stable,
    /// A canary that targets this node.
    Canary,
}

/// `GET /v1/kv/{ns}/{key}`: a key as read on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The key's running canary; omitted when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Key.
    pub key: String,
    /// Namespace.
    pub namespace: String,
    /// Every live version including the winner, highest rank first.
    pub siblings: Vec<Sibling>,
    /// Whether `value` is the stable value or this node's canary value.
    pub source: Source,
    /// The value read.
    #[serde(flatten)]
    pub content: Content,
    /// The winning version (the one `?cas=` compares against).
    pub version: Version,
}

/// One live version of a key with concurrent writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// Its value (none for a deletion).
    #[serde(flatten)]
    pub content: Content,
    /// The version.
    pub version: Version,
}

/// `GET /v1/kv/{ns}?prefix=P&limit=N`: keys in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvList {
    /// The keys, each as [`KvEntry`].
    pub entries: Vec<KvEntry>,
    /// The node's revision when listed: the next blocking query's `index`.
    pub index: u64,
    /// Namespace.
    pub namespace: String,
    /// The prefix asked for.
    pub prefix: String,
    /// Whether more keys match than were returned.
    pub truncated: bool,
}

/// `GET /v1/kv/{ns}/{key}/history`: every version held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Key.
    pub key: String,
    /// Namespace.
    pub namespace: String,
    /// The versions.
    pub versions: Vec<HistoryEntry>,
}

/// One version of a key's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Whether it is a live version (a sibling).
    pub live: bool,
    /// Its value, when still held.
    #[serde(flatten)]
    pub content: Content,
    /// The version.
    pub version: Version,
}

/// The answer to every write: the new version, durable on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResponse {
    /// The new version's HLC stamp.
    pub hlc: Hlc,
    /// The new version's id (16 hex digits).
    #[serde(with = "version_id")]
    pub version: VersionId,
}

/// Body of `POST .../rollback` (`version`) and `POST .../resolve`
/// (`version` of a live sibling, or a new `value`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRequest {
    /// The version to restore or keep (16 hex digits; checked by the
    /// server, which answers `invalid_version`). Omitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// For `resolve`: a new value (UTF-8) instead of a sibling's. Omitted
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `GET /v1/canary/{ns}/{key}`: a running canary as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    /// Whether this node reads the canary value.
    pub active_here: bool,
    /// Key.
    pub key: String,
    /// Namespace.
    pub namespace: String,
    /// Share of nodes targeted (1-100), if any.
    pub percent: Option<u8>,
    /// Node tags a node must carry to be targeted.
    pub selector: BTreeMap<String, String>,
    /// The target as text, e.g. `role=gateway,10%`.
    pub target: String,
    /// The canary value.
    #[serde(flatten)]
    pub content: Content,
    /// The canary's version.
    pub version: Version,
}

/// `GET /v1/canary/{ns}`: every running canary of a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryList {
    /// The canaries.
    pub canaries: Vec<Canary>,
    /// Namespace.
    pub namespace: String,
}

/// `GET /v1/services/{ns}`: the service names registered in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceNames {
    /// Namespace.
    pub namespace: String,
    /// Service names, in order.
    pub services: Vec<String>,
}

/// A service instance with its effective health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// Host name or IP it serves on.
    pub address: String,
    /// Its health checks, as the node answering runs them: filled only on
    /// the owner, for instances with checks (omitted otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
    /// Health to route by: critical if the owner is dead or left.
    pub health: HealthStatus,
    /// Instance id.
    pub instance: String,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Namespace.
    pub namespace: String,
    /// The node that owns it (a libp2p peer id).
    pub owner: String,
    /// Port.
    pub port: u16,
    /// Health as the owner last reported it.
    pub reported_health: HealthStatus,
    /// Service name.
    pub service: String,
    /// Tags.
    pub tags: BTreeSet<String>,
    /// Heartbeat TTL in milliseconds, if any.
    pub ttl_ms: Option<u64>,
    /// The registration's version.
    pub version: Version,
    /// Routing weight 0-100.
    pub weight: u8,
}

/// `GET /v1/services/{ns}/{service}`: a service's instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceList {
    /// The instances matching the query.
    pub instances: Vec<ServiceInstance>,
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub service: String,
}

/// Body of `PUT /v1/services/{ns}/{service}/{instance}`: what is
/// registered (`tags`, `metadata`, `weight`, `ttl_ms` and `checks` may be
/// left out): the [`ServiceSpec`] fields and the instance's health checks,
/// which the node answering runs (it owns the instance).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Address, port, tags, metadata, weight, TTL.
    #[serde(flatten)]
    pub spec: ServiceSpec,
    /// Active health checks (omitted when none; see [`CheckSpec`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckSpec>,
}

/// `GET /v1/checks/{ns}`: the health checks this node runs for its
/// instances of a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckList {
    /// The checks, by service, instance and check name.
    pub checks: Vec<CheckStatus>,
    /// Namespace.
    pub namespace: String,
}

/// Body of `PUT .../heartbeat` (optional; an empty body reports passing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// Health to report (default passing).
    #[serde(default)]
    pub health: Option<HealthStatus>,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The health now reported.
    pub health: HealthStatus,
    /// Instance id.
    pub instance: String,
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub service: String,
}

/// A cluster member (`GET /v1/members` answers a list of them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// libp2p peer id.
    pub node_id: String,
    /// Name.
    pub name: String,
    /// alive, suspect, dead or left.
    pub status: MemberStatus,
    /// Advertised addresses.
    pub addrs: Vec<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Incarnation.
    pub incarnation: u64,
}

/// `GET /v1/health`: the node's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Cluster name.
    pub cluster: String,
    /// Connected peers.
    pub connected_peers: u64,
    /// State digest (equal on converged nodes).
    pub digest: String,
    /// Keys held (including deleted ones awaiting collection).
    pub keys: u64,
    /// Listen addresses, each ending in `/p2p/<node_id>`.
    pub listen_addrs: Vec<String>,
    /// Number of members by status.
    pub members: BTreeMap<String, u64>,
    /// Name.
    pub name: String,
    /// libp2p peer id.
    pub node_id: String,
    /// Latest watch revision.
    pub revision: u64,
}

/// One change on a watch stream: the `data:` of a server-sent event whose
/// `id:` is the revision. Tagged by `"type"`: `kv`, `service` or `member`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WatchEvent {
    /// A config key changed.
    Kv {
        /// Whether the key is now deleted.
        deleted: bool,
        /// Key.
        key: String,
        /// Namespace.
        namespace: String,
        /// Node-local revision of the change.
        revision: u64,
        /// Number of live siblings.
        siblings: u64,
        /// The value now (none if deleted).
        #[serde(flatten)]
        content: Content,
        /// The winning version now (`null` if none is left).
        version: Option<Version>,
    },
    /// A service instance changed.
    Service {
        /// Whether the instance is now deregistered.
        deleted: bool,
        /// Instance id.
        instance: String,
        /// Namespace.
        namespace: String,
        /// Node-local revision of the change.
        revision: u64,
        /// Service name.
        service: String,
        /// The instance now (`null` if deregistered).
        view: Option<ServiceInstance>,
    },
    /// A member changed.
    Member {
        /// The member now.
        member: Member,
        /// Node-local revision of the change.
        revision: u64,
    },
}

impl WatchEvent {
    /// The revision of the change.
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Kv { revision, .. }
            | WatchEvent::Service { revision, .. }
            | WatchEvent::Member { revision, .. } => *revision,
        }
    }
}

/// Every error answer, and the `data:` of a watch's final `event: error`:
/// a message, a machine-readable code and, for some codes, details.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `not_found`, `conflict`, `too_large`.
    pub code: String,
    /// `snapshot_required`: the node's current revision. Omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<u64>,
    /// `conflict`: the key's current version, `null` when it is absent.
    /// Omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "conflict_version")]
    pub current_version: Option<Option<VersionId>>,
    /// What went wrong, for people.
    pub error: String,
    /// `rate_limited`: requests per second allowed per client address.
    /// Omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_per_sec: Option<u32>,
    /// `too_large` (a value): the largest size allowed. Omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// `snapshot_required`: the oldest revision the node can replay from.
    /// Omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_revision: Option<u64>,
    /// `snapshot_required`: the revision asked for. Omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_revision: Option<u64>,
    /// `too_large` (a value): its size. Omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl ErrorBody {
    /// An error with only a code and a message.
    pub fn new(code: impl Into<String>, error: impl Into<String>) -> Self {
        ErrorBody {
            code: code.into(),
            current_revision: None,
            current_version: None,
            error: error.into(),
            limit_per_sec: None,
            max: None,
            oldest_revision: None,
            requested_revision: None,
            size: None,
        }
    }
}

/// A `u64` as 16 lower-case hex digits.
mod hex_u64 {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{n:016x}"))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() != 16 {
            return Err(D::Error::custom(format!("expected 16 hex digits, got {text:?}")));
        }
        u64::from_str_radix(&text, 16)
            .map_err(|_| D::Error::custom(format!("expected 16 hex digits, got {text:?}")))
    }
}

/// A [`VersionId`] as its 16 hex digits.
mod version_id {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::core::VersionId;

    pub(super) fn serialize<S: Serializer>(id: &VersionId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub(super) fn parse<E: serde::de::Error>(text: &str) -> Result<VersionId, E> {
        VersionId::parse(text)
            .ok_or_else(|| E::custom(format!("expected a 16-hex-digit version id, got {text:?}")))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VersionId, D::Error> {
        parse::<D::Error>(&String::deserialize(d)?)
    }
}

/// `current_version`: absent (`None`), `null` (`Some(None)`) or an id.
mod conflict_version {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::core::VersionId;

    pub(super) fn serialize<S: Serializer>(v: &Option<Option<VersionId>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(Some(id)) => s.collect_str(id),
            _ => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<VersionId>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| super::version_id::parse::<D::Error>(&text))
            .transpose()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::de::DeserializeOwned;

    use super::*;
    use crate::core::{
        self, CanaryTarget, CanaryView, InstanceId, Key, KvEntry as CoreKvEntry, Namespace, NodeId,
        ServiceName, ServiceView, VersionInfo,
    };
    use crate::http::views::history_entry;
    use crate::http::ApiError;
    use crate::node::{MemberView, NodeStatus, WatchItem, WriteResult};

    fn version(id: u64, size: usize, deleted: bool) -> VersionInfo {
        VersionInfo {
            id: VersionId(id),
            hlc: core::Hlc {
                wall_ms: 1_700_000_000_123,
                logical: 2,
            },
            origin: NodeId::from_index(1),
            seq: 7,
            checksum: 0xdead_beef,
            size,
            deleted,
        }
    }

    fn canary_view() -> CanaryView {
        CanaryView {
            namespace: Namespace::new("prod").unwrap(),
            key: Key::new("routes/v1").unwrap(),
            value: b"upstream=c".to_vec(),
            target: CanaryTarget {
                tags: BTreeMap::from([("role".to_string(), "gateway".to_string())]),
                percent: Some(10),
            },
            version: version(0xc0, 10, false),
            active: true,
        }
    }

    /// A key with two siblings (one binary, one deleted) and a canary
    /// serving this node.
    fn kv_entry() -> CoreKvEntry {
        CoreKvEntry {
            namespace: Namespace::new("prod").unwrap(),
            key: Key::new("routes/v1").unwrap(),
            value: b"upstream=c".to_vec(),
            version: version(0xab, 10, false),
            siblings: vec![
                (version(0xab, 3, false), Some(vec![0xff, 0x00, 0x7f])),
                (version(0xaa, 0, true), None),
            ],
            canary: Some(canary_view()),
        }
    }

    fn service_view() -> ServiceView {
        ServiceView {
            namespace: Namespace::new("prod").unwrap(),
            service: ServiceName::new("api").unwrap(),
            instance: InstanceId::new("api-1").unwrap(),
            spec: ServiceSpec {
                address: "10.0.0.1".into(),
                port: 8080,
                tags: ["v1".to_string()].into(),
                metadata: BTreeMap::from([("zone".to_string(), "a".to_string())]),
                weight: 50,
                ttl_ms: None,
            },
            owner: NodeId::from_index(2),
            reported_health: HealthStatus::Passing,
            health: HealthStatus::Critical,
            version: version(0x5e, 40, false),
        }
    }

    fn member_view() -> MemberView {
        MemberView {
            node_id: "12D3KooWmember".into(),
            name: "gw-1".into(),
            status: MemberStatus::Suspect,
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            tags: BTreeMap::from([("role".to_string(), "gateway".to_string())]),
            incarnation: 4,
        }
    }

    fn node_status() -> NodeStatus {
        NodeStatus {
            node_id: "12D3KooWself".into(),
            name: "gw-0".into(),
            cluster: "prod".into(),
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/4000/p2p/12D3KooWself".into()],
            revision: 42,
            keys: 3,
            digest: "00ff".into(),
            members: BTreeMap::from([("alive".to_string(), 2), ("dead".to_string(), 1)]),
            connected_peers: 1,
        }
    }

    fn watch_items() -> Vec<WatchItem> {
        vec![
            WatchItem::Kv {
                revision: 5,
                namespace: Namespace::new("prod").unwrap(),
                key: Key::new("routes/v1").unwrap(),
                value: Some(b"upstream=a".to_vec()),
                version: Some(version(0xab, 10, false)),
                siblings: 1,
            },
            WatchItem::Kv {
                revision: 6,
                namespace: Namespace::new("prod").unwrap(),
                key: Key::new("routes/v1").unwrap(),
                value: None,
                version: None,
                siblings: 0,
            },
            WatchItem::Service {
                revision: 7,
                namespace: Namespace::new("prod").unwrap(),
                service: ServiceName::new("api").unwrap(),
                instance: InstanceId::new("api-1").unwrap(),
                view: Some(service_view()),
            },
            WatchItem::Service {
                revision: 8,
                namespace: Namespace::new("prod").unwrap(),
                service: ServiceName::new("api").unwrap(),
                instance: InstanceId::new("api-1").unwrap(),
                view: None,
            },
            WatchItem::Member {
                revision: 9,
                member: member_view(),
            },
        ]
    }

    fn errors() -> Vec<ErrorBody> {
        let errors = [
            ApiError::from(core::CommandError::Conflict { current: None }),
            ApiError::from(core::CommandError::Conflict {
                current: Some(VersionId(0xab)),
            }),
            ApiError::from(core::CommandError::TooLarge {
                size: 2000,
                max: 1024,
            }),
            ApiError::snapshot_required(&core::SnapshotRequired {
                requested: 1,
                oldest: 10,
                current: 20,
            }),
            ApiError::rate_limited(5),
            ApiError::not_found("key prod/x not found"),
        ];
        errors.iter().map(|e| e.body().clone()).collect()
    }

    /// Serialize as the server does, parse as the client does, and check
    /// nothing was lost; returns the JSON.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(sent: &T) -> String {
        let json = serde_json::to_string(sent).unwrap();
        let read: T = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(&read, sent, "{json}");
        json
    }

    #[test]
    fn every_response_round_trips_from_server_value_to_client_struct() {
        let entry = kv_entry();
        let read: KvEntry = serde_json::from_str(&round_trip(&KvEntry::from(&entry))).unwrap();
        assert_eq!(read.version.id, entry.version.id);
        assert_eq!(read.source, Source::Canary);
        assert_eq!(read.content.bytes().unwrap(), Some(entry.value.clone()));
        assert_eq!(read.siblings[0].content.value, None, "not UTF-8");
        assert_eq!(
            read.siblings[0].content.bytes().unwrap(),
            Some(vec![0xff, 0x00, 0x7f])
        );
        assert_eq!(read.siblings[1].content, Content::default(), "a deletion");
        assert_eq!(read.canary.as_ref().map(|c| c.percent), Some(Some(10)));

        let list = KvList {
            entries: vec![(&entry).into()],
            index: 42,
            namespace: "prod".into(),
            prefix: "routes/".into(),
            truncated: true,
        };
        round_trip(&list);
        round_trip(&History {
            key: "routes/v1".into(),
            namespace: "prod".into(),
            versions: vec![
                history_entry(&version(0xab, 10, false), Some(b"upstream=a"), true),
                history_entry(&version(0xaa, 0, true), None, false),
            ],
        });
        let written = WriteResult {
            version: VersionId(0x0123_4567_89ab_cdef),
            hlc: core::Hlc {
                wall_ms: 9,
                logical: 1,
            },
            dot: core::Dot {
                node: NodeId::from_index(1),
                seq: 3,
            },
        };
        let read: WriteResponse = serde_json::from_str(&round_trip(&WriteResponse::from(&written))).unwrap();
        assert_eq!(
            (read.version, read.hlc.wall_ms, read.hlc.logical),
            (written.version, 9, 1)
        );
        round_trip(&Canary::from(&canary_view()));
        round_trip(&CanaryList {
            canaries: vec![(&canary_view()).into()],
            namespace: "prod".into(),
        });
        round_trip(&ServiceNames {
            namespace: "prod".into(),
            services: vec!["api".into(), "db".into()],
        });
        round_trip(&ServiceList {
            instances: vec![(&service_view()).into()],
            namespace: "prod".into(),
            service: "api".into(),
        });
        round_trip(&HeartbeatResponse {
            health: HealthStatus::Warning,
            instance: "api-1".into(),
            namespace: "prod".into(),
            service: "api".into(),
        });
        round_trip(&vec![Member::from(&member_view())]);
        let status: Status = serde_json::from_str(&round_trip(&Status::from(&node_status()))).unwrap();
        assert_eq!(status.members["dead"], 1);
        for item in watch_items() {
            let read: WatchEvent = serde_json::from_str(&round_trip(&WatchEvent::from(&item))).unwrap();
            assert_eq!(read.revision(), item.revision());
        }
        for error in errors() {
            round_trip(&error);
        }
        // Requests go the other way, client to server.
        round_trip(&VersionRequest {
            version: Some("00000000000000ab".into()),
            value: None,
        });
        round_trip(&HeartbeatRequest {
            health: Some(HealthStatus::Critical),
        });
        round_trip(&service_view().spec);
    }

    /// The JSON of `version(id, size, false)`.
    fn version_json(id: &str, size: u64) -> String {
        format!(
            concat!(
                r#"{{"checksum":"00000000deadbeef","deleted":false,"#,
                r#""hlc":{{"logical":2,"wall_ms":1700000000123}},"id":"{}","#,
                r#""origin":"0000000000000000000000000000000000000000000000000000000000000001","#,
                r#""seq":7,"size":{}}}"#
            ),
            id, size
        )
    }

    #[test]
    fn a_kv_entry_is_written_as_exactly_this_json() {
        let json = serde_json::to_string(&KvEntry::from(&kv_entry())).unwrap();
        let deleted = version_json("00000000000000aa", 0).replace(r#""deleted":false"#, r#""deleted":true"#);
        let expected = [
            r#"{"canary":{"active_here":true,"key":"routes/v1","namespace":"prod","percent":10,"#,
            r#""selector":{"role":"gateway"},"target":"role=gateway and 10% of nodes","#,
            r#""value":"upstream=c","value_base64":"dXBzdHJlYW09Yw==","version":"#,
            &version_json("00000000000000c0", 10),
            r#"},"key":"routes/v1","namespace":"prod","siblings":["#,
            r#"{"value":null,"value_base64":"/wB/","version":"#,
            &version_json("00000000000000ab", 3),
            r#"},{"value":null,"value_base64":null,"version":"#,
            &deleted,
            r#"}],"source":"canary","value":"upstream=c","value_base64":"dXBzdHJlYW09Yw==","version":"#,
            &version_json("00000000000000ab", 10),
            "}",
        ]
        .concat();
        assert_eq!(json, expected);

        // Without a canary the field is left out, not null.
        let mut stable = kv_entry();
        stable.canary = None;
        let json = serde_json::to_string(&KvEntry::from(&stable)).unwrap();
        assert!(json.starts_with(r#"{"key":"routes/v1","#), "{json}");
        assert!(json.contains(r#""source":"stable""#), "{json}");
    }

    #[test]
    fn members_events_and_errors_are_written_as_exactly_this_json() {
        assert_eq!(
            serde_json::to_string(&Member::from(&member_view())).unwrap(),
            concat!(
                r#"{"node_id":"12D3KooWmember","name":"gw-1","status":"suspect","#,
                r#""addrs":["/ip4/127.0.0.1/tcp/4001"],"tags":{"role":"gateway"},"incarnation":4}"#
            )
        );
        let member = &watch_items()[4];
        assert_eq!(
            event_data(&WatchEvent::from(member)),
            concat!(
                r#"{"member":{"addrs":["/ip4/127.0.0.1/tcp/4001"],"incarnation":4,"name":"gw-1","#,
                r#""node_id":"12D3KooWmember","status":"suspect","tags":{"role":"gateway"}},"#,
                r#""revision":9,"type":"member"}"#
            )
        );
        let deleted = &watch_items()[1];
        assert_eq!(
            event_data(&WatchEvent::from(deleted)),
            concat!(
                r#"{"deleted":true,"key":"routes/v1","namespace":"prod","revision":6,"siblings":0,"#,
                r#""type":"kv","value":null,"value_base64":null,"version":null}"#
            )
        );
        let errors: Vec<String> = errors()
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert!(
            errors[0].starts_with(r#"{"code":"conflict","current_version":null,"error":"#),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with(r#"{"code":"conflict","current_version":"00000000000000ab","error":"#),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].ends_with(r#"","max":1024,"size":2000}"#),
            "{}",
            errors[2]
        );
        assert!(
            errors[3].starts_with(r#"{"code":"snapshot_required","current_revision":20,"error":"#),
            "{}",
            errors[3]
        );
        assert!(
            errors[3].ends_with(r#"","oldest_revision":10,"requested_revision":1}"#),
            "{}",
            errors[3]
        );
        assert_eq!(
            errors[4],
            r#"{"code":"rate_limited","error":"too many requests from this address","limit_per_sec":5}"#
        );
        assert_eq!(
            errors[5],
            r#"{"code":"not_found","error":"key prod/x not found"}"#
        );
    }

    #[test]
    fn a_version_id_that_is_not_16_hex_digits_does_not_parse() {
        let bad = r#"{"hlc":{"logical":0,"wall_ms":1},"version":"abc"}"#;
        assert!(serde_json::from_str::<WriteResponse>(bad).is_err());
        let good = r#"{"hlc":{"logical":0,"wall_ms":1},"version":"00000000000000ab"}"#;
        assert_eq!(
            serde_json::from_str::<WriteResponse>(good).unwrap().version,
            VersionId(0xab)
        );
        let absent = r#"{"code":"not_found","error":"x"}"#;
        assert_eq!(
            serde_json::from_str::<ErrorBody>(absent).unwrap().current_version,
            None
        );
    }
}
