//! Periodic samples of the whole cluster: divergence, traffic, gossip
//! latency, membership views, and the moment it converged.

use std::collections::BTreeMap;

use starling::core::MemberStatus;

use super::{NodeState, Sample, Sim};
use crate::oracle::Histo;

impl Sim {
    pub(super) fn sample(&mut self) {
        let t = self.now_ms();
        let period_s = self.sc.phases.sample_ms as f64 / 1000.0;
        let mut s = Sample {
            t_ms: t,
            ..Sample::default()
        };
        let mut digests: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.runnable(i)).collect();
        s.up = up.len();
        for &i in &up {
            let node = &mut self.nodes[i];
            let e = node.engine.as_ref().expect("runnable");
            let d = e.digest();
            *digests.entry((d.hash, d.keys)).or_default() += 1;
            for (k, v) in &e.counters().bytes_out {
                let base = node.bytes_base.get(k).copied().unwrap_or(0);
                *s.bytes_out.entry(k.clone()).or_default() += (v - base) as f64;
                node.bytes_base.insert(k.clone(), *v);
            }
            for (k, v) in &e.counters().messages_out {
                let base = node.msgs_base.get(k).copied().unwrap_or(0);
                *s.msgs_out.entry(k.clone()).or_default() += (v - base) as f64;
                node.msgs_base.insert(k.clone(), *v);
            }
        }
        let denom = (up.len().max(1) as f64) * period_s;
        for v in s.bytes_out.values_mut().chain(s.msgs_out.values_mut()) {
            *v /= denom;
        }
        s.wire_bytes = (self.wire_bytes - self.wire_base) as f64 / denom;
        self.wire_base = self.wire_bytes;
        s.digests = digests.len();
        let mode = digests.values().copied().max().unwrap_or(0);
        s.off_mode = up.len() - mode;
        let acked = self.oracle.writes.len() as u64;
        s.missing = (acked * up.len() as u64).saturating_sub(self.oracle.arrivals_total);
        s.gossip_p50_ms = self.gossip_lat.quantile(0.5) as f64;
        s.gossip_p99_ms = self.gossip_lat.quantile(0.99) as f64;
        self.gossip_lat = Histo::default();
        // Membership views: a bounded set of observers for large clusters.
        let observers: Vec<usize> = up.iter().copied().step_by((up.len() / 64).max(1)).collect();
        for (row, &subj) in self.heat_subjects.clone().iter().enumerate() {
            let sid = self.nodes[subj].id;
            let (mut alive, mut total) = (0u32, 0u32);
            for &o in &observers {
                if o == subj {
                    continue;
                }
                let e = self.nodes[o].engine.as_ref().expect("runnable");
                total += 1;
                if e.member(&sid).is_some_and(|m| m.status == MemberStatus::Alive) {
                    alive += 1;
                }
            }
            let v = if total == 0 {
                f32::NAN
            } else {
                alive as f32 / total as f32
            };
            let v = if self.nodes[subj].state == NodeState::NotStarted {
                f32::NAN
            } else {
                v
            };
            self.heatmap[row].push(v);
        }
        for &o in &observers {
            let e = self.nodes[o].engine.as_ref().expect("runnable");
            for m in e.member_records() {
                match m.status {
                    MemberStatus::Suspect => s.suspect_views += 1,
                    MemberStatus::Dead => s.dead_views += 1,
                    _ => {}
                }
            }
        }
        // Convergence after heal: first sample with one digest on the core.
        let after = self.converge_ref_ms.max(self.last_heal_ms);
        if self.converged_at.is_none()
            && t >= after
            && s.digests <= 1
            && s.missing == 0
            && !self.net.any_cut()
        {
            self.converged_at = Some(t);
            self.log_event("converged", serde_json::json!({"after_heal_ms": t - after}));
        }
        self.check_merged(t);
        self.trace_ev(50, s.digests, s.missing);
        self.samples.push(s);
    }

    /// Where merging again is measured from: the heal (or the workload's
    /// end) or the last fault step, whichever is later.
    pub(super) fn merge_ref_ms(&self) -> u64 {
        self.converge_ref_ms
            .max(self.last_heal_ms)
            .max(self.last_fault_ms)
    }

    /// Merged again after the last fault: the first sample where
    /// [`Sim::unmerged`] finds nothing, and what was not merged at the
    /// first sample past the bound.
    fn check_merged(&mut self, t: u64) {
        let after = self.merge_ref_ms();
        if self.merged_at.is_some() || t < after {
            return;
        }
        match self.unmerged() {
            None => {
                self.merged_at = Some(t);
                self.log_event("merged", serde_json::json!({"after_last_fault_ms": t - after}));
            }
            Some(what) => {
                let bound = self.merged_within_ms;
                if bound > 0 && self.unmerged_at_bound.is_none() && t >= after + bound {
                    self.unmerged_at_bound = Some(format!("at {t} ms: {what}"));
                }
            }
        }
    }

    /// The nodes merging is judged on, as at the deadline: honest nodes
    /// up, not paused, not left.
    pub(super) fn honest_up(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| !self.liars.slots.contains(&i))
            .filter(|&i| self.runnable(i) && !self.nodes[i].paused)
            .filter(|&i| !self.nodes[i].engine.as_ref().is_some_and(|e| e.has_left()))
            .collect()
    }

    /// What keeps the cluster from being merged, or `None` when it is: no
    /// cut in force, one digest on every honest up node, and each of them
    /// holding every other alive.
    pub(super) fn unmerged(&self) -> Option<String> {
        if self.net.any_cut() {
            return Some("a cut is in force".into());
        }
        let up = self.honest_up();
        let mut by_digest: BTreeMap<(u64, u64), Vec<usize>> = BTreeMap::new();
        for &i in &up {
            let d = self.nodes[i].engine.as_ref().expect("up").digest();
            by_digest.entry((d.hash, d.keys)).or_default().push(i);
        }
        let mut what = Vec::new();
        if by_digest.len() > 1 {
            let mut groups: Vec<&Vec<usize>> = by_digest.values().collect();
            groups.sort_by_key(|g| (std::cmp::Reverse(g.len()), g[0]));
            let shown: Vec<String> = groups.iter().take(3).map(|g| format!("{g:?}")).collect();
            what.push(format!(
                "{} digests on {} up nodes, nodes {}{}",
                by_digest.len(),
                up.len(),
                shown.join(" vs "),
                if groups.len() > 3 { " vs …" } else { "" }
            ));
        }
        let (mut wrong, mut example) = (0usize, None);
        for &o in &up {
            let e = self.nodes[o].engine.as_ref().expect("up");
            for &j in &up {
                let got = e.member(&self.nodes[j].id).map(|m| m.status);
                if j != o && got != Some(MemberStatus::Alive) {
                    wrong += 1;
                    example.get_or_insert_with(|| {
                        format!(
                            "node {o} holds node {j} as {}",
                            got.map_or("unknown", |s| s.as_str())
                        )
                    });
                }
            }
        }
        if let Some(ex) = example {
            what.push(format!("{wrong} views of up members not alive, first {ex}"));
        }
        (!what.is_empty()).then(|| what.join("; "))
    }
}
