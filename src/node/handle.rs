//! The embedding API: a cloneable handle to a running node. Every method is
//! a [`Request`] to the driver task and a wait for its answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::core::{
    CanaryTarget, CanaryView, Command, CommandOutput, Config, Engine, Expect, HealthStatus, InstanceId, Key,
    KvEntry, Namespace, NodeId, ServiceName, ServiceQuery, ServiceSpec, ServiceView, VersionId, VersionInfo,
};
use crate::net::display_id;

use super::checks::{CheckSpec, CheckStatus};
use super::config::{NodeConfig, ReloadError};
use super::error::NodeError;
use super::metrics::{MetricsSnapshot, NodeMetrics};
use super::request::{ReadFn, Request};
use super::types::{AclView, DriverView, MemberView, NodeStatus, WatchFilter, WriteResult, WriterView};
use super::watch::WatchStream;

/// A handle to a running node. Cheap to clone; every method is a message to
/// the node's task and its answer.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) tx: mpsc::Sender<Request>,
    pub(crate) node: NodeId,
    /// Latency histograms the node's task observes (for `GET /metrics`).
    pub(crate) metrics: Arc<NodeMetrics>,
    /// Round-robin and in-flight state of `pick` (see [`NodeHandle::pick`]).
    pub(crate) picker: Arc<super::picker::Picker>,
    /// Health checks of this node's instances (see
    /// [`NodeHandle::register_service_with_checks`]).
    pub(crate) checks: Arc<super::checks::Checks>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeHandle({})", display_id(&self.node))
    }
}

impl NodeHandle {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// This node's libp2p peer id, as text.
    pub fn peer_id(&self) -> String {
        display_id(&self.node)
    }

