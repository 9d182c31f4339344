//! The node's single task: owns the Engine, the Swarm and the Store.
//!
//! It turns swarm events and handle requests into engine inputs and makes
//! no protocol decisions. The engine executes its own actions through the
//! driver's [`Runtime`] (`Engine::drive`: persist first; on a failed persist
//! skip the rest and undo), and the task then sleeps at most until
//! `Engine::poll_timeout`.
//!
//! Imports the leaves `request`, `types`, `watch`, `metrics` and `clock`;
//! nothing imports it but the module that starts nodes.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use governor::{DefaultKeyedRateLimiter, Quota};
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionDenied, ConnectionError, DialError, ListenError, SwarmEvent};
use libp2p::{
    connection_limits, gossipsub, mdns, multiaddr::Protocol, request_response, Multiaddr, PeerId, Swarm,
};
use tokio::sync::{mpsc, oneshot};

use crate::core::wire::{peek_kind, MessageKind};
use crate::core::{
    Action, Command, CommandError, CommandOutput, Counters, Engine, Input, MemberStatus, NodeId, NodeInfo,
    PersistBatch, RequestRefused, Runtime, Topic, WatchChange, WatchEvent,
};
use crate::net::{
    advertised_addrs, node_id_of, peer_id_of, Behaviour, BehaviourEvent, ClusterNames, GRAYLIST_THRESHOLD,
};
use crate::store::{Store, LAZY_SYNC_AFTER};

use super::clock::wall_ms;
use super::held::Held;
use super::limits::Limits;
use super::links::Links;
use super::metrics::{DeniedEvent, LatencyProbe, Limit, NodeMetrics, Validation};
use super::probe::{self, Reply, Schedule, Task};
use super::request::Request;
use super::types::{DriverView, WatchError};
use super::watch::{WatchHub, WATCH_QUEUE};

/// How often the driver re-dials members it is not connected to.
const REDIAL_INTERVAL: Duration = Duration::from_secs(1);
/// Links are chosen again at most this often between re-dial rounds, when
/// the membership changed while links are wanted.
const CHOOSE_SPACING: Duration = Duration::from_millis(100);

/// A peer whose connection broke is re-dialled at once, at most this often.
const LOST_REDIAL_EVERY: Duration = Duration::from_secs(60);

/// A connection established this soon after a request was sent to its
/// peer while unconnected is that request's own dial.
const SYNC_DIAL_WINDOW: Duration = Duration::from_secs(5);

/// How often the driver looks for connected peers that left a probe
/// unanswered.
const WATCHDOG_INTERVAL: Duration = Duration::from_millis(200);
/// How late the watchdog may run before the lag counts as this node's own
/// (see `watch_probes`).
const WATCHDOG_SLACK: Duration = Duration::from_millis(50);

type ReplySender = oneshot::Sender<Result<CommandOutput, CommandError>>;

pub(crate) struct Driver {
    engine: Engine,
    swarm: Swarm<Behaviour>,
    store: Store,
    /// When the store's lazy commits are to be made durable.
    sync_due: Option<tokio::time::Instant>,
    names: ClusterNames,
    rx: mpsc::Receiver<Request>,
    bootstrap: Vec<Multiaddr>,
    view: DriverView,
    info: NodeInfo,
    next_command: u64,
    replies: HashMap<u64, ReplySender>,
    next_inbound: u64,
    inbound: HashMap<u64, request_response::ResponseChannel<Vec<u8>>>,
    outbound: HashMap<request_response::OutboundRequestId, u64>,
    hub: WatchHub,
    blocked: BTreeSet<PeerId>,
    /// Peers refused by the operator (config `deny_peers`).
    denied: BTreeSet<PeerId>,
    listen_dirty: bool,
    stopping: Option<oneshot::Sender<()>>,
    latency: LatencyProbe,
    /// Effects of the input being driven that need to read the engine; run
    /// in order once it returns.
    after: Vec<After>,
    /// Largest heartbeat taken from gossip or sent (`limits.heartbeat_max_bytes`).
    heartbeat_max_bytes: usize,
    /// Incoming anti-entropy requests per peer (`limits.sync_requests_*`).
    sync_rate: DefaultKeyedRateLimiter<PeerId>,
    /// Connected peers seen below the gossipsub graylist threshold.
    graylisted: BTreeSet<PeerId>,
    /// Whether our own oversized heartbeat was reported at `warn` yet.
    warned_own_heartbeat: bool,
    /// Publishes no subscribed peer could take yet (see `held`).
    held: Held,
    /// The partial view: the peers this node chose to keep connected
    /// (`limits.neighbours`) and which connections close when.
    links: Links,
    /// Members whose last connection broke (not closed on purpose), being
    /// re-dialled once: if that dial fails, they are unreachable.
    lost: BTreeSet<PeerId>,
    /// Peers the engine was told are connected: those with a neighbour
    /// link, and those this node dialed for another reason than a sync
    /// (bootstrap, probe, lookup). A connection opened only to carry a
    /// sync is not announced: the engine would sync again over it, and
    /// the peer that opened it would (each side's on-connect sync made a
    /// temporary connection cost about 15 KB at 50 nodes). An inbound
    /// connection is announced once its owner kept it (`links::KEPT_AGE`).
    told: BTreeSet<PeerId>,
    /// Peers a request was sent to while not connected, with when: the
    /// connection that follows is the sync's own.
    sync_dials: HashMap<PeerId, tokio::time::Instant>,
    /// Re-dial rounds so far: varies which members a round picks.
    redial_round: u64,
    /// The membership changed since links were last chosen: choose again
    /// before the next re-dial round if links are wanted.
    links_stale: bool,
    /// When links were last chosen.
    last_choice: tokio::time::Instant,
    /// Whom to probe next, and the probes outstanding: a peer that leaves
    /// one unanswered for `probe_timeout` is unreachable.
    probes: Schedule,
    /// How often a peer is probed and how long it has to answer
    /// (`limits.probe_interval_ms`, `limits.probe_timeout_ms`).
    probe_interval: Duration,
    probe_timeout: Duration,
    /// Opens probe streams (and accepts them, in `run`).
    probe_control: libp2p_stream::Control,
    /// Per connected peer probed so far, its probe task and the task's
    /// queue (dropping the entry ends the task).
    probe_tasks: HashMap<PeerId, (mpsc::Sender<(u64, bool)>, Task)>,
    /// The task answering other nodes' probes.
    probe_answers: Option<Task>,
    /// Where the probe tasks report, and what the driver reads.
    probe_replies: (mpsc::UnboundedSender<Reply>, mpsc::UnboundedReceiver<Reply>),
    /// When the probe watchdog last ran.
    last_watch: tokio::time::Instant,
    /// When each peer was last re-dialled after its connection broke: at
    /// most once a minute, so a peer that keeps closing its connection to
    /// this node does not cost a handshake each time.
    lost_redialed: HashMap<PeerId, tokio::time::Instant>,
    /// Test hook: requests sent for a test, not the engine, by id, with
    /// where their answer goes. Never in `outbound`, so their answers and
    /// failures never reach the engine.
    #[cfg(feature = "test-utils")]
    raw_outbound: HashMap<request_response::OutboundRequestId, RawReply>,
}

