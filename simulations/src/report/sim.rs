//! The simulator's report: its page pieces (trace hash, engine traffic),
//! `metrics.csv`, `repro.sh` and its plots.

use std::fmt::Write as _;
use std::path::Path;

use super::svg::{chart, convergence_cdf_svg, shades, timeline_svg, Series, COLORS};
use super::{fmt_metric, summary_json, summary_md, write_summary, Page, Provenance};
use crate::sim::RunResult;

/// The one line that reproduces a run.
pub fn repro_line(p: &Provenance, seed: u64) -> String {
    let rev = p.git_rev.as_deref().unwrap_or("unknown");
    format!(
        "cargo run --release -p starling-sim -- run {} --seed {seed}   # git {rev}",
        p.scenario_path
    )
}

/// `results.json` of a run.
pub fn results_json(r: &RunResult, p: &Provenance) -> serde_json::Value {
    summary_json(
        &r.summary,
        p,
        &repro_line(p, r.summary.seed),
        serde_json::json!({
            "trace_hash": format!("{:016x}", r.trace_hash),
            "events": r.events,
            "sim_ms": r.sim_ms,
            "events_per_sec": if p.wall_ms > 0 { r.events as f64 * 1000.0 / p.wall_ms as f64 } else { 0.0 },
        }),
    )
}

/// Write every output of one run into `dir`.
pub fn write_run(dir: &Path, r: &RunResult, p: &Provenance) -> std::io::Result<()> {
    let s = &r.summary;
    write_summary(dir, s, &results_json(r, p), &page_md(r, p))?;
    std::fs::write(dir.join("metrics.csv"), metrics_csv(r))?;
    let repro = format!(
        "#!/bin/sh\n# Reproduces {} seed {} (git {}).\n# Replays byte for byte from the resolved scenario:\n\
         exec cargo run --release -p starling-sim -- replay \"$(dirname \"$0\")\"\n# or from the original file:\n# {}\n",
        s.scenario.name,
        s.seed,
        p.git_rev.as_deref().unwrap_or("unknown"),
        repro_line(p, s.seed)
    );
    std::fs::write(dir.join("repro.sh"), repro)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir.join("repro.sh"), std::fs::Permissions::from_mode(0o755));
    }
    std::fs::write(dir.join("convergence.svg"), convergence_svg(r))?;
    std::fs::write(dir.join("bandwidth.svg"), bandwidth_svg(r))?;
    std::fs::write(dir.join("latency.svg"), latency_svg(r))?;
    std::fs::write(dir.join("divergence.svg"), divergence_svg(r))?;
    std::fs::write(dir.join("membership.svg"), membership_svg(r))?;
    Ok(())
}

const ROWS: &[(&str, &[&str])] = &[
    ("acknowledged writes", &["writes_acked"]),
    ("write reaches every core node, p50 (ms)", &["write_reach_p50_ms"]),
    ("… p99 (ms)", &["write_reach_p99_ms"]),
    ("… max (ms)", &["write_reach_max_ms"]),
    ("lost acknowledged writes (unexplained)", &["lost_writes"]),
    (
        "lost writes explained by a fault (disk lost)",
        &["lost_writes_explained"],
    ),
    ("reads / stale reads", &["reads", "stale_reads"]),
    (
        "time to equal digests after heal (ms, -1 never)",
        &["converge_after_heal_ms"],
    ),
    (
        "merged again after the last fault (ms, -1 never) / bound",
        &["merged_after_fault_ms", "merged_within_ms"],
    ),
    ("crashes", &["crashes"]),
    ("detection, first observer (mean ms)", &["detect_first_ms"]),
    ("detection, all observers (max ms)", &["detect_all_ms"]),
    (
        "false suspicions / false deaths",
        &["false_suspicions", "false_deaths"],
    ),
    ("refutations", &["refutations"]),
    (
        "syncs started / completed / failed",
        &["syncs_started", "syncs_completed", "syncs_failed"],
    ),
    ("wire bytes per node per second", &["wire_bytes_per_node_s"]),
];

