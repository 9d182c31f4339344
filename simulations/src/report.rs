//! Outputs of a run: summary, JSON results, logs, CSV metrics, a repro
//! script and hand-written SVG plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::model::epidemic_curve;
use crate::sim::RunResult;

/// Where a run came from, for reproduction lines.
#[derive(Clone, Debug)]
pub struct Provenance {
    /// The scenario file as given on the command line.
    pub scenario_path: String,
    /// `git rev-parse --short HEAD`, if available.
    pub git_rev: Option<String>,
    /// Wall-clock time of the run.
    pub wall_ms: u64,
}

/// The current git revision, if this is a git checkout.
pub fn git_rev() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

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
    serde_json::json!({
        "scenario": r.scenario.name,
        "scenario_path": p.scenario_path,
        "seed": r.seed,
        "git_rev": p.git_rev,
        "verdict": r.verdict,
        "exit_code": r.verdict.exit_code(),
        "reasons": r.reasons,
        "violations": r.violations,
        "trace_hash": format!("{:016x}", r.trace_hash),
        "events": r.events,
        "sim_ms": r.sim_ms,
        "wall_ms": p.wall_ms,
        "events_per_sec": if p.wall_ms > 0 { r.events as f64 * 1000.0 / p.wall_ms as f64 } else { 0.0 },
        "metrics": r.metrics,
        "repro": repro_line(p, r.seed),
    })
}

/// Write every output of one run into `dir`.
pub fn write_run(dir: &Path, r: &RunResult, p: &Provenance) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("scenario.resolved.toml"), r.scenario.to_toml())?;
    let results = results_json(r, p);
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&results).unwrap_or_default(),
    )?;
    std::fs::write(dir.join("history.jsonl"), join_lines(&r.history))?;
    std::fs::write(dir.join("events.jsonl"), join_lines(&r.event_log))?;
    std::fs::write(dir.join("metrics.csv"), metrics_csv(r))?;
    let repro = format!(
        "#!/bin/sh\n# Reproduces {} seed {} (git {}).\n# Replays byte for byte from the resolved scenario:\n\
         exec cargo run --release -p starling-sim -- replay \"$(dirname \"$0\")\"\n# or from the original file:\n# {}\n",
        r.scenario.name,
        r.seed,
        p.git_rev.as_deref().unwrap_or("unknown"),
        repro_line(p, r.seed)
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
    std::fs::write(dir.join("summary.md"), summary_md(r, p))?;
    Ok(())
}

