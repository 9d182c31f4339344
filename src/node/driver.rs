//! The node's single task: owns the Engine, the Swarm and the Store.
//!
//! It turns swarm events and handle requests into engine inputs, and engine
//! actions into libp2p calls, disk writes and replies. It makes no protocol
//! decisions. Contract (see `core::engine`): after every input, every action
//! is executed in order — a `Persist` durably before anything after it — and
//! the task then sleeps at most until `Engine::poll_timeout`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{
    gossipsub, identify, identity, mdns, multiaddr::Protocol, ping, request_response, Multiaddr, PeerId,
    Swarm,
};
use tokio::sync::{mpsc, oneshot};

use crate::core::{
    Action, Command, CommandError, CommandOutput, Engine, Input, MemberStatus, NodeId, NodeInfo, StateKey,
    Topic, WatchChange, WatchEvent,
};
use crate::net::{node_id_of, peer_id_of, Behaviour, BehaviourEvent, ClusterNames};
use crate::store::Store;

use super::handle::{MemberView, Request, WatchError, WatchFilter, WatchItem, WatchStream};
use super::metrics::{count_watchers, LatencyProbe, NodeMetrics};

/// Capacity of each watcher's queue; a watcher further behind is dropped.
pub(crate) const WATCH_QUEUE: usize = 1024;
/// How often the driver re-dials members it is not connected to.
const REDIAL_INTERVAL: Duration = Duration::from_secs(1);

/// Driver-side facts a read may need.
#[derive(Clone, Debug, Default)]
pub(crate) struct DriverView {
    pub listen_addrs: Vec<String>,
    pub connected_peers: usize,
    /// Open watchers by kind (`kv`, `services`, `members`).
    pub watchers: BTreeMap<&'static str, usize>,
}

struct Watcher {
    filter: WatchFilter,
    tx: mpsc::Sender<WatchItem>,
    closed: Arc<Mutex<Option<WatchError>>>,
}

pub(crate) struct Driver {
    pub engine: Engine,
    pub swarm: Swarm<Behaviour>,
    pub store: Store,
    pub names: ClusterNames,
    pub rx: mpsc::Receiver<Request>,
    pub bootstrap: Vec<Multiaddr>,
    pub view: DriverView,
    pub info: NodeInfo,
    next_command: u64,
    replies: HashMap<u64, oneshot::Sender<Result<CommandOutput, CommandError>>>,
    next_inbound: u64,
    inbound: HashMap<u64, request_response::ResponseChannel<Vec<u8>>>,
    outbound: HashMap<request_response::OutboundRequestId, u64>,
    watchers: Vec<Watcher>,
    blocked: BTreeSet<PeerId>,
    listen_dirty: bool,
    stopping: Option<oneshot::Sender<()>>,
    latency: LatencyProbe,
}