#[cfg(feature = "test-utils")]
type RawReply = oneshot::Sender<Result<Vec<u8>, String>>;

/// An effect the runtime cannot complete while the engine is driving
/// (borrowed mutably): a send needs the member's addresses and a watch
/// event the values it shows, both read from the engine. Replies queue
/// here too so that watchers and command callers hear in action order.
enum After {
    Send {
        peer: PeerId,
        to: NodeId,
        id: u64,
        bytes: Vec<u8>,
    },
    Notify(WatchEvent),
    Reply {
        id: u64,
        result: Result<CommandOutput, CommandError>,
    },
}

/// The driver's [`Runtime`]: every part of the driver but the engine.
struct NodeRuntime<'a> {
    swarm: &'a mut Swarm<Behaviour>,
    store: &'a mut Store,
    names: &'a ClusterNames,
    inbound: &'a mut HashMap<u64, request_response::ResponseChannel<Vec<u8>>>,
    blocked: &'a BTreeSet<PeerId>,
    denied: &'a BTreeSet<PeerId>,
    after: &'a mut Vec<After>,
    heartbeat_max_bytes: usize,
    metrics: &'a NodeMetrics,
    warned_own_heartbeat: &'a mut bool,
    held: &'a mut Held,
}

impl Runtime for NodeRuntime<'_> {
    fn persist(&mut self, batch: PersistBatch) -> Result<(), String> {
        self.store.apply(&batch).map_err(|e| {
            tracing::error!(error = %e, batch = batch.id, "could not persist; undoing the batch");
            e.to_string()
        })
    }

    fn publish(&mut self, topic: Topic, bytes: Vec<u8>) {
        if topic == Topic::Heartbeat && bytes.len() > self.heartbeat_max_bytes {
            // Every peer would reject it and penalise this node for it.
            self.metrics.exceeded(Limit::HeartbeatSize);
            if !std::mem::replace(self.warned_own_heartbeat, true) {
                tracing::warn!(
                    bytes = bytes.len(),
                    limit = self.heartbeat_max_bytes,
                    "this node's heartbeat is over limits.heartbeat_max_bytes and is not sent: \
                     shorten its name, tags or listen addresses, or raise the limit on every node"
                );
            }
            return;
        }
        match publish(self.swarm, self.names, topic, bytes) {
            Ok(()) => self.held.supersede(topic),
            Err((gossipsub::PublishError::NoPeersSubscribedToTopic, Some(bytes))) => {
                // No peer known to subscribe yet (alone, or a connection
                // whose subscriptions have not arrived): sent when one does.
                self.held.hold(topic, bytes, tokio::time::Instant::now());
            }
            Err((e, _)) => tracing::debug!(error = %e, ?topic, "publish not delivered"),
        }
    }

    fn send_request(&mut self, to: NodeId, id: u64, bytes: Vec<u8>) -> Result<(), RequestRefused> {
        let Some(peer) = peer_id_of(&to) else {
            return Err(RequestRefused);
        };
        if self.blocked.contains(&peer) || self.denied.contains(&peer) {
            return Err(RequestRefused);
        }
        self.after.push(After::Send { peer, to, id, bytes });
        Ok(())
    }

    fn respond(&mut self, id: u64, bytes: Vec<u8>) {
        if let Some(ch) = self.inbound.remove(&id) {
            let _ = self.swarm.behaviour_mut().sync.send_response(ch, bytes);
        }
    }

    fn notify(&mut self, event: WatchEvent) {
        self.after.push(After::Notify(event));
    }

    fn reply(&mut self, id: u64, result: Result<CommandOutput, CommandError>) {
        self.after.push(After::Reply { id, result });
    }

    fn skipped(&mut self, action: Action) {
        // Never hold a response channel for an answer that will not come.
        if let Action::Respond { id, .. } = action {
            self.inbound.remove(&id);
        }
    }
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
        let held = Held::new(latency.metrics_ref().gossip_held_dropped.clone());
        let defaults = Limits::default();
        let probe_control = swarm.behaviour().probe.new_control();
        let probes = Schedule::new(swarm.local_peer_id().to_bytes());
        Driver {
            engine,
            swarm,
            store,
            sync_due: None,
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
            hub: WatchHub::new(WATCH_QUEUE),
            blocked: BTreeSet::new(),
            denied: BTreeSet::new(),
            listen_dirty: false,
            stopping: None,
            latency,
            after: Vec::new(),
            heartbeat_max_bytes: defaults.heartbeat_max_bytes,
            sync_rate: sync_rate_limiter(&defaults),
            graylisted: BTreeSet::new(),
            warned_own_heartbeat: false,
            held,
            links: links_for(&defaults),
            lost: BTreeSet::new(),
            told: BTreeSet::new(),
            sync_dials: HashMap::new(),
            redial_round: 0,
            links_stale: false,
            last_choice: tokio::time::Instant::now(),
            probes,
            probe_interval: Duration::from_millis(defaults.probe_interval_ms),
            probe_timeout: Duration::from_millis(defaults.probe_timeout_ms),
            probe_control,
            probe_tasks: HashMap::new(),
            probe_answers: None,
            probe_replies: mpsc::unbounded_channel(),
            last_watch: tokio::time::Instant::now(),
            lost_redialed: HashMap::new(),
            #[cfg(feature = "test-utils")]
            raw_outbound: HashMap::new(),
        }
    }

    /// Count into `metrics` (shared with the transport, which counts key
    /// mismatches) and refuse the peers in `denied` from the start.
    pub(crate) fn with_admission(mut self, metrics: Arc<NodeMetrics>, denied: BTreeSet<PeerId>) -> Self {
        self.held = Held::new(metrics.gossip_held_dropped.clone());
        self.latency = LatencyProbe::new(metrics, &self.engine);
        self.set_denied(denied);
        self
    }

    /// Enforce `limits` (the ones the driver enforces: heartbeat size,
    /// incoming sync rate).
    pub(crate) fn with_limits(mut self, limits: &Limits) -> Self {
        self.heartbeat_max_bytes = limits.heartbeat_max_bytes;
        self.sync_rate = sync_rate_limiter(limits);
        self.links = links_for(limits);
        self.probe_interval = Duration::from_millis(limits.probe_interval_ms);
        self.probe_timeout = Duration::from_millis(limits.probe_timeout_ms);
        self
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
        let mut watchdog = tokio::time::interval(WATCHDOG_INTERVAL);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probe_round = tokio::time::interval(self.probe_interval);
        probe_round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        match self.probe_control.accept(self.names.probe_protocol.clone()) {
            Ok(incoming) => {
                self.probe_answers = Some(Task::spawn(probe::answer(incoming, self.probe_replies.0.clone())))
            }
            Err(e) => tracing::error!(error = %e, "probe protocol not served"),
        }
        loop {
            let now = wall_ms();
            let deadline = self.engine.poll_timeout();
            let mut sleep_ms = deadline.saturating_sub(now).min(1_000);
            if let Some(due) = self.sync_due {
                let until_sync = due.saturating_duration_since(tokio::time::Instant::now());
                sleep_ms = sleep_ms.min(until_sync.as_millis() as u64);
            }
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
                _ = watchdog.tick() => self.watch_probes(),
                _ = probe_round.tick() => self.probe_next(),
                Some(reply) = self.probe_replies.1.recv() => self.on_probe_reply(reply),
            }
            // A node that learned members while short of links chooses
            // at once (a joining node learns the cluster from its first
            // sync and would otherwise wait for the next re-dial round).
            if self.links_stale && self.links.wanted() > 0 && self.last_choice.elapsed() >= CHOOSE_SPACING {
                self.choose_links(tokio::time::Instant::now());
            }
            if self.listen_dirty {
                self.listen_dirty = false;
                self.announce_addrs();
            }
            self.sync_store();
            if let Some(done) = self.stopping.take() {
                // Give gossip a moment to carry a leave announcement out.
                let flush_until = tokio::time::Instant::now() + Duration::from_millis(300);
                while let Ok(ev) = tokio::time::timeout_at(flush_until, self.swarm.select_next_some()).await {
                    if let SwarmEvent::Behaviour(BehaviourEvent::Sync(_)) = ev {
                        continue;
                    }
                }
                self.hub.close_all(WatchError::Stopped);
                if let Err(e) = self.store.close() {
                    tracing::warn!(error = %e, "could not close the store cleanly");
                }
                // Release the data directory (its lock) before saying we
                // stopped, so the caller can restart on it at once.
                drop(self);
                let _ = done.send(());
                return;
            }
        }
    }

    /// Make the store's lazy member commits durable once `LAZY_SYNC_AFTER`
    /// has passed since the first of them; arm the deadline when new ones
    /// appear.
    fn sync_store(&mut self) {
        if !self.store.unsynced() {
            self.sync_due = None;
            return;
        }
        let now = tokio::time::Instant::now();
        let due = *self.sync_due.get_or_insert(now + LAZY_SYNC_AFTER);
        if now < due {
            return;
        }
        let metrics = self.latency.metrics_ref();
        match self.store.sync() {
            Ok(()) => {
                metrics.store_syncs.inc();
                self.sync_due = None;
            }
            Err(e) => {
                metrics.store_sync_failures.inc();
                tracing::warn!(error = %e, "could not make member records durable; retrying");
                self.sync_due = Some(now + LAZY_SYNC_AFTER);
            }
        }
    }

    /// Drive one input through the engine (the driver contract), then run
    /// the effects that needed the engine.
    fn feed(&mut self, input: Input) {
        let mut rt = NodeRuntime {
            swarm: &mut self.swarm,
            store: &mut self.store,
            names: &self.names,
            inbound: &mut self.inbound,
            blocked: &self.blocked,
            denied: &self.denied,
            after: &mut self.after,
            heartbeat_max_bytes: self.heartbeat_max_bytes,
            metrics: self.latency.metrics_ref(),
            warned_own_heartbeat: &mut self.warned_own_heartbeat,
            held: &mut self.held,
        };
        self.engine.drive(wall_ms(), input, &mut rt);
        for effect in std::mem::take(&mut self.after) {
            match effect {
                After::Send { peer, to, id, bytes } => {
                    let now = tokio::time::Instant::now();
                    self.links.used(peer, now);
                    if !self.swarm.is_connected(&peer) {
                        self.sync_dials.insert(peer, now);
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
                After::Notify(event) => {
                    if matches!(event.change, WatchChange::Member { .. }) {
                        self.links_stale = true;
                    }
                    self.hub.notify(&self.engine, &event);
                }
                After::Reply { id, result } => {
                    if let Some(tx) = self.replies.remove(&id) {
                        let _ = tx.send(result);
                    }
                }
            }
        }
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
                self.view.watchers = self.hub.counts();
                job(&self.engine, &self.view);
            }
            Request::Watch { filter, since, reply } => {
                let _ = reply.send(self.hub.subscribe(&self.engine, filter, since));
            }
            Request::Reconfigure { config, reply } => {
                let _ = reply.send(self.engine.reconfigure(config));
            }
            Request::SetBlocked { peers, reply } => {
                let new: BTreeSet<PeerId> = peers.iter().filter_map(peer_id_of).collect();
                for p in self.blocked.difference(&new).copied().collect::<Vec<_>>() {
                    self.swarm.behaviour_mut().blocked.unblock_peer(p);
                }
                for p in &new {
                    self.swarm.behaviour_mut().blocked.block_peer(*p);
                    self.links.unchoose(p);
                }
                self.blocked = new;
                let _ = reply.send(());
            }
            Request::SetDenied { peers, reply } => {
                self.set_denied(peers);
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
            #[cfg(feature = "test-utils")]
            Request::RawPublish { topic, bytes, reply } => {
                let t = match topic {
                    Topic::Heartbeat => self.names.heartbeat_topic.clone(),
                    Topic::Delta => self.names.delta_topic.clone(),
                };
                let sent = self.swarm.behaviour_mut().gossipsub.publish(t, bytes);
                let _ = reply.send(sent.map(|_| ()).map_err(|e| e.to_string()));
            }
            #[cfg(feature = "test-utils")]
            Request::RawSync { to, bytes, reply } => {
                let peer = peer_id_of(&to).filter(|p| !self.blocked.contains(p) && !self.denied.contains(p));
                let Some(peer) = peer else {
                    let _ = reply.send(Err("not a peer this node may reach".into()));
                    return;
                };
                let addrs = self.member_addrs(&to);
                let rr = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_request_with_addresses(&peer, bytes, addrs);
                self.raw_outbound.insert(rr, reply);
            }
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        if let SwarmEvent::OutgoingConnectionError {
            peer_id: Some(peer), ..
        } = &ev
        {
            // A chosen peer that cannot be dialed is given up (a lost one is
            // handled below, and reported unreachable).
            if !self.lost.contains(peer) && !self.swarm.is_connected(peer) {
                self.links.unchoose(peer);
            }
        }
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, &message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                topic, ..
            })) => {
                self.send_held(&topic);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(ev)) => self.on_sync_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                let now = tokio::time::Instant::now();
                for (peer, addr) in list {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    // Chosen up to the neighbour count: the rest are known
                    // (kad) and learned as members through gossip.
                    if self.links.wanted() > 0
                        && !self.links.is_chosen(&peer)
                        && !self.swarm.is_connected(&peer)
                        && !self.denied.contains(&peer)
                        && !self.blocked.contains(&peer)
                    {
                        self.links.choose(peer, now);
                        let _ = self.swarm.dial(addr.with(Protocol::P2p(peer)));
                    }
                }
            }
            // Identify's listen addresses do not go into Kademlia's table
            // (see `Behaviour::new`: every insertion into a small table
            // starts a walk); the addresses a member announces travel in its
            // record.
            SwarmEvent::Behaviour(BehaviourEvent::Identify(_)) => {}
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let now = tokio::time::Instant::now();
                let outbound = endpoint.is_dialer();
                self.links.established(connection_id, peer_id, outbound, now);
                if num_established.get() == 1 {
                    self.lost.remove(&peer_id);
                    self.probes.connected(peer_id);
                }
                let for_sync = self
                    .sync_dials
                    .remove(&peer_id)
                    .is_some_and(|t| now.duration_since(t) < SYNC_DIAL_WINDOW);
                if (outbound && !for_sync) || self.links.is_chosen(&peer_id) {
                    self.tell_connected(peer_id);
                }
                if outbound && self.links.is_chosen(&peer_id) {
                    // The peer learns at once that this link is a
                    // neighbour link (`probe::CHOSE_YOU`).
                    self.probe_at_once(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                let now = tokio::time::Instant::now();
                let closed = self.links.closed(connection_id, now);
                if num_established > 0 {
                    return;
                }
                self.probes.forget(&peer_id);
                self.probe_tasks.remove(&peer_id);
                self.told.remove(&peer_id);
                let Some(node) = node_id_of(&peer_id) else {
                    return;
                };
                self.feed(Input::PeerDisconnected(node));
                // Not closed here (a crashed process, a reset, or the peer
                // closing it) and a link someone relied on: dial once at
                // once; if that fails, the member is unreachable. At most
                // once a minute per peer. A temporary connection closed by
                // the peer that opened it is not re-dialed (`links`).
                let recently = self
                    .lost_redialed
                    .get(&peer_id)
                    .is_some_and(|t| now.duration_since(*t) < LOST_REDIAL_EVERY);
                let (neighbour, chosen) = closed.map_or((false, false), |c| (c.neighbour, c.chosen));
                if matches!(cause, Some(ConnectionError::IO(_)))
                    && neighbour
                    && !recently
                    && self.redial_lost(peer_id, &node)
                {
                    self.lost_redialed.insert(peer_id, now);
                    self.lost.insert(peer_id);
                    if chosen {
                        // Its grace starts over with the re-dial.
                        self.links.choose(peer_id, now);
                    }
                } else {
                    // Given up: another member is chosen in its place.
                    self.links.unchoose(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if self.lost.contains(&peer)
                && matches!(error, DialError::Transport(_) | DialError::WrongPeerId { .. }) =>
            {
                self.lost.remove(&peer);
                self.links.unchoose(&peer);
                if let Some(node) = node_id_of(&peer) {
                    tracing::debug!(%peer, %error, "lost peer cannot be re-dialled");
                    self.feed(Input::PeerUnreachable(node));
                }
            }
            SwarmEvent::IncomingConnectionError {
                peer_id: Some(peer),
                error: ListenError::Denied { .. },
                send_back_addr,
                ..
            } if self.denied.contains(&peer) => {
                tracing::debug!(%peer, addr = %send_back_addr, "refused a connection from a denied peer");
                self.latency.metrics_ref().denied(DeniedEvent::RefusedInbound);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error: DialError::Denied { .. },
                ..
            } if self.denied.contains(&peer) => {
                tracing::debug!(%peer, "refused to dial a denied peer");
                self.latency.metrics_ref().denied(DeniedEvent::RefusedOutbound);
            }
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { cause },
                send_back_addr,
                ..
            } if over_connection_limit(&cause) => {
                tracing::debug!(addr = %send_back_addr, %cause, "refused an incoming connection");
                self.latency.metrics_ref().exceeded(Limit::Connections);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                error: DialError::Denied { cause },
                ..
            } if over_connection_limit(&cause) => {
                tracing::debug!(peer = ?peer_id, %cause, "refused an outgoing connection");
                self.latency.metrics_ref().exceeded(Limit::Connections);
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
                if self.denied.contains(&peer) {
                    return; // in flight when the peer was denied
                }
                self.links.used(peer, tokio::time::Instant::now());
                match message {
                    request_response::Message::Request { request, channel, .. } => {
                        if self.sync_rate.check_key(&peer).is_err() {
                            // Dropping the channel closes the stream: the
                            // requester fails at once (no timeout to wait
                            // out) and tries again later.
                            self.latency.metrics_ref().exceeded(Limit::SyncRate);
                            tracing::debug!(%peer, "incoming sync request over the peer's rate; refused");
                            drop(channel);
                            return;
                        }
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
                        #[cfg(feature = "test-utils")]
                        if let Some(tx) = self.raw_outbound.remove(&request_id) {
                            let _ = tx.send(Ok(response));
                            return;
                        }
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
                #[cfg(feature = "test-utils")]
                if let Some(tx) = self.raw_outbound.remove(&request_id) {
                    let _ = tx.send(Err(error.to_string()));
                    return;
                }
                tracing::debug!(%error, "sync request failed");
                self.latency.request_failed(&request_id);
                if let Some(id) = self.outbound.remove(&request_id) {
                    self.feed(Input::RequestFailed { id });
                }
            }
            _ => {}
        }
    }

    /// A gossip message, judged and then reported to gossipsub, which
    /// forwards it only if accepted and penalises `via` for a rejection.
    fn on_gossip(&mut self, via: PeerId, id: &MessageId, message: gossipsub::Message) {
        let topic = if message.topic == self.names.heartbeat_topic.hash() {
            "heartbeat"
        } else {
            "delta"
        };
        let verdict = self.judge_gossip(message);
        let metrics = self.latency.metrics_ref();
        metrics.validated(topic, verdict).inc();
        let acceptance = match verdict {
            Validation::Accept => MessageAcceptance::Accept,
            Validation::Reject => MessageAcceptance::Reject,
            Validation::Ignore => MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, &via, acceptance);
        if verdict == Validation::Reject {
            self.check_graylist(via);
        }
    }

    /// Feed a gossip message to the engine (unless a limit refuses it
    /// first) and tell from the engine's counters what became of it.
    fn judge_gossip(&mut self, message: gossipsub::Message) -> Validation {
        // Gossipsub drops what a denied (blacklisted) peer wrote or
        // relays; this keeps the engine deaf to it either way.
        if message.source.is_some_and(|p| self.denied.contains(&p)) {
            return Validation::Ignore;
        }
        let Some(author) = message.source.as_ref().and_then(node_id_of) else {
            return Validation::Ignore;
        };
        let kind = peek_kind(&message.data);
        let on_heartbeat_topic = message.topic == self.names.heartbeat_topic.hash();
        // By kind and by topic, so a heartbeat cannot dodge the limit on
        // the delta topic, nor a delta take the heartbeat topic.
        if (kind == Some(MessageKind::Heartbeat) || on_heartbeat_topic)
            && message.data.len() > self.heartbeat_max_bytes
        {
            self.latency.metrics_ref().exceeded(Limit::HeartbeatSize);
            tracing::debug!(
                bytes = message.data.len(),
                limit = self.heartbeat_max_bytes,
                "heartbeat over limits.heartbeat_max_bytes; rejected"
            );
            return Validation::Reject;
        }
        let stamp = self.latency.heartbeat_stamp(&message.data);
        let before = Rejections::of(self.engine.counters());
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
        Rejections::of(self.engine.counters()).verdict_since(&before)
    }

    /// Count `peer` as graylisted if its score just fell below the
    /// threshold.
    fn check_graylist(&mut self, peer: PeerId) {
        let score = self.swarm.behaviour().gossipsub.peer_score(&peer);
        if score.is_some_and(|s| s < GRAYLIST_THRESHOLD) && self.graylisted.insert(peer) {
            let metrics = self.latency.metrics_ref();
            metrics.exceeded(Limit::GossipGraylist);
            metrics.graylisted_peers.set(self.graylisted.len() as i64);
            tracing::warn!(
                %peer,
                score = score.unwrap_or_default(),
                "peer graylisted: it delivered invalid gossip, which is now ignored from it until its \
                 score decays back"
            );
        }
    }

    /// Forget graylisted peers whose score recovered or that left, and
    /// idle rate-limit entries.
    fn refresh_limits(&mut self) {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let recovered: Vec<PeerId> = self
            .graylisted
            .iter()
            .filter(|p| {
                !self.swarm.is_connected(p) || gossipsub.peer_score(p).is_none_or(|s| s >= GRAYLIST_THRESHOLD)
            })
            .copied()
            .collect();
        for p in recovered {
            self.graylisted.remove(&p);
            tracing::info!(peer = %p, "peer no longer graylisted");
        }
        self.latency
            .metrics_ref()
            .graylisted_peers
            .set(self.graylisted.len() as i64);
        self.sync_rate.retain_recent();
    }

    /// Keep the partial view: give up chosen peers that never connected,
    /// choose members up to the neighbour count (adopting a connection
    /// that is already there, else dialing), close the connections whose
    /// time is up (`links`), and fall back on the bootstrap peers when
    /// nothing is connected, so a healed partition reconnects without
    /// waiting for discovery.
    fn redial(&mut self) {
        self.refresh_limits();
        let now = tokio::time::Instant::now();
        for peer in self.links.expire(now) {
            tracing::debug!(%peer, "chosen peer never connected; choosing another");
        }
        let refused: Vec<PeerId> = self
            .links
            .chosen()
            .filter(|p| self.blocked.contains(p) || self.denied.contains(p))
            .copied()
            .collect();
        for p in refused {
            self.links.unchoose(&p);
        }
        self.choose_links(now);
        for peer in self.links.kept_inbound(now) {
            self.tell_connected(peer);
        }
        self.sync_dials
            .retain(|_, t| now.duration_since(*t) < SYNC_DIAL_WINDOW);
        for id in self.links.to_close(now) {
            self.swarm.close_connection(id);
        }
        if self.swarm.connected_peers().next().is_none() {
            for addr in self.bootstrap.clone() {
                self.dial_addr(addr);
            }
        }
    }

    /// Choose members to link to, up to the neighbour count.
    fn choose_links(&mut self, now: tokio::time::Instant) {
        self.links_stale = false;
        self.last_choice = now;
        let me = self.engine.node_id();
        self.redial_round += 1;
        let mut want = self.links.wanted();
        if want > 0 {
            // A different pick each round and each node (ordered by a hash
            // salted with both), alive members first, so the cluster's
            // links form a random graph, no member gets everyone's links,
            // and each node's idle cost stays flat as the cluster grows.
            let mut members: Vec<(bool, u64, NodeId, Vec<Multiaddr>)> = self
                .engine
                .members()
                .into_iter()
                .filter(|m| m.node != me && m.status != MemberStatus::Left)
                .map(|m| {
                    (
                        m.status != MemberStatus::Alive,
                        pick_order(&me, &m.node, self.redial_round),
                        m.node,
                        m.info.addrs.iter().filter_map(|a| a.parse().ok()).collect(),
                    )
                })
                .collect();
            members.sort_by_key(|m| (m.0, m.1));
            for (_, _, node, addrs) in members {
                if want == 0 {
                    break;
                }
                let Some(peer) = peer_id_of(&node) else { continue };
                if self.blocked.contains(&peer) || self.denied.contains(&peer) || self.links.is_chosen(&peer)
                {
                    continue;
                }
                if self.swarm.is_connected(&peer) {
                    // Adopt a connection this node opened or one its owner
                    // keeps; skip one that may close any moment.
                    if self.links.adoptable(&peer, now) {
                        want -= 1;
                        self.links.choose(peer, now);
                        self.tell_connected(peer);
                        self.probe_at_once(peer);
                    }
                    continue;
                }
                // Addresses go with the dial, not into Kademlia's table: a
                // new entry there starts a walk (a dozen connections).
                want -= 1;
                self.links.choose(peer, now);
                let _ = self.swarm.dial(
                    DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .extend_addresses_through_behaviour()
                        .build(),
                );
            }
        }
    }

    /// A peer subscribed to `topic`: send what was held for it.
    fn send_held(&mut self, topic: &gossipsub::TopicHash) {
        let topic = if *topic == self.names.heartbeat_topic.hash() {
            Topic::Heartbeat
        } else if *topic == self.names.delta_topic.hash() {
            Topic::Delta
        } else {
            return;
        };
        for (bytes, since) in self.held.take(topic, tokio::time::Instant::now()) {
            match publish(&mut self.swarm, &self.names, topic, bytes) {
                Ok(()) => {
                    self.latency.metrics_ref().gossip_held_sent.inc();
                }
                Err((gossipsub::PublishError::NoPeersSubscribedToTopic, Some(bytes))) => {
                    self.held.hold(topic, bytes, since);
                }
                Err((e, _)) => tracing::debug!(error = %e, ?topic, "held publish not delivered"),
            }
        }
    }

    /// Tell the engine `peer` is connected, once per connection spell.
    fn tell_connected(&mut self, peer: PeerId) {
        if !self.swarm.is_connected(&peer) || !self.told.insert(peer) {
            return;
        }
        if let Some(node) = node_id_of(&peer) {
            self.feed(Input::PeerConnected(node));
        }
    }

    /// Probe the next peer of the round (see `probe`).
    fn probe_next(&mut self) {
        let now = tokio::time::Instant::now();
        let links = &self.links;
        if let Some((peer, id)) = self.probes.next(now, |p| links.is_chosen(p)) {
            self.send_probe(peer, id);
        }
    }

    /// Probe `peer` now, outside the round (its chosen link came up), unless
    /// a probe to it is outstanding.
    fn probe_at_once(&mut self, peer: PeerId) {
        if let Some(id) = self.probes.at_once(&peer, tokio::time::Instant::now()) {
            self.send_probe(peer, id);
        }
    }

    /// Send the probe `id` to `peer`, saying whether this node chose it,
    /// starting the peer's probe task on its first probe.
    fn send_probe(&mut self, peer: PeerId, id: u64) {
        let chosen = self.links.is_chosen(&peer);
        let (queue, _) = self.probe_tasks.entry(peer).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(1);
            let task = Task::spawn(probe::probe_peer(
                self.probe_control.clone(),
                peer,
                self.names.probe_protocol.clone(),
                rx,
                self.probe_replies.0.clone(),
            ));
            (tx, task)
        });
        match queue.try_send((id, chosen)) {
            Ok(()) => {}
            // Still waiting on an earlier exchange (a stream being opened):
            // this probe times out like any unanswered one.
            Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.probe_tasks.remove(&peer);
                self.probes.unsent(&peer, id);
            }
        }
    }

    fn on_probe_reply(&mut self, reply: Reply) {
        match reply {
            Reply::Answered(peer, id) => {
                if let Some(rtt) = self.probes.answered(&peer, id, tokio::time::Instant::now()) {
                    self.latency.metrics_ref().probe_rtt.observe(rtt.as_secs_f64());
                }
            }
            Reply::Chose(peer, chose) => {
                self.links.chose_us(peer, chose);
                if chose {
                    self.tell_connected(peer);
                }
            }
            Reply::Unsupported(peer) => {
                tracing::info!(%peer, "peer does not answer probes (an older version?); not probed");
                self.probes.forget(&peer);
                self.probe_tasks.remove(&peer);
            }
        }
    }

    /// Report connected peers that left a probe unanswered for
    /// `probe_timeout` unreachable, and close their connections.
    fn watch_probes(&mut self) {
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(self.last_watch);
        self.last_watch = now;
        // This node itself stalled (stopped, starved of CPU): its peers'
        // silence says nothing, so their probes' waits start over.
        if elapsed > WATCHDOG_INTERVAL * 5 {
            self.probes.restart(now);
            return;
        }
        // A shorter lag of this node's own loop (it ran late, so answers
        // that had arrived waited unread) does not count as the peers'
        // silence either.
        let lag = elapsed.saturating_sub(WATCHDOG_INTERVAL + WATCHDOG_SLACK);
        if !lag.is_zero() {
            self.probes.delay(lag, now);
        }
        for peer in self.probes.overdue(now, self.probe_timeout) {
            tracing::debug!(%peer, "probe unanswered; closing connection");
            self.probe_tasks.remove(&peer);
            if let Some(node) = node_id_of(&peer) {
                self.lost.remove(&peer);
                self.feed(Input::PeerUnreachable(node));
            }
            self.links.unchoose(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Dial a member whose connection broke, unless it is gone on its own
    /// word (left) or refused here. Whether a dial was started.
    fn redial_lost(&mut self, peer: PeerId, node: &NodeId) -> bool {
        if self.blocked.contains(&peer) || self.denied.contains(&peer) {
            return false;
        }
        let Some(m) = self.engine.member(node) else {
            return false;
        };
        if m.status != MemberStatus::Alive {
            return false;
        }
        let addrs = self.member_addrs(node);
        self.swarm
            .dial(
                DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .extend_addresses_through_behaviour()
                    .build(),
            )
            .is_ok()
    }

    fn dial_addr(&mut self, addr: Multiaddr) {
        let opts = if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            if self.blocked.contains(&peer) || self.denied.contains(&peer) {
                return;
            }
            // Dialed under its peer id, and before Kademlia learns the
            // address: Kademlia's first insertion starts a walk that dials
            // the same peer, and a dial by address alone did not count as
            // one in progress, so every joiner opened two connections (two
            // handshakes) to its bootstrap peer.
            let opts = DialOpts::peer_id(peer).addresses(vec![addr.clone()]).build();
            let dialed = self.swarm.dial(opts);
            self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            dialed
        } else {
            self.swarm.dial(addr.clone())
        };
        if let Err(e) = opts {
            tracing::debug!(%addr, error = %e, "dial failed");
        }
    }

    /// Replace the deny-list: a newly denied peer is disconnected at once,
    /// its connections refused in both directions, its gossip ignored and
    /// its addresses forgotten; a peer taken off the list is allowed again.
    fn set_denied(&mut self, new: BTreeSet<PeerId>) {
        for p in self.denied.difference(&new).copied().collect::<Vec<_>>() {
            let b = self.swarm.behaviour_mut();
            b.denied.unblock_peer(p);
            b.gossipsub.remove_blacklisted_peer(&p);
            tracing::info!(peer = %p, "peer no longer denied");
        }
        for p in new.difference(&self.denied).copied().collect::<Vec<_>>() {
            let connected = self.swarm.is_connected(&p);
            let b = self.swarm.behaviour_mut();
            b.denied.block_peer(p); // closes its connections
            b.gossipsub.blacklist_peer(&p);
            b.kad.remove_peer(&p);
            self.links.unchoose(&p);
            if connected {
                self.latency.metrics_ref().denied(DeniedEvent::Closed);
            }
            tracing::info!(peer = %p, connected, "peer denied: its connections are closed and refused");
        }
        self.denied = new;
    }

    fn announce_addrs(&mut self) {
        let me = *self.swarm.local_peer_id();
        let addrs = advertised_addrs(self.swarm.listeners(), me);
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
}

/// The partial view for `limits`: `neighbours` chosen peers, inbound links
/// trimmed above three times as many connected peers.
fn links_for(limits: &Limits) -> Links {
    let n = limits.neighbours as usize;
    Links::new(n, 3 * n)
}

/// Where `node` comes in `me`'s pick of members in round `round`.
fn pick_order(me: &NodeId, node: &NodeId, round: u64) -> u64 {
    let mut b = [0u8; 72];
    b[..32].copy_from_slice(me.as_bytes());
    b[32..64].copy_from_slice(node.as_bytes());
    b[64..].copy_from_slice(&round.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&b)
}

/// Publish `bytes` on `topic`; on failure, the error, with the bytes back
/// when gossipsub may have refused them for want of a subscribed peer.
fn publish(
    swarm: &mut Swarm<Behaviour>,
    names: &ClusterNames,
    topic: Topic,
    bytes: Vec<u8>,
) -> Result<(), (gossipsub::PublishError, Option<Vec<u8>>)> {
    let t = match topic {
        Topic::Heartbeat => names.heartbeat_topic.clone(),
        Topic::Delta => names.delta_topic.clone(),
    };
    // Gossipsub takes the bytes. It can refuse them for want of a
    // subscribed peer only while the topic's mesh is empty: a copy is
    // kept for that case alone.
    let gossip = &mut swarm.behaviour_mut().gossipsub;
    let kept = gossip
        .mesh_peers(&t.hash())
        .next()
        .is_none()
        .then(|| bytes.clone());
    gossip.publish(t, bytes).map(|_| ()).map_err(|e| (e, kept))
}

/// The per-peer limiter of incoming sync requests for `limits`.
fn sync_rate_limiter(limits: &Limits) -> DefaultKeyedRateLimiter<PeerId> {
    let rate = NonZeroU32::new(limits.sync_requests_per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limits.sync_requests_burst).unwrap_or(rate);
    DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
}

/// Whether a refused connection was refused by the connection limits.
fn over_connection_limit(cause: &ConnectionDenied) -> bool {
    cause.downcast_ref::<connection_limits::Exceeded>().is_some()
}

/// The engine's rejections, summed: those that prove the message invalid
/// (its sender relayed or wrote something no honest node would), and all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rejections {
    invalid: u64,
    all: u64,
}

impl Rejections {
    fn of(c: &Counters) -> Self {
        let mut r = Rejections { invalid: 0, all: 0 };
        for (reason, n) in &c.rejected {
            r.all += n;
            if reason.proves_invalid() {
                r.invalid += n;
            }
        }
        r
    }

    /// What gossipsub is told about a message the engine took in between
    /// `before` and `self`.
    fn verdict_since(self, before: &Rejections) -> Validation {
        if self.invalid > before.invalid {
            Validation::Reject
        } else if self.all > before.all {
            Validation::Ignore
        } else {
            Validation::Accept
        }
    }
}
