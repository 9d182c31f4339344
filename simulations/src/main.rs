//! `starling-sim`: run Starling scenarios in deterministic simulation.
//!
//! Exit codes: 0 valid, 1 invalid, 2 unknown, 3 and above harness errors.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use starling_sim::hunt::{self, HuntOptions, Outcome, Plant, SeedReport, Status, PLANT_FILE};
use starling_sim::report::{self, Provenance};
use starling_sim::shrink::{self, ShrinkOptions};
use starling_sim::{RunOptions, RunResult, Scenario, Verdict};

/// A run allocates and frees hundreds of millions of small blocks: the
/// system allocator spends a fifth of the simulator's time on them (see the
/// `mimalloc` feature in Cargo.toml for the trade-off).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "starling-sim",
    version,
    about = "Deterministic partition simulation of Starling clusters"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios with one or more seeds and write reports.
    Run {
        /// Scenario files.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// One seed.
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// A seed range `A..B` (B excluded) or `A..=B`.
        #[arg(long)]
        seeds: Option<String>,
        /// Output directory (default `sim-out/<scenario>/<seed>`; with
        /// several runs, `DIR/<scenario>/<seed>`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Re-run a recorded run from its directory and check the trace matches.
    Replay {
        /// A run directory (with results.json and scenario.resolved.toml).
        dir: PathBuf,
    },
    /// Run a scenario twice with the same seed and compare the traces.
    CheckDeterminism {
        /// Scenario file.
        scenario: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Compare the results under two directories.
    Compare {
        /// Baseline directory.
        baseline: PathBuf,
        /// Current directory.
        current: PathBuf,
    },
    /// Print the analytic epidemic curve.
    Model {
        /// Nodes.
        #[arg(long)]
        nodes: usize,
        /// Fanout (mesh degree).
        #[arg(long, default_value_t = 6)]
        fanout: usize,
        /// Time per round (ms): one hop's latency.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Loss probability per message.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
    },
    /// Run a scenario on real libp2p nodes in this process (loopback TCP,
    /// bootstrap peers, mDNS off); faults map onto blocked peers, restarts
    /// and isolation. Not deterministic: checks are "eventually, by the
    /// deadline".
    SwarmReal {
        /// Scenario file.
        scenario: PathBuf,
        /// Nodes (1–20; default the scenario's `cluster.size`, capped at 20).
        #[arg(long)]
        nodes: Option<usize>,
        /// Seed of the workload's choices and the scenario's random draws.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory (default `sim-out/<scenario>/real-<seed>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Multiply every scenario and protocol time by this (default: the
        /// timeline fits in 60 s, never slower than real time).
        #[arg(long)]
        time_scale: Option<f64>,
    },
    /// Random scenarios, everything drawn from each seed: a bug hunt.
    /// Seeds run in parallel; each gets its run directory `OUT/<seed>` and
    /// one log line (in seed order); a summary groups the seeds by verdict
    /// and failure class.
    Swarm {
        /// A seed range `A..B`.
        #[arg(long, default_value = "1..20")]
        seeds: String,
        /// Output directory.
        #[arg(long, default_value = "sim-out/swarm")]
        out: PathBuf,
        /// Seeds run at once (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Stop starting seeds at the first run that is not valid (runs
        /// already started finish).
        #[arg(long)]
        until_failure: bool,
        /// Stop starting seeds after this long (`90s`, `10m`, `1h`).
        #[arg(long, value_parser = parse_duration)]
        time_budget: Option<Duration>,
    },
    /// Shrink a failing run: search for a smaller scenario (fewer nodes,
    /// fewer and shorter faults, fewer writes, a shorter run) that fails
    /// the same way (same verdict, same failed check), and write it with
    /// its seed and a one-line story to `<run-dir>/shrunk/`.
    Shrink {
        /// A failing run's directory (from `run` or `swarm`).
        dir: PathBuf,
        /// Most simulation runs to spend.
        #[arg(long, default_value_t = 200)]
        max_runs: usize,
        /// Stop searching after this long (`90s`, `10m`); the result then
        /// depends on the machine's speed.
        #[arg(long, value_parser = parse_duration)]
        time_budget: Option<Duration>,
    },
}

/// `90s`, `10m`, `1h`, `500ms`; a bare number is seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 90s, 10m, 1h)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration {s:?} (e.g. 90s, 10m, 1h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Run {
            scenarios,
            seed,
            seeds,
            out,
        } => cmd_run(&scenarios, seed, seeds.as_deref(), out.as_deref()),
        Cmd::Replay { dir } => cmd_replay(&dir),
        Cmd::CheckDeterminism { scenario, seed } => cmd_determinism(&scenario, seed),
        Cmd::Compare { baseline, current } => cmd_compare(&baseline, &current),
        Cmd::Model {
            nodes,
            fanout,
            interval,
            loss,
        } => {
            println!("round,time_ms,expected_fraction_informed");
            for (i, f) in starling_sim::model::epidemic_curve(nodes, fanout, loss, 1000)
                .iter()
                .enumerate()
            {
                println!("{i},{:.1},{f:.6}", i as f64 * interval);
            }
            0
        }
        Cmd::Swarm {
            seeds,
            out,
            jobs,
            until_failure,
            time_budget,
        } => cmd_swarm(&seeds, &out, jobs, until_failure, time_budget),
        Cmd::Shrink {
            dir,
            max_runs,
            time_budget,
        } => cmd_shrink(&dir, max_runs, time_budget),
        Cmd::SwarmReal {
            scenario,
            nodes,
            seed,
            out,
            time_scale,
        } => cmd_swarm_real(&scenario, nodes, seed, out.as_deref(), time_scale),
    };
    ExitCode::from(code as u8)
}