/// Milliseconds since the Unix epoch: the driver's one clock.
#[allow(clippy::disallowed_methods)] // the driver is where the clock is read
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Driver {
    pub(crate) fn new(
        engine: Engine,
        swarm: Swarm<Behaviour>,
        store: Store,
        names: ClusterNames,
        rx: mpsc::Receiver<Request>,
        bootstrap: Vec<Multiaddr>,
        info: NodeInfo,
    ) -> Self {
        let latency = LatencyProbe::new(Arc::new(NodeMetrics::new()), &engine);
        Driver {
            engine,
            swarm,
            store,
            names,
            rx,
            bootstrap,
            view: DriverView::default(),
            info,
            next_command: 1,
            replies: HashMap::new(),
            next_inbound: 1,
            inbound: HashMap::new(),
            outbound: HashMap::new(),
            watchers: Vec::new(),
            blocked: BTreeSet::new(),
            listen_dirty: false,
            stopping: None,
            latency,
        }
    }

    /// The latency histograms this driver observes.
    pub(crate) fn latency_metrics(&self) -> Arc<NodeMetrics> {
        self.latency.metrics()
    }

    pub(crate) async fn run(mut self) {
        for addr in self.bootstrap.clone() {
            self.dial_addr(addr);
        }
        let mut redial = tokio::time::interval(REDIAL_INTERVAL);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = wall_ms();
            let deadline = self.engine.poll_timeout();
            let sleep_ms = deadline.saturating_sub(now).min(1_000);
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                req = self.rx.recv() => match req {
                    Some(req) => self.on_request(req),
                    None => {
                        // Every handle is gone: stop quietly (no leave).
                        break;
                    }
                },
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => self.feed(Input::Tick),
                _ = redial.tick() => self.redial(),
            }
            if self.listen_dirty {
                self.listen_dirty = false;
                self.announce_addrs();
            }
            if let Some(done) = self.stopping.take() {
                // Give gossip a moment to carry a leave announcement out.
                let flush_until = tokio::time::Instant::now() + Duration::from_millis(300);
                while let Ok(ev) = tokio::time::timeout_at(flush_until, self.swarm.select_next_some()).await {
                    if let SwarmEvent::Behaviour(BehaviourEvent::Sync(_)) = ev {
                        continue;
                    }
                }
                self.close_watchers(WatchError::Stopped);
                // Release the data directory (its lock) before saying we
                // stopped, so the caller can restart on it at once.
                drop(self);
                let _ = done.send(());
                return;
            }
        }
    }

    /// Feed one input and execute its actions (the driver contract).
    fn feed(&mut self, input: Input) {
        let actions = self.engine.handle(wall_ms(), input);
        self.execute(actions);
    }

    fn execute(&mut self, actions: Vec<Action>) {
        let mut iter = actions.into_iter();
        while let Some(action) = iter.next() {
            match action {
                Action::Persist(batch) => {
                    if let Err(e) = self.store.apply(&batch) {
                        tracing::error!(error = %e, batch = batch.id, "could not persist; undoing the batch");
                        // Nothing after an unpersisted batch may run.
                        let skipped: Vec<Action> = iter.collect();
                        for a in skipped {
                            if let Action::Respond { id, .. } = a {
                                self.inbound.remove(&id);
                            }
                        }
                        let undo = self.engine.handle(
                            wall_ms(),
                            Input::PersistFailed {
                                batch: batch.id,
                                reason: e.to_string(),
                            },
                        );
                        // The undo itself persists the restored state.
                        self.execute(undo);
                        return;
                    }
                }
                Action::Publish { topic, bytes } => {
                    let t = match topic {
                        Topic::Heartbeat => self.names.heartbeat_topic.clone(),
                        Topic::Delta => self.names.delta_topic.clone(),
                    };
                    if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(t, bytes) {
                        // Alone or partitioned: anti-entropy covers it.
                        tracing::debug!(error = %e, "publish not delivered");
                    }
                }
                Action::SendRequest { to, id, bytes } => self.send_request(to, id, bytes),
                Action::Respond { id, bytes } => {
                    if let Some(ch) = self.inbound.remove(&id) {
                        let _ = self.swarm.behaviour_mut().sync.send_response(ch, bytes);
                    }
                }
                Action::Notify(ev) => self.notify(ev),
                Action::Reply { id, result } => {
                    if let Some(tx) = self.replies.remove(&id) {
                        let _ = tx.send(result);
                    }
                }
            }
        }
    }

    fn send_request(&mut self, to: NodeId, id: u64, bytes: Vec<u8>) {
        let Some(peer) = peer_id_of(&to) else {
            self.feed(Input::RequestFailed { id });
            return;
        };
        if self.blocked.contains(&peer) {
            self.feed(Input::RequestFailed { id });
            return;
        }
        let addrs = self.member_addrs(&to);
        let kind = crate::core::wire::peek_kind(&bytes);
        let rr = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request_with_addresses(&peer, bytes, addrs);
        self.latency.request_sent(rr, kind);
        self.outbound.insert(rr, id);
    }

    fn member_addrs(&self, node: &NodeId) -> Vec<Multiaddr> {
        self.engine
            .member(node)
            .map(|m| m.info.addrs.iter().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default()
    }

    fn on_request(&mut self, req: Request) {
        match req {
            Request::Command { command, reply } => {
                let id = self.next_command;
                self.next_command += 1;
                self.replies.insert(id, reply);
                let leaving = matches!(command, Command::Leave);
                self.feed(Input::Command { id, command });
                if leaving {
                    tracing::info!("left the cluster");
                }
            }
            Request::Read(job) => {
                self.view.connected_peers = self.swarm.connected_peers().count();
                let open = self.watchers.iter().filter(|w| !w.tx.is_closed());
                self.view.watchers = count_watchers(open.map(|w| &w.filter));
                job(&self.engine, &self.view);
            }
            Request::Watch { filter, since, reply } => {
                let _ = reply.send(self.subscribe(filter, since));
            }
            Request::Reconfigure { config, reply } => {
                let _ = reply.send(self.engine.reconfigure(config).map_err(|e| e.to_string()));
            }
            Request::SetBlocked { peers, reply } => {
                let new: BTreeSet<PeerId> = peers.iter().filter_map(peer_id_of).collect();
                for p in self.blocked.difference(&new).copied().collect::<Vec<_>>() {
                    self.swarm.behaviour_mut().blocked.unblock_peer(p);
                }
                for p in &new {
                    self.swarm.behaviour_mut().blocked.block_peer(*p);
                }
                self.blocked = new;
                let _ = reply.send(());
            }
            Request::Retune {
                name,
                tags,
                bootstrap,
                reply,
            } => {
                let added: Vec<Multiaddr> = bootstrap
                    .iter()
                    .filter(|a| !self.bootstrap.contains(a))
                    .cloned()
                    .collect();
                for addr in added {
                    self.dial_addr(addr);
                }
                self.bootstrap = bootstrap;
                if name != self.info.name || tags != self.info.tags {
                    self.info.name = name;
                    self.info.tags = tags;
                    let id = self.next_command;
                    self.next_command += 1;
                    self.feed(Input::Command {
                        id,
                        command: Command::SetInfo(self.info.clone()),
                    });
                }
                let _ = reply.send(());
            }
            Request::Shutdown { leave, reply } => {
                if leave {
                    let id = self.next_command;
                    self.next_command += 1;
                    self.feed(Input::Command {
                        id,
                        command: Command::Leave,
                    });
                }
                self.stopping = Some(reply);
            }
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message, ..
            })) => {
                let Some(author) = message.source.as_ref().and_then(node_id_of) else {
                    return;
                };
                let stamp = self.latency.heartbeat_stamp(&message.data);
                let accepted_before = self.engine.counters().heartbeats_received;
                self.feed(Input::Gossip {
                    from: author,
                    bytes: message.data,
                });
                if let Some(stamp) = stamp {
                    if self.engine.counters().heartbeats_received > accepted_before {
                        self.latency.heartbeat_accepted(author, stamp, wall_ms());
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(ev)) => self.on_sync_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                let mut seen = BTreeSet::new();
                for (peer, addr) in list {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    if seen.insert(peer) && !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(addr.with(Protocol::P2p(peer)));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer, result: Err(e), ..
            })) => {
                // Ping failures no longer close connections by themselves: a
                // silent partition would go unnoticed. Close it here.
                tracing::debug!(%peer, error = %e, "ping failed; closing connection");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } if num_established.get() == 1 => {
                if let Some(node) = node_id_of(&peer_id) {
                    self.feed(Input::PeerConnected(node));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if let Some(node) = node_id_of(&peer_id) {
                    self.feed(Input::PeerDisconnected(node));
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listen_dirty = true;
            }
            SwarmEvent::ExpiredListenAddr { .. } => self.listen_dirty = true,
            _ => {}
        }
    }

    fn on_sync_event(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => {
                let Some(from) = node_id_of(&peer) else {
                    return;
                };
                match message {
                    request_response::Message::Request { request, channel, .. } => {
                        let id = self.next_inbound;
                        self.next_inbound += 1;
                        self.inbound.insert(id, channel);
                        self.feed(Input::Request {
                            from,
                            id,
                            bytes: request,
                        });
                        // The engine answers at once or never (bad input):
                        // never hold a channel for a request it dropped.
                        self.inbound.remove(&id);
                    }
                    request_response::Message::Response { request_id, response } => {
                        self.latency.response_received(&request_id);
                        if let Some(id) = self.outbound.remove(&request_id) {
                            self.feed(Input::Response {
                                from,
                                id,
                                bytes: response,
                            });
                        }
                    }
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                tracing::debug!(%error, "sync request failed");
                self.latency.request_failed(&request_id);
                if let Some(id) = self.outbound.remove(&request_id) {
                    self.feed(Input::RequestFailed { id });
                }
            }
            _ => {}
        }
    }

    /// Dial members (and bootstrap peers) we are not connected to, so a
    /// healed partition reconnects without waiting for discovery.
    fn redial(&mut self) {
        let members: Vec<(NodeId, Vec<Multiaddr>)> = self
            .engine
            .members()
            .into_iter()
            .filter(|m| m.node != self.engine.node_id() && m.status != MemberStatus::Left)
            .map(|m| {
                (
                    m.node,
                    m.info.addrs.iter().filter_map(|a| a.parse().ok()).collect(),
                )
            })
            .collect();
        for (node, addrs) in members {
            let Some(peer) = peer_id_of(&node) else { continue };
            if self.blocked.contains(&peer) || self.swarm.is_connected(&peer) {
                continue;
            }
            for a in addrs {
                self.swarm.behaviour_mut().kad.add_address(&peer, a);
            }
            let _ = self.swarm.dial(peer);
        }
        if self.swarm.connected_peers().next().is_none() {
            for addr in self.bootstrap.clone() {
                self.dial_addr(addr);
            }
        }
    }

    fn dial_addr(&mut self, addr: Multiaddr) {
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            if self.blocked.contains(&peer) {
                return;
            }
        }
        if let Err(e) = self.swarm.dial(addr.clone()) {
            tracing::debug!(%addr, error = %e, "dial failed");
        }
    }

    fn announce_addrs(&mut self) {
        let me = *self.swarm.local_peer_id();
        let addrs: Vec<String> = self
            .swarm
            .listeners()
            .flat_map(expand_unspecified)
            .map(|a| a.with(Protocol::P2p(me)).to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if addrs == self.view.listen_addrs {
            return;
        }
        self.view.listen_addrs = addrs.clone();
        self.info.addrs = addrs;
        let id = self.next_command;
        self.next_command += 1;
        self.feed(Input::Command {
            id,
            command: Command::SetInfo(self.info.clone()),
        });
    }

    fn subscribe(
        &mut self,
        filter: WatchFilter,
        since: Option<u64>,
    ) -> Result<WatchStream, crate::core::SnapshotRequired> {
        let start = since.unwrap_or_else(|| self.engine.revision());
        let backlog = self.engine.watch_since(start)?;
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let closed = Arc::new(Mutex::new(None));
        let mut w = Watcher {
            filter,
            tx,
            closed: closed.clone(),
        };
        let mut alive = true;
        for ev in backlog {
            if let Some(item) = self.item_for(&w.filter, &ev) {
                if !deliver(&mut w, item) {
                    alive = false;
                    break;
                }
            }
        }
        if alive {
            self.watchers.push(w);
        }
        Ok(WatchStream {
            rx,
            closed,
            done: false,
            start_revision: start,
        })
    }

    fn notify(&mut self, ev: WatchEvent) {
        if self.watchers.is_empty() {
            return;
        }
        let mut watchers = std::mem::take(&mut self.watchers);
        watchers.retain_mut(|w| match self.item_for(&w.filter, &ev) {
            Some(item) => deliver(w, item),
            None => !w.tx.is_closed(),
        });
        self.watchers = watchers;
    }

    fn item_for(&self, filter: &WatchFilter, ev: &WatchEvent) -> Option<WatchItem> {
        match (&ev.change, filter) {
            (
                WatchChange::Key {
                    key: StateKey::Kv { namespace, key },
                    ..
                }
                | WatchChange::Key {
                    key: StateKey::Canary { namespace, key },
                    ..
                },
                WatchFilter::Kv {
                    namespace: ns,
                    prefix,
                },
            ) if namespace == ns
                && key.as_str().starts_with(prefix.as_str())
                && (matches!(
                    ev.change,
                    WatchChange::Key {
                        key: StateKey::Kv { .. },
                        ..
                    }
                ) || self.engine.canary_affects_me(namespace, key)) =>
            {
                let entry = self.engine.kv_get(namespace, key);
                Some(WatchItem::Kv {
                    revision: ev.revision,
                    namespace: namespace.clone(),
                    key: key.clone(),
                    siblings: entry.as_ref().map_or(0, |e| e.siblings.len()),
                    value: entry.as_ref().map(|e| e.value.clone()),
                    version: entry.map(|e| e.version),
                })
            }
            (
                WatchChange::Key {
                    key:
                        StateKey::Service {
                            namespace,
                            service,
                            instance,
                        },
                    ..
                },
                WatchFilter::Services {
                    namespace: ns,
                    service: svc,
                },
            ) if namespace == ns && svc.as_ref().is_none_or(|s| s == service) => {
                let view = self
                    .engine
                    .services(namespace, service, &Default::default())
                    .into_iter()
                    .find(|v| &v.instance == instance);
                Some(WatchItem::Service {
                    revision: ev.revision,
                    namespace: namespace.clone(),
                    service: service.clone(),
                    instance: instance.clone(),
                    view,
                })
            }
            (WatchChange::Member { node, .. }, WatchFilter::Members) => {
                self.engine.member(node).map(|m| WatchItem::Member {
                    revision: ev.revision,
                    member: MemberView::of(m),
                })
            }
            _ => None,
        }
    }

    fn close_watchers(&mut self, reason: WatchError) {
        for w in self.watchers.drain(..) {
            *w.closed.lock().expect("watch close lock is never poisoned") = Some(reason.clone());
        }
    }
}

