//! Faults on real nodes: the [`FaultPlan`]'s steps mapped onto blocked
//! peers, crashes and restarts, isolation, joins and leaves.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A cut in force; always two-way.
pub(super) enum RealCut {
    /// Nodes reach each other only within a common group (nodes in no
    /// group form one more).
    Groups(Vec<Vec<u32>>),
    /// No link between the two sets.
    Between(BTreeSet<usize>, BTreeSet<usize>),
    /// Every link of these nodes is cut.
    Clog(BTreeSet<usize>),
}

impl RealCut {
    pub(super) fn groups(slots: usize, groups: &[Vec<usize>]) -> RealCut {
        let mut member_of = vec![Vec::new(); slots];
        for (g, nodes) in groups.iter().enumerate() {
            for &n in nodes {
                member_of[n].push(g as u32);
            }
        }
        RealCut::Groups(member_of)
    }

    pub(super) fn blocks(&self, a: usize, b: usize) -> bool {
        match self {
            RealCut::Groups(member_of) => {
                let (x, y) = (&member_of[a], &member_of[b]);
                if x.is_empty() || y.is_empty() {
                    return !(x.is_empty() && y.is_empty());
                }
                !x.iter().any(|g| y.contains(g))
            }
            RealCut::Between(p, q) => {
                (p.contains(&a) && q.contains(&b)) || (p.contains(&b) && q.contains(&a))
            }
            RealCut::Clog(nodes) => nodes.contains(&a) || nodes.contains(&b),
        }
    }
}

impl Harness {
    /// Suspicions of these nodes are expected until `until` plus a
    /// detection window.
    pub(super) fn disturb(&self, nodes: &[usize], until: u64) {
        let now = self.now_ms();
        let mut g = self.lock();
        for &n in nodes {
            let d = &mut g.disturbed_until[n];
            *d = (*d).max(until.max(now) + self.window_ms);
        }
    }

    /// Push every running node's blocked set for the cuts in force.
    pub(super) async fn apply_blocks(&self) {
        let jobs: Vec<(NodeHandle, Vec<NodeId>)> = {
            let g = self.lock();
            (0..g.slots.len())
                .filter_map(|i| {
                    let (h, _) = g.handle(i)?;
                    let peers = (0..g.slots.len())
                        .filter(|&j| j != i && g.blocked(i, j))
                        .filter_map(|j| g.slots[j].id)
                        .collect();
                    Some((h, peers))
                })
                .collect()
        };
        futures::future::join_all(jobs.into_iter().map(|(h, peers)| async move {
            let _ = h.set_blocked_peers(peers).await;
        }))
        .await;
    }

    pub(super) async fn fault_start(self: &Arc<Self>, fi: usize) {
        let f = self.plan.faults[fi].clone();
        let end = f.end_ms.map(|e| self.real(e)).unwrap_or(u64::MAX / 2);
        self.event(
            "fault-start",
            serde_json::json!({"fault": fi, "kind": f.kind, "nodes": f.spec.nodes, "groups": f.spec.groups,
                "to": f.spec.to}),
        );
        let slots = self.sc.slots();
        let all = self.all_slots();
        if !matches!(f.action, FaultAction::Join { .. }) {
            let t = self.now_ms();
            self.lock().fault_starts.push(t);
        }
        match f.action {
            FaultAction::Partition { groups } => {
                self.lock().cuts.insert(fi, RealCut::groups(slots, &groups));
                self.disturb(&all, end);
                self.apply_blocks().await;
            }
            FaultAction::OneWay { from, to } => {
                // Blocking refuses connections: applied as a two-way cut.
                self.lock().cuts.insert(fi, RealCut::Between(from, to));
                self.disturb(&all, end);
                self.apply_blocks().await;
            }
            FaultAction::Swizzle(_) => {
                self.lock().cuts.insert(fi, RealCut::Clog(BTreeSet::new()));
                self.disturb(&all, end);
            }
            FaultAction::Crash { nodes, .. } => {
                for n in nodes {
                    self.crash(n).await;
                }
            }
            // Its stops and restarts are timeline steps (`bounce`).
            FaultAction::MassRestart { .. } => {}
            // Refused when the scenario is prepared (see `prepare`).
            FaultAction::Overload { .. } => {
                self.event(
                    "fault-unsupported",
                    serde_json::json!({"fault": fi, "kind": f.kind}),
                );
            }
            FaultAction::Pause { nodes } => {
                {
                    let mut g = self.lock();
                    for n in nodes {
                        if g.up(n) {
                            g.paused.insert(n);
                        }
                    }
                }
                self.disturb(&all, end);
                self.apply_blocks().await;
            }
            // Real nodes share the host clock; liars are simulator-only
            // (both reported as skipped).
            FaultAction::ClockJump { .. } | FaultAction::Byzantine(_) => {}
            FaultAction::Join { nodes } => {
                for n in nodes {
                    if self.lock().slots[n].state == SlotState::NotStarted {
                        if let Err(e) = self.start_slot(n, true).await {
                            self.event("join-failed", serde_json::json!({"node": n, "error": e}));
                        }
                    }
                }
            }
            FaultAction::Leave { nodes } => {
                for n in nodes {
                    let Some((h, _)) = self.lock().handle(n) else {
                        continue;
                    };
                    let _ = h.shutdown().await;
                    let t = self.now_ms();
                    let mut g = self.lock();
                    g.slots[n].state = SlotState::Gone;
                    g.slots[n].handle = None;
                    g.slots[n].down_since_ms = t;
                }
            }
        }
    }

