//! JSON shapes of the HTTP API.
//!
//! The core's types serialize for the wire (node ids as bytes, version ids as
//! numbers); the API shows them the way people and scripts quote them back:
//! version ids as 16 hex digits, origins as libp2p peer ids, values as a
//! UTF-8 string when they are one and always as base64.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::core::{CanaryView, Hlc, KvEntry, ServiceView, VersionInfo};
use crate::net::display_id;
use crate::node::{NodeStatus, WatchItem, WriteResult};

/// `{"wall_ms", "logical"}`.
pub fn hlc(h: &Hlc) -> Value {
    json!({ "wall_ms": h.wall_ms, "logical": h.logical })
}

/// A version as clients see it.
pub fn version(v: &VersionInfo) -> Value {
    json!({
        "id": v.id.to_string(),
        "hlc": hlc(&v.hlc),
        "origin": display_id(&v.origin),
        "seq": v.seq,
        "checksum": format!("{:016x}", v.checksum),
        "size": v.size,
        "deleted": v.deleted,
    })
}

/// The answer to a write: `{"version", "hlc"}`.
pub fn write_result(w: &WriteResult) -> Value {
    json!({ "version": w.version.to_string(), "hlc": hlc(&w.hlc) })
}

/// Put `value` (the UTF-8 text or null) and `value_base64` into `obj`.
fn value_fields(obj: &mut serde_json::Map<String, Value>, value: Option<&[u8]>) {
    let (text, b64) = match value {
        Some(bytes) => (
            std::str::from_utf8(bytes)
                .ok()
                .map_or(Value::Null, |s| Value::String(s.to_string())),
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
        None => (Value::Null, Value::Null),
    };
    obj.insert("value".into(), text);
    obj.insert("value_base64".into(), b64);
}

/// A key as read: winner, version and every live sibling.
pub fn kv_entry(e: &KvEntry) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("namespace".into(), json!(e.namespace.as_str()));
    obj.insert("key".into(), json!(e.key.as_str()));
    value_fields(&mut obj, Some(&e.value));
    obj.insert("version".into(), version(&e.version));
    let siblings = e
        .siblings
        .iter()
        .map(|(v, bytes)| {
            let mut s = serde_json::Map::new();
            s.insert("version".into(), version(v));
            value_fields(&mut s, bytes.as_deref());
            Value::Object(s)
        })
        .collect();
    obj.insert("siblings".into(), Value::Array(siblings));
    obj.insert(
        "source".into(),
        json!(if e.served_from_canary() {
            "canary"
        } else {
            "stable"
        }),
    );
    if let Some(c) = &e.canary {
        obj.insert("canary".into(), canary(c));
    }
    Value::Object(obj)
}

/// A running canary as this node sees it.
pub fn canary(c: &CanaryView) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("namespace".into(), json!(c.namespace.as_str()));
    obj.insert("key".into(), json!(c.key.as_str()));
    value_fields(&mut obj, Some(&c.value));
    obj.insert("version".into(), version(&c.version));
    obj.insert("selector".into(), json!(c.target.tags));
    obj.insert("percent".into(), json!(c.target.percent));
    obj.insert("target".into(), json!(c.target.to_string()));
    obj.insert("active_here".into(), json!(c.active));
    Value::Object(obj)
}

/// One entry of a key's history.
pub fn history_entry(v: &VersionInfo, bytes: Option<&[u8]>, live: bool) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("version".into(), version(v));
    obj.insert("live".into(), json!(live));
    value_fields(&mut obj, bytes);
    Value::Object(obj)
}

/// A service instance with its effective health.
pub fn service(s: &ServiceView) -> Value {
    json!({
        "namespace": s.namespace.as_str(),
        "service": s.service.as_str(),
        "instance": s.instance.as_str(),
        "address": s.spec.address,
        "port": s.spec.port,
        "tags": s.spec.tags,
        "metadata": s.spec.metadata,
        "weight": s.spec.weight,
        "ttl_ms": s.spec.ttl_ms,
        "owner": display_id(&s.owner),
        "reported_health": s.reported_health.as_str(),
        "health": s.health.as_str(),
        "version": version(&s.version),
    })
}

/// `GET /v1/health`.
pub fn status(s: &NodeStatus) -> Value {
    serde_json::to_value(s).expect("NodeStatus is plain data and always serializes")
}

/// One watch event, as the `data:` of a server-sent event. Tagged by
/// `"type"`: `kv`, `service` or `member`.
pub fn watch_item(item: &WatchItem) -> Value {
    match item {
        WatchItem::Kv {
            revision,
            namespace,
            key,
            value,
            version: v,
            siblings,
        } => {
            let mut obj = serde_json::Map::new();
            obj.insert("type".into(), json!("kv"));
            obj.insert("revision".into(), json!(revision));
            obj.insert("namespace".into(), json!(namespace.as_str()));
            obj.insert("key".into(), json!(key.as_str()));
            obj.insert("deleted".into(), json!(value.is_none()));
            value_fields(&mut obj, value.as_deref());
            obj.insert("version".into(), v.as_ref().map_or(Value::Null, version));
            obj.insert("siblings".into(), json!(siblings));
            Value::Object(obj)
        }
        WatchItem::Service {
            revision,
            namespace,
            service: name,
            instance,
            view,
        } => json!({
            "type": "service",
            "revision": revision,
            "namespace": namespace.as_str(),
            "service": name.as_str(),
            "instance": instance.as_str(),
            "deleted": view.is_none(),
            "view": view.as_ref().map_or(Value::Null, service),
        }),
        WatchItem::Member { revision, member } => json!({
            "type": "member",
            "revision": revision,
            "member": member,
        }),
        #[allow(unreachable_patterns)]
        other => json!({ "type": "unknown", "revision": other.revision() }),
    }
}
