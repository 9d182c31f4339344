//! The end of a real-node run: the final state of every running node, the
//! checks after the deadline, metrics and the verdict, filled into the
//! [`RunSummary`] both modes share.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::summary::{check_expect, insert_detection, insert_reach, Detection, Mode};

/// How many nodes disagree with the first on digest, listing or service
/// table, with an example.
pub(super) fn state_differences(fin: &FinalState) -> (usize, usize, String) {
    let digests: BTreeSet<&str> = fin.nodes.iter().map(|n| n.digest.as_str()).collect();
    let Some(first) = fin.nodes.first() else {
        return (0, 0, String::new());
    };
    let mut differing = 0;
    let mut example = String::new();
    for n in &fin.nodes[1..] {
        let what = if n.listing != first.listing {
            "kv listing"
        } else if n.services != first.services {
            "service table"
        } else {
            continue;
        };
        differing += 1;
        if example.is_empty() {
            example = format!("node {} and node {}: {what} differs", first.slot, n.slot);
        }
    }
    (digests.len(), differing, example)
}

pub(super) async fn snapshot_node(slot: usize, h: &NodeHandle, keys: &[TrackedKey]) -> Option<NodeSnapshot> {
    let st = h.status().await.ok()?;
    let mut held = BTreeMap::new();
    for k in keys {
        held.insert(k.clone(), read_held(h, k).await.ok()?);
    }
    let listing = h
        .list(&ns_kv(), "", 1_000_000)
        .await
        .ok()?
        .iter()
        .map(|e| {
            let mut sib: Vec<String> = e.siblings.iter().map(|(v, _)| v.id.to_string()).collect();
            sib.sort();
            format!("{} {} [{}]", e.key, e.version.id, sib.join(","))
        })
        .collect();
    let views = h
        .services(&ns_svc(), &api(), ServiceQuery::default())
        .await
        .ok()?;
    let services = views
        .iter()
        .map(|v| {
            format!(
                "{} {} {} {}",
                v.instance,
                v.version.id,
                v.owner.short(),
                v.reported_health.as_str()
            )
        })
        .collect();
    let service_health = views
        .iter()
        .map(|v| (v.instance.to_string(), v.owner, v.health.is_healthy()))
        .collect();
    let members = h
        .members()
        .await
        .ok()?
        .into_iter()
        .map(|m| (m.node_id, m.status))
        .collect();
    Some(NodeSnapshot {
        slot,
        peer: h.peer_id(),
        digest: st.digest,
        held,
        listing,
        services,
        service_health,
        members,
    })
}

