//! Hunting bugs with many seeds: what one run's outcome is (its verdict and
//! its *failure class*), runs that survive a harness panic, a parallel
//! seed pool with progress and early stops, and the summary grouped by
//! verdict and failure class.
//!
//! Every run is independent and deterministic: a worker thread builds its
//! own scenario and simulator (the simulator is not `Send`; nothing of it
//! crosses threads), so running seeds in parallel changes no result.
//!
//! The module also holds the *plant*: a deliberately wrong check, switched
//! on with the hidden `STARLING_SIM_PLANT` variable, which gives the hunt and
//! the shrinker ([`crate::shrink`]) something to find while every real seed
//! passes.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

use crate::oracle::Violation;
use crate::plan::{FaultAction, FaultPlan};
use crate::scenario::Scenario;
use crate::sim::{RunOptions, RunResult, Sim};
use crate::summary::{RunSummary, Verdict};

/// The environment variable that plants a failure (see [`Plant`]).
pub const PLANT_ENV: &str = "STARLING_SIM_PLANT";

/// The file a run directory records its plant in (so `shrink` and `replay`
/// judge the run the way it was judged).
pub const PLANT_FILE: &str = "plant";

/// A deliberately wrong check, for testing the hunt and the shrinker: it
/// turns a legal behaviour into a safety violation. Hidden (test-only):
/// set `STARLING_SIM_PLANT=split-write`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    /// "No key is written on two sides of a partition while it lasts" —
    /// wrong for a leaderless store, where such writes are legal and merge
    /// as siblings. Reported as the invariant `planted-split-write`; it
    /// needs a partition, two nodes and two writes of one key.
    SplitWrite,
}

impl Plant {
    /// The invariant name planted violations carry.
    pub const SPLIT_WRITE: &'static str = "planted-split-write";

    /// Parse a plant name (`split-write`); empty or `none` is no plant.
    pub fn parse(s: &str) -> Result<Option<Plant>, String> {
        match s.trim() {
            "" | "none" => Ok(None),
            "split-write" => Ok(Some(Plant::SplitWrite)),
            other => Err(format!("unknown plant {other:?} (known: split-write)")),
        }
    }

    /// The plant of the environment ([`PLANT_ENV`]), if any.
    pub fn from_env() -> Result<Option<Plant>, String> {
        match std::env::var(PLANT_ENV) {
            Ok(v) => Plant::parse(&v),
            Err(_) => Ok(None),
        }
    }

    /// The plant a run directory recorded ([`PLANT_FILE`]), else the
    /// environment's.
    pub fn of_run_dir(dir: &std::path::Path) -> Result<Option<Plant>, String> {
        match std::fs::read_to_string(dir.join(PLANT_FILE)) {
            Ok(s) => Plant::parse(&s),
            Err(_) => Plant::from_env(),
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Plant::SplitWrite => "split-write",
        }
    }

    /// Judge a finished run with the plant: a planted violation is added
    /// to the safety violations and reasons and makes the run invalid.
    /// Reads the history, so the run must have kept its logs.
    pub fn apply(self, r: &mut RunResult) {
        let Some(v) = self.find(&r.summary) else {
            return;
        };
        let s = &mut r.summary;
        let reason = format!(
            "safety: {} at {} ms on node {:?}: {}",
            v.invariant, v.t_ms, v.node, v.detail
        );
        // After the real safety reasons, before thresholds and liveness.
        let at = s.reasons.iter().take_while(|r| r.starts_with("safety:")).count();
        s.reasons.insert(at, reason);
        s.violations.push(v);
        s.verdict = Verdict::Invalid;
    }

    /// The first planted violation of a run, if any.
    fn find(self, s: &RunSummary) -> Option<Violation> {
        match self {
            Plant::SplitWrite => split_write(s),
        }
    }
}