/// Queue an item; a full queue drops the watcher (with the reason).
fn deliver(w: &mut Watcher, item: WatchItem) -> bool {
    match w.tx.try_send(item) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            *w.closed.lock().expect("watch close lock is never poisoned") =
                Some(WatchError::TooSlow(WATCH_QUEUE));
            tracing::warn!("dropping a slow watcher");
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// A listener on 0.0.0.0 is reachable on every local interface address;
/// advertise loopback too so local clusters work out of the box.
fn expand_unspecified(addr: &Multiaddr) -> Vec<Multiaddr> {
    let mut out = Vec::new();
    let mut iter = addr.iter();
    match iter.next() {
        Some(Protocol::Ip4(ip)) if ip.is_unspecified() => {
            let rest: Vec<Protocol> = iter.collect();
            let mut ips = vec![std::net::Ipv4Addr::LOCALHOST];
            ips.extend(local_ipv4s());
            for ip in ips {
                let mut a = Multiaddr::empty().with(Protocol::Ip4(ip));
                for p in &rest {
                    a.push(p.clone());
                }
                out.push(a);
            }
        }
        _ => out.push(addr.clone()),
    }
    out
}

/// Non-loopback IPv4 addresses of this host, read from the routing table
/// (no extra dependency; best effort).
fn local_ipv4s() -> Vec<std::net::Ipv4Addr> {
    let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") else {
        return Vec::new();
    };
    let mut out = BTreeSet::new();
    let lines: Vec<&str> = text.lines().collect();
    for w in lines.windows(2) {
        if w[1].contains("/32 host LOCAL") {
            if let Some(ip) = w[0]
                .split_whitespace()
                .last()
                .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
            {
                if !ip.is_loopback() {
                    out.insert(ip);
                }
            }
        }
    }
    out.into_iter().collect()
}

/// Build the swarm for `key` with TCP (and QUIC with the `quic` feature).
pub(crate) fn build_swarm(
    key: identity::Keypair,
    names: &ClusterNames,
    mdns: bool,
    max_message_bytes: usize,
    sync_timeout: Duration,
) -> Result<Swarm<Behaviour>, String> {
    let builder = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .map_err(|e| format!("tcp transport: {e}"))?;
    #[cfg(feature = "quic")]
    let builder = builder.with_quic();
    let swarm = builder
        .with_behaviour(|key| {
            Behaviour::new(key, names, mdns, max_message_bytes, sync_timeout)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })
        })
        .map_err(|e| format!("behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    Ok(swarm)
}