fn page_md(r: &RunResult, p: &Provenance) -> String {
    let s = &r.summary;
    let m = &s.metrics;
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    let intro = format!(
        "{} nodes ({} in the core at the end), {:.0} s simulated, {} events in {:.2} s wall ({:.0} events/s), trace hash `{:016x}`.",
        fmt_metric(get("nodes")),
        fmt_metric(get("core_nodes")),
        r.sim_ms as f64 / 1000.0,
        r.events,
        p.wall_ms as f64 / 1000.0,
        if p.wall_ms > 0 { r.events as f64 * 1000.0 / p.wall_ms as f64 } else { 0.0 },
        r.trace_hash
    );
    let mut traffic = String::new();
    let proto = &s.scenario.protocol;
    if let Some(n) = m.get("cuts_past_tombstone_ttl") {
        let _ = writeln!(
            traffic,
            "\n{} cut(s) lasted longer than tombstone_ttl_ms ({} ms), {} of them longer than grave_ttl_ms ({} ms): \
             tombstones (and graves) were collected on one side while the other still held what they deleted.",
            fmt_metric(*n),
            proto.tombstone_ttl_ms,
            fmt_metric(get("cuts_past_grave_ttl")),
            proto.grave_ttl_ms
        );
    }
    if let Some(n) = m.get("mass_restarts") {
        let _ = writeln!(
            traffic,
            "\nMass restarts stopped and restarted {} node(s).",
            fmt_metric(*n)
        );
    }
    if let Some(n) = m.get("overload_inputs_late") {
        let _ = writeln!(
            traffic,
            "\nOverload delivered {} input(s) late, {} ms late on average.",
            fmt_metric(*n),
            fmt_metric(get("overload_late_mean_ms"))
        );
    }
    let _ = writeln!(
        traffic,
        "\nEngine traffic per node per second, by message kind:\n"
    );
    let _ = writeln!(traffic, "| kind | messages/s | bytes/s |\n|---|---|---|");
    for (k, v) in m.iter().filter(|(k, _)| k.starts_with("bytes_out_per_node_s.")) {
        let kind = &k["bytes_out_per_node_s.".len()..];
        let msgs = m
            .get(&format!("msgs_out_per_node_s.{kind}"))
            .copied()
            .unwrap_or(0.0);
        let _ = writeln!(traffic, "| {kind} | {msgs:.3} | {v:.1} |");
    }
    let page = Page {
        title: format!("seed {}", s.seed),
        repro_label: "Reproduce",
        repro: repro_line(p, s.seed),
        intro,
        rows: ROWS,
        before_faults: traffic,
        faults_heading: "Faults:",
        after_faults: "\nPlots: [convergence](convergence.svg) · [bandwidth](bandwidth.svg) · [latency](latency.svg) · \
             [divergence](divergence.svg) · [membership](membership.svg). Data: `metrics.csv`, `history.jsonl`, \
             `events.jsonl`, `results.json`; resolved scenario: `scenario.resolved.toml`.\n"
            .into(),
    };
    summary_md(s, &page)
}

fn metrics_csv(r: &RunResult) -> String {
    let mut kinds: Vec<String> = Vec::new();
    for s in &r.samples {
        for k in s.bytes_out.keys() {
            if !kinds.contains(k) {
                kinds.push(k.clone());
            }
        }
    }
    kinds.sort();
    let mut out = String::from(
        "t_ms,up,digests,off_mode,missing,wire_bytes_per_node_s,gossip_p50_ms,gossip_p99_ms,suspect_views,dead_views",
    );
    for k in &kinds {
        let _ = write!(out, ",bytes_out_{k},msgs_out_{k}");
    }
    out.push('\n');
    for s in &r.samples {
        let _ = write!(
            out,
            "{},{},{},{},{},{:.1},{},{},{},{}",
            s.t_ms,
            s.up,
            s.digests,
            s.off_mode,
            s.missing,
            s.wire_bytes,
            s.gossip_p50_ms,
            s.gossip_p99_ms,
            s.suspect_views,
            s.dead_views
        );
        for k in &kinds {
            let _ = write!(
                out,
                ",{:.1},{:.3}",
                s.bytes_out.get(k).copied().unwrap_or(0.0),
                s.msgs_out.get(k).copied().unwrap_or(0.0)
            );
        }
        out.push('\n');
    }
    out
}

fn convergence_svg(r: &RunResult) -> String {
    let sc = &r.summary.scenario;
    convergence_cdf_svg(
        &r.summary.write_reach_ms,
        sc.cluster.size,
        sc.cluster.mesh_degree,
        sc.network.loss,
        sc.network.latency.median_ms().max(0.1),
        "Time for a write to reach every core node (CDF)",
    )
}

fn bandwidth_svg(r: &RunResult) -> String {
    let mut kinds: Vec<String> = Vec::new();
    for s in &r.samples {
        for k in s.bytes_out.keys() {
            if !kinds.contains(k) {
                kinds.push(k.clone());
            }
        }
    }
    kinds.sort();
    let mut series: Vec<Series> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| Series {
            name: k.clone(),
            color: COLORS[(i + 1) % COLORS.len()],
            points: r
                .samples
                .iter()
                .map(|s| (s.t_ms as f64 / 1000.0, s.bytes_out.get(k).copied().unwrap_or(0.0)))
                .collect(),
            dashed: false,
            step: false,
        })
        .collect();
    series.push(Series {
        name: "wire (mesh relays)".into(),
        color: COLORS[0],
        points: r
            .samples
            .iter()
            .map(|s| (s.t_ms as f64 / 1000.0, s.wire_bytes))
            .collect(),
        dashed: true,
        step: false,
    });
    chart(
        "Bandwidth per running node",
        "simulated time (s)",
        "bytes per node per second",
        &series,
        &shades(&r.summary.fault_periods),
        None,
    )
}

