//! The end of a run: liveness checks on the core, metrics, and the
//! verdict, filled into the [`RunSummary`] both modes share.

use std::collections::{BTreeMap, BTreeSet};

use starling::core::{MemberStatus, NodeId, ServiceQuery};

use super::{NodeState, RunResult, Sim};
use crate::scenario::FaultKind;
use crate::summary::{check_expect, insert_detection, insert_reach, Detection, Mode, RunSummary, Verdict};
use crate::workload::{api, ns_svc};

impl Sim {
    /// Metrics of what the faults did: nodes mass restarts stopped, inputs
    /// overload made late, cuts that outlived the TTLs.
    fn fault_metrics(&self, m: &mut BTreeMap<String, f64>) {
        let kinds: BTreeSet<FaultKind> = self.plan.faults.iter().map(|f| f.kind).collect();
        if kinds.contains(&FaultKind::MassRestart) {
            m.insert("mass_restarts".into(), self.mass_restarts as f64);
        }
        if kinds.contains(&FaultKind::Overload) {
            let (n, sum_us) = self.overload_late;
            m.insert("overload_inputs_late".into(), n as f64);
            m.insert(
                "overload_late_mean_ms".into(),
                if n == 0 {
                    0.0
                } else {
                    sum_us as f64 / n as f64 / 1000.0
                },
            );
        }
        let (tombstones, graves) = self.plan.cuts_past_ttls(&self.sc);
        if tombstones > 0 {
            m.insert("cuts_past_tombstone_ttl".into(), tombstones as f64);
            m.insert("cuts_past_grave_ttl".into(), graves as f64);
        }
        if self.oracle.graves_outlived {
            m.insert(
                "resurrections_past_grave_ttl".into(),
                self.oracle.resurrections_past_grave_ttl as f64,
            );
        }
    }

    /// The first key the core's nodes hold differently, said as each
    /// node's versions of it (`origin:seq`, `h` before a history version,
    /// `†` after a tombstone, `⚰` before a grave): the place to start
    /// reading a divergence.
    fn first_difference(&self, core: &[usize]) -> String {
        let held = |i: usize| -> BTreeMap<String, Vec<String>> {
            let e = self.nodes[i].engine.as_ref().expect("core");
            e.state()
                .iter()
                .map(|(k, ks)| {
                    let live = ks.live.iter().map(|v| (v, ""));
                    let history = ks.history.iter().map(|v| (v, "h"));
                    let mut v: Vec<String> = live
                        .chain(history)
                        .map(|(v, h)| {
                            let tomb = if v.payload.is_tombstone() { "†" } else { "" };
                            format!("{h}{}:{}{tomb}", v.dot.node.short(), v.dot.seq)
                        })
                        .collect();
                    if let Some(g) = &ks.grave {
                        v.push(format!("⚰{}:{}", g.dot.node.short(), g.dot.seq));
                    }
                    v.sort();
                    (format!("{k:?}"), v)
                })
                .collect()
        };
        let views: Vec<(usize, BTreeMap<String, Vec<String>>)> = core.iter().map(|&i| (i, held(i))).collect();
        let keys: BTreeSet<&String> = views.iter().flat_map(|(_, m)| m.keys()).collect();
        for k in keys {
            let empty = Vec::new();
            let first = views[0].1.get(k).unwrap_or(&empty);
            if views.iter().all(|(_, m)| m.get(k).unwrap_or(&empty) == first) {
                continue;
            }
            // The dots some node holds: does each node lacking one know it?
            let key = views.iter().find_map(|(i, _)| {
                self.nodes[*i]
                    .engine
                    .as_ref()?
                    .state()
                    .iter()
                    .find(|(sk, _)| format!("{sk:?}") == *k)
                    .map(|(sk, _)| sk.clone())
            });
            let mut dots = BTreeSet::new();
            for &i in core {
                if let Some(ks) = key
                    .as_ref()
                    .and_then(|sk| self.nodes[i].engine.as_ref()?.state().get(sk))
                {
                    dots.extend(ks.all().map(|v| v.dot));
                }
            }
            let per_node: Vec<String> = views
                .iter()
                .map(|(i, m)| {
                    let e = self.nodes[*i].engine.as_ref().expect("core");
                    let held = key.as_ref().and_then(|sk| e.state().get(sk));
                    let seen_missing: Vec<String> = dots
                        .iter()
                        .filter(|d| !held.is_some_and(|ks| ks.all().any(|v| v.dot == **d)))
                        .map(|d| {
                            let seen = if e.state().knowledge().contains(d) {
                                "seen"
                            } else {
                                "unseen"
                            };
                            format!("{seen} {}:{}", d.node.short(), d.seq)
                        })
                        .collect();
                    let missing = if seen_missing.is_empty() {
                        String::new()
                    } else {
                        format!(" lacks {}", seen_missing.join(" "))
                    };
                    format!("node {i}: [{}]{missing}", m.get(k).unwrap_or(&empty).join(" "))
                })
                .collect();
            return format!(" (e.g. key {k}: {})", per_node.join(", "));
        }
        String::new()
    }

