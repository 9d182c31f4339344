//! Preparing a scenario for real nodes: resolve, size, pick the time
//! scale, list what cannot run.

#[allow(clippy::wildcard_imports)]
use super::*;

// ----- preparing a scenario ----------------------------------------------------

/// A scenario made ready for real nodes.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Resolved (every random draw explicit), sized, in scenario ms.
    pub scenario: Scenario,
    /// Real ms per scenario ms.
    pub scale: f64,
    /// The node's protocol settings, timers scaled.
    pub protocol: Config,
    /// What the scenario asks for that real mode does not do.
    pub skipped: Vec<String>,
    /// What real mode does differently from the simulator.
    pub approximated: Vec<String>,
}

/// Scale a protocol config's timers by `s`, with floors.
pub fn scaled_protocol(p: &Config, s: f64) -> Config {
    let f = |v: u64, min: u64| ((v as f64 * s).round() as u64).max(min);
    let mut c = p.clone();
    c.heartbeat_interval_ms = f(p.heartbeat_interval_ms, 50);
    c.suspect_timeout_ms = f(p.suspect_timeout_ms, 100).max(c.heartbeat_interval_ms);
    c.sync_interval_ms = f(p.sync_interval_ms, 100);
    c.sync_min_interval_ms = f(p.sync_min_interval_ms, 50);
    c.sync_timeout_ms = f(p.sync_timeout_ms, 500);
    c.gc_interval_ms = f(p.gc_interval_ms, 100);
    c.tombstone_ttl_ms = f(p.tombstone_ttl_ms, 1_000);
    c
}

/// Resolve `sc` for `seed`, size it for real nodes, pick the time scale and
/// list what cannot run.
pub fn prepare(sc: &Scenario, seed: u64, opts: &RealOptions) -> Result<Prepared, String> {
    let mut s = sc.clone();
    let mut skipped = Vec::new();
    let mut approximated = Vec::new();
    if let Some(n) = opts.nodes {
        if n == 0 || n > MAX_NODES {
            return Err(format!("--nodes {n}: real mode runs 1..={MAX_NODES} nodes"));
        }
        s.cluster.size = n;
    } else if s.cluster.size > MAX_NODES {
        skipped.push(format!(
            "cluster.size {} capped to {MAX_NODES} (real mode runs at most {MAX_NODES} nodes; --nodes sets it)",
            s.cluster.size
        ));
        s.cluster.size = MAX_NODES;
    }
    if s.cluster.size + s.cluster.spare > MAX_NODES {
        let spare = MAX_NODES - s.cluster.size;
        skipped.push(format!(
            "cluster.spare {} reduced to {spare} (at most {MAX_NODES} nodes in all)",
            s.cluster.spare
        ));
        s.cluster.spare = spare;
    }
    let mut r = s.resolve(seed);
    let slots = r.slots();
    for (i, f) in r.faults.iter_mut().enumerate() {
        let before = (f.nodes.len(), f.to.len(), f.groups.concat().len());
        f.nodes.retain(|&n| n < slots);
        f.to.retain(|&n| n < slots);
        f.restore_order.retain(|&n| n < slots);
        for g in &mut f.groups {
            g.retain(|&n| n < slots);
        }
        f.groups.retain(|g| !g.is_empty());
        if before != (f.nodes.len(), f.to.len(), f.groups.concat().len()) {
            skipped.push(format!(
                "fault #{i} ({} at {} ms): node indices ≥ {slots} dropped",
                f.kind, f.at_ms
            ));
        }
        match f.kind.as_str() {
            "overload" => {
                return Err(format!(
                    "fault #{i} overload at {} ms: kind overload is not supported by swarm-real \
                     (a real node's inputs cannot be delayed from outside it); remove it or run the simulator",
                    f.at_ms
                ))
            }
            "clock-jump" => skipped.push(format!(
                "fault #{i} clock-jump {:+} ms at {} ms on nodes {:?}: skipped (real nodes share the host clock)",
                f.jump_ms.unwrap_or(0),
                f.at_ms,
                f.nodes
            )),
            "one-way" => approximated.push(format!(
                "fault #{i} one-way at {} ms from {:?}: applied as a two-way cut (blocking refuses connections, \
                 so one direction cannot be dropped alone)",
                f.at_ms, f.nodes
            )),
            "byzantine" => skipped.push(format!(
                "fault #{i} byzantine at {} ms on nodes {:?}: skipped (liars are played by the simulator only; \
                 tests/hostile_node.rs plays some attacks through real nodes)",
                f.at_ms, f.nodes
            )),
            "pause" => approximated.push(format!(
                "fault #{i} pause at {} ms of {:?}: the node is isolated (blocked from every peer) but keeps running",
                f.at_ms, f.nodes
            )),
            _ => {}
        }
    }
    if r.clock
        .nodes
        .iter()
        .any(|c| c.offset_ms != 0 || c.drift_ppm != 0.0)
    {
        skipped.push("[clock] per-node offsets and drift: skipped (real nodes share the host clock)".into());
    }
    approximated.push(
        "[network] latency, loss, duplication, reordering and link overrides are not applied: nodes talk over \
         loopback TCP; gossip uses gossipsub's own mesh (mesh_degree, lazy_gossip, gossip_interval_ms unused)"
            .into(),
    );
    if r.cluster.regions > 1 {
        skipped.push(format!("[cluster] regions = {}: ignored", r.cluster.regions));
    }
    if r.workload.reads_per_sec > 0.0 {
        skipped.push(format!(
            "[workload] reads ({}/s): not issued (propagation is measured directly by watching every node)",
            r.workload.reads_per_sec
        ));
    }
    if r.expect.merged_within_ms.is_some_and(|b| b > 0) {
        skipped.push(
            "[expect] merged_within_ms: not checked (real mode checks merging only at the deadline)".into(),
        );
    }
    if r.expect.max_stale_reads.is_some() {
        skipped.push("[expect] max_stale_reads: not checked (no reads)".into());
    }
    let scale = match opts.time_scale {
        Some(f) => f,
        None => (opts.max_real_ms as f64 / r.phases.deadline_ms.max(1) as f64).min(1.0),
    };
    if !(scale.is_finite() && scale > 0.0 && scale <= 100.0) {
        return Err(format!("time scale {scale}: use a number in (0, 100]"));
    }
    let protocol = scaled_protocol(&r.protocol, scale)
        .validated()
        .map_err(|e| format!("[protocol] scaled by {scale}: {e}"))?;
    // The resolved scenario keeps scenario ms; the scale applies at run time.
    r.name = if r.name.is_empty() {
        "scenario".into()
    } else {
        r.name
    };
    Ok(Prepared {
        scenario: r,
        scale,
        protocol,
        skipped,
        approximated,
    })
}