fn harness_error(msg: impl std::fmt::Display) -> i32 {
    eprintln!("starling-sim: error: {msg}");
    3
}

fn parse_seeds(seed: Option<u64>, seeds: Option<&str>) -> Result<Vec<u64>, String> {
    if let Some(s) = seed {
        return Ok(vec![s]);
    }
    let Some(r) = seeds else {
        return Ok(vec![1]);
    };
    let (a, b, incl) = if let Some((a, b)) = r.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = r.split_once("..") {
        (a, b, false)
    } else {
        return r
            .parse()
            .map(|s| vec![s])
            .map_err(|_| format!("bad seed range {r:?}"));
    };
    let a: u64 = a.parse().map_err(|_| format!("bad seed range {r:?}"))?;
    let b: u64 = b.parse().map_err(|_| format!("bad seed range {r:?}"))?;
    let end = if incl { b + 1 } else { b };
    if end <= a {
        return Err(format!("empty seed range {r:?}"));
    }
    Ok((a..end).collect())
}

fn combine(codes: &[i32]) -> i32 {
    if codes.iter().any(|c| *c >= 3) {
        3
    } else if codes.contains(&1) {
        1
    } else if codes.contains(&2) {
        2
    } else {
        0
    }
}

fn run_and_write(
    sc: &Scenario,
    path_label: &str,
    seed: u64,
    dir: &Path,
) -> Result<(Verdict, String), String> {
    let progress = std::io::stderr().is_terminal();
    // The one wall-clock read of the harness: how long a run took (reported,
    // never fed into the simulation).
    #[allow(clippy::disallowed_methods)]
    let start = std::time::Instant::now();
    let mut r = starling_sim::run(sc, seed, RunOptions { progress, logs: true });
    // The hidden planted check (see `hunt::Plant`), for reproducing a
    // shrunk planted failure.
    let plant = Plant::from_env()?;
    if let Some(p) = plant {
        p.apply(&mut r);
    }
    let prov = Provenance {
        scenario_path: path_label.to_string(),
        git_rev: report::git_rev(),
        wall_ms: start.elapsed().as_millis() as u64,
    };
    report::write_run(dir, &r, &prov)
        .and_then(|_| match plant {
            Some(p) => std::fs::write(dir.join(PLANT_FILE), p.as_str()),
            None => Ok(()),
        })
        .map_err(|e| format!("writing {}: {e}", dir.display()))?;
    for line in run_lines(&r, &prov, dir) {
        println!("{line}");
    }
    Ok((r.summary.verdict, report::results_json(&r, &prov).to_string()))
}

