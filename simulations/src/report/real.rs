//! Real mode's report: its page pieces (time scale, what was skipped or
//! approximated), `metrics.csv` and its plots.

use std::fmt::Write as _;
use std::path::Path;

use super::svg::{convergence_cdf_svg, timeline_svg};
use super::{fmt_metric, summary_json, write_summary, Page, Provenance};
use crate::real::RealResult;

/// libp2p gossipsub's default mesh degree (`mesh_n`), which the node keeps:
/// the fanout of the analytic curve behind the real convergence plot.
const GOSSIPSUB_MESH_DEGREE: usize = 6;

/// One gossip hop between nodes of one process on loopback, for the
/// analytic curve: the cluster benchmark's write→all p50 at five nodes
/// (5 ms, docs/PERFORMANCE.md) over the curve's two rounds at that size.
const LOOPBACK_HOP_MS: f64 = 2.5;

/// The one line that reproduces a real-node run (the same choices; the
/// interleaving differs).
pub fn repro_line(r: &RealResult, p: &Provenance) -> String {
    format!(
        "cargo run --release -p starling-sim -- swarm-real {} --seed {} --nodes {} --time-scale {}   # git {}",
        p.scenario_path,
        r.summary.seed,
        r.summary.scenario.cluster.size,
        r.time_scale,
        p.git_rev.as_deref().unwrap_or("unknown")
    )
}

/// `results.json` of a real-node run.
pub fn results_json(r: &RealResult, p: &Provenance) -> serde_json::Value {
    summary_json(
        &r.summary,
        p,
        &repro_line(r, p),
        serde_json::json!({
            "mode": "real",
            "time_scale": r.time_scale,
            "skipped": r.skipped,
            "approximated": r.approximated,
            "fault_periods": r.summary.fault_periods,
            "lost_writes": r.lost.iter().map(|l| {
                let w = &r.ledger.writes[l.write];
                serde_json::json!({"op": l.op, "key": w.key.to_string(), "version": w.id.to_string(),
                    "origin": w.origin, "ack_ms": w.ack_ms, "missing_on": l.node, "explained": l.explained})
            }).collect::<Vec<_>>(),
        }),
    )
}

const ROWS: &[(&str, &[&str])] = &[
    ("acknowledged writes", &["writes_acked"]),
    (
        "write reaches every running node, p50 (ms)",
        &["write_reach_p50_ms"],
    ),
    ("… p99 (ms)", &["write_reach_p99_ms"]),
    ("… max (ms)", &["write_reach_max_ms"]),
    (
        "acknowledged and spread with no fault in force (cut, pause, crash, leave)",
        &["writes_no_fault"],
    ),
    (
        "… reach every node running at the ack, p50 (ms)",
        &["write_reach_no_fault_p50_ms"],
    ),
    ("… p99 (ms)", &["write_reach_no_fault_p99_ms"]),
    ("… max (ms)", &["write_reach_no_fault_max_ms"]),
    (
        "writes not seen on every node at the end",
        &["writes_unreached_at_end"],
    ),
    ("lost acknowledged writes (unexplained)", &["lost_writes"]),
    (
        "lost writes explained by a fault (disk lost)",
        &["lost_writes_explained"],
    ),
    (
        "time to equal digests after heal (ms, -1 never)",
        &["converge_after_heal_ms"],
    ),
    ("settle window used after the deadline (ms)", &["settle_ms"]),
    ("crashes", &["crashes"]),
    ("detection, first observer (mean ms)", &["detect_first_ms"]),
    ("detection, all observers (max ms)", &["detect_all_ms"]),
    (
        "false suspicions / false deaths",
        &["false_suspicions", "false_deaths"],
    ),
    (
        "reads checked for safety as the run went",
        &["safety_reads_checked"],
    ),
];

