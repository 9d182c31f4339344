//! The simulator as the engines' [`Runtime`]: [`starling::core::Engine::drive`] executes
//! each input's actions in the contract's order through [`NodeRuntime`],
//! which persists into the node's store and the oracle, floods publishes
//! over the mesh and puts requests and responses on the network model.

use std::rc::Rc;

use starling::core::{
    CommandError, CommandOutput, Input, NodeId, PersistBatch, RequestRefused, Runtime, Topic, WatchEvent,
};

use super::{Ev, GossipMsg, NodeState, Req, Sim};
use crate::net::Fate;

/// Node `node`'s runtime for one input: executes what its engine decides
/// and counts the calls (the trace records how many actions an input
/// caused).
pub struct NodeRuntime<'a> {
    sim: &'a mut Sim,
    node: usize,
    calls: u64,
}

impl Runtime for NodeRuntime<'_> {
    fn persist(&mut self, batch: PersistBatch) -> Result<(), String> {
        self.calls += 1;
        let (sim, i) = (&mut *self.sim, self.node);
        // The store is read only to restart a crashed node with its disk:
        // without crashes, keeping a second copy of every node's state is
        // wasted time and memory.
        if sim.keep_disk {
            sim.nodes[i].store.apply(&batch);
        }
        let me = sim.nodes[i].id;
        sim.oracle.on_batch(sim.now_ms(), i, me, &batch);
        Ok(())
    }

    fn publish(&mut self, topic: Topic, mut bytes: Vec<u8>) {
        self.calls += 1;
        // Encoding grows the buffer by doubling: the slack would stay
        // allocated while the message is in flight (during the sync bursts
        // of a join or a heal, thousands are).
        bytes.shrink_to_fit();
        self.sim.flood(self.node, topic, bytes);
    }

    fn send_request(&mut self, to: NodeId, id: u64, mut bytes: Vec<u8>) -> Result<(), RequestRefused> {
        self.calls += 1;
        bytes.shrink_to_fit();
        // Never refused at once: an unreachable peer times out, like the
        // libp2p request-response behaviour.
        if self.sim.liars.slots.contains(&self.node) {
            self.sim.byz_record_request(self.node, &bytes);
        }
        self.sim.send_request(self.node, to, id, bytes);
        Ok(())
    }

    fn respond(&mut self, id: u64, mut bytes: Vec<u8>) {
        self.calls += 1;
        bytes.shrink_to_fit();
        if self.sim.liars.lying(self.node) {
            // Held until the liar's engine is back in its node: the
            // responder attacks read its state.
            self.sim.liars.held.push((id, bytes));
            return;
        }
        self.sim.respond(self.node, id, bytes);
    }

    fn notify(&mut self, _event: WatchEvent) {
        // Nobody watches in the simulator.
        self.calls += 1;
    }

    fn reply(&mut self, id: u64, result: Result<CommandOutput, CommandError>) {
        self.calls += 1;
        self.sim.replies.push((id, result));
    }
}

/// What node `i`'s engine is fed.
enum Feed<'m> {
    Input(Input),
    Gossip(&'m GossipMsg),
}

impl Sim {
    /// Feed one input to node `i` and execute every action it causes.
    pub(super) fn handle(&mut self, i: usize, input: Input) {
        self.drive(i, Feed::Input(input));
    }

    /// Deliver a gossip message to node `i` (the bytes, and their
    /// decoding, are shared by every delivery of the message, not copied).
    pub(super) fn deliver_gossip(&mut self, i: usize, msg: &GossipMsg) {
        self.drive(i, Feed::Gossip(msg));
    }

    /// Drive node `i`'s engine through its runtime, then check its limits
    /// and schedule its next timer. The engine is taken out of its node
    /// while it runs (the runtime borrows the whole simulator); nothing the
    /// runtime does reads it.
    fn drive(&mut self, i: usize, feed: Feed<'_>) {
        let local = self.local_ms(i);
        let Some(mut engine) = self.nodes[i].engine.take() else {
            return;
        };
        let mut rt = NodeRuntime {
            sim: self,
            node: i,
            calls: 0,
        };
        match feed {
            Feed::Input(input) => engine.drive(local, input, &mut rt),
            Feed::Gossip(msg) => {
                engine.drive_gossip_shared(local, msg.author, &msg.bytes, &msg.decoded, &mut rt)
            }
        }
        let calls = rt.calls;
        self.nodes[i].engine = Some(engine);
        for (id, bytes) in std::mem::take(&mut self.liars.held) {
            let bytes = self.byz_answer(i, bytes);
            self.respond(i, id, bytes);
        }
        // Nothing else enters the trace while actions run, so recording
        // the count after them hashes the same bytes as before them.
        self.trace_ev(20, i, calls);
        if let Some(e) = &self.nodes[i].engine {
            if e.inflight_syncs() > self.cfg.max_inflight_syncs {
                let detail = format!(
                    "{} syncs in flight (limit {})",
                    e.inflight_syncs(),
                    self.cfg.max_inflight_syncs
                );
                self.oracle.violate(self.now_ms(), "limits", Some(i), detail);
            }
        }
        self.schedule_timer(i);
    }

    // ----- requests --------------------------------------------------

    /// Put a request of node `from` on the network; returns its id.
    pub(super) fn send_request(&mut self, from: usize, to: NodeId, engine_id: u64, bytes: Vec<u8>) -> u64 {
        let req = self.next_req;
        self.next_req += 1;
        let timeout = self.now + self.net.request_timeout_us();
        self.push(timeout, Ev::ReqTimeout { req });
        let from_life = self.nodes[from].life;
        let target = self.oracle.slot_of.get(&to).copied();
        let target = target.filter(|t| self.nodes[*t].id == to);
        self.reqs.insert(
            req,
            Req {
                from,
                from_life,
                engine_id,
                // An identity that no longer exists: the dial fails (the
                // request times out with no one to answer it).
                to: target.unwrap_or(from),
                done: false,
                byz: None,
            },
        );
        let Some(t) = target else {
            return req;
        };
        self.wire_bytes += bytes.len() as u64;
        if self.nodes[t].state != NodeState::Up {
            return req;
        }
        if t != from && !self.mesh[from].contains(&t) {
            self.dialed.push((from, t));
        }
        if let Fate::Delivered(delays) = self.net.send(from, t) {
            let bytes = Rc::new(bytes);
            let life = self.nodes[t].life;
            for d in delays.into_iter().flatten() {
                self.push(
                    self.now + d,
                    Ev::Request {
                        to: t,
                        life,
                        req,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
        req
    }

    pub(super) fn respond(&mut self, responder: usize, req: u64, bytes: Vec<u8>) {
        let Some(r) = self.reqs.get(&req) else { return };
        if r.done {
            return;
        }
        let (to, life) = (r.from, r.from_life);
        self.wire_bytes += bytes.len() as u64;
        if self.nodes[to].life != life || self.nodes[to].state != NodeState::Up {
            return;
        }
        if let Fate::Delivered(delays) = self.net.send(responder, to) {
            let bytes = Rc::new(bytes);
            for d in delays.into_iter().flatten() {
                self.push(
                    self.now + d,
                    Ev::Response {
                        to,
                        life,
                        req,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
    }
}