/// The log lines of a finished run: one with its verdict and figures (CI
/// counts the lines with ` valid `), and a `FAIL` line with the first
/// reason and the reproduction when it is not valid.
fn run_lines(r: &RunResult, prov: &Provenance, dir: &Path) -> Vec<String> {
    let m = &r.summary.metrics;
    let seed = r.summary.seed;
    let mut lines = vec![format!(
        "{:<28} seed {:<6} {:<8} reach p99 {:>6} ms  lost {}  converge {:>6} ms  {} events in {:.2} s  → {}",
        r.summary.scenario.name,
        seed,
        format!("{:?}", r.summary.verdict).to_lowercase(),
        m["write_reach_p99_ms"],
        m["lost_writes"],
        m["converge_after_heal_ms"],
        r.events,
        prov.wall_ms as f64 / 1000.0,
        dir.join("summary.md").display()
    )];
    if r.summary.verdict != Verdict::Valid {
        lines.push(format!(
            "FAIL {} seed {} ({:?}): {} | repro: {}",
            r.summary.scenario.name,
            seed,
            r.summary.verdict,
            r.summary.reasons.first().map(String::as_str).unwrap_or("?"),
            report::repro_line(prov, seed)
        ));
    }
    lines
}

fn cmd_run(paths: &[PathBuf], seed: Option<u64>, seeds: Option<&str>, out: Option<&Path>) -> i32 {
    let seeds = match parse_seeds(seed, seeds) {
        Ok(s) => s,
        Err(e) => return harness_error(e),
    };
    let single = paths.len() == 1 && seeds.len() == 1;
    let mut codes = Vec::new();
    for path in paths {
        let sc = match Scenario::load(path) {
            Ok(s) => s,
            Err(e) => {
                codes.push(harness_error(e));
                continue;
            }
        };
        let root = match out {
            Some(o) if single => o.to_path_buf(),
            Some(o) => o.join(&sc.name),
            None => PathBuf::from("sim-out").join(&sc.name),
        };
        let mut rows = Vec::new();
        for &s in &seeds {
            let dir = if single && out.is_some() {
                root.clone()
            } else {
                root.join(s.to_string())
            };
            match run_and_write(&sc, &path.display().to_string(), s, &dir) {
                Ok((v, json)) => {
                    codes.push(v.exit_code());
                    rows.push((s, serde_json::from_str(&json).unwrap_or_default()));
                }
                Err(e) => codes.push(harness_error(e)),
            }
        }
        if !(single && out.is_some()) {
            let md = report::aggregate_md(&sc.name, &rows);
            let _ = std::fs::create_dir_all(&root);
            if let Err(e) = std::fs::write(root.join("summary.md"), &md) {
                codes.push(harness_error(e));
            }
            if seeds.len() > 1 {
                println!("{md}");
            }
        }
    }
    combine(&codes)
}

fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn cmd_replay(dir: &Path) -> i32 {
    let res = match read_json(&dir.join("results.json")) {
        Ok(v) => v,
        Err(e) => return harness_error(e),
    };
    let sc = match Scenario::load(&dir.join("scenario.resolved.toml")) {
        Ok(s) => s,
        Err(e) => return harness_error(e),
    };
    let Some(seed) = res["seed"].as_u64() else {
        return harness_error("results.json has no seed");
    };
    let plant = match Plant::of_run_dir(dir) {
        Ok(p) => p,
        Err(e) => return harness_error(e),
    };
    // A planted check reads the history: keep the logs then.
    let mut r = starling_sim::run(
        &sc,
        seed,
        RunOptions {
            progress: false,
            logs: plant.is_some(),
        },
    );
    if let Some(p) = plant {
        p.apply(&mut r);
    }
    let want = res["trace_hash"].as_str().unwrap_or("");
    let got = format!("{:016x}", r.trace_hash);
    println!(
        "replay {} seed {seed}: {:?}, trace {got} ({})",
        sc.name,
        r.summary.verdict,
        if want == got {
            "identical to the recording"
        } else {
            "DIFFERS from the recording"
        }
    );
    for reason in &r.summary.reasons {
        println!("  {reason}");
    }
    if want != got {
        return harness_error(format!("trace hash {got} differs from the recorded {want}"));
    }
    r.summary.verdict.exit_code()
}