/// `summary.md` of a real-node run.
pub fn summary_md(r: &RealResult, p: &Provenance) -> String {
    let s = &r.summary;
    let get = |k: &str| s.metrics.get(k).copied().unwrap_or(0.0);
    let intro = format!(
        "{} real libp2p nodes in one process (loopback TCP, bootstrap peers, mDNS off). Time scale {:.3}: \
         the {:.0} s scenario ran in {:.1} s (cluster formed in {:.1} s before it; protocol timers scaled the same), \
         {:.1} s wall in all. Times below are real milliseconds.",
        fmt_metric(get("nodes")),
        r.time_scale,
        s.scenario.phases.deadline_ms as f64 / 1000.0,
        get("timeline_ms") / 1000.0,
        get("formation_ms") / 1000.0,
        p.wall_ms as f64 / 1000.0,
    );
    let mut after = String::new();
    let _ = writeln!(after, "\nSkipped (not run in real mode):\n");
    if r.skipped.is_empty() {
        let _ = writeln!(after, "- nothing");
    }
    for l in &r.skipped {
        let _ = writeln!(after, "- {l}");
    }
    let _ = writeln!(after, "\nApproximated:\n");
    for l in &r.approximated {
        let _ = writeln!(after, "- {l}");
    }
    let _ = writeln!(
        after,
        "\nChecked on every read of a key while the run went (each node against its own earlier reads): no value \
         nobody wrote, a superseded version never live again, the newest version never goes back, no version back \
         after its key was collected, history within its limit; from the membership samples: a node never holds \
         itself suspect or dead. Checked after the deadline: equal digests, kv listings and service tables on \
         every running node; accurate membership; no acknowledged write lost (present, or superseded by a write \
         that certainly saw it); services of dead owners not healthy; no value nobody wrote. Not checked in real \
         mode: stale reads.\n\n\
         Plots: [convergence](convergence.svg) · [latency](latency.svg) · [divergence](divergence.svg). \
         Data: `results.json`, `history.jsonl`, `events.jsonl`, `metrics.csv`; resolved scenario (scenario ms): \
         `scenario.resolved.toml`."
    );
    let page = Page {
        title: format!("real nodes, seed {}", s.seed),
        repro_label: "Re-run (same choices, not the same interleaving)",
        repro: repro_line(r, p),
        intro,
        rows: ROWS,
        before_faults: String::new(),
        faults_heading: "Faults applied (real ms):",
        after_faults: after,
    };
    super::summary_md(s, &page)
}

/// Write every output of a real-node run into `dir`.
pub fn write_run(dir: &Path, r: &RealResult, p: &Provenance) -> std::io::Result<()> {
    write_summary(dir, &r.summary, &results_json(r, p), &summary_md(r, p))?;
    let mut csv = String::from("t_ms,up,digests,missing\n");
    for (t, up, d, missing) in &r.samples {
        let _ = writeln!(csv, "{t},{up},{d},{missing}");
    }
    std::fs::write(dir.join("metrics.csv"), csv)?;
    std::fs::write(
        dir.join("convergence.svg"),
        convergence_cdf_svg(
            &r.write_reach_calm_ms,
            r.summary.metrics.get("nodes").map_or(1, |n| *n as usize),
            GOSSIPSUB_MESH_DEGREE,
            0.0,
            LOOPBACK_HOP_MS,
            "Write → every running node, no fault in force (CDF, real ms)",
        ),
    )?;
    let reach: Vec<(f64, f64)> = r
        .ledger
        .writes
        .iter()
        .filter_map(|w| Some((w.ack_ms as f64 / 1000.0, w.reached_up_ms? as f64)))
        .collect();
    std::fs::write(
        dir.join("latency.svg"),
        timeline_svg(
            "Write reach by acknowledgement time",
            "real time (s)",
            "ms to reach every node running at the ack",
            vec![("write reach".into(), reach, false, false)],
            &r.summary.fault_periods,
        ),
    )?;
    let at = |f: fn(&(u64, usize, usize, u64)) -> f64| -> Vec<(f64, f64)> {
        r.samples.iter().map(|s| (s.0 as f64 / 1000.0, f(s))).collect()
    };
    std::fs::write(
        dir.join("divergence.svg"),
        timeline_svg(
            "Divergence over time",
            "real time (s)",
            "count",
            vec![
                ("distinct digests".into(), at(|s| s.2 as f64), false, true),
                ("running nodes".into(), at(|s| s.1 as f64), true, true),
                (
                    "missing (write, node) / 10".into(),
                    at(|s| s.3 as f64 / 10.0),
                    true,
                    false,
                ),
            ],
            &r.summary.fault_periods,
        ),
    )?;
    Ok(())
}