    pub(super) fn finish(mut self) -> RunResult {
        let t_end = self.now_ms();
        // The core is honest: liars' state and views are not judged.
        let core: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.liars.slots.contains(&i))
            .filter(|&i| self.runnable(i) && !self.nodes[i].paused)
            .filter(|&i| !self.nodes[i].engine.as_ref().is_some_and(|e| e.has_left()))
            .collect();
        let window = self.detection_window_ms();
        let mut liveness: Vec<String> = Vec::new();
        // 1. Equal digests on the core.
        let digests: BTreeSet<(u64, u64)> = core
            .iter()
            .map(|&i| {
                let d = self.nodes[i].engine.as_ref().expect("core").digest();
                (d.hash, d.keys)
            })
            .collect();
        if digests.len() > 1 {
            liveness.push(format!(
                "{} distinct state digests on the core of {} nodes{}",
                digests.len(),
                core.len(),
                self.first_difference(&core)
            ));
        }
        // 2. Membership accurate.
        let mut wrong_views = 0usize;
        let mut example = String::new();
        for &o in &core {
            let e = self.nodes[o].engine.as_ref().expect("core");
            for (j, nj) in self.nodes.iter().enumerate() {
                // What honest nodes hold of a liar is the liar's doing.
                if j == o || nj.state == NodeState::NotStarted || self.liars.slots.contains(&j) {
                    continue;
                }
                let want = if core.contains(&j) {
                    Some(MemberStatus::Alive)
                } else if nj.state == NodeState::Gone {
                    Some(MemberStatus::Left)
                } else if t_end.saturating_sub(nj.down_since_ms) >= window {
                    Some(MemberStatus::Dead)
                } else {
                    None
                };
                let got = e.member(&nj.id).map(|m| m.status);
                let ok = match want {
                    None => true,
                    Some(MemberStatus::Dead) => matches!(got, Some(MemberStatus::Dead | MemberStatus::Left)),
                    Some(w) => got == Some(w),
                };
                if !ok {
                    wrong_views += 1;
                    if example.is_empty() {
                        example = format!("node {o} holds node {j} as {got:?}, expected {want:?}");
                    }
                }
            }
        }
        if wrong_views > 0 {
            liveness.push(format!(
                "{wrong_views} inaccurate membership views (e.g. {example})"
            ));
        }
        // 3. No acknowledged write lost.
        // Liars' own writes (their engines' acknowledged writes) need not
        // survive: they are counted apart.
        let (mut lost, mut lost_explained, mut lost_liars) = (0u64, 0u64, 0u64);
        let mut lost_example = String::new();
        for (wi, w) in self.oracle.writes.iter().enumerate() {
            let mut missing_on = None;
            for &i in &core {
                let e = self.nodes[i].engine.as_ref().expect("core");
                if !self.oracle.accounted(e, wi) {
                    missing_on = Some(i);
                    break;
                }
            }
            if let Some(i) = missing_on {
                if self.liars.slots.contains(&w.origin) {
                    lost_liars += 1;
                } else if w.orphaned {
                    lost_explained += 1;
                } else {
                    lost += 1;
                    if lost_example.is_empty() {
                        lost_example = format!("op {} ({:?} {:?}) missing on node {i}", w.op, w.key, w.dot);
                    }
                }
            }
        }
        if lost > 0 {
            liveness.push(format!("{lost} acknowledged writes lost (e.g. {lost_example})"));
        }
        // 4. Services of dead owners are unhealthy.
        let mut bad_services = 0;
        let ns = ns_svc();
        let api = api();
        let gone: BTreeSet<NodeId> = self
            .oracle
            .identities
            .iter()
            .copied()
            .filter(|id| {
                let slot = self.oracle.slot_of[id];
                let n = &self.nodes[slot];
                n.id != *id || (n.state != NodeState::Up && t_end.saturating_sub(n.down_since_ms) >= window)
            })
            .collect();
        for &i in &core {
            let e = self.nodes[i].engine.as_ref().expect("core");
            for v in e.services(&ns, &api, &ServiceQuery::default()) {
                if gone.contains(&v.owner) && v.health.is_healthy() {
                    bad_services += 1;
                }
            }
        }
        if bad_services > 0 {
            liveness.push(format!(
                "{bad_services} service views of dead owners still healthy"
            ));
        }
        // 5. Merged again within the bound after the last fault.
        let merge_ref = self.merge_ref_ms();
        if let Some(what) = &self.unmerged_at_bound {
            let when = match self.merged_at {
                Some(t) => format!("merged after {} ms", t - merge_ref),
                None => "not merged by the deadline".into(),
            };
            liveness.push(format!(
                "not merged again within {} ms of the last fault step at {merge_ref} ms, {when} (e.g. {what})",
                self.merged_within_ms
            ));
        }