fn cmd_determinism(path: &Path, seed: u64) -> i32 {
    let sc = match Scenario::load(path) {
        Ok(s) => s,
        Err(e) => return harness_error(e),
    };
    let a = starling_sim::run(
        &sc,
        seed,
        RunOptions {
            progress: false,
            logs: true,
        },
    );
    let b = starling_sim::run(
        &sc,
        seed,
        RunOptions {
            progress: false,
            logs: true,
        },
    );
    let same = a.trace_hash == b.trace_hash
        && a.summary.history == b.summary.history
        && a.summary.event_log == b.summary.event_log
        && serde_json::to_string(&a.summary.metrics).ok() == serde_json::to_string(&b.summary.metrics).ok();
    println!(
        "{} seed {seed}: trace {:016x} vs {:016x}, {} events: {}",
        sc.name,
        a.trace_hash,
        b.trace_hash,
        a.events,
        if same {
            "deterministic"
        } else {
            "NOT deterministic"
        }
    );
    if same {
        0
    } else {
        harness_error("two runs of the same seed differ")
    }
}

fn cmd_compare(base: &Path, cur: &Path) -> i32 {
    let load = |d: &Path| -> Vec<serde_json::Value> {
        report::find_results(d)
            .iter()
            .filter_map(|p| read_json(p).ok())
            .collect()
    };
    let (b, c) = (load(base), load(cur));
    if b.is_empty() || c.is_empty() {
        return harness_error("no results.json found under one of the directories");
    }
    let keys = [
        "write_reach_p50_ms",
        "write_reach_p99_ms",
        "lost_writes",
        "stale_reads",
        "converge_after_heal_ms",
        "detect_all_ms",
        "false_deaths",
        "wire_bytes_per_node_s",
    ];
    let mut worse = false;
    println!("| scenario | seed | metric | baseline | current | change |\n|---|---|---|---|---|---|");
    for cv in &c {
        let Some(bv) = b
            .iter()
            .find(|x| x["scenario"] == cv["scenario"] && x["seed"] == cv["seed"])
        else {
            continue;
        };
        let (name, seed) = (
            cv["scenario"].as_str().unwrap_or("?"),
            cv["seed"].as_u64().unwrap_or(0),
        );
        if bv["verdict"] != cv["verdict"] {
            println!(
                "| {name} | {seed} | verdict | {} | {} | |",
                bv["verdict"], cv["verdict"]
            );
            if cv["verdict"] != "valid" {
                worse = true;
            }
        }
        for k in keys {
            let x = bv["metrics"][k].as_f64().unwrap_or(0.0);
            let y = cv["metrics"][k].as_f64().unwrap_or(0.0);
            if x == y {
                continue;
            }
            let change = if x != 0.0 {
                (y - x) / x.abs() * 100.0
            } else {
                f64::INFINITY
            };
            println!("| {name} | {seed} | {k} | {x:.1} | {y:.1} | {change:+.0}% |");
            if ["lost_writes", "false_deaths"].contains(&k) && y > x {
                worse = true;
            }
            if k.ends_with("_ms") && y > x * 1.25 && y - x > 100.0 {
                worse = true;
            }
        }
    }
    if worse {
        println!("\ncurrent is worse than the baseline");
        1
    } else {
        println!("\nno regression");
        0
    }
}

fn cmd_swarm(
    seeds: &str,
    out: &Path,
    jobs: Option<usize>,
    until_failure: bool,
    time_budget: Option<Duration>,
) -> i32 {
    let seeds = match parse_seeds(None, Some(seeds)) {
        Ok(s) => s,
        Err(e) => return harness_error(e),
    };
    let plant = match Plant::from_env() {
        Ok(p) => p,
        Err(e) => return harness_error(e),
    };
    let git_rev = report::git_rev();
    let opts = HuntOptions {
        jobs: jobs.unwrap_or_else(hunt::default_jobs),
        until_failure,
        time_budget,
        progress: Some(std::io::stderr().is_terminal()),
    };
    let job = |seed| swarm_seed(seed, out, &git_rev, plant);
    let sum = hunt::hunt(&seeds, &opts, job, |r| {
        for line in &r.lines {
            println!("{line}");
        }
    });
    let text = sum.render();
    print!("{text}");
    let _ = std::fs::write(out.join("hunt.txt"), &text);
    sum.exit_code()
}