/// The first write (by time) of a key on one side of a partition while
/// an earlier write of that key in the same partition came from the
/// other side.
fn split_write(s: &RunSummary) -> Option<Violation> {
    let plan = FaultPlan::new(&s.scenario);
    // Acknowledged writes: (t, node, key).
    let mut writes: Vec<(u64, usize, String)> = Vec::new();
    for line in &s.history {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let kind = v["type"].as_str().unwrap_or("");
        if (kind == "put" || kind == "delete") && v["result"] == "ok" {
            if let (Some(t), Some(n), Some(k)) = (v["t_ms"].as_u64(), v["node"].as_u64(), v["key"].as_str()) {
                writes.push((t, n as usize, k.to_string()));
            }
        }
    }
    let mut best: Option<Violation> = None;
    for f in &plan.faults {
        let FaultAction::Partition { groups } = &f.action else {
            continue;
        };
        let end = f.end_ms.unwrap_or(plan.deadline_ms);
        let together = |a: usize, b: usize| {
            let ga = groups.iter().any(|g| g.contains(&a));
            let gb = groups.iter().any(|g| g.contains(&b));
            (!ga && !gb) || groups.iter().any(|g| g.contains(&a) && g.contains(&b))
        };
        let mut seen: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
        for (t, n, k) in &writes {
            if *t < f.at_ms || *t >= end {
                continue;
            }
            let nodes = seen.entry(k.as_str()).or_default();
            if let Some(&other) = nodes.iter().find(|&&o| !together(o, *n)) {
                if best.as_ref().is_none_or(|b| *t < b.t_ms) {
                    best = Some(Violation {
                        t_ms: *t,
                        invariant: Plant::SPLIT_WRITE,
                        node: Some(*n),
                        detail: format!(
                            "key {k} written on node {other} and node {n}, on two sides of {} (planted check)",
                            f.label
                        ),
                    });
                }
                break;
            }
            nodes.insert(*n);
        }
    }
    best
}

/// What a run came to, for grouping and for "fails the same way".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Every check passed.
    Valid,
    /// A check failed.
    Invalid,
    /// Liveness failed where recovery was not required.
    Unknown,
    /// The harness panicked.
    Panic,
    /// The harness could not run or write the run.
    Error,
}

impl Status {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::Invalid => "invalid",
            Status::Unknown => "unknown",
            Status::Panic => "panic",
            Status::Error => "error",
        }
    }

    /// The process exit code of a run with this status (3 for the
    /// harness's own failures).
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Valid => 0,
            Status::Invalid => 1,
            Status::Unknown => 2,
            Status::Panic | Status::Error => 3,
        }
    }
}

impl From<Verdict> for Status {
    fn from(v: Verdict) -> Status {
        match v {
            Verdict::Valid => Status::Valid,
            Verdict::Invalid => Status::Invalid,
            Verdict::Unknown => Status::Unknown,
        }
    }
}

/// A run's outcome: its status, its failure class (none when valid), its
/// first reason, and where and when its first safety violation happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The status.
    pub status: Status,
    /// The failure class of the first reason ([`failure_class`]).
    pub class: Option<String>,
    /// The first reason, as reported.
    pub reason: Option<String>,
    /// The failure classes of every reason, sorted, without repeats.
    pub classes: Vec<String>,
    /// Time of the first safety violation (ms), if any.
    pub violation_ms: Option<u64>,
    /// Node of the first safety violation, if any.
    pub node: Option<usize>,
}

impl Outcome {
    /// The outcome of a finished run.
    pub fn of(s: &RunSummary) -> Outcome {
        let reason = s.reasons.first().cloned();
        let first = s.violations.iter().min_by_key(|v| v.t_ms);
        Outcome {
            status: s.verdict.into(),
            class: reason.as_deref().map(failure_class),
            classes: classes(s.reasons.iter().map(String::as_str)),
            reason,
            violation_ms: first.map(|v| v.t_ms),
            node: first.and_then(|v| v.node),
        }
    }

    /// The outcome of a run the harness could not finish: a panic (its
    /// message) or an error.
    pub fn harness(status: Status, msg: &str) -> Outcome {
        let class = match status {
            Status::Panic => panic_class(msg),
            _ => format!("error: {}", normalize(msg)),
        };
        Outcome {
            status,
            classes: vec![class.clone()],
            class: Some(class),
            reason: Some(msg.to_string()),
            violation_ms: None,
            node: None,
        }
    }