        // Metrics.
        let mut m: BTreeMap<String, f64> = BTreeMap::new();
        let mut reach = Vec::new();
        let mut unreached = 0u64;
        for w in &self.oracle.writes {
            let mut worst = 0u64;
            let mut all = true;
            for &i in &core {
                let a = w.arrivals[i];
                if a == u32::MAX {
                    all = false;
                    break;
                }
                worst = worst.max(a as u64);
            }
            if all {
                reach.push(worst);
            } else {
                unreached += 1;
            }
        }
        reach.sort_unstable();
        m.insert("nodes".into(), self.sc.cluster.size as f64);
        m.insert("core_nodes".into(), core.len() as f64);
        m.insert("writes_acked".into(), self.oracle.writes.len() as f64);
        insert_reach(&mut m, "write_reach", &reach);
        m.insert("writes_unreached_at_end".into(), unreached as f64);
        m.insert("lost_writes".into(), lost as f64);
        m.insert("lost_writes_explained".into(), lost_explained as f64);
        if !self.liars.slots.is_empty() {
            m.insert("liars".into(), self.liars.slots.len() as f64);
            m.insert("lost_writes_of_liars".into(), lost_liars as f64);
            for (attack, n) in &self.liars.sent {
                m.insert(format!("attacks.{attack}"), *n as f64);
            }
        }
        m.insert("misses_unexplained".into(), lost as f64);
        m.insert("misses_explained".into(), lost_explained as f64);
        m.insert("reads".into(), self.oracle.reads as f64);
        m.insert("stale_reads".into(), self.oracle.stale_reads as f64);
        let heal_ref = self.converge_ref_ms.max(self.last_heal_ms);
        if let Some(c) = self.converged_at {
            m.insert("converge_after_heal_ms".into(), c.saturating_sub(heal_ref) as f64);
        } else {
            m.insert("converge_after_heal_ms".into(), -1.0);
        }
        m.insert(
            "merged_after_fault_ms".into(),
            self.merged_at
                .map_or(-1.0, |t| t.saturating_sub(merge_ref) as f64),
        );
        m.insert("merged_within_ms".into(), self.merged_within_ms as f64);
        self.fault_metrics(&mut m);
        m.insert(
            "false_suspicions".into(),
            self.oracle.false_suspicions.len() as f64,
        );
        m.insert("false_deaths".into(), self.oracle.false_deaths.len() as f64);
        m.insert("refutations".into(), self.oracle.refutations as f64);
        // Failure detection.
        insert_detection(
            &mut m,
            self.oracle.crashes.iter().map(|ep| Detection {
                slot: ep.slot,
                down_ms: ep.down_ms,
                dead_at: &ep.dead_at,
            }),
            &core,
        );
        // Traffic: whole-run averages per running node per second.
        let mut per_node_bytes = Vec::new();
        let secs = (t_end.max(1) as f64) / 1000.0;
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        let mut msg_totals: BTreeMap<String, u64> = BTreeMap::new();
        let mut syncs = (0u64, 0u64, 0u64);
        let (mut deferred, mut unreachable, mut held_back) = (0u64, 0u64, 0u64);
        // Input honest engines rejected, by reason (crashed lives included).
        let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if self.liars.slots.contains(&i) {
                continue;
            }
            for (k, v) in &n.crashed_rejected {
                *rejected.entry(k.clone()).or_default() += v;
            }
            if let Some(e) = &n.engine {
                for (r, v) in &e.counters().rejected {
                    *rejected.entry(r.as_str().to_string()).or_default() += v;
                }
            }
        }
        m.insert("rejected_total".into(), rejected.values().sum::<u64>() as f64);
        for (k, v) in &rejected {
            m.insert(format!("rejected.{k}"), *v as f64);
        }
        for n in &self.nodes {
            let mut b = n.crashed_counters.clone();
            if let Some(e) = &n.engine {
                for (k, v) in &e.counters().bytes_out {
                    *b.entry(k.clone()).or_default() += v;
                }
                for (k, v) in &e.counters().messages_out {
                    *msg_totals.entry(k.clone()).or_default() += v;
                }
                let c = e.counters();
                syncs.0 += c.syncs_started;
                syncs.1 += c.syncs_completed;
                syncs.2 += c.syncs_failed;
                deferred += c.deferred;
                held_back += e.deferred_now() as u64;
                unreachable += c.unreachable_reports;
            }
            for (k, v) in &b {
                *totals.entry(k.clone()).or_default() += v;
            }
            per_node_bytes.push(b);
        }
        let started = self
            .nodes
            .iter()
            .filter(|n| n.state != NodeState::NotStarted)
            .count()
            .max(1) as f64;
        for (k, v) in &totals {
            m.insert(format!("bytes_out_per_node_s.{k}"), *v as f64 / started / secs);
        }
        for (k, v) in &msg_totals {
            m.insert(format!("msgs_out_per_node_s.{k}"), *v as f64 / started / secs);
        }
        m.insert(
            "wire_bytes_per_node_s".into(),
            self.wire_bytes as f64 / started / secs,
        );
        m.insert("syncs_started".into(), syncs.0 as f64);
        m.insert("syncs_completed".into(), syncs.1 as f64);
        m.insert("syncs_failed".into(), syncs.2 as f64);
        m.insert("versions_deferred".into(), deferred as f64);
        m.insert("versions_held_back_at_end".into(), held_back as f64);
        m.insert("peers_unreachable".into(), unreachable as f64);
        m.insert("events".into(), self.events as f64);

        // Verdict.
        let mut reasons = Vec::new();
        for v in &self.oracle.violations {
            reasons.push(format!(
                "safety: {} at {} ms on node {:?}: {}",
                v.invariant, v.t_ms, v.node, v.detail
            ));
        }
        // Digests settle only once the last delete's tombstone and grave
        // have expired on every node (each collects on its own clock):
        // before, unequal digests prove nothing.
        let deletes_end = self.sc.workload.stop_ms.unwrap_or(t_end).min(t_end);
        let settled = t_end >= deletes_end + super::collection_settle_ms(&self.sc);
        let could_recover = !self.net.any_cut()
            && self.nodes.iter().all(|n| !n.paused)
            && settled
            && t_end.saturating_sub(self.last_heal_ms)
                >= 2 * self.cfg.sync_interval_ms + self.sc.network.request_timeout_ms;
        let safety_ok = self.oracle.violations.is_empty();
        let thresholds_ok = check_expect(&self.sc.expect, &m, 1.0, true, &mut reasons);
        for l in &liveness {
            reasons.push(format!("liveness: {l}"));
        }
        let verdict = Verdict::of(safety_ok, liveness.is_empty(), could_recover, thresholds_ok);
        for v in &self.oracle.violations {
            if self.opts.logs {
                self.event_log
                    .push(serde_json::json!({"t_ms": v.t_ms, "event": "violation", "detail": v}).to_string());
            }
        }
        if self.oracle.member_log.len() < 200_000 && self.opts.logs {
            for (t, o, s, st) in &self.oracle.member_log {
                self.event_log.push(
                    serde_json::json!({"t_ms": t, "event": "member", "observer": o, "subject": s, "status": st.as_str()})
                        .to_string(),
                );
            }
        }
        self.event_log.sort_by_key(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["t_ms"].as_u64())
                .unwrap_or(0)
        });
        RunResult {
            summary: RunSummary {
                mode: Mode::Sim,
                scenario: self.sc,
                seed: self.seed,
                verdict,
                reasons,
                violations: self.oracle.violations.clone(),
                metrics: m,
                write_reach_ms: reach,
                fault_periods: self.fault_periods,
                history: self.history,
                event_log: self.event_log,
            },
            trace_hash: self.trace.digest(),
            events: self.events,
            sim_ms: t_end,
            samples: self.samples,
            heatmap: self.heatmap,
            heatmap_subjects: self.heat_subjects,
            per_node_bytes,
        }
    }
}
