//! Faults: the [`crate::plan::FaultPlan`]'s steps applied to the simulated cluster
//! (cuts on the network model, crashes and restarts, pauses, clock jumps,
//! joins and leaves) and the heal.

use std::collections::BTreeSet;

use starling::core::{Command, Input};

use super::{Ev, NodeState, Sim};
use crate::net::Cut;
use crate::plan::FaultAction;

impl Sim {
    // ----- faults ------------------------------------------------------

    pub(super) fn disturb(&mut self, nodes: &[usize], until_ms: u64) {
        // Suspicions of a disturbed node are expected until it has been
        // back for a detection window.
        let grace = self.detection_window_ms();
        for &n in nodes {
            let t = &mut self.oracle.truth[n];
            // A fault with no end (no duration, no heal) disturbs for good.
            t.disturbed_until = t
                .disturbed_until
                .max(until_ms.max(self.now / 1000).saturating_add(grace));
        }
    }

    /// How long after a node stops every peer should hold it dead.
    pub fn detection_window_ms(&self) -> u64 {
        let n = self.sc.slots() as u64;
        let interval = self.cfg.heartbeat_interval_ms * n.div_ceil(self.cfg.heartbeat_fanin as u64).max(1);
        6 * interval + self.cfg.suspect_timeout_ms + 2 * self.cfg.sync_interval_ms
    }

    /// A fault step ran now: merging again is measured from here, and a
    /// merge seen before it no longer counts.
    fn fault_step_ran(&mut self) {
        self.last_fault_ms = self.now_ms();
        self.merged_at = None;
        self.unmerged_at_bound = None;
    }

    pub(super) fn fault_start(&mut self, fi: usize) {
        let f = self.plan.faults[fi].clone();
        self.fault_step_ran();
        let end = f.end_ms.unwrap_or(u64::MAX);
        self.trace_ev(40, fi, 0);
        self.log_event(
            "fault-start",
            serde_json::json!({"fault": fi, "kind": f.kind, "nodes": f.spec.nodes, "groups": f.spec.groups,
                "to": f.spec.to}),
        );
        let slots = self.nodes.len();
        let cut_id = fi as u64;
        let all: Vec<usize> = (0..slots).collect();
        match f.action {
            FaultAction::Partition { groups } => {
                self.net.add_cut(cut_id, Cut::groups(slots, &groups));
                self.disturb(&all, end);
            }
            FaultAction::OneWay { from, to } => {
                self.net.add_cut(cut_id, Cut::OneWay { from, to });
                self.disturb(&all, end);
            }
            FaultAction::Swizzle(_) => {
                self.net.add_cut(
                    cut_id,
                    Cut::Clog {
                        nodes: BTreeSet::new(),
                    },
                );
                self.swizzle_cuts.insert(fi, cut_id);
                self.disturb(&all, end);
                self.swizzle_step(fi, 0);
            }
            FaultAction::Crash { nodes, .. } => {
                for n in nodes {
                    self.crash(n);
                }
            }
            // Its steps are queued from the plan (`Ev::Bounce`).
            FaultAction::MassRestart { .. } => {}
            FaultAction::Overload {
                nodes,
                delay_ms,
                jitter_ms,
            } => {
                self.overload_start(&nodes, delay_ms, jitter_ms);
                // Late heartbeats both ways: suspicions of and by the
                // overloaded nodes are expected.
                self.disturb(&all, end);
            }
            FaultAction::Pause { nodes } => {
                for &n in &nodes {
                    if self.nodes[n].state == NodeState::Up {
                        self.nodes[n].paused = true;
                        self.nodes[n].paused_at = self.now;
                        self.oracle.truth[n].paused = true;
                    }
                }
                self.disturb(&nodes, end);
            }
            FaultAction::ClockJump { nodes, jump_ms } => {
                for &n in &nodes {
                    self.nodes[n].offset_ms += jump_ms;
                    if self.runnable(n) {
                        self.nodes[n].timer_at = u64::MAX;
                        self.schedule_timer(n);
                    }
                }
                self.disturb(&nodes, 0);
            }
            FaultAction::Join { nodes } => {
                for n in nodes {
                    if self.nodes[n].state == NodeState::NotStarted {
                        self.start_node(n, false);
                        let seeds: Vec<usize> = (0..self.sc.cluster.seeds.max(1).min(slots))
                            .filter(|&s| s != n && self.reachable(n, s))
                            .collect();
                        for s in seeds {
                            let sid = self.nodes[s].id;
                            self.handle(n, Input::PeerConnected(sid));
                        }
                        self.graft(n, true);
                    }
                }
            }
            FaultAction::Byzantine(b) => self.byz_start(fi, &b),
            FaultAction::Leave { nodes } => {
                for n in nodes {
                    if self.runnable(n) {
                        self.oracle.truth[n].leaving = true;
                        let op = self.next_op;
                        self.next_op += 1;
                        let res = self.command(n, op, Command::Leave);
                        let r = if matches!(res, Some(Ok(_))) { "ok" } else { "fail" };
                        self.record(op, n, "leave", "", serde_json::json!({}), r);
                        self.push(self.now + 2_000_000, Ev::Stop { node: n });
                    }
                }
            }
        }
    }