    /// The outcome recorded in a run's `results.json`.
    pub fn of_results(v: &serde_json::Value) -> Outcome {
        let status = match v["verdict"].as_str() {
            Some("valid") => Status::Valid,
            Some("invalid") => Status::Invalid,
            Some("unknown") => Status::Unknown,
            _ => Status::Error,
        };
        let reason = v["reasons"][0].as_str().map(str::to_string);
        let first = v["violations"]
            .as_array()
            .and_then(|a| a.iter().min_by_key(|x| x["t_ms"].as_u64().unwrap_or(u64::MAX)));
        let reasons = v["reasons"].as_array().map(Vec::as_slice).unwrap_or_default();
        Outcome {
            status,
            class: reason.as_deref().map(failure_class),
            classes: classes(reasons.iter().filter_map(|r| r.as_str())),
            reason,
            violation_ms: first.and_then(|x| x["t_ms"].as_u64()),
            node: first.and_then(|x| x["node"].as_u64()).map(|n| n as usize),
        }
    }

    /// Whether it fails the way `target` does: the same status, the same
    /// failure class first, and no failure class `target` does not have
    /// (a smaller scenario must not fail in new ways as well).
    pub fn same_failure(&self, target: &Outcome) -> bool {
        self.status == target.status
            && self.class == target.class
            && self.classes.iter().all(|c| target.classes.contains(c))
    }

    /// `status` or `status: class`.
    pub fn label(&self) -> String {
        match &self.class {
            Some(c) => format!("{}: {c}", self.status.as_str()),
            None => self.status.as_str().to_string(),
        }
    }
}

fn classes<'a>(reasons: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<String> = reasons.map(failure_class).collect();
    set.into_iter().collect()
}

/// The class of a failure reason: the check's name for safety
/// (`safety: winner-monotonic`) and thresholds (`expect:
/// converge_after_heal_ms`); for liveness, the reason with its numbers
/// and example left out (`liveness: N distinct state digests on the core
/// of N nodes`).
pub fn failure_class(reason: &str) -> String {
    if let Some(rest) = reason.strip_prefix("safety: ") {
        let name = rest.split(" at ").next().unwrap_or(rest);
        return format!("safety: {name}");
    }
    if let Some(rest) = reason.strip_prefix("expect: ") {
        let name = rest.split(" = ").next().unwrap_or(rest);
        return format!("expect: {name}");
    }
    normalize(reason)
}

/// The class of a panic message: the message with numbers and examples
/// left out, and where it happened (`panic: attempt to subtract with
/// overflow at simulations/src/scenario.rs:412`).
pub fn panic_class(msg: &str) -> String {
    format!("panic: {}", normalize(msg))
}

/// Numbers become `N` and parenthesized examples (`(e.g. …)`) go, except
/// in a trailing source location (`at file.rs:12` keeps its line).
fn normalize(s: &str) -> String {
    let (body, loc) = match s.rfind(" at ") {
        Some(i) if s[i + 4..].contains(".rs:") => (&s[..i], Some(&s[i + 4..])),
        _ => (s, None),
    };
    // Drop every `(e.g. …)`, nested parentheses included.
    let mut kept = String::new();
    let mut rest = body;
    while let Some(i) = rest.find("(e.g.") {
        kept.push_str(&rest[..i]);
        let mut depth = 0usize;
        let mut end = rest.len();
        for (j, c) in rest[i..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    kept.push_str(rest);
    let mut out = String::new();
    let mut in_number = false;
    for c in kept.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    let mut out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(l) = loc {
        let _ = write!(out, " at {l}");
    }
    out
}

thread_local! {
    /// Set while [`catch_run`] runs on this thread: the panic hook records
    /// the message here instead of printing it.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Run `f`, turning a panic into `Err(message at file:line)`. The panic is
/// not printed (the caller reports it); panics outside `catch_run` print
/// as before.
pub fn catch_run<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                    (*s).to_string()
                } else if let Some(s) = info.payload().downcast_ref::<String>() {
                    s.clone()
                } else {
                    "(non-string panic payload)".to_string()
                };
                let msg = match info.location() {
                    Some(l) => format!("{msg} at {}:{}", l.file(), l.line()),
                    None => msg,
                };
                CAUGHT.with(|c| *c.borrow_mut() = Some(msg));
            } else {
                prev(info);
            }
        }));
    });
    let was = CATCHING.with(|c| c.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(was));
    r.map_err(|_| {
        CAUGHT
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| "panic".into())
    })
}

