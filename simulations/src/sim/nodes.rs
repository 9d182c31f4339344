//! Node lives: starting an engine (fresh or from its store), stopping it,
//! crashes and restarts, and its timer.

use std::collections::BTreeMap;
use std::sync::Arc;

use starling::core::crypto::SimulatedKeys;
use starling::core::{Engine, MemoryStore, NodeId, NodeInfo};

use super::{Ev, NodeState, Sim};
use crate::rng::splitmix;

/// Mixed into the run's seed for the secret of its simulated signatures.
const WORLD_SALT: u64 = 0x7369_676e_6174_7572;

impl Sim {
    /// The secret of this run's simulated signatures.
    pub(super) fn world_secret(&self) -> u64 {
        splitmix(self.seed ^ WORLD_SALT)
    }

    pub(super) fn start_node(&mut self, i: usize, lost: bool) {
        if lost {
            self.nodes[i].identity += 1;
            self.nodes[i].store = MemoryStore::new();
            self.nodes[i].id = NodeId::from_index(((self.nodes[i].identity) << 32) | (i as u64 + 1));
        }
        let id = self.nodes[i].id;
        let fresh = !self.oracle.identities.contains(&id);
        if fresh {
            self.oracle.new_identity(i, id);
        }
        self.oracle.current[i] = Some(id);
        let snapshot = if self.nodes[i].store.batches() > 0 {
            Some(self.nodes[i].store.snapshot())
        } else {
            None
        };
        let life = self.nodes[i].life + 1;
        let engine_seed = splitmix(self.seed ^ splitmix((i as u64) << 20 | life as u64));
        let info = NodeInfo {
            name: format!("n{i}"),
            addrs: vec![format!("/sim/{i}")],
            tags: [("region".to_string(), self.net.region(i).to_string())]
                .into_iter()
                .collect(),
        };
        let local = self.local_ms(i);
        // Signatures are modelled (a keyed hash under a secret of this
        // run), as cheap as the simulator needs; the engine checks them
        // exactly as it checks ed25519 in a real node.
        let keys = Arc::new(SimulatedKeys::new(id, self.world_secret()));
        let mut engine = Engine::new(self.cfg.clone(), keys, info, local, engine_seed, snapshot)
            .expect("the scenario's [protocol] section was validated when it was parsed");
        engine.share_pool(self.pool.clone());
        let n = &mut self.nodes[i];
        n.engine = Some(Box::new(engine));
        n.life = life;
        n.state = NodeState::Up;
        n.paused = false;
        n.deferred.clear();
        n.timer_at = u64::MAX;
        n.bytes_base.clear();
        n.msgs_base.clear();
        self.oracle.truth[i].up = true;
        self.oracle.truth[i].paused = false;
        self.trace_ev(10, i, id.0[24..].iter().fold(0u64, |a, b| a << 8 | *b as u64));
        self.schedule_timer(i);
    }

    pub(super) fn stop_node(&mut self, i: usize, state: NodeState) {
        let now_ms = self.now_ms();
        if let Some(e) = self.nodes[i].engine.take() {
            for (k, v) in &e.counters().bytes_out {
                *self.nodes[i].crashed_counters.entry(k.clone()).or_default() += v;
            }
            for (r, v) in &e.counters().rejected {
                *self.nodes[i]
                    .crashed_rejected
                    .entry(r.as_str().to_string())
                    .or_default() += v;
            }
        }
        let n = &mut self.nodes[i];
        n.state = state;
        n.paused = false;
        n.deferred.clear();
        n.timer_at = u64::MAX;
        n.down_since_ms = now_ms;
        if let Some(o) = n.overload.as_mut() {
            // Its late tick belongs to the life that ended.
            o.late_tick = false;
        }
        self.oracle.truth[i].up = false;
        self.oracle.truth[i].paused = false;
        for p in std::mem::take(&mut self.mesh[i]) {
            self.mesh[p].remove(&i);
        }
        self.trace_ev(11, i, state as u64);
    }

    pub(super) fn crash(&mut self, i: usize) {
        if self.nodes[i].state != NodeState::Up {
            return;
        }
        let id = self.nodes[i].id;
        self.stop_node(i, NodeState::Down);
        self.oracle.crashes.push(crate::oracle::CrashEpisode {
            slot: i,
            id,
            down_ms: self.now_ms(),
            up_ms: None,
            first_suspect_ms: None,
            dead_at: BTreeMap::new(),
        });
        self.log_event("crash", serde_json::json!({"node": i, "id": id.short()}));
    }

    pub(super) fn restart(&mut self, i: usize, lost: bool) {
        if self.nodes[i].state != NodeState::Down {
            return;
        }
        if lost {
            self.oracle.disk_lost(i);
        }
        let old = self.nodes[i].id;
        self.start_node(i, lost);
        if !lost {
            let now = self.now_ms();
            for ep in self.oracle.crashes.iter_mut().rev() {
                if ep.id == old && ep.up_ms.is_none() {
                    ep.up_ms = Some(now);
                }
            }
        }
        self.disturb(&[i], 0);
        self.graft(i, true);
        let id = self.nodes[i].id;
        self.log_event(
            "restart",
            serde_json::json!({"node": i, "state": if lost {"lost"} else {"kept"}, "id": id.short()}),
        );
    }

    pub(super) fn schedule_timer(&mut self, i: usize) {
        if self.late_tick_pending(i) {
            return;
        }
        let Some(e) = &self.nodes[i].engine else { return };
        let local_deadline = e.poll_timeout();
        let local_now = self.local_ms(i);
        let mut t = if local_deadline <= local_now {
            self.now
        } else {
            self.to_virtual_us(i, local_deadline)
        };
        t = t.max(self.now + 1000);
        if t >= self.nodes[i].timer_at || t > self.end_ms * 1000 + 1 {
            return;
        }
        self.nodes[i].timer_at = t;
        let life = self.nodes[i].life;
        self.push(t, Ev::Timer { node: i, life });
    }
}