    async fn command(&self, command: Command) -> Result<CommandOutput, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Command { command, reply })
            .await
            .map_err(|_| NodeError::Stopped)?;
        Ok(rx.await.map_err(|_| NodeError::Stopped)??)
    }

    /// A write command, as [`NodeHandle::write`] (for the checks module).
    pub(crate) async fn command_write(&self, command: Command) -> Result<WriteResult, NodeError> {
        self.write(command).await
    }

    async fn write(&self, command: Command) -> Result<WriteResult, NodeError> {
        match self.command(command).await? {
            CommandOutput::Written { version, hlc, dot } => Ok(WriteResult { version, hlc, dot }),
            other => Err(NodeError::UnexpectedOutput(format!("{other:?}"))),
        }
    }

    /// Run a read-only closure against the engine on the node's task.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine, &DriverView) -> T + Send + 'static,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        let job: ReadFn = Box::new(move |e, v| {
            let _ = tx.send(f(e, v));
        });
        self.tx
            .send(Request::Read(job))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Write a value. Returns once it is durable on this node; it reaches
    /// the other nodes by gossip and anti-entropy.
    pub async fn put(
        &self,
        namespace: &Namespace,
        key: &Key,
        value: Vec<u8>,
    ) -> Result<WriteResult, NodeError> {
        self.write(Command::Put {
            namespace: namespace.clone(),
            key: key.clone(),
            value,
            expect: None,
        })
        .await
    }

    /// Compare-and-set: write only if the key's winner is `expect` (or the
    /// key is absent, for [`Expect::Absent`]); else [`CommandError::Conflict`](crate::core::CommandError::Conflict).
    pub async fn put_if(
        &self,
        namespace: &Namespace,
        key: &Key,
        value: Vec<u8>,
        expect: Expect,
    ) -> Result<WriteResult, NodeError> {
        self.write(Command::Put {
            namespace: namespace.clone(),
            key: key.clone(),
            value,
            expect: Some(expect),
        })
        .await
    }

    /// Read a key: the winning value and any concurrent siblings. `None`
    /// when absent or deleted. Served from local state, even with no peers.
    pub async fn get(&self, namespace: &Namespace, key: &Key) -> Result<Option<KvEntry>, NodeError> {
        let (ns, k) = (namespace.clone(), key.clone());
        self.read(move |e, _| e.kv_get(&ns, &k)).await
    }

    /// Delete a key (writes a tombstone).
    pub async fn delete(&self, namespace: &Namespace, key: &Key) -> Result<WriteResult, NodeError> {
        self.write(Command::Delete {
            namespace: namespace.clone(),
            key: key.clone(),
            expect: None,
        })
        .await
    }

    /// Delete only if the winner is `expect`.
    pub async fn delete_if(
        &self,
        namespace: &Namespace,
        key: &Key,
        expect: Expect,
    ) -> Result<WriteResult, NodeError> {
        self.write(Command::Delete {
            namespace: namespace.clone(),
            key: key.clone(),
            expect: Some(expect),
        })
        .await
    }

    /// Keys of a namespace starting with `prefix`, in order (at most `limit`).
    pub async fn list(
        &self,
        namespace: &Namespace,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<KvEntry>, NodeError> {
        let (ns, p) = (namespace.clone(), prefix.to_string());
        self.read(move |e, _| e.kv_list(&ns, &p, limit)).await
    }

    /// Every version held for a key (live first, then history), with its
    /// content (`None` for deletions) and whether it is live.
    pub async fn history(
        &self,
        namespace: &Namespace,
        key: &Key,
    ) -> Result<Vec<(VersionInfo, Option<Vec<u8>>, bool)>, NodeError> {
        let (ns, k) = (namespace.clone(), key.clone());
        self.read(move |e, _| e.kv_history(&ns, &k)).await
    }

    /// Write the content of version `to` again, as a new version.
    pub async fn rollback(
        &self,
        namespace: &Namespace,
        key: &Key,
        to: VersionId,
    ) -> Result<WriteResult, NodeError> {
        self.write(Command::Rollback {
            namespace: namespace.clone(),
            key: key.clone(),
            to,
        })
        .await
    }

    /// Settle concurrent writes: write the content of the live sibling
    /// `keep` as a new version that supersedes every sibling.
    /// [`CommandError::NotFound`](crate::core::CommandError::NotFound) if `keep` is not a live version.
    pub async fn resolve(
        &self,
        namespace: &Namespace,
        key: &Key,
        keep: VersionId,
    ) -> Result<WriteResult, NodeError> {
        self.write(Command::Resolve {
            namespace: namespace.clone(),
            key: key.clone(),
            keep,
        })
        .await
    }

    /// Follow changes matching `filter`, replaying those after `since` first
    /// (or starting from now). Fails with [`NodeError::SnapshotRequired`] if
    /// `since` is older than the node's watch log.
    pub async fn watch(&self, filter: WatchFilter, since: Option<u64>) -> Result<WatchStream, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Watch { filter, since, reply })
            .await
            .map_err(|_| NodeError::Stopped)?;
        Ok(rx.await.map_err(|_| NodeError::Stopped)??)
    }

    /// Start (or replace) a canary for a key: `value` is read by the nodes
    /// `target` selects; every other node keeps reading the stable value.
    pub async fn set_canary(
        &self,
        namespace: &Namespace,
        key: &Key,
        value: Vec<u8>,
        target: CanaryTarget,
    ) -> Result<WriteResult, NodeError> {
        self.write(Command::SetCanary {
            namespace: namespace.clone(),
            key: key.clone(),
            value,
            target,
        })
        .await
    }

    /// Make a key's canary value its stable value everywhere and end the
    /// canary. The result is the new stable version.
    pub async fn promote_canary(&self, namespace: &Namespace, key: &Key) -> Result<WriteResult, NodeError> {
        self.write(Command::PromoteCanary {
            namespace: namespace.clone(),
            key: key.clone(),
        })
        .await
    }

    /// End a key's canary: every node reads the stable value again.
    pub async fn abort_canary(&self, namespace: &Namespace, key: &Key) -> Result<WriteResult, NodeError> {
        self.write(Command::AbortCanary {
            namespace: namespace.clone(),
            key: key.clone(),
        })
        .await
    }

    /// Make `writers` the only nodes that may write `namespace` from now
    /// on (the writer ACL, docs/SECURITY.md "Writer rules"). This node
    /// must be named in `protocol.acl_admins`. Nodes that wrote the
    /// namespace before keep what they wrote; what they write next is
    /// refused by every node.
    pub async fn set_writers(
        &self,
        namespace: &Namespace,
        writers: Vec<NodeId>,
    ) -> Result<WriteResult, NodeError> {
        self.write(Command::SetWriters {
            namespace: namespace.clone(),
            writers,
        })
        .await
    }

    /// Remove the writer rule of `namespace`: every member may write it
    /// again (this node must be an admin).
    pub async fn clear_writers(&self, namespace: &Namespace) -> Result<WriteResult, NodeError> {
        self.write(Command::ClearWriters {
            namespace: namespace.clone(),
        })
        .await
    }

    /// The writer rules in force on this node and the admins who may
    /// change them.
    pub async fn writer_rules(&self) -> Result<AclView, NodeError> {
        self.read(|e, _| AclView {
            admins: e.acl_admins().iter().map(NodeId::peer_id_text).collect(),
            rules: e
                .writer_rules()
                .iter()
                .map(|(ns, rule)| {
                    let writers = rule
                        .writers
                        .iter()
                        .map(|(n, until)| WriterView {
                            node_id: n.peer_id_text(),
                            until_seq: *until,
                        })
                        .collect();
                    (ns.to_string(), writers)
                })
                .collect(),
        })
        .await
    }

    /// A key's running canary, with whether this node reads it.
    pub async fn canary(&self, namespace: &Namespace, key: &Key) -> Result<Option<CanaryView>, NodeError> {
        let (ns, k) = (namespace.clone(), key.clone());
        self.read(move |e, _| e.kv_canary(&ns, &k)).await
    }

    /// Every running canary in a namespace.
    pub async fn canaries(&self, namespace: &Namespace) -> Result<Vec<CanaryView>, NodeError> {
        let ns = namespace.clone();
        self.read(move |e, _| e.kv_canaries(&ns)).await
    }

    /// Register (or update) a service instance owned by this node. Any
    /// checks it had on this node stop (see
    /// [`NodeHandle::register_service_with_checks`]).
    pub async fn register_service(
        &self,
        namespace: &Namespace,
        service: &ServiceName,
        instance: &InstanceId,
        spec: ServiceSpec,
    ) -> Result<WriteResult, NodeError> {
        self.register_service_with_checks(namespace, service, instance, spec, Vec::new())
            .await
    }

    /// Register (or update) a service instance owned by this node, with
    /// active health checks that this node runs (see [`CheckSpec`]); they
    /// replace any it had. The instance's health becomes the worst status
    /// of its checks, written only when it changes. Check definitions are
    /// kept in the data directory: a restarted node runs them again while
    /// it still owns the instance. An instance has a TTL or checks, not
    /// both; invalid checks are refused
    /// ([`CommandError::Invalid`](crate::core::CommandError::Invalid)) and
    /// nothing is registered.
    pub async fn register_service_with_checks(
        &self,
        namespace: &Namespace,
        service: &ServiceName,
        instance: &InstanceId,
        spec: ServiceSpec,
        checks: Vec<CheckSpec>,
    ) -> Result<WriteResult, NodeError> {
        let key = (namespace.clone(), service.clone(), instance.clone());
        self.checks.register(self, key, spec, checks, None).await
    }

    /// Refresh an owned instance's TTL and report its health (default
    /// passing). Refused for an instance with checks on this node: its
    /// checks set its health.
    pub async fn heartbeat_service(
        &self,
        namespace: &Namespace,
        service: &ServiceName,
        instance: &InstanceId,
        health: Option<HealthStatus>,
    ) -> Result<(), NodeError> {
        let key = (namespace.clone(), service.clone(), instance.clone());
        if self.checks.has_checks(&key) {
            return Err(NodeError::Command(crate::core::CommandError::Invalid(format!(
                "{}/{}/{} has health checks on this node: they set its health",
                namespace, service, instance
            ))));
        }
        self.command(Command::HeartbeatService {
            namespace: namespace.clone(),
            service: service.clone(),
            instance: instance.clone(),
            health,
        })
        .await
        .map(|_| ())
    }

    /// Write the health an instance's checks found.
    pub(crate) async fn set_health_from_checks(
        &self,
        key: &super::checks::InstanceKey,
        health: HealthStatus,
    ) -> Result<(), NodeError> {
        self.command(Command::HeartbeatService {
            namespace: key.0.clone(),
            service: key.1.clone(),
            instance: key.2.clone(),
            health: Some(health),
        })
        .await
        .map(|_| ())
    }

    /// Remove a service instance (and stop its checks).
    pub async fn deregister_service(
        &self,
        namespace: &Namespace,
        service: &ServiceName,
        instance: &InstanceId,
    ) -> Result<WriteResult, NodeError> {
        let key = (namespace.clone(), service.clone(), instance.clone());
        self.checks.deregister(self, key).await
    }

    /// The status of this node's health checks (of one namespace, or all):
    /// status, counts, last output and error. Check state is this node's
    /// own: other nodes see only the health it writes.
    pub fn check_statuses(&self, namespace: Option<&Namespace>) -> Vec<CheckStatus> {
        self.checks.statuses(namespace)
    }

    /// Instances of a service matching `query`.
    pub async fn services(
        &self,
        namespace: &Namespace,
        service: &ServiceName,
        query: ServiceQuery,
    ) -> Result<Vec<ServiceView>, NodeError> {
        let (ns, s) = (namespace.clone(), service.clone());
        self.read(move |e, _| e.services(&ns, &s, &query)).await
    }

    /// Names of the services registered in a namespace.
    pub async fn service_names(&self, namespace: &Namespace) -> Result<Vec<ServiceName>, NodeError> {
        let ns = namespace.clone();
        self.read(move |e, _| e.service_names(&ns)).await
    }

    /// Every member this node knows.
    pub async fn members(&self) -> Result<Vec<MemberView>, NodeError> {
        self.read(|e, _| e.members().iter().map(MemberView::of).collect())
            .await
    }

    /// The protocol engine's counters (messages, bytes, merges, syncs,
    /// rejected input by reason).
    pub async fn counters(&self) -> Result<crate::core::Counters, NodeError> {
        self.read(|e, _| e.counters().clone()).await
    }

    /// This node's status.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        self.read(|e, v| {
            let me = e.local_member();
            let mut members = BTreeMap::new();
            for m in e.members() {
                *members.entry(m.status.as_str().to_string()).or_insert(0) += 1;
            }
            NodeStatus {
                node_id: display_id(&e.node_id()),
                name: me.info.name.clone(),
                cluster: e.config().cluster.clone(),
                listen_addrs: v.listen_addrs.clone(),
                revision: e.revision(),
                keys: e.digest().keys,
                digest: format!("{:016x}", e.digest().hash),
                members,
                connected_peers: v.connected_peers,
            }
        })
        .await
    }

    /// Apply new protocol settings (the reloadable ones; see
    /// [`Engine::reconfigure`]).
    pub async fn reconfigure(&self, config: Config) -> Result<(), NodeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Reconfigure { config, reply })
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await
            .map_err(|_| NodeError::Stopped)?
            .map_err(|e| NodeError::Reload(ReloadError::Protocol(e)))
    }

    /// Apply the reloadable settings of `config` to the running node: the
    /// protocol settings, name, tags, bootstrap peers and the deny-list (a
    /// newly denied peer is disconnected at once). Check the change
    /// first with [`NodeConfig::reload_changes`]:
    /// settings that need a restart are ignored here. Log level and HTTP
    /// rate limits belong to the process and the HTTP server; `starling run`
    /// applies those itself.
    pub async fn reload(&self, config: &NodeConfig) -> Result<(), NodeError> {
        config
            .validate()
            .map_err(|e| NodeError::Reload(ReloadError::Invalid(e)))?;
        self.reconfigure(config.protocol.clone()).await?;
        let (reply, rx) = oneshot::channel();
        let bootstrap = config.bootstrap.iter().filter_map(|a| a.parse().ok()).collect();
        self.tx
            .send(Request::Retune {
                name: config.effective_name(),
                tags: config.tags.clone(),
                bootstrap,
                reply,
            })
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?;
        let (reply, rx) = oneshot::channel();
        let peers = config.deny_peers.iter().filter_map(|p| p.parse().ok()).collect();
        self.tx
            .send(Request::SetDenied { peers, reply })
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Fault injection: refuse connections to and from these peers (replaces
    /// the previous set) and close existing ones. For tests and the
    /// real-node simulator.
    pub async fn set_blocked_peers(&self, peers: Vec<NodeId>) -> Result<(), NodeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::SetBlocked { peers, reply })
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Leave the cluster gracefully (peers see `left`) and stop the node.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.stop(true).await
    }

    /// Stop without announcing a leave (as a crash would look to peers,
    /// but with all acknowledged writes durable).
    pub async fn stop_without_leave(&self) -> Result<(), NodeError> {
        self.stop(false).await
    }

    async fn stop(&self, leave: bool) -> Result<(), NodeError> {
        self.checks.stop_all();
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Request::Shutdown { leave, reply }).await.is_err() {
            return Ok(());
        }
        let _ = rx.await;
        Ok(())
    }

    /// Counters and state figures for a metrics scrape.
    pub(crate) async fn metrics_snapshot(&self) -> Result<MetricsSnapshot, NodeError> {
        self.read(MetricsSnapshot::read).await
    }

    /// Whether HTTP registrations may carry command checks
    /// (`http_command_checks`).
    pub(crate) fn http_command_checks(&self) -> bool {
        self.checks.http_command_checks
    }

    /// Register the health check and service file metrics in a scrape's
    /// registry.
    pub(crate) fn register_check_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.checks.metrics.register(registry, self.checks.counts());
    }

    /// The latency histograms the node's task observes.
    pub(crate) fn latency_metrics(&self) -> &Arc<NodeMetrics> {
        &self.metrics
    }

    // --- Test hooks (feature `test-utils`): a hostile peer for
    // `tests/hostile_node.rs`. Not part of the API.

    /// **Test hook** (feature `test-utils`; not a stable API): publish
    /// `bytes`, which this node's engine did not produce, on the cluster's
    /// gossip `topic`, as this node. The engine neither sees nor counts
    /// them. `Err` says why gossipsub refused them (no peer on the topic,
    /// a duplicate) or that the node stopped.
    #[cfg(feature = "test-utils")]
    #[doc(hidden)]
    pub async fn test_publish_raw(&self, topic: crate::core::Topic, bytes: Vec<u8>) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::RawPublish { topic, bytes, reply })
            .await
            .map_err(|_| NodeError::Stopped.to_string())?;
        rx.await.map_err(|_| NodeError::Stopped.to_string())?
    }

    /// **Test hook** (feature `test-utils`; not a stable API): send `bytes`,
    /// which this node's engine did not produce, to `to` as a sync request
    /// over the request-response protocol, and wait for the answer. The
    /// answer (or the failure: no answer, a timeout, a closed connection)
    /// comes back here and never reaches the engine, which did not make
    /// the request.
    #[cfg(feature = "test-utils")]
    #[doc(hidden)]
    pub async fn test_request_raw(&self, to: NodeId, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::RawSync { to, bytes, reply })
            .await
            .map_err(|_| NodeError::Stopped.to_string())?;
        rx.await.map_err(|_| NodeError::Stopped.to_string())?
    }
}
