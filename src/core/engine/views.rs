//! Read views: what clients see of keys, canaries, services and members,
//! and the engine's read-only accessors. Nothing here changes state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Counters, Engine};
use crate::core::canary::CanaryTarget;
use crate::core::config::Config;
use crate::core::hlc::Hlc;
use crate::core::ids::{InstanceId, Key, Namespace, NodeId, ServiceName, StateKey};
use crate::core::membership::{Member, MemberStatus};
use crate::core::registry::{HealthStatus, ServiceQuery, ServiceSpec};
use crate::core::state::{Digest, KeyState, Payload, ReplicatedState, Version, VersionId};
use crate::core::watch::{SnapshotRequired, WatchEvent};

/// A version as shown to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Short id (CAS, rollback).
    pub id: VersionId,
    /// HLC stamp.
    pub hlc: Hlc,
    /// Node that wrote it.
    pub origin: NodeId,
    /// Origin's sequence number.
    pub seq: u64,
    /// Content checksum.
    pub checksum: u64,
    /// Content size in bytes.
    pub size: usize,
    /// Whether it is a deletion.
    pub deleted: bool,
}

impl VersionInfo {
    fn of(v: &Version) -> Self {
        VersionInfo {
            id: v.id(),
            hlc: v.hlc,
            origin: v.dot.node,
            seq: v.dot.seq,
            checksum: v.checksum,
            size: match &v.payload {
                Payload::Value(b) => b.len(),
                Payload::Canary(c) => c.value.len(),
                _ => 0,
            },
            deleted: v.payload.is_tombstone(),
        }
    }
}

/// A config key as read: the winner and any concurrent siblings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    /// Namespace.
    pub namespace: Namespace,
    /// Key.
    pub key: Key,
    /// The winning value.
    pub value: Vec<u8>,
    /// The winning version.
    pub version: VersionInfo,
    /// Every live version including the winner (more than one after
    /// concurrent writes), highest rank first; `None` value for deletions.
    pub siblings: Vec<(VersionInfo, Option<Vec<u8>>)>,
    /// The key's canary, if one is running. When it targets this node,
    /// `value` is the canary's value (and `version` stays the stable
    /// winner, the one conditional writes compare against); a key that
    /// exists only as a canary reads here with the canary's version.
    pub canary: Option<CanaryView>,
}

impl KvEntry {
    /// Whether `value` comes from a canary targeting this node.
    pub fn served_from_canary(&self) -> bool {
        self.canary.as_ref().is_some_and(|c| c.active)
    }
}

/// A running canary as read on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryView {
    /// Namespace.
    pub namespace: Namespace,
    /// Key.
    pub key: Key,
    /// The candidate value.
    pub value: Vec<u8>,
    /// Which nodes read it.
    pub target: CanaryTarget,
    /// The canary's version.
    pub version: VersionInfo,
    /// Whether this node reads it.
    pub active: bool,
}

/// A service instance as read, with its effective health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Namespace.
    pub namespace: Namespace,
    /// Service.
    pub service: ServiceName,
    /// Instance id.
    pub instance: InstanceId,
    /// What was registered.
    pub spec: ServiceSpec,
    /// Owner node.
    pub owner: NodeId,
    /// Health as written by the owner.
    pub reported_health: HealthStatus,
    /// Health to route by: critical if the owner is dead or left, or no
    /// longer in the membership view (reaped).
    pub health: HealthStatus,
    /// The version.
    pub version: VersionInfo,
}

impl Engine {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// The validated config in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The winning value of a key, with its siblings; `None` if absent or
    /// deleted.
    pub fn kv_get(&self, namespace: &Namespace, key: &Key) -> Option<KvEntry> {
        let sk = StateKey::Kv {
            namespace: namespace.clone(),
            key: key.clone(),
        };
        let stable = self.state.get(&sk).and_then(|ks| kv_entry(namespace, key, ks));
        self.with_canary(stable, namespace, key)
    }

    /// The running canary of a key, if any, and whether it targets this
    /// node.
    pub fn kv_canary(&self, namespace: &Namespace, key: &Key) -> Option<CanaryView> {
        let sk = StateKey::Canary {
            namespace: namespace.clone(),
            key: key.clone(),
        };
        self.state
            .get(&sk)
            .and_then(|ks| self.canary_view(namespace, key, ks))
    }

    /// Every running canary in `namespace`, in key order.
    pub fn kv_canaries(&self, namespace: &Namespace) -> Vec<CanaryView> {
        self.state
            .iter()
            .filter_map(|(k, ks)| match k {
                StateKey::Canary { namespace: ns, key } if ns == namespace => self.canary_view(ns, key, ks),
                _ => None,
            })
            .collect()
    }