/// Run a *resolved* scenario with `seed` (logs on, no progress line),
/// judged with `plant` if any, catching a panic. The outcome, and the run
/// when it finished.
pub fn run_judged(sc: &Scenario, seed: u64, plant: Option<Plant>) -> (Outcome, Option<RunResult>) {
    let r = catch_run(|| {
        let mut r = Sim::new(
            sc.clone(),
            seed,
            RunOptions {
                progress: false,
                logs: true,
            },
        )
        .run();
        if let Some(p) = plant {
            p.apply(&mut r);
        }
        r
    });
    match r {
        Ok(r) => (Outcome::of(&r.summary), Some(r)),
        Err(msg) => (Outcome::harness(Status::Panic, &msg), None),
    }
}

/// What one seed of a hunt produced.
#[derive(Clone, Debug)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Its outcome.
    pub outcome: Outcome,
    /// Its log lines (printed in seed order).
    pub lines: Vec<String>,
}

/// How to hunt.
#[derive(Clone, Debug)]
pub struct HuntOptions {
    /// Worker threads.
    pub jobs: usize,
    /// Stop starting seeds after the first one that is not valid.
    pub until_failure: bool,
    /// Stop starting seeds after this long.
    pub time_budget: Option<Duration>,
    /// Progress on stderr: `None` off, `Some(true)` one updating line (a
    /// terminal), `Some(false)` a line every few seconds.
    pub progress: Option<bool>,
}

impl Default for HuntOptions {
    fn default() -> Self {
        HuntOptions {
            jobs: default_jobs(),
            until_failure: false,
            time_budget: None,
            progress: None,
        }
    }
}

/// The machine's cores (1 if unknown).
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What a hunt found.
#[derive(Clone, Debug, Default)]
pub struct HuntSummary {
    /// Seeds asked for.
    pub total: usize,
    /// Seeds run.
    pub done: usize,
    /// Why seeds were left out (an early stop), if any were.
    pub stopped: Option<String>,
    /// Seeds per status.
    pub by_status: BTreeMap<Status, usize>,
    /// Seeds per (status, failure class), failures only.
    pub by_class: BTreeMap<(Status, String), Vec<u64>>,
    /// Wall time of the hunt.
    pub wall: Duration,
    /// Worker threads.
    pub jobs: usize,
}

impl HuntSummary {
    fn add(&mut self, r: &SeedReport) {
        self.done += 1;
        *self.by_status.entry(r.outcome.status).or_default() += 1;
        if let Some(c) = &r.outcome.class {
            self.by_class
                .entry((r.outcome.status, c.clone()))
                .or_default()
                .push(r.seed);
        }
    }

    /// Seeds per second of wall time.
    pub fn seeds_per_s(&self) -> f64 {
        self.done as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Counts by status, `valid=3 invalid=1` (no line of it contains
    /// ` valid `, which CI counts per seed).
    pub fn counts(&self) -> String {
        counts(&self.by_status)
    }

    /// The exit code of the hunt: 0 when every seed run was valid, else
    /// the worst status's code (3 for panics and errors, then 1, then 2).
    pub fn exit_code(&self) -> i32 {
        let has = |s| self.by_status.get(&s).is_some_and(|n| *n > 0);
        if has(Status::Panic) || has(Status::Error) {
            3
        } else if has(Status::Invalid) {
            1
        } else if has(Status::Unknown) {
            2
        } else {
            0
        }
    }

    /// The summary as text: totals, rate, counts, then each failure class
    /// with its seeds.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "hunt: {} of {} seeds in {:.1} s on {} jobs ({:.1} seeds/s): {}",
            self.done,
            self.total,
            self.wall.as_secs_f64(),
            self.jobs,
            self.seeds_per_s(),
            self.counts()
        );
        if let Some(why) = &self.stopped {
            let _ = writeln!(
                s,
                "hunt: stopped early ({why}); {} seeds not run",
                self.total - self.done
            );
        }
        if self.by_class.is_empty() {
            let _ = writeln!(s, "hunt: no failure");
        }
        for ((status, class), seeds) in &self.by_class {
            let _ = writeln!(
                s,
                "hunt: {} × {}: {class}\n      seeds {}",
                seeds.len(),
                status.as_str(),
                seed_list(seeds)
            );
        }
        s
    }
}

