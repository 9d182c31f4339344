//! Overload: a node that processes its inputs late rather than not at all.
//!
//! While an `overload` fault lasts, every input of its nodes — gossip,
//! requests, responses, request timeouts and the engine's own timer — is
//! queued again `delay_ms` plus a draw in `0..=jitter_ms` later, and never
//! before an earlier input from the same source (the author of a gossip
//! message, the peer of a request or response, the node itself for its
//! timer and timeouts): a busy node works through a backlog in order. When
//! the fault ends, new inputs still wait behind the backlog of their
//! source, then arrive at once again.
//!
//! Unlike `pause`, which holds everything and releases it in one burst,
//! the node keeps running, only late: its heartbeats go out late, its
//! answers come late, its timer ticks at most once per delay. Client
//! commands are served at once (the harness's clients are not delayed).
//!
//! The delays come from a stream of their own, so runs without overload
//! draw nothing new and replay unchanged.

use std::collections::BTreeMap;

use rand::Rng;

use super::{Ev, Sim};

/// The random stream of overload delays.
pub(super) const STREAM_OVERLOAD: u64 = 11;

/// One node's overload.
pub(super) struct Overload {
    /// Overload faults in force on the node (0: it only drains its
    /// backlog).
    active: u32,
    /// The fixed part of the delay (µs).
    delay_us: u64,
    /// The drawn part's most (µs).
    jitter_us: u64,
    /// Per source slot: when its latest late input is delivered (µs).
    last: BTreeMap<usize, u64>,
    /// A late tick of the engine's timer is queued: no earlier timer is
    /// scheduled until it runs (else every input would push the tick
    /// back, and a busy node would never tick).
    pub(super) late_tick: bool,
}

impl Sim {
    /// Overload fault `fi` starts on `nodes`.
    pub(super) fn overload_start(&mut self, nodes: &[usize], delay_ms: u64, jitter_ms: u64) {
        for &n in nodes {
            let o = self.nodes[n].overload.get_or_insert_with(|| Overload {
                active: 0,
                delay_us: 0,
                jitter_us: 0,
                last: BTreeMap::new(),
                late_tick: false,
            });
            o.active += 1;
            o.delay_us = delay_ms * 1000;
            o.jitter_us = jitter_ms * 1000;
            self.overloaded.insert(n);
        }
    }

    /// An overload fault ends on `nodes` (every overload, at the heal):
    /// they drain their backlog.
    pub(super) fn overload_end(&mut self, nodes: &[usize], all: bool) {
        for &n in nodes {
            if let Some(o) = self.nodes[n].overload.as_mut() {
                o.active = if all { 0 } else { o.active.saturating_sub(1) };
            }
        }
    }

    /// The event as the dispatcher should deliver it now, or `None` when
    /// it was queued again for later (an overloaded node's input).
    pub(super) fn overload_delay(&mut self, ev: Ev) -> Option<Ev> {
        if self.overloaded.is_empty() {
            return Some(ev);
        }
        let (node, source) = match &ev {
            Ev::Timer { node, life } => {
                let n = &self.nodes[*node];
                // A stale timer is dropped by the dispatcher anyway.
                if n.life != *life || n.timer_at != self.now || !self.runnable(*node) || n.paused {
                    return Some(ev);
                }
                (*node, *node)
            }
            Ev::Gossip { to, life, msg } => {
                if self.nodes[*to].life != *life {
                    return Some(ev);
                }
                (*to, msg.author_slot)
            }
            Ev::Request { to, life, req, .. } => match self.reqs.get(req) {
                Some(r) if self.nodes[*to].life == *life => (*to, r.from),
                _ => return Some(ev),
            },
            Ev::Response { to, life, req, .. } => match self.reqs.get(req) {
                Some(r) if self.nodes[*to].life == *life => (*to, r.to),
                _ => return Some(ev),
            },
            Ev::ReqTimeout { req } => match self.reqs.get(req) {
                Some(r) if !r.done && r.byz.is_none() => (r.from, r.from),
                _ => return Some(ev),
            },
            _ => return Some(ev),
        };
        if !self.runnable(node) {
            return Some(ev);
        }
        let Some(o) = self.nodes[node].overload.as_mut() else {
            return Some(ev);
        };
        let behind = o.last.get(&source).copied().unwrap_or(0);
        let t = if o.active > 0 {
            let extra = o.delay_us
                + if o.jitter_us > 0 {
                    self.overload_rng.gen_range(0..=o.jitter_us)
                } else {
                    0
                };
            (self.now + extra).max(behind)
        } else if behind > self.now {
            behind
        } else {
            return Some(ev);
        };
        o.last.insert(source, t);
        if let Ev::Timer { .. } = ev {
            o.late_tick = true;
            self.nodes[node].timer_at = t;
        }
        self.overload_late.0 += 1;
        self.overload_late.1 += t - self.now;
        self.trace_ev(7, node, t);
        self.push(t, Ev::Late(Box::new(ev)));
        None
    }

    /// A late input's time has come.
    pub(super) fn deliver_late(&mut self, ev: Ev) {
        if let Ev::Timer { node, .. } = &ev {
            if let Some(o) = self.nodes[*node].overload.as_mut() {
                o.late_tick = false;
            }
        }
        self.deliver(ev);
    }

    /// Whether node `i`'s timer waits for a late tick already queued.
    pub(super) fn late_tick_pending(&self, i: usize) -> bool {
        self.nodes[i].overload.as_ref().is_some_and(|o| o.late_tick)
    }
}