fn latency_svg(r: &RunResult) -> String {
    let at = |f: fn(&crate::sim::Sample) -> f64| -> Vec<(f64, f64)> {
        r.samples.iter().map(|s| (s.t_ms as f64 / 1000.0, f(s))).collect()
    };
    timeline_svg(
        "Gossip delivery latency (publish → engine)",
        "simulated time (s)",
        "ms",
        vec![
            (
                "gossip delivery p50".into(),
                at(|s| s.gossip_p50_ms),
                false,
                false,
            ),
            (
                "gossip delivery p99".into(),
                at(|s| s.gossip_p99_ms),
                false,
                false,
            ),
        ],
        &r.summary.fault_periods,
    )
}

fn divergence_svg(r: &RunResult) -> String {
    let at = |f: fn(&crate::sim::Sample) -> f64| -> Vec<(f64, f64)> {
        r.samples.iter().map(|s| (s.t_ms as f64 / 1000.0, f(s))).collect()
    };
    timeline_svg(
        "Divergence over time",
        "simulated time (s)",
        "count",
        vec![
            ("distinct digests".into(), at(|s| s.digests as f64), false, true),
            (
                "nodes off the modal digest".into(),
                at(|s| s.off_mode as f64),
                false,
                true,
            ),
            (
                "missing (write, node) / 10".into(),
                at(|s| s.missing as f64 / 10.0),
                true,
                false,
            ),
        ],
        &r.summary.fault_periods,
    )
}

fn membership_svg(r: &RunResult) -> String {
    let rows = r.heatmap.len();
    let cols = r.samples.len().max(1);
    let (l, t, cw, rh) = (
        60.0,
        40.0,
        (660.0 / cols as f64).max(0.5),
        (8.0f64).min(480.0 / rows.max(1) as f64),
    );
    let w = l + cw * cols as f64 + 140.0;
    let h = t + rh * rows as f64 + 50.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{w:.0}" height="{h:.0}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{l}" y="20" font-size="14">Membership: fraction of running observers holding each node alive</text>"#
    );
    for (a, b, _) in &r.summary.fault_periods {
        let sample = r.summary.scenario.phases.sample_ms as f64;
        let x0 = l + (*a as f64 / sample - 1.0).max(0.0) * cw;
        let x1 = l + (*b as f64 / sample - 1.0).max(0.0) * cw;
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{}" width="{:.1}" height="6" fill="#f4a261"/>"##,
            t - 10.0,
            (x1 - x0).max(1.0)
        );
    }
    for (ri, row) in r.heatmap.iter().enumerate() {
        let y = t + ri as f64 * rh;
        if rh >= 7.0 {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{:.1}" text-anchor="end" font-size="9">n{}</text>"#,
                l - 4.0,
                y + rh - 1.0,
                r.heatmap_subjects[ri]
            );
        }
        // Run-length encode equal cells.
        let mut c = 0;
        while c < row.len() {
            let v = row[c];
            let mut e = c + 1;
            while e < row.len() && (row[e] == v || (row[e].is_nan() && v.is_nan())) {
                e += 1;
            }
            let color = heat_color(v);
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{rh:.1}" fill="{color}"/>"#,
                l + c as f64 * cw,
                (e - c) as f64 * cw
            );
            c = e;
        }
    }
    let ly = t + rh * rows as f64 + 18.0;
    for (i, (v, label)) in [
        (1.0f32, "all alive"),
        (0.5, "half"),
        (0.0, "none alive"),
        (f32::NAN, "not running"),
    ]
    .iter()
    .enumerate()
    {
        let x = l + i as f64 * 110.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="14" height="10" fill="{}"/><text x="{}" y="{}">{label}</text>"#,
            ly - 9.0,
            heat_color(*v),
            x + 18.0,
            ly
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{l}" y="{}">time → ({} samples of {} ms); orange bars: faults</text>"#,
        ly + 18.0,
        cols,
        r.summary.scenario.phases.sample_ms
    );
    s.push_str("</svg>\n");
    s
}

fn heat_color(v: f32) -> String {
    if v.is_nan() {
        return "#e0e0e0".into();
    }
    // red (0) → yellow (0.5) → green (1)
    let v = v.clamp(0.0, 1.0);
    let (r, g) = if v < 0.5 {
        (215.0, 48.0 + (v / 0.5) * (190.0 - 48.0))
    } else {
        (
            215.0 - ((v - 0.5) / 0.5) * (215.0 - 44.0),
            190.0 - ((v - 0.5) / 0.5) * (190.0 - 160.0),
        )
    };
    format!("rgb({:.0},{:.0},{:.0})", r, g, 60.0)
}