/// The checks after the deadline, metrics and verdict.
#[allow(clippy::too_many_arguments)]
pub(super) fn judge(
    h: &Harness,
    seed: u64,
    p: Prepared,
    fin: FinalState,
    t_deadline: u64,
    settle_ms: u64,
    bounded: u64,
    formation_ms: u64,
    wall_ms: u64,
) -> RealResult {
    let mut g = h.lock();
    let t_end = fin.t_ms;
    let window = h.window_ms;
    let core: Vec<usize> = fin.nodes.iter().map(|n| n.slot).collect();
    let mut liveness: Vec<String> = Vec::new();
    let mut violations: Vec<Violation> = Vec::new();
    // 1. Equal state on every running node.
    let (digests, differing, example) = state_differences(&fin);
    if digests > 1 {
        liveness.push(format!(
            "{digests} distinct state digests on the {} running nodes",
            core.len()
        ));
    }
    if differing > 0 {
        liveness.push(format!(
            "{differing} nodes' kv listing or service table differs ({example})"
        ));
    }
    // 2. Membership accurate.
    let mut wrong_views = 0usize;
    let mut wrong_example = String::new();
    for n in &fin.nodes {
        let o = n.slot;
        let mut subjects: Vec<(usize, String, Option<MemberStatus>)> = Vec::new();
        for (j, s) in g.slots.iter().enumerate() {
            if j == o || s.id.is_none() {
                continue;
            }
            let want = if core.contains(&j) {
                Some(MemberStatus::Alive)
            } else if s.state == SlotState::Gone {
                Some(MemberStatus::Left)
            } else if s.state == SlotState::Down && t_end.saturating_sub(s.down_since_ms) >= window {
                Some(MemberStatus::Dead)
            } else {
                None
            };
            subjects.push((j, s.peer.clone(), want));
            for (_, peer, down) in &s.old {
                if t_end.saturating_sub(*down) >= window {
                    subjects.push((j, peer.clone(), Some(MemberStatus::Dead)));
                }
            }
        }
        for (j, peer, want) in subjects {
            let got = n.members.get(&peer).copied();
            let ok = match want {
                None => true,
                Some(MemberStatus::Dead) => matches!(got, Some(MemberStatus::Dead | MemberStatus::Left)),
                Some(w) => got == Some(w),
            };
            if !ok {
                wrong_views += 1;
                if wrong_example.is_empty() {
                    wrong_example = format!("node {o} holds node {j} ({peer}) as {got:?}, expected {want:?}");
                }
            }
        }
    }
    if wrong_views > 0 {
        liveness.push(format!(
            "{wrong_views} inaccurate membership views (e.g. {wrong_example})"
        ));
    }
    // 3. No acknowledged write lost.
    let lost = lost_writes(&g.ledger, &fin, h.tombstone_ttl_ms);
    let unexplained: Vec<&LostWrite> = lost.iter().filter(|l| !l.explained).collect();
    let explained = lost.len() - unexplained.len();
    if let Some(l) = unexplained.first() {
        let w = &g.ledger.writes[l.write];
        liveness.push(format!(
            "{} acknowledged writes lost (e.g. op {} ({} version {}) missing on node {})",
            unexplained.len(),
            l.op,
            w.key,
            w.id,
            l.node
        ));
    }
    // 4. Services of dead owners are not healthy.
    let mut gone: BTreeSet<NodeId> = BTreeSet::new();
    for s in &g.slots {
        for (id, _, down) in &s.old {
            if t_end.saturating_sub(*down) >= window {
                gone.insert(*id);
            }
        }
        if let Some(id) = s.id {
            if s.state != SlotState::Up && t_end.saturating_sub(s.down_since_ms) >= window {
                gone.insert(id);
            }
        }
    }
    let bad_services: usize = fin
        .nodes
        .iter()
        .map(|n| {
            n.service_health
                .iter()
                .filter(|(_, owner, healthy)| *healthy && gone.contains(owner))
                .count()
        })
        .sum();
    if bad_services > 0 {
        liveness.push(format!(
            "{bad_services} service views of dead owners still healthy"
        ));
    }
    // Safety as the run went, then: no value nobody wrote.
    violations.append(&mut g.watchdog.violations);
    for (slot, key, value) in phantom_values(&g.ledger, &fin) {
        violations.push(Violation {
            t_ms: t_end,
            invariant: "no-phantom-values",
            node: Some(slot),
            detail: format!("{key} holds a value no client wrote: {value:?}"),
        });
    }

    // Metrics (real ms).
    let mut m: BTreeMap<String, f64> = BTreeMap::new();
    let mut reach = Vec::new();
    let mut reach_calm = Vec::new();
    let mut unreached = 0u64;
    for w in &g.ledger.writes {
        let arr: Option<Vec<u64>> = core.iter().map(|&s| w.arrivals[s]).collect();
        match arr {
            Some(a) => reach.push(a.into_iter().max().unwrap_or(0)),
            None => unreached += 1,
        }
        // Calm: no fault in force at the ack, none starting before it had
        // reached every node running at the ack.
        if let Some(r) = w.reached_up_ms.filter(|_| !w.during_fault) {
            if !g.fault_starts.iter().any(|&f| f >= w.ack_ms && f <= w.ack_ms + r) {
                reach_calm.push(r);
            }
        }
    }
    reach.sort_unstable();
    reach_calm.sort_unstable();
    m.insert("nodes".into(), h.sc.cluster.size as f64);
    m.insert("core_nodes".into(), core.len() as f64);
    m.insert("time_scale".into(), h.scale);
    m.insert("writes_acked".into(), g.ledger.writes.len() as f64);
    insert_reach(&mut m, "write_reach", &reach);
    m.insert("writes_no_fault".into(), reach_calm.len() as f64);
    insert_reach(&mut m, "write_reach_no_fault", &reach_calm);
    m.insert("writes_unreached_at_end".into(), unreached as f64);
    m.insert("safety_reads_checked".into(), g.watchdog.reads as f64);
    m.insert("arrivals_bounded_by_final_read".into(), bounded as f64);
    m.insert("lost_writes".into(), unexplained.len() as f64);
    m.insert("lost_writes_explained".into(), explained as f64);
    m.insert(
        "converge_after_heal_ms".into(),
        g.converge_after_ms.map_or(-1.0, |v| v as f64),
    );
    m.insert("false_suspicions".into(), g.false_suspicions.len() as f64);
    m.insert("false_deaths".into(), g.false_deaths.len() as f64);
    m.insert("settle_ms".into(), settle_ms as f64);
    m.insert("formation_ms".into(), formation_ms as f64);
    m.insert("timeline_ms".into(), t_deadline as f64);
    insert_detection(
        &mut m,
        g.crashes.iter().map(|ep| Detection {
            slot: ep.slot,
            down_ms: ep.down_ms,
            dead_at: &ep.dead_at,
        }),
        &core,
    );

    // Verdict.
    let mut reasons = Vec::new();
    for v in &violations {
        reasons.push(format!(
            "safety: {} at {} ms on node {:?}: {}",
            v.invariant, v.t_ms, v.node, v.detail
        ));
    }
    let could_recover = g.cuts.is_empty()
        && g.paused.is_empty()
        && t_deadline.saturating_sub(g.last_heal_ms) >= 2 * h.cfg.sync_interval_ms + h.cfg.sync_timeout_ms;
    // Stale reads are not checked: real mode issues no reads.
    let thresholds_ok = check_expect(&h.sc.expect, &m, h.scale, false, &mut reasons);
    for l in &liveness {
        reasons.push(format!("liveness: {l}"));
    }
    let verdict = Verdict::of(
        violations.is_empty(),
        liveness.is_empty(),
        could_recover,
        thresholds_ok,
    );
    let mut events = std::mem::take(&mut g.events);
    for v in &violations {
        events.push(serde_json::json!({"t_ms": v.t_ms, "event": "violation", "detail": v}).to_string());
    }
    if h.progress {
        eprintln!("{} (real): {:?}", h.sc.name, verdict);
    }
    RealResult {
        summary: RunSummary {
            mode: Mode::Real,
            scenario: p.scenario,
            seed,
            verdict,
            reasons,
            violations,
            metrics: m,
            write_reach_ms: reach,
            fault_periods: std::mem::take(&mut g.fault_periods),
            history: std::mem::take(&mut g.history),
            event_log: events,
        },
        time_scale: p.scale,
        skipped: p.skipped,
        approximated: p.approximated,
        write_reach_calm_ms: reach_calm,
        samples: std::mem::take(&mut g.samples),
        ledger: g.ledger.clone(),
        final_state: fin,
        tombstone_ttl_ms: h.tombstone_ttl_ms,
        lost: lost.clone(),
        wall_ms,
    }
}