fn counts(by: &BTreeMap<Status, usize>) -> String {
    let v: Vec<String> = by.iter().map(|(k, n)| format!("{}={n}", k.as_str())).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(" ")
    }
}

/// Sorted seeds as ranges: `1-3 7 9-10`.
pub fn seed_list(seeds: &[u64]) -> String {
    let mut v = seeds.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if j == i {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    out.join(" ")
}

/// Run `job` for every seed on `opts.jobs` threads, in seed order as far
/// as starting goes; `on_done` sees every report in seed order (on the
/// calling thread). A panic in `job` is caught and reported as the seed's
/// own failure (status [`Status::Panic`]); the hunt goes on.
pub fn hunt<J>(seeds: &[u64], opts: &HuntOptions, job: J, mut on_done: impl FnMut(&SeedReport)) -> HuntSummary
where
    J: Fn(u64) -> SeedReport + Sync,
{
    // The hunt's wall clock: progress, rate and the time budget; nothing
    // of it reaches a simulation.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let jobs = opts.jobs.max(1).min(seeds.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let budget_hit = AtomicBool::new(false);
    let mut sum = HuntSummary {
        total: seeds.len(),
        jobs,
        ..HuntSummary::default()
    };
    let mut progress = Progress::new(opts.progress, seeds.len());
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, SeedReport)>();
        for _ in 0..jobs {
            let tx = tx.clone();
            let (next, stop, budget_hit, job) = (&next, &stop, &budget_hit, &job);
            scope.spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if opts.time_budget.is_some_and(|b| start.elapsed() >= b) {
                    budget_hit.store(true, Ordering::SeqCst);
                    stop.store(true, Ordering::SeqCst);
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&seed) = seeds.get(i) else {
                    break;
                };
                let report = catch_run(|| job(seed)).unwrap_or_else(|msg| SeedReport {
                    seed,
                    outcome: Outcome::harness(Status::Panic, &msg),
                    lines: vec![format!("FAIL seed {seed} (Panic): {msg}")],
                });
                // Stop here, not when the report is read: the other
                // workers must not start more seeds meanwhile.
                if opts.until_failure && report.outcome.status != Status::Valid {
                    stop.store(true, Ordering::SeqCst);
                }
                if tx.send((i, report)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        // Reports arrive in any order; they are handed on in seed order.
        let mut pending: BTreeMap<usize, SeedReport> = BTreeMap::new();
        let mut flushed = 0usize;
        for (i, report) in rx {
            sum.add(&report);
            pending.insert(i, report);
            while let Some(r) = pending.remove(&flushed) {
                progress.clear();
                on_done(&r);
                flushed += 1;
            }
            progress.show(&sum, start.elapsed());
        }
        // Reports past a gap (cannot happen: seeds start in order and
        // every started seed reports) would still be handed on.
        for r in pending.into_values() {
            on_done(&r);
        }
        progress.finish(&sum, start.elapsed());
    });
    sum.wall = start.elapsed();
    if sum.done < sum.total {
        sum.stopped = Some(if budget_hit.load(Ordering::SeqCst) {
            "time budget spent".into()
        } else {
            "--until-failure: a seed failed".into()
        });
    }
    sum
}

/// The progress line on stderr.
struct Progress {
    mode: Option<bool>,
    total: usize,
    last: Option<Duration>,
    shown: bool,
}

impl Progress {
    fn new(mode: Option<bool>, total: usize) -> Progress {
        Progress {
            mode,
            total,
            last: None,
            shown: false,
        }
    }

    fn line(&self, sum: &HuntSummary, t: Duration) -> String {
        format!(
            "hunt: {}/{} seeds, {:.1} seeds/s, {}",
            sum.done,
            self.total,
            sum.done as f64 / t.as_secs_f64().max(1e-9),
            counts(&sum.by_status)
        )
    }

    /// Clear the updating line before other output.
    fn clear(&mut self) {
        if self.mode == Some(true) && self.shown {
            eprint!("\r\x1b[2K");
            self.shown = false;
        }
    }