fn join_lines(lines: &[String]) -> String {
    let mut s = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
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

fn fmt_metric(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e12 {
        format!("{}", v as i64)
    } else {
        format!("{v:.2}")
    }
}

fn summary_md(r: &RunResult, p: &Provenance) -> String {
    let mut s = String::new();
    let m = &r.metrics;
    let _ = writeln!(s, "# {} — seed {}\n", r.scenario.name, r.seed);
    if !r.scenario.description.is_empty() {
        let _ = writeln!(s, "{}\n", r.scenario.description.trim());
    }
    let _ = writeln!(
        s,
        "**Verdict: {:?}** (exit code {})\n",
        r.verdict,
        r.verdict.exit_code()
    );
    for reason in &r.reasons {
        let _ = writeln!(s, "- {reason}");
    }
    if !r.reasons.is_empty() {
        s.push('\n');
    }
    let _ = writeln!(s, "Reproduce: `{}`\n", repro_line(p, r.seed));
    let _ = writeln!(
        s,
        "{} nodes ({} in the core at the end), {:.0} s simulated, {} events in {:.2} s wall ({:.0} events/s), trace hash `{:016x}`.\n",
        fmt_metric(m["nodes"]),
        fmt_metric(m["core_nodes"]),
        r.sim_ms as f64 / 1000.0,
        r.events,
        p.wall_ms as f64 / 1000.0,
        if p.wall_ms > 0 { r.events as f64 * 1000.0 / p.wall_ms as f64 } else { 0.0 },
        r.trace_hash
    );
    let _ = writeln!(s, "| metric | value |\n|---|---|");
    let rows = [
        ("acknowledged writes", "writes_acked"),
        ("write reaches every core node, p50 (ms)", "write_reach_p50_ms"),
        ("… p99 (ms)", "write_reach_p99_ms"),
        ("… max (ms)", "write_reach_max_ms"),
        ("lost acknowledged writes (unexplained)", "lost_writes"),
        (
            "lost writes explained by a fault (disk lost)",
            "lost_writes_explained",
        ),
        ("reads / stale reads", "reads"),
        (
            "time to equal digests after heal (ms, -1 never)",
            "converge_after_heal_ms",
        ),
        ("crashes", "crashes"),
        ("detection, first observer (mean ms)", "detect_first_ms"),
        ("detection, all observers (max ms)", "detect_all_ms"),
        ("false suspicions / false deaths", "false_suspicions"),
        ("refutations", "refutations"),
        ("syncs started / completed / failed", "syncs_started"),
        ("wire bytes per node per second", "wire_bytes_per_node_s"),
    ];
    for (label, key) in rows {
        let v = match key {
            "reads" => format!("{} / {}", fmt_metric(m[key]), fmt_metric(m["stale_reads"])),
            "false_suspicions" => format!("{} / {}", fmt_metric(m[key]), fmt_metric(m["false_deaths"])),
            "syncs_started" => format!(
                "{} / {} / {}",
                fmt_metric(m[key]),
                fmt_metric(m["syncs_completed"]),
                fmt_metric(m["syncs_failed"])
            ),
            _ => fmt_metric(m.get(key).copied().unwrap_or(0.0)),
        };
        let _ = writeln!(s, "| {label} | {v} |");
    }
    let _ = writeln!(s, "\nEngine traffic per node per second, by message kind:\n");
    let _ = writeln!(s, "| kind | messages/s | bytes/s |\n|---|---|---|");
    for (k, v) in m.iter().filter(|(k, _)| k.starts_with("bytes_out_per_node_s.")) {
        let kind = &k["bytes_out_per_node_s.".len()..];
        let msgs = m
            .get(&format!("msgs_out_per_node_s.{kind}"))
            .copied()
            .unwrap_or(0.0);
        let _ = writeln!(s, "| {kind} | {msgs:.3} | {v:.1} |");
    }
    let _ = writeln!(s, "\nFaults:\n");
    if r.fault_periods.is_empty() {
        let _ = writeln!(s, "- none");
    }
    for (a, b, l) in &r.fault_periods {
        let _ = writeln!(s, "- {a}–{b} ms: {l}");
    }
    let _ = writeln!(
        s,
        "\nPlots: [convergence](convergence.svg) · [bandwidth](bandwidth.svg) · [latency](latency.svg) · \
         [divergence](divergence.svg) · [membership](membership.svg). Data: `metrics.csv`, `history.jsonl`, \
         `events.jsonl`, `results.json`; resolved scenario: `scenario.resolved.toml`."
    );
    s
}

/// One row of the table across seeds.
pub fn aggregate_md(name: &str, runs: &[(u64, serde_json::Value)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {name} — {} seeds\n", runs.len());
    let cols = [
        ("reach p50", "write_reach_p50_ms"),
        ("reach p99", "write_reach_p99_ms"),
        ("reach max", "write_reach_max_ms"),
        ("lost", "lost_writes"),
        ("stale reads", "stale_reads"),
        ("converge after heal", "converge_after_heal_ms"),
        ("detect all", "detect_all_ms"),
        ("false deaths", "false_deaths"),
        ("wire B/node/s", "wire_bytes_per_node_s"),
    ];
    let _ = write!(s, "| seed | verdict |");
    for (c, _) in cols {
        let _ = write!(s, " {c} |");
    }
    let _ = write!(s, "\n|---|---|");
    for _ in cols {
        s.push_str("---|");
    }
    s.push('\n');
    let mut counts = std::collections::BTreeMap::new();
    for (seed, v) in runs {
        let verdict = v["verdict"].as_str().unwrap_or("?");
        *counts.entry(verdict.to_string()).or_insert(0) += 1;
        let _ = write!(s, "| [{seed}]({seed}/summary.md) | {verdict} |");
        for (_, k) in cols {
            let x = v["metrics"][k].as_f64().unwrap_or(f64::NAN);
            let _ = write!(s, " {} |", fmt_metric(x));
        }
        s.push('\n');
    }
    let _ = writeln!(s, "\nVerdicts: {counts:?}");
    s
}

// ----- SVG -----------------------------------------------------------------

struct Series {
    name: String,
    color: &'static str,
    points: Vec<(f64, f64)>,
    dashed: bool,
    step: bool,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn chart(
    title: &str,
    xl: &str,
    yl: &str,
    series: &[Series],
    shade: &[(f64, f64, String)],
    x_max: Option<f64>,
) -> String {
    let (w, h, l, r, t, b) = (760.0, 360.0, 70.0, 170.0, 36.0, 46.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let xmax = x_max.unwrap_or_else(|| {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(0.0, f64::max)
    });
    let xmax = nice_max(xmax);
    let ymax = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max),
    );
    let sx = |x: f64| l + (x / xmax).clamp(0.0, 1.0) * pw;
    let sy = |y: f64| t + ph - (y / ymax).clamp(0.0, 1.0) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" font-size="14" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        esc(title)
    );
    for (a, bb, label) in shade {
        let (x0, x1) = (sx(*a), sx(*bb));
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{t}" width="{:.1}" height="{ph}" fill="#f4a261" fill-opacity="0.18"><title>{}</title></rect>"##,
            (x1 - x0).max(1.0),
            esc(label)
        );
    }
    for i in 0..=5 {
        let y = ymax * i as f64 / 5.0;
        let py = sy(y);
        let _ = writeln!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            l + pw,
            l - 6.0,
            py + 4.0,
            fmt_axis(y)
        );
        let x = xmax * i as f64 / 5.0;
        let px = sx(x);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{}" y2="{}" stroke="#999"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
            t + ph,
            t + ph + 4.0,
            t + ph + 16.0,
            fmt_axis(x)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        h - 8.0,
        esc(xl)
    );
    let _ = writeln!(
        s,
        r#"<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"#,
        t + ph / 2.0,
        t + ph / 2.0,
        esc(yl)
    );
    for (i, se) in series.iter().enumerate() {
        let mut d = String::new();
        let mut prev: Option<(f64, f64)> = None;
        for &(x, y) in &se.points {
            if !y.is_finite() {
                prev = None;
                continue;
            }
            let (px, py) = (sx(x), sy(y));
            match prev {
                None => {
                    let _ = write!(d, "M{px:.1},{py:.1}");
                }
                Some((_, ppy)) if se.step => {
                    let _ = write!(d, "L{px:.1},{ppy:.1}L{px:.1},{py:.1}");
                }
                Some(_) => {
                    let _ = write!(d, "L{px:.1},{py:.1}");
                }
            }
            prev = Some((px, py));
        }
        let dash = if se.dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.6"{dash}/>"#,
            se.color
        );
        let ly = t + 14.0 + i as f64 * 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            l + pw + 10.0,
            l + pw + 30.0,
            se.color,
            l + pw + 34.0,
            ly + 4.0,
            esc(&se.name)
        );
    }
    if !shade.is_empty() {
        let ly = t + 14.0 + series.len() as f64 * 16.0;
        let _ = writeln!(
            s,
            r##"<rect x="{}" y="{}" width="20" height="10" fill="#f4a261" fill-opacity="0.35"/><text x="{}" y="{}">fault in force</text>"##,
            l + pw + 10.0,
            ly - 5.0,
            l + pw + 34.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_axis(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn shades(r: &RunResult) -> Vec<(f64, f64, String)> {
    r.fault_periods
        .iter()
        .map(|(a, b, l)| (*a as f64 / 1000.0, *b as f64 / 1000.0, l.clone()))
        .collect()
}

fn convergence_svg(r: &RunResult) -> String {
    let sc = &r.scenario;
    convergence_cdf_svg(
        &r.write_reach_ms,
        sc.cluster.size,
        sc.cluster.mesh_degree,
        sc.network.loss,
        sc.network.latency.median_ms().max(0.1),
        "Time for a write to reach every core node (CDF)",
    )
}

/// The convergence CDF of `reach_ms` (sorted, ms from acknowledgement to
/// every node) drawn over the analytic epidemic curve for `nodes` nodes,
/// mesh degree `degree`, loss `loss` and one hop per `hop_ms`.
pub(crate) fn convergence_cdf_svg(
    reach_ms: &[u64],
    nodes: usize,
    degree: usize,
    loss: f64,
    hop_ms: f64,
    title: &str,
) -> String {
    let n = reach_ms.len();
    let measured: Vec<(f64, f64)> = reach_ms
        .iter()
        .enumerate()
        .map(|(i, v)| (*v as f64, (i + 1) as f64 / n.max(1) as f64))
        .collect();
    let curve = epidemic_curve(nodes, degree, loss, 200);
    let analytic: Vec<(f64, f64)> = curve
        .iter()
        .enumerate()
        .map(|(i, f)| (i as f64 * hop_ms, *f))
        .collect();
    let xmax = measured
        .get(((n as f64 * 0.99) as usize).min(n.saturating_sub(1)))
        .map(|p| p.0)
        .unwrap_or(0.0)
        .max(analytic.last().map_or(1.0, |p| p.0))
        * 1.1;
    let series = vec![
        Series {
            name: format!("analytic (N={nodes}, D={degree}, p={loss})"),
            color: "#999",
            points: analytic,
            dashed: true,
            step: false,
        },
        Series {
            name: format!("measured ({n} writes)"),
            color: COLORS[0],
            points: measured,
            dashed: false,
            step: true,
        },
    ];
    chart(
        title,
        "ms after acknowledgement (to p99)",
        "fraction of writes (analytic: of nodes)",
        &series,
        &[],
        Some(xmax),
    )
}

/// One line of [`timeline_svg`]: (name, points, dashed, drawn as steps).
pub(crate) type Line = (String, Vec<(f64, f64)>, bool, bool);

/// Lines over time (seconds on x), fault periods (ms) shaded.
pub(crate) fn timeline_svg(
    title: &str,
    xl: &str,
    yl: &str,
    lines: Vec<Line>,
    faults: &[(u64, u64, String)],
) -> String {
    let series: Vec<Series> = lines
        .into_iter()
        .enumerate()
        .map(|(i, (name, points, dashed, step))| Series {
            name,
            color: COLORS[i % COLORS.len()],
            points,
            dashed,
            step,
        })
        .collect();
    let shade: Vec<(f64, f64, String)> = faults
        .iter()
        .map(|(a, b, l)| (*a as f64 / 1000.0, *b as f64 / 1000.0, l.clone()))
        .collect();
    chart(title, xl, yl, &series, &shade, None)
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
        &shades(r),
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
        &r.fault_periods,
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
        &r.fault_periods,
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
    for (a, b, _) in &r.fault_periods {
        let sample = r.scenario.phases.sample_ms as f64;
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
        r.scenario.phases.sample_ms
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

/// Find every `results.json` under `dir` (a run dir or a scenario dir).
pub fn find_results(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let direct = dir.join("results.json");
    if direct.exists() {
        out.push(direct);
        return out;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                out.extend(find_results(&e));
            }
        }
    }
    out
}