    pub(super) async fn fault_end(self: &Arc<Self>, fi: usize) {
        let f = self.plan.faults[fi].clone();
        self.event("fault-end", serde_json::json!({"fault": fi, "kind": f.kind}));
        {
            let t = self.now_ms();
            let mut g = self.lock();
            g.last_heal_ms = g.last_heal_ms.max(t);
        }
        match f.action {
            FaultAction::Partition { .. } | FaultAction::OneWay { .. } | FaultAction::Swizzle(_) => {
                self.lock().cuts.remove(&fi);
                self.apply_blocks().await;
            }
            FaultAction::Crash {
                nodes, keep_state, ..
            } => {
                for n in nodes {
                    self.restart(n, !keep_state).await;
                }
            }
            FaultAction::Pause { nodes } => {
                {
                    let mut g = self.lock();
                    for n in &nodes {
                        g.paused.remove(n);
                    }
                }
                self.apply_blocks().await;
            }
            FaultAction::MassRestart { keep_state, .. } => self.bring_back(fi, !keep_state).await,
            FaultAction::ClockJump { .. }
            | FaultAction::Overload { .. }
            | FaultAction::Join { .. }
            | FaultAction::Leave { .. }
            | FaultAction::Byzantine(_) => {}
        }
    }

    /// A mass-restart step: node `node` of fault `fi` stops (if it runs)
    /// or, if that fault stopped it, comes back.
    pub(super) async fn bounce(self: &Arc<Self>, fi: usize, node: usize, up: bool) {
        let FaultAction::MassRestart { keep_state, .. } = self.plan.faults[fi].action else {
            return;
        };
        if up {
            let mine = self.lock().bounced.remove(&(fi, node));
            if mine {
                self.restart(node, !keep_state).await;
            }
        } else if self.lock().up(node) {
            self.crash(node).await;
            self.lock().bounced.insert((fi, node));
        }
    }

    /// Bring back every node mass restart `fi` stopped and has not brought
    /// back yet.
    async fn bring_back(self: &Arc<Self>, fi: usize, lost: bool) {
        let down: Vec<usize> = {
            let mut g = self.lock();
            let down: Vec<usize> = g
                .bounced
                .iter()
                .filter(|(f, _)| *f == fi)
                .map(|(_, n)| *n)
                .collect();
            for n in &down {
                g.bounced.remove(&(fi, *n));
            }
            down
        };
        for n in down {
            self.restart(n, lost).await;
        }
    }

    pub(super) async fn swizzle(self: &Arc<Self>, fi: usize, node: usize, clog: bool) {
        {
            let mut g = self.lock();
            let Some(RealCut::Clog(nodes)) = g.cuts.get_mut(&fi) else {
                return;
            };
            if clog {
                nodes.insert(node);
            } else {
                nodes.remove(&node);
            }
        }
        self.event(
            if clog { "swizzle-clog" } else { "swizzle-restore" },
            serde_json::json!({"node": node}),
        );
        self.apply_blocks().await;
    }

    pub(super) async fn heal(self: &Arc<Self>) {
        self.event("heal", serde_json::json!({}));
        {
            let t = self.now_ms();
            let mut g = self.lock();
            g.last_heal_ms = g.last_heal_ms.max(t);
            g.cuts.clear();
            g.paused.clear();
        }
        self.apply_blocks().await;
        for (fi, f) in self.plan.faults.clone().into_iter().enumerate() {
            if let FaultAction::Crash {
                nodes,
                restart: true,
                keep_state,
            } = f.action
            {
                for n in nodes {
                    self.restart(n, !keep_state).await;
                }
            } else if let FaultAction::MassRestart { keep_state, .. } = f.action {
                self.bring_back(fi, !keep_state).await;
            }
        }
        self.disturb(&self.all_slots(), 0);
    }
}