    /// Step `step` of swizzle fault `fi`: steps 0..n clog its nodes one by
    /// one; then, from the end time minus n steps, they are restored in
    /// `restore_order`. Each step queues the next when it runs.
    pub(super) fn swizzle_step(&mut self, fi: usize, step: usize) {
        let f = &self.plan.faults[fi];
        let FaultAction::Swizzle(sw) = &f.action else {
            return;
        };
        let Some(&cut_id) = self.swizzle_cuts.get(&fi) else {
            return;
        };
        let step_us = sw.step_ms * 1000;
        let n = sw.nodes.len();
        let end = f.end_ms.map(|e| e * 1000).unwrap_or(u64::MAX);
        let (node, clog) = if step < n {
            (sw.nodes[step], true)
        } else if step < 2 * n {
            (sw.restore_order[step - n], false)
        } else {
            return;
        };
        let restore_start = sw.restore_start(end, step_us, self.now + step_us);
        self.fault_step_ran();
        if let Some(Cut::Clog { nodes }) = self.net.cut_mut(cut_id) {
            if clog {
                nodes.insert(node);
            } else {
                nodes.remove(&node);
            }
        }
        self.trace_ev(41, node, clog as u64);
        self.log_event(
            if clog { "swizzle-clog" } else { "swizzle-restore" },
            serde_json::json!({"node": node}),
        );
        let next = step + 1;
        if next < n {
            self.push(
                self.now + step_us,
                Ev::Swizzle {
                    fault: fi,
                    step: next,
                },
            );
        } else if next < 2 * n {
            let t = if next == n {
                restore_start
            } else {
                self.now + step_us
            };
            if t < end {
                self.push(
                    t,
                    Ev::Swizzle {
                        fault: fi,
                        step: next,
                    },
                );
            }
        }
    }

    pub(super) fn fault_end_ev(&mut self, fi: usize) {
        let f = self.plan.faults[fi].clone();
        self.trace_ev(42, fi, 0);
        self.log_event("fault-end", serde_json::json!({"fault": fi, "kind": f.kind}));
        self.last_heal_ms = self.last_heal_ms.max(self.now_ms());
        self.fault_step_ran();
        match f.action {
            FaultAction::Partition { .. } | FaultAction::OneWay { .. } | FaultAction::Swizzle(_) => {
                self.net.remove_cut(fi as u64);
                self.swizzle_cuts.remove(&fi);
                self.rewire();
            }
            FaultAction::Crash {
                nodes, keep_state, ..
            } => {
                for n in nodes {
                    self.restart(n, !keep_state);
                }
            }
            FaultAction::Pause { nodes } => {
                for n in nodes {
                    self.resume(n);
                }
            }
            FaultAction::MassRestart { keep_state, .. } => self.bring_back(fi, !keep_state),
            FaultAction::Overload { nodes, .. } => self.overload_end(&nodes, false),
            FaultAction::Byzantine(b) => self.byz_end(fi, &b),
            FaultAction::ClockJump { .. } | FaultAction::Join { .. } | FaultAction::Leave { .. } => {}
        }
    }

    /// A mass-restart step: node `node` of fault `fi` stops (if it is up)
    /// or, if that fault stopped it, comes back.
    pub(super) fn bounce(&mut self, fi: usize, node: usize, up: bool) {
        let FaultAction::MassRestart { keep_state, .. } = self.plan.faults[fi].action else {
            return;
        };
        self.fault_step_ran();
        self.trace_ev(44, node, up as u64);
        if up {
            if self.bounced.remove(&(fi, node)) {
                self.restart(node, !keep_state);
            }
        } else if self.nodes[node].state == NodeState::Up {
            self.crash(node);
            self.bounced.insert((fi, node));
            self.mass_restarts += 1;
        }
    }

    /// Bring back every node mass restart `fi` stopped and has not brought
    /// back yet.
    fn bring_back(&mut self, fi: usize, lost: bool) {
        let down: Vec<usize> = self
            .bounced
            .iter()
            .filter(|(f, _)| *f == fi)
            .map(|(_, n)| *n)
            .collect();
        for n in down {
            self.bounced.remove(&(fi, n));
            self.restart(n, lost);
        }
    }

    pub(super) fn resume(&mut self, n: usize) {
        if !self.nodes[n].paused {
            return;
        }
        self.nodes[n].paused = false;
        self.oracle.truth[n].paused = false;
        let deferred = std::mem::take(&mut self.nodes[n].deferred);
        self.nodes[n].timer_at = u64::MAX;
        if self.runnable(n) {
            self.handle(n, Input::Tick);
        }
        for ev in deferred {
            self.dispatch(ev);
        }
    }

    pub(super) fn heal(&mut self) {
        self.log_event("heal", serde_json::json!({}));
        self.trace_ev(43, 0, 0);
        self.last_heal_ms = self.last_heal_ms.max(self.now_ms());
        self.fault_step_ran();
        let had_cuts = self.net.any_cut();
        self.net.heal();
        self.swizzle_cuts.clear();
        if had_cuts {
            self.rewire();
        }
        if self.sc.phases.heal_clears_loss {
            self.net.loss_on = false;
        }
        for n in 0..self.nodes.len() {
            self.resume(n);
        }
        let overloaded: Vec<usize> = self.overloaded.iter().copied().collect();
        self.overload_end(&overloaded, true);
        // Crashed nodes whose fault has no own end restart now.
        let faults = self.plan.faults.clone();
        for (fi, f) in faults.iter().enumerate() {
            if let FaultAction::Crash {
                nodes,
                restart: true,
                keep_state,
            } = &f.action
            {
                for &n in nodes {
                    self.restart(n, !keep_state);
                }
            }
            if let FaultAction::MassRestart { keep_state, .. } = &f.action {
                self.bring_back(fi, !keep_state);
            }
        }
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.disturb(&all, 0);
    }
}