    /// Whether a change to this key's canary can change what this node
    /// reads: its current or its latest replaced version targets this node.
    /// Nodes outside a canary's target see no change when it starts, moves
    /// or ends.
    pub fn canary_affects_me(&self, namespace: &Namespace, key: &Key) -> bool {
        let sk = StateKey::Canary {
            namespace: namespace.clone(),
            key: key.clone(),
        };
        let Some(ks) = self.state.get(&sk) else {
            return false;
        };
        let targets_me = |v: &Version| match &v.payload {
            Payload::Canary(c) => c.target.matches(&self.me, &self.info.tags),
            _ => false,
        };
        ks.live.iter().any(targets_me) || ks.history.first().is_some_and(targets_me)
    }

    /// Keys in `namespace` starting with `prefix`, in key order, skipping
    /// deleted ones; at most `limit`.
    pub fn kv_list(&self, namespace: &Namespace, prefix: &str, limit: usize) -> Vec<KvEntry> {
        let mut out = Vec::new();
        // A prefix that is itself a valid key is where the range starts. The
        // empty prefix and ones like "db/" are not valid keys (and no key
        // made of control characters is either, so there is no sentinel to
        // start from): scan from the beginning, the loop filters.
        let iter: Box<dyn Iterator<Item = (&StateKey, &KeyState)>> = match Key::new(prefix) {
            Ok(start) => Box::new(self.state.range_from(&StateKey::Kv {
                namespace: namespace.clone(),
                key: start,
            })),
            Err(_) => Box::new(self.state.iter()),
        };
        for (k, ks) in iter {
            let StateKey::Kv { namespace: ns, key } = k else {
                if out.is_empty() {
                    continue;
                }
                break;
            };
            if ns != namespace {
                if ns > namespace {
                    break;
                }
                continue;
            }
            if !key.as_str().starts_with(prefix) {
                if key.as_str() > prefix && !out.is_empty() {
                    break;
                }
                continue;
            }
            if let Some(e) = self.with_canary(kv_entry(ns, key, ks), ns, key) {
                out.push(e);
                if out.len() >= limit {
                    break;
                }
            }
        }
        // Keys that exist only as a canary targeting this node read like
        // any other key.
        let only_canary: Vec<KvEntry> = self
            .kv_canaries(namespace)
            .into_iter()
            .filter(|c| c.active && c.key.as_str().starts_with(prefix))
            .filter(|c| {
                let sk = StateKey::Kv {
                    namespace: namespace.clone(),
                    key: c.key.clone(),
                };
                self.state
                    .get(&sk)
                    .and_then(|ks| kv_entry(namespace, &c.key, ks))
                    .is_none()
            })
            .filter_map(|c| self.with_canary(None, namespace, &c.key))
            .collect();
        if !only_canary.is_empty() {
            out.extend(only_canary);
            out.sort_by(|a, b| a.key.cmp(&b.key));
            out.truncate(limit);
        }
        out
    }

    /// Every version held for a key, live first then history, with content.
    pub fn kv_history(&self, namespace: &Namespace, key: &Key) -> Vec<(VersionInfo, Option<Vec<u8>>, bool)> {
        let sk = StateKey::Kv {
            namespace: namespace.clone(),
            key: key.clone(),
        };
        let Some(ks) = self.state.get(&sk) else {
            return Vec::new();
        };
        let live = ks.live.iter().map(|v| (v, true));
        let hist = ks.history.iter().map(|v| (v, false));
        live.chain(hist)
            .map(|(v, is_live)| {
                let value = match &v.payload {
                    Payload::Value(b) => Some(b.clone()),
                    _ => None,
                };
                (VersionInfo::of(v), value, is_live)
            })
            .collect()
    }

    /// Instances of a service matching `query`, by instance id.
    pub fn services(
        &self,
        namespace: &Namespace,
        service: &ServiceName,
        query: &ServiceQuery,
    ) -> Vec<ServiceView> {
        let mut out = Vec::new();
        for (k, ks) in self.state.iter() {
            let StateKey::Service {
                namespace: ns,
                service: svc,
                instance,
            } = k
            else {
                continue;
            };
            if ns != namespace || svc != service {
                continue;
            }
            let Some(view) = self.service_view(ns, svc, instance, ks) else {
                continue;
            };
            if !query.tags.iter().all(|t| view.spec.tags.contains(t)) {
                continue;
            }
            if query.healthy_only && !view.health.is_healthy() {
                continue;
            }
            out.push(view);
        }
        out
    }

    /// Names of services with at least one instance in `namespace`.
    pub fn service_names(&self, namespace: &Namespace) -> Vec<ServiceName> {
        let mut names = BTreeSet::new();
        for (k, ks) in self.state.iter() {
            if let StateKey::Service {
                namespace: ns,
                service,
                ..
            } = k
            {
                if ns == namespace && !ks.is_deleted() {
                    names.insert(service.clone());
                }
            }
        }
        names.into_iter().collect()
    }

