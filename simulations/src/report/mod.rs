//! Outputs of a run: one writer renders the [`RunSummary`] both modes fill
//! (`summary.md`, `results.json`, `history.jsonl`, `events.jsonl`,
//! `scenario.resolved.toml`); each mode adds its own page pieces, data and
//! plots ([`sim`], and `real` with the `real` feature); [`svg`] draws the
//! charts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::summary::RunSummary;

#[cfg(feature = "real")]
pub mod real;
pub mod sim;
pub mod svg;

pub use sim::{repro_line, results_json, write_run};

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

/// A metric as a report shows it: whole numbers without decimals.
pub fn fmt_metric(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e12 {
        format!("{}", v as i64)
    } else {
        format!("{v:.2}")
    }
}

/// What a mode adds to the summary page around the common parts.
pub struct Page<'a> {
    /// After the scenario name in the title (e.g. `seed 3`).
    pub title: String,
    /// Introduces the reproduction line.
    pub repro_label: &'a str,
    /// The reproduction line.
    pub repro: String,
    /// The paragraph before the metric table.
    pub intro: String,
    /// Metric table rows: a label and the metrics shown, joined by ` / `.
    pub rows: &'a [(&'a str, &'a [&'a str])],
    /// Sections between the table and the fault list.
    pub before_faults: String,
    /// The fault list's heading.
    pub faults_heading: &'a str,
    /// Sections after the fault list.
    pub after_faults: String,
}

/// `summary.md`: title, verdict and reasons, reproduction line, the mode's
/// introduction, the metric table, the faults, the mode's sections.
pub fn summary_md(r: &RunSummary, page: &Page<'_>) -> String {
    let mut s = String::new();
    let m = &r.metrics;
    let _ = writeln!(s, "# {} — {}\n", r.scenario.name, page.title);
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
    let _ = writeln!(s, "{}: `{}`\n", page.repro_label, page.repro);
    let _ = writeln!(s, "{}\n", page.intro);
    let _ = writeln!(s, "| metric | value |\n|---|---|");
    for (label, keys) in page.rows {
        let v: Vec<String> = keys
            .iter()
            .map(|k| fmt_metric(m.get(*k).copied().unwrap_or(0.0)))
            .collect();
        let _ = writeln!(s, "| {label} | {} |", v.join(" / "));
    }
    s.push_str(&page.before_faults);
    let _ = writeln!(s, "\n{}\n", page.faults_heading);
    if r.fault_periods.is_empty() {
        let _ = writeln!(s, "- none");
    }
    for (a, b, l) in &r.fault_periods {
        let _ = writeln!(s, "- {a}–{b} ms: {l}");
    }
    s.push_str(&page.after_faults);
    s
}

/// `results.json`: the summary's fields, then the mode's `extra` fields.
pub fn summary_json(
    r: &RunSummary,
    p: &Provenance,
    repro: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "scenario": r.scenario.name,
        "scenario_path": p.scenario_path,
        "seed": r.seed,
        "git_rev": p.git_rev,
        "verdict": r.verdict,
        "exit_code": r.verdict.exit_code(),
        "reasons": r.reasons,
        "violations": r.violations,
        "wall_ms": p.wall_ms,
        "metrics": r.metrics,
        "repro": repro,
    });
    if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

/// Write the outputs every run has into `dir`: the resolved scenario,
/// `results.json`, the logs and `summary.md`.
pub fn write_summary(
    dir: &Path,
    r: &RunSummary,
    results: &serde_json::Value,
    summary: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("scenario.resolved.toml"), r.scenario.to_toml())?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(results).unwrap_or_default(),
    )?;
    std::fs::write(dir.join("history.jsonl"), join_lines(&r.history))?;
    std::fs::write(dir.join("events.jsonl"), join_lines(&r.event_log))?;
    std::fs::write(dir.join("summary.md"), summary)?;
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

/// Every `results.json` under `dir` (itself, or in its subdirectories).
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