    fn show(&mut self, sum: &HuntSummary, t: Duration) {
        let Some(tty) = self.mode else {
            return;
        };
        let every = if tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(5)
        };
        if self.last.is_some_and(|l| t < l + every) {
            if tty && !self.shown {
                eprint!("\r{}", self.line(sum, t));
                self.shown = true;
            }
            return;
        }
        self.last = Some(t);
        if tty {
            eprint!("\r\x1b[2K{}", self.line(sum, t));
            self.shown = true;
        } else {
            eprintln!("{}", self.line(sum, t));
        }
        let _ = std::io::stderr().flush();
    }

    fn finish(&mut self, sum: &HuntSummary, t: Duration) {
        match self.mode {
            Some(true) => {
                eprintln!("\r\x1b[2K{}", self.line(sum, t));
            }
            Some(false) => eprintln!("{}", self.line(sum, t)),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_classes_name_the_check() {
        assert_eq!(
            failure_class("safety: winner-monotonic at 1234 ms on node Some(2): key k/1 went back"),
            "safety: winner-monotonic"
        );
        assert_eq!(
            failure_class("expect: converge_after_heal_ms = -1 exceeds 5000"),
            "expect: converge_after_heal_ms"
        );
        assert_eq!(
            failure_class("liveness: 3 distinct state digests on the core of 12 nodes"),
            "liveness: N distinct state digests on the core of N nodes"
        );
        assert_eq!(
            failure_class(
                "liveness: 2 acknowledged writes lost (e.g. op 17 (\"k/1\" 3:4) missing on node 2)"
            ),
            "liveness: N acknowledged writes lost"
        );
        assert_eq!(
            panic_class("attempt to subtract with overflow at simulations/src/scenario.rs:412"),
            "panic: attempt to subtract with overflow at simulations/src/scenario.rs:412"
        );
    }

    #[test]
    fn seed_lists_are_ranges() {
        assert_eq!(seed_list(&[9, 1, 2, 3, 7, 10]), "1-3 7 9-10");
        assert_eq!(seed_list(&[]), "");
    }

    #[test]
    fn a_panicking_job_is_its_own_failure_and_the_hunt_goes_on() {
        let seeds: Vec<u64> = (1..=20).collect();
        let mut order = Vec::new();
        let opts = HuntOptions {
            jobs: 3,
            ..HuntOptions::default()
        };
        let sum = hunt(
            &seeds,
            &opts,
            |seed| {
                assert!(seed != 7, "seed {seed} broke");
                SeedReport {
                    seed,
                    outcome: Outcome {
                        status: Status::Valid,
                        class: None,
                        classes: vec![],
                        reason: None,
                        violation_ms: None,
                        node: None,
                    },
                    lines: vec![],
                }
            },
            |r| order.push(r.seed),
        );
        assert_eq!(order, seeds, "reports come in seed order");
        assert_eq!(sum.done, 20);
        assert_eq!(sum.by_status[&Status::Panic], 1);
        let ((st, class), who) = sum.by_class.iter().next().expect("one class");
        assert_eq!(*st, Status::Panic);
        assert!(class.starts_with("panic: seed N broke at "), "{class}");
        assert_eq!(who, &[7]);
        assert_eq!(sum.exit_code(), 3);
    }

    #[test]
    fn until_failure_stops_starting_seeds() {
        let seeds: Vec<u64> = (1..=1000).collect();
        let opts = HuntOptions {
            jobs: 2,
            until_failure: true,
            ..HuntOptions::default()
        };
        let sum = hunt(
            &seeds,
            &opts,
            |seed| SeedReport {
                seed,
                outcome: Outcome {
                    status: if seed == 5 {
                        Status::Invalid
                    } else {
                        // Slow enough that no worker runs far ahead.
                        std::thread::sleep(Duration::from_millis(1));
                        Status::Valid
                    },
                    class: (seed == 5).then(|| "safety: x".to_string()),
                    classes: vec![],
                    reason: None,
                    violation_ms: None,
                    node: None,
                },
                lines: vec![],
            },
            |_| {},
        );
        // Seeds 1–5, and the few the other worker started meanwhile.
        assert!(sum.done >= 5 && sum.done < 100, "{}", sum.done);
        assert!(sum.stopped.is_some());
        assert_eq!(sum.exit_code(), 1);
    }
}