    /// Registered instances of every namespace and service, counted by
    /// health as reads report it (an instance of a dead, departed or
    /// reaped owner counts as critical). For metrics.
    pub fn instances_by_health(&self) -> BTreeMap<HealthStatus, u64> {
        let mut counts = BTreeMap::new();
        for (k, ks) in self.state.iter() {
            if let StateKey::Service {
                namespace,
                service,
                instance,
            } = k
            {
                if let Some(view) = self.service_view(namespace, service, instance, ks) {
                    *counts.entry(view.health).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    /// Every member this node knows, by id.
    pub fn members(&self) -> Vec<Member> {
        self.members.iter().cloned().collect()
    }

    /// Every member this node knows, by id, without copying.
    pub fn member_records(&self) -> impl Iterator<Item = &Member> {
        self.members.iter()
    }

    /// One member's record.
    pub fn member(&self, node: &NodeId) -> Option<&Member> {
        self.members.get(node)
    }

    /// This node's own record.
    pub fn local_member(&self) -> Member {
        self.members
            .get(&self.me)
            .cloned()
            .unwrap_or_else(|| self.own_record(MemberStatus::Alive))
    }

    /// Digest of the replicated state.
    pub fn digest(&self) -> Digest {
        self.state.digest()
    }

    /// Digest of the membership view.
    pub fn members_hash(&self) -> u64 {
        self.members.hash()
    }

    /// The replicated state (read-only).
    pub fn state(&self) -> &ReplicatedState {
        &self.state
    }

    /// The latest watch revision.
    pub fn revision(&self) -> u64 {
        self.watch.revision()
    }

    /// Watch events after `since`, or [`SnapshotRequired`] if compacted.
    pub fn watch_since(&self, since: u64) -> Result<Vec<WatchEvent>, SnapshotRequired> {
        self.watch.since(since)
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// How many verified versions are held back now, their context naming
    /// writes not yet seen signed by their origins.
    pub fn deferred_now(&self) -> usize {
        self.deferred.held.len()
    }

    /// Current phi of a peer, if tracked.
    pub fn phi(&self, node: &NodeId) -> Option<f64> {
        self.liveness.phi(node, self.now_ms)
    }

    /// When this node last saw equal state with each peer (after a sync).
    pub fn last_converged(&self) -> BTreeMap<NodeId, u64> {
        self.sync.last_converged()
    }

    /// The heartbeat interval in force (grows with cluster size).
    pub fn heartbeat_interval_ms(&self) -> u64 {
        self.interval_for(self.members_not_gone())
    }
    /// Whether this node has left.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Number of syncs in flight.
    pub fn inflight_syncs(&self) -> usize {
        self.sync.inflight()
    }
}

impl Engine {
    fn canary_view(&self, namespace: &Namespace, key: &Key, ks: &KeyState) -> Option<CanaryView> {
        let w = ks.winner()?;
        let Payload::Canary(spec) = &w.payload else {
            return None;
        };
        Some(CanaryView {
            namespace: namespace.clone(),
            key: key.clone(),
            value: spec.value.clone(),
            target: spec.target.clone(),
            version: VersionInfo::of(w),
            active: spec.target.matches(&self.me, &self.info.tags),
        })
    }

    /// Attach the key's canary to a stable read, serving its value when it
    /// targets this node.
    fn with_canary(&self, stable: Option<KvEntry>, namespace: &Namespace, key: &Key) -> Option<KvEntry> {
        let Some(canary) = self.kv_canary(namespace, key) else {
            return stable;
        };
        match stable {
            Some(mut e) => {
                if canary.active {
                    e.value = canary.value.clone();
                }
                e.canary = Some(canary);
                Some(e)
            }
            None if canary.active => Some(KvEntry {
                namespace: namespace.clone(),
                key: key.clone(),
                value: canary.value.clone(),
                version: canary.version.clone(),
                siblings: Vec::new(),
                canary: Some(canary),
            }),
            None => None,
        }
    }

    fn service_view(
        &self,
        ns: &Namespace,
        svc: &ServiceName,
        inst: &InstanceId,
        ks: &KeyState,
    ) -> Option<ServiceView> {
        let v = ks.winner()?;
        let Payload::Instance(i) = &v.payload else {
            return None;
        };
        // Gone: held dead or departed, or not in the view at all (reaped
        // after `member_reap_ms`, or never heard of).
        let owner_gone = self
            .members
            .get(&i.owner)
            .is_none_or(|m| matches!(m.status, MemberStatus::Dead | MemberStatus::Left));
        Some(ServiceView {
            namespace: ns.clone(),
            service: svc.clone(),
            instance: inst.clone(),
            spec: i.spec.clone(),
            owner: i.owner,
            reported_health: i.health,
            health: if owner_gone {
                HealthStatus::Critical
            } else {
                i.health
            },
            version: VersionInfo::of(v),
        })
    }
}

fn kv_entry(namespace: &Namespace, key: &Key, ks: &KeyState) -> Option<KvEntry> {
    let w = ks.winner()?;
    let Payload::Value(value) = &w.payload else {
        return None;
    };
    Some(KvEntry {
        namespace: namespace.clone(),
        key: key.clone(),
        value: value.clone(),
        version: VersionInfo::of(w),
        siblings: ks
            .live
            .iter()
            .map(|v| {
                let val = match &v.payload {
                    Payload::Value(b) => Some(b.clone()),
                    _ => None,
                };
                (VersionInfo::of(v), val)
            })
            .collect(),
        canary: None,
    })
}