/// One seed of `swarm`: draw its scenario, run it (a panic caught and
/// recorded in `panic.json`), write its run directory.
fn swarm_seed(seed: u64, out: &Path, git_rev: &Option<String>, plant: Option<Plant>) -> SeedReport {
    let dir = out.join(seed.to_string());
    let error = |msg: String| SeedReport {
        seed,
        outcome: Outcome::harness(Status::Error, &msg),
        lines: vec![format!("starling-sim: error: seed {seed}: {msg}")],
    };
    let sc = match hunt::catch_run(|| starling_sim::swarm::scenario_for(seed)) {
        Ok(sc) => sc,
        Err(msg) => {
            return SeedReport {
                seed,
                outcome: Outcome::harness(Status::Panic, &msg),
                lines: vec![format!(
                    "FAIL swarm seed {seed} (Panic): drawing the scenario: {msg}"
                )],
            }
        }
    };
    let label = dir.join("scenario.toml");
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&label, sc.to_toml())) {
        return error(format!("writing {}: {e}", label.display()));
    }
    if let Some(p) = plant {
        if let Err(e) = std::fs::write(dir.join(PLANT_FILE), p.as_str()) {
            return error(e.to_string());
        }
    }
    let prov = |wall_ms| Provenance {
        scenario_path: label.display().to_string(),
        git_rev: git_rev.clone(),
        wall_ms,
    };
    #[allow(clippy::disallowed_methods)]
    let start = std::time::Instant::now();
    let run = hunt::catch_run(|| {
        let mut r = starling_sim::run(
            &sc,
            seed,
            RunOptions {
                progress: false,
                logs: true,
            },
        );
        if let Some(p) = plant {
            p.apply(&mut r);
        }
        r
    });
    let prov = prov(start.elapsed().as_millis() as u64);
    match run {
        Ok(r) => {
            if let Err(e) = report::write_run(&dir, &r, &prov) {
                return error(format!("writing {}: {e}", dir.display()));
            }
            SeedReport {
                seed,
                outcome: Outcome::of(&r.summary),
                lines: run_lines(&r, &prov, &dir),
            }
        }
        Err(msg) => {
            let outcome = Outcome::harness(Status::Panic, &msg);
            let record = serde_json::json!({
                "scenario": sc.name, "seed": seed, "panic": msg, "class": outcome.class,
                "repro": report::repro_line(&prov, seed),
            });
            let _ = std::fs::write(
                dir.join("panic.json"),
                serde_json::to_string_pretty(&record).unwrap_or_default(),
            );
            SeedReport {
                seed,
                outcome,
                lines: vec![format!(
                    "FAIL {} seed {seed} (Panic): {msg} | repro: {}",
                    sc.name,
                    report::repro_line(&prov, seed)
                )],
            }
        }
    }
}

/// What `shrink` starts from: the resolved scenario, the seed, and the
/// outcome to keep.
fn failing_run(dir: &Path) -> Result<(Scenario, u64, Outcome), String> {
    if dir.join("results.json").exists() {
        let res = read_json(&dir.join("results.json"))?;
        let sc = Scenario::load(&dir.join("scenario.resolved.toml")).map_err(|e| e.to_string())?;
        let seed = res["seed"].as_u64().ok_or("results.json has no seed")?;
        return Ok((sc, seed, Outcome::of_results(&res)));
    }
    if dir.join("panic.json").exists() {
        let res = read_json(&dir.join("panic.json"))?;
        let seed = res["seed"].as_u64().ok_or("panic.json has no seed")?;
        let msg = res["panic"].as_str().unwrap_or("panic");
        let sc = Scenario::load(&dir.join("scenario.toml")).map_err(|e| e.to_string())?;
        let resolved = hunt::catch_run(|| sc.resolve(seed))
            .map_err(|m| format!("the scenario panics while resolving ({m}): nothing to shrink"))?;
        return Ok((resolved, seed, Outcome::harness(Status::Panic, msg)));
    }
    Err(format!(
        "{}: no results.json or panic.json: not a run directory",
        dir.display()
    ))
}

fn cmd_shrink(dir: &Path, max_runs: usize, time_budget: Option<Duration>) -> i32 {
    let (sc, seed, target) = match failing_run(dir) {
        Ok(x) => x,
        Err(e) => return harness_error(e),
    };
    let plant = match Plant::of_run_dir(dir) {
        Ok(p) => p,
        Err(e) => return harness_error(e),
    };
    let opts = ShrinkOptions {
        max_runs,
        time_budget,
        plant,
    };
    eprintln!(
        "shrink {} seed {seed}: keep {} (budget {max_runs} runs)",
        sc.name,
        target.label()
    );
    let mut attempts = Vec::new();
    let sh = match shrink::shrink(&sc, seed, &target, &opts, |a| {
        eprintln!("{a}");
        attempts.push(a.to_string());
    }) {
        Ok(sh) => sh,
        Err(e) => return harness_error(e),
    };
    let out = dir.join("shrunk");
    let path = match shrink::write(&out, &sh, &dir.display().to_string(), &attempts, plant) {
        Ok(p) => p,
        Err(e) => return harness_error(format!("writing {}: {e}", out.display())),
    };
    println!(
        "shrunk in {} runs{}: {} → {}",
        sh.runs,
        sh.stopped
            .as_deref()
            .map(|w| format!(" (stopped: {w})"))
            .unwrap_or_default(),
        sh.from,
        sh.size
    );
    println!("story: {}", sh.story);
    println!("seed: {seed}");
    println!("scenario: {}", path.display());
    let env = plant
        .map(|p| format!("{}={} ", hunt::PLANT_ENV, p.as_str()))
        .unwrap_or_default();
    println!(
        "reproduce: {env}starling-sim run {} --seed {seed}",
        path.display()
    );
    if sh.result.is_some() {
        println!("replay: starling-sim replay {}", out.join("run").display());
    }
    0
}

#[cfg(feature = "real")]
fn cmd_swarm_real(
    path: &Path,
    nodes: Option<usize>,
    seed: u64,
    out: Option<&Path>,
    time_scale: Option<f64>,
) -> i32 {
    use starling_sim::real::{self, RealOptions};
    let sc = match Scenario::load(path) {
        Ok(s) => s,
        Err(e) => return harness_error(e),
    };
    let opts = RealOptions {
        nodes,
        time_scale,
        progress: std::io::stderr().is_terminal(),
        ..RealOptions::default()
    };
    let r = match real::run(&sc, seed, &opts) {
        Ok(r) => r,
        Err(e) => return harness_error(e),
    };
    let dir = out.map(Path::to_path_buf).unwrap_or_else(|| {
        PathBuf::from("sim-out")
            .join(&sc.name)
            .join(format!("real-{seed}"))
    });
    let prov = Provenance {
        scenario_path: path.display().to_string(),
        git_rev: report::git_rev(),
        wall_ms: r.wall_ms,
    };
    if let Err(e) = real::write_run(&dir, &r, &prov) {
        return harness_error(format!("writing {}: {e}", dir.display()));
    }
    let m = &r.summary.metrics;
    println!(
        "{:<28} seed {:<6} {:<8} real, {} nodes, scale {:.3}: reach p50 {} / p99 {} / max {} ms \
         (no fault in force: {} / {} / {} ms)  lost {}  converge {} ms  in {:.1} s  → {}",
        r.summary.scenario.name,
        seed,
        format!("{:?}", r.summary.verdict).to_lowercase(),
        m["nodes"],
        r.time_scale,
        m["write_reach_p50_ms"],
        m["write_reach_p99_ms"],
        m["write_reach_max_ms"],
        m["write_reach_no_fault_p50_ms"],
        m["write_reach_no_fault_p99_ms"],
        m["write_reach_no_fault_max_ms"],
        m["lost_writes"],
        m["converge_after_heal_ms"],
        r.wall_ms as f64 / 1000.0,
        dir.join("summary.md").display()
    );
    for s in &r.skipped {
        println!("  skipped: {s}");
    }
    if r.summary.verdict != Verdict::Valid {
        println!(
            "FAIL {} seed {} real ({:?}): {} | repro: {}",
            r.summary.scenario.name,
            seed,
            r.summary.verdict,
            r.summary.reasons.first().map(String::as_str).unwrap_or("?"),
            real::repro_line(&r, &prov)
        );
    }
    r.summary.verdict.exit_code()
}

#[cfg(not(feature = "real"))]
fn cmd_swarm_real(
    _path: &Path,
    _nodes: Option<usize>,
    _seed: u64,
    _out: Option<&Path>,
    _time_scale: Option<f64>,
) -> i32 {
    harness_error("built without the `real` feature: swarm-real is not available")
}
