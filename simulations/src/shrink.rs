//! Shrinking a failing run: search for a smaller scenario that fails the
//! same way (same status, same failure class — see [`crate::hunt`]).
//!
//! The search is greedy and deterministic. It works on the *resolved*
//! scenario (every draw explicit) with the run's seed, and goes through
//! passes in a fixed order, each proposing reductions of the current
//! scenario:
//!
//! 1. **timeline** — drop faults that start after the first safety
//!    violation, end the run just after it, move the heal and the deadline
//!    earlier;
//! 2. **faults** — remove faults, in chunks of halving size, then one by one;
//! 3. **nodes** — remove node slots (chunks, then one by one), renumbering
//!    the rest everywhere the scenario names them; a fault left without its
//!    nodes goes too;
//! 4. **fault shapes** — halve durations, drop nodes from a fault, make a
//!    crash or mass restart keep its state, restart a permanent crash,
//!    bring a mass restart's stops closer and halve its downtimes, halve an
//!    overload's delay and drop its jitter, drop attacks, lower attack
//!    rates;
//! 5. **workload** — fewer writes, keys, reads, services, deletes, no
//!    concurrent writes or hot keys, an earlier stop;
//! 6. **environment** — no loss, bursts, duplicates, reordering, link
//!    overrides or clock errors, a constant latency.
//!
//! A proposal is kept when its run fails the same way; the passes repeat
//! until a whole round keeps nothing (a fixed point) or the budget (runs,
//! wall time) is spent. The same inputs give the same result, unless the
//! time budget cuts the search short.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::hunt::{run_judged, Outcome, Plant, Status, PLANT_ENV, PLANT_FILE};
use crate::plan::fault_end_ms;
use crate::report::{self, Provenance};
use crate::scenario::{FaultKind, Latency, Scenario};
use crate::sim::RunResult;

/// The budget and judging of a search.
#[derive(Clone, Debug)]
pub struct ShrinkOptions {
    /// Most simulation runs (the first, which reproduces the failure,
    /// included).
    pub max_runs: usize,
    /// Stop proposing after this long.
    pub time_budget: Option<Duration>,
    /// Judge runs with this plant (a failure found with it only fails with
    /// it).
    pub plant: Option<Plant>,
}

impl Default for ShrinkOptions {
    fn default() -> Self {
        ShrinkOptions {
            max_runs: 200,
            time_budget: None,
            plant: None,
        }
    }
}

/// How big a scenario is, in the terms a shrink reduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// Node slots (initial and spare).
    pub nodes: usize,
    /// Faults.
    pub faults: usize,
    /// Time faults are in force, summed (ms; instant faults count 0).
    pub fault_ms: u64,
    /// Writes the workload issues (expected: rate × time).
    pub writes: u64,
    /// The run's length (ms).
    pub run_ms: u64,
}

impl Size {
    /// The size of a resolved scenario.
    pub fn of(sc: &Scenario) -> Size {
        let heal = sc.phases.heal_at_ms;
        let deadline = sc.phases.deadline_ms;
        let fault_ms = sc.faults.iter().map(|f| effective_ms(f, heal, deadline)).sum();
        let stop = sc.workload.stop_ms.unwrap_or(deadline).min(deadline);
        let writes = (sc.workload.writes_per_sec * stop.saturating_sub(sc.workload.start_ms) as f64 / 1000.0)
            .round() as u64;
        Size {
            nodes: sc.slots(),
            faults: sc.faults.len(),
            fault_ms,
            writes,
            run_ms: deadline,
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} node{}, {} fault{} ({}), ~{} writes, {} run",
            self.nodes,
            if self.nodes == 1 { "" } else { "s" },
            self.faults,
            if self.faults == 1 { "" } else { "s" },
            secs(self.fault_ms),
            self.writes,
            secs(self.run_ms)
        )
    }
}

/// How long a fault is in force (0 for an instant fault; until the
/// deadline without an end).
fn effective_ms(f: &crate::scenario::FaultSpec, heal: Option<u64>, deadline: u64) -> u64 {
    if matches!(f.kind, FaultKind::ClockJump | FaultKind::Join | FaultKind::Leave) {
        return 0;
    }
    fault_end_ms(f, heal)
        .unwrap_or(deadline)
        .min(deadline)
        .saturating_sub(f.at_ms)
}

/// `2 s`, `1.5 s`, `250 ms`.
fn secs(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// One proposal tried.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// Runs so far (this one included).
    pub run: usize,
    /// The pass that proposed it.
    pub pass: &'static str,
    /// What it changes.
    pub change: String,
    /// Whether it failed the same way (and was kept).
    pub kept: bool,
    /// Its outcome.
    pub outcome: Outcome,
    /// The size of the scenario kept after it.
    pub size: Size,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "shrink run {:>3} [{}] {}: {} ({}) → {}",
            self.run,
            self.pass,
            self.change,
            if self.kept { "kept" } else { "rejected" },
            self.outcome.label(),
            self.size
        )
    }
}

/// The result of a search.
pub struct Shrunk {
    /// The smallest scenario found that fails the same way (resolved).
    pub scenario: Scenario,
    /// The seed (unchanged).
    pub seed: u64,
    /// Its outcome.
    pub outcome: Outcome,
    /// Its run (none when the failure is a harness panic).
    pub result: Option<RunResult>,
    /// The size it started from.
    pub from: Size,
    /// Its size.
    pub size: Size,
    /// Simulation runs spent.
    pub runs: usize,
    /// The changes kept, in order.
    pub kept: Vec<String>,
    /// Why the search ended before a fixed point, if it did.
    pub stopped: Option<String>,
    /// One line: nodes, faults, writes, run, and what fails where.
    pub story: String,
}

/// Shrink a failing run: `sc` is its resolved scenario, `seed` its seed,
/// `target` the failure to keep (the recorded outcome). `on_attempt` sees
/// every proposal tried. Fails when the run does not fail that way to
/// begin with.
pub fn shrink(
    sc: &Scenario,
    seed: u64,
    target: &Outcome,
    opts: &ShrinkOptions,
    mut on_attempt: impl FnMut(&Attempt),
) -> Result<Shrunk, String> {
    if target.status == Status::Valid {
        return Err("the run is valid: nothing to shrink".into());
    }
    // The search's wall clock, for its time budget only.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let (outcome, result) = run_judged(sc, seed, opts.plant);
    let mut runs = 1;
    let from = Size::of(sc);
    on_attempt(&Attempt {
        run: runs,
        pass: "reproduce",
        change: "the recorded scenario".into(),
        kept: outcome.same_failure(target),
        outcome: outcome.clone(),
        size: from,
    });
    if !outcome.same_failure(target) {
        return Err(format!(
            "the recorded scenario does not fail the same way: got {}, recorded {}{}",
            outcome.label(),
            target.label(),
            if opts.plant.is_none() && target.class.as_deref().is_some_and(|c| c.contains("planted")) {
                format!(" (a planted failure: set {PLANT_ENV})")
            } else {
                String::new()
            }
        ));
    }
    let mut result = result;
    let mut cur = sc.clone();
    let mut cur_outcome = outcome;
    let mut tried: HashSet<String> = HashSet::new();
    tried.insert(cur.to_toml());
    let mut kept = Vec::new();
    let mut stopped = None;
    'rounds: loop {
        let mut changed = false;
        for (pass, propose) in PASSES {
            let mut i = 0;
            loop {
                let proposals = propose(&cur, &cur_outcome);
                let Some((change, cand)) = proposals.into_iter().nth(i) else {
                    break;
                };
                let text = cand.to_toml();
                if !tried.insert(text.clone()) || Scenario::parse(&text).is_err() {
                    i += 1;
                    continue;
                }
                if runs >= opts.max_runs {
                    stopped = Some(format!("--max-runs {} spent", opts.max_runs));
                    break 'rounds;
                }
                if opts.time_budget.is_some_and(|b| start.elapsed() >= b) {
                    stopped = Some("time budget spent".into());
                    break 'rounds;
                }
                runs += 1;
                let (o, r) = run_judged(&cand, seed, opts.plant);
                let ok = o.same_failure(target);
                if ok {
                    cur = cand;
                    cur_outcome = o.clone();
                    result = r;
                    kept.push(change.clone());
                    changed = true;
                } else {
                    i += 1;
                }
                on_attempt(&Attempt {
                    run: runs,
                    pass,
                    change,
                    kept: ok,
                    outcome: o,
                    size: Size::of(&cur),
                });
            }
        }
        if !changed {
            break;
        }
    }
    let size = Size::of(&cur);
    let story = story(&cur, &cur_outcome, result.as_ref());
    Ok(Shrunk {
        scenario: cur,
        seed,
        outcome: cur_outcome,
        result,
        from,
        size,
        runs,
        kept,
        stopped,
        story,
    })
}

type Propose = fn(&Scenario, &Outcome) -> Vec<(String, Scenario)>;

/// The passes, in order.
const PASSES: [(&str, Propose); 6] = [
    ("faults", drop_faults),
    ("nodes", drop_nodes),
    ("timeline", timeline),
    ("fault shapes", fault_shapes),
    ("workload", workload),
    ("environment", environment),
];

/// Chunks of `0..n` of halving sizes: `n/2`, `n/4`, …, 1.
fn chunks(n: usize) -> Vec<std::ops::Range<usize>> {
    let mut v = Vec::new();
    let mut size = n / 2;
    loop {
        let size_now = size.max(1);
        let mut a = 0;
        while a < n {
            v.push(a..(a + size_now).min(n));
            a += size_now;
        }
        if size_now == 1 {
            break;
        }
        size /= 2;
    }
    v
}

/// The latest instant any fault needs: its start, and its end when it
/// has its own duration.
fn faults_floor(sc: &Scenario) -> u64 {
    sc.faults
        .iter()
        .map(|f| f.at_ms + 1 + f.duration_ms.unwrap_or(0))
        .max()
        .unwrap_or(0)
}

/// End the run at `deadline`: the heal and the workload's stop no later.
fn with_deadline(sc: &Scenario, deadline: u64) -> Scenario {
    let mut s = sc.clone();
    s.phases.deadline_ms = deadline;
    s.phases.heal_at_ms = s.phases.heal_at_ms.map(|h| h.min(deadline));
    s.workload.stop_ms = s.workload.stop_ms.map(|t| t.min(deadline));
    s.faults.retain(|f| f.at_ms < deadline);
    s
}

fn timeline(sc: &Scenario, o: &Outcome) -> Vec<(String, Scenario)> {
    let mut v = Vec::new();
    let deadline = sc.phases.deadline_ms;
    if let Some(t) = o.violation_ms {
        let after = sc.faults.iter().filter(|f| f.at_ms > t).count();
        if after > 0 {
            let mut s = sc.clone();
            s.faults.retain(|f| f.at_ms <= t);
            v.push((format!("drop the {after} faults after the failure at {t} ms"), s));
        }
        let end = (t / 1000 + 1) * 1000;
        if end < deadline {
            v.push((
                format!("end the run at {} (the failure is at {t} ms)", secs(end)),
                with_deadline(sc, end),
            ));
        }
    }
    // Everything earlier: faults, heal, deadline, writes' stop (the
    // cluster still forms from the start).
    let first = sc.faults.iter().map(|f| f.at_ms).min().unwrap_or(0);
    if first >= 2000 {
        let d = first / 2;
        let mut s = sc.clone();
        for f in &mut s.faults {
            f.at_ms -= d;
        }
        s.phases.heal_at_ms = s.phases.heal_at_ms.map(|h| h.saturating_sub(d).max(1));
        s.phases.deadline_ms -= d;
        s.workload.stop_ms = s
            .workload
            .stop_ms
            .map(|t| t.saturating_sub(d).max(s.workload.start_ms));
        v.push((format!("everything {} earlier", secs(d)), s));
    }
    let floor = faults_floor(sc).max(1000);
    if let Some(h) = sc.phases.heal_at_ms {
        if h > floor + 500 {
            let nh = floor + (h - floor) / 2;
            let mut s = sc.clone();
            s.phases.heal_at_ms = Some(nh);
            s.workload.stop_ms = s.workload.stop_ms.map(|t| t.min(nh));
            v.push((format!("heal at {} instead of {}", secs(nh), secs(h)), s));
        }
    }
    let floor = floor.max(sc.phases.heal_at_ms.unwrap_or(0) + 1);
    if deadline > floor + 500 {
        let nd = floor + (deadline - floor) / 2;
        v.push((
            format!("end the run at {} instead of {}", secs(nd), secs(deadline)),
            with_deadline(sc, nd),
        ));
    }
    v
}

fn drop_faults(sc: &Scenario, _: &Outcome) -> Vec<(String, Scenario)> {
    chunks(sc.faults.len())
        .into_iter()
        .map(|r| {
            let mut s = sc.clone();
            let what = if r.len() == 1 {
                format!(
                    "drop fault {} ({} at {} ms)",
                    r.start,
                    sc.faults[r.start].label(),
                    sc.faults[r.start].at_ms
                )
            } else {
                format!("drop faults {}..{}", r.start, r.end)
            };
            s.faults.drain(r);
            (what, s)
        })
        .collect()
}

/// The scenario without the node slots `drop`, the others renumbered
/// (links, clocks, faults); a fault left without the nodes it acts on
/// goes. `None` when no initial node would be left.
pub fn remove_slots(sc: &Scenario, drop: &BTreeSet<usize>) -> Option<Scenario> {
    let n0 = sc.cluster.size;
    let drop_initial = drop.iter().filter(|&&i| i < n0).count();
    let drop_spare = drop.iter().filter(|&&i| i >= n0 && i < sc.slots()).count();
    if drop_initial >= n0 || drop_initial + drop_spare == 0 {
        return None;
    }
    let map = |i: usize| -> Option<usize> { (!drop.contains(&i)).then(|| i - drop.range(..i).count()) };
    let map_all = |v: &[usize]| -> Vec<usize> { v.iter().filter_map(|&i| map(i)).collect() };
    let mut s = sc.clone();
    s.cluster.size -= drop_initial;
    s.cluster.spare -= drop_spare;
    s.cluster.seeds = s.cluster.seeds.min(s.cluster.size).max(1);
    s.network.links = sc
        .network
        .links
        .iter()
        .filter_map(|l| {
            let mut l = l.clone();
            l.from = map(l.from)?;
            l.to = map(l.to)?;
            Some(l)
        })
        .collect();
    s.clock.nodes = sc
        .clock
        .nodes
        .iter()
        .filter_map(|c| {
            let mut c = c.clone();
            c.node = map(c.node)?;
            Some(c)
        })
        .collect();
    s.faults = sc
        .faults
        .iter()
        .filter_map(|f| {
            let mut f = f.clone();
            f.nodes = map_all(&f.nodes);
            f.restore_order = map_all(&f.restore_order);
            f.restarts = f
                .restarts
                .iter()
                .filter_map(|r| {
                    let mut r = r.clone();
                    r.node = map(r.node)?;
                    Some(r)
                })
                .collect();
            let had_to = !f.to.is_empty();
            f.to = map_all(&f.to);
            f.groups = f
                .groups
                .iter()
                .map(|g| map_all(g))
                .filter(|g| !g.is_empty())
                .collect();
            let keep = match f.kind {
                FaultKind::Partition => !f.groups.is_empty(),
                // An emptied receiver list would mean "everyone else".
                FaultKind::OneWay => !(f.nodes.is_empty() || had_to && f.to.is_empty()),
                _ => !f.nodes.is_empty(),
            };
            keep.then_some(f)
        })
        .collect();
    Some(s)
}

fn drop_nodes(sc: &Scenario, _: &Outcome) -> Vec<(String, Scenario)> {
    chunks(sc.slots())
        .into_iter()
        .filter_map(|r| {
            let set: BTreeSet<usize> = r.clone().collect();
            let s = remove_slots(sc, &set)?;
            let what = if r.len() == 1 {
                format!("drop node {}", r.start)
            } else {
                format!("drop nodes {}..{}", r.start, r.end)
            };
            Some((what, s))
        })
        .collect()
}

fn fault_shapes(sc: &Scenario, _: &Outcome) -> Vec<(String, Scenario)> {
    let mut v = Vec::new();
    let heal = sc.phases.heal_at_ms;
    let deadline = sc.phases.deadline_ms;
    for (i, f) in sc.faults.iter().enumerate() {
        let with = |change: &dyn Fn(&mut crate::scenario::FaultSpec)| {
            let mut s = sc.clone();
            change(&mut s.faults[i]);
            s
        };
        let d = effective_ms(f, heal, deadline);
        if d >= 200 {
            v.push((
                format!(
                    "fault {i} ({}) lasts {} instead of {}",
                    f.kind,
                    secs(d / 2),
                    secs(d)
                ),
                with(&|f| f.duration_ms = Some(d / 2)),
            ));
        }
        if f.nodes.len() > 1 && f.kind != FaultKind::Swizzle {
            for (k, n) in f.nodes.iter().enumerate() {
                v.push((
                    format!("fault {i} ({}) without node {n}", f.kind),
                    with(&|f| {
                        let gone = f.nodes.remove(k);
                        f.restarts.retain(|r| r.node != gone);
                    }),
                ));
            }
        }
        if f.restarts.iter().any(|r| r.stop_ms >= 2) {
            v.push((
                format!("fault {i} (mass-restart) stops its nodes twice as close together"),
                with(&|f| {
                    for r in &mut f.restarts {
                        r.stop_ms /= 2;
                    }
                    f.window_ms = f.window_ms.map(|w| w / 2);
                }),
            ));
        }
        if f.restarts.iter().any(|r| r.down_ms >= 2) {
            v.push((
                format!("fault {i} (mass-restart) with half the downtimes"),
                with(&|f| {
                    for r in &mut f.restarts {
                        r.down_ms = (r.down_ms / 2).max(1);
                    }
                    f.downtime_ms = f.downtime_ms.map(|d| (d / 2).max(1));
                }),
            ));
        }
        if let Some(d) = f.delay_ms.filter(|d| *d >= 2) {
            v.push((
                format!("fault {i} (overload) late by {} ms instead of {d}", d / 2),
                with(&|f| f.delay_ms = Some(d / 2)),
            ));
        }
        if f.jitter_ms.is_some_and(|j| j > 0) {
            v.push((
                format!("fault {i} (overload) without jitter"),
                with(&|f| f.jitter_ms = Some(0)),
            ));
        }
        if f.kind == FaultKind::Swizzle && f.nodes.len() > 1 {
            for n in f.nodes.clone() {
                v.push((
                    format!("fault {i} (swizzle) without node {n}"),
                    with(&|f| {
                        f.nodes.retain(|&x| x != n);
                        f.restore_order.retain(|&x| x != n);
                    }),
                ));
            }
        }
        if f.to.len() > 1 {
            for (k, n) in f.to.iter().enumerate() {
                v.push((
                    format!("fault {i} ({}) not to node {n}", f.kind),
                    with(&|f| {
                        f.to.remove(k);
                    }),
                ));
            }
        }
        if f.groups.len() > 1 {
            for k in 0..f.groups.len() {
                v.push((
                    format!("fault {i} ({}) without group {k}", f.kind),
                    with(&|f| {
                        f.groups.remove(k);
                    }),
                ));
            }
        }
        if f.permanent {
            v.push((
                format!("fault {i} (crash) restarts"),
                with(&|f| f.permanent = false),
            ));
        }
        if f.state.as_deref() == Some("lost") {
            v.push((
                format!("fault {i} ({}) keeps its state", f.kind),
                with(&|f| f.state = Some("kept".into())),
            ));
        }
        if f.jump_ms.is_some_and(|j| j.abs() >= 200) {
            let j = f.jump_ms.unwrap_or(0);
            v.push((
                format!("fault {i} (clock-jump) jumps {} ms instead of {j}", j / 2),
                with(&|f| f.jump_ms = Some(j / 2)),
            ));
        }
        if f.attacks.len() > 1 {
            for r in chunks(f.attacks.len()) {
                let names: Vec<&str> = f.attacks[r.clone()].iter().map(|a| a.as_str()).collect();
                v.push((
                    format!("fault {i} (byzantine) without {}", names.join(", ")),
                    with(&|f| {
                        f.attacks.drain(r.clone());
                    }),
                ));
            }
        }
        if let Some(rate) = f.rate_per_s.filter(|r| *r > 0.5) {
            v.push((
                format!("fault {i} (byzantine) at {} rounds/s", rate / 2.0),
                with(&|f| f.rate_per_s = Some(rate / 2.0)),
            ));
        }
        if let Some(b) = f.burst.filter(|b| *b > 1) {
            v.push((
                format!("fault {i} (byzantine) bursts of {}", b / 2),
                with(&|f| f.burst = Some(b / 2)),
            ));
        }
    }
    v
}

fn workload(sc: &Scenario, _: &Outcome) -> Vec<(String, Scenario)> {
    let w = &sc.workload;
    let mut v = Vec::new();
    let mut push = |what: String, f: &dyn Fn(&mut crate::scenario::WorkloadSpec)| {
        let mut s = sc.clone();
        f(&mut s.workload);
        v.push((what, s));
    };
    if let Some(stop) = w.stop_ms.filter(|t| *t > w.start_ms + 1000) {
        let ns = w.start_ms + (stop - w.start_ms) / 2;
        push(format!("writes stop at {}", secs(ns)), &|w| w.stop_ms = Some(ns));
        let ns = w.start_ms + (stop - w.start_ms) / 2;
        push(format!("writes start at {}", secs(ns)), &|w| w.start_ms = ns);
    }
    if w.writes_per_sec > 0.25 {
        let r = w.writes_per_sec / 2.0;
        push(format!("{r:.2} writes/s"), &|w| w.writes_per_sec = r);
    }
    if w.keys > 1 {
        let k = w.keys / 2;
        push(format!("{k} keys"), &|w| w.keys = k);
    }
    if w.hot_keys > 0 || w.hot_fraction > 0.0 {
        push("no hot keys".into(), &|w| {
            w.hot_keys = 0;
            w.hot_fraction = 0.0;
        });
    }
    if w.concurrent > 0.0 {
        push("no concurrent writes".into(), &|w| w.concurrent = 0.0);
    }
    if w.delete_fraction > 0.0 {
        push("no deletes".into(), &|w| w.delete_fraction = 0.0);
    }
    if w.reads_per_sec > 0.0 {
        push("no reads".into(), &|w| w.reads_per_sec = 0.0);
    }
    if w.services > 0 {
        push("no services".into(), &|w| w.services = 0);
        if w.services > 1 {
            let n = w.services / 2;
            push(format!("{n} services"), &|w| w.services = n);
        }
    }
    if w.health_flap > 0.0 {
        push("no health flaps".into(), &|w| w.health_flap = 0.0);
    }
    v
}

fn environment(sc: &Scenario, _: &Outcome) -> Vec<(String, Scenario)> {
    let mut v = Vec::new();
    let mut push = |what: &str, f: &dyn Fn(&mut Scenario)| {
        let mut s = sc.clone();
        f(&mut s);
        v.push((what.to_string(), s));
    };
    let n = &sc.network;
    if n.loss > 0.0 {
        push("no message loss", &|s| s.network.loss = 0.0);
    }
    if n.burst.is_some() {
        push("no burst loss", &|s| s.network.burst = None);
    }
    if n.duplicate > 0.0 {
        push("no duplicates", &|s| s.network.duplicate = 0.0);
    }
    if n.reorder > 0.0 {
        push("no reordering", &|s| s.network.reorder = 0.0);
    }
    if !n.links.is_empty() {
        push("no link overrides", &|s| s.network.links.clear());
    }
    if sc.cluster.regions > 1 || n.inter_region_latency.is_some() {
        push("one region", &|s| {
            s.cluster.regions = 1;
            s.network.inter_region_latency = None;
        });
    }
    let constant = Latency::Constant { ms: 2.0 };
    if n.latency != constant {
        push("a constant 2 ms latency", &|s| {
            s.network.latency = constant.clone()
        });
    }
    if !sc.clock.nodes.is_empty() {
        push("no clock errors", &|s| s.clock.nodes.clear());
        for c in &sc.clock.nodes {
            let node = c.node;
            v.push((format!("no clock error on node {node}"), {
                let mut s = sc.clone();
                s.clock.nodes.retain(|c| c.node != node);
                s
            }));
        }
    }
    v
}

/// One line: `3 nodes, 1 partition of 2 s, 4 writes, 12 s run:
/// planted-split-write broken on node 2 at 5.3 s`.
pub fn story(sc: &Scenario, o: &Outcome, r: Option<&RunResult>) -> String {
    let heal = sc.phases.heal_at_ms;
    let deadline = sc.phases.deadline_ms;
    let mut by_kind: BTreeMap<FaultKind, Vec<u64>> = BTreeMap::new();
    for f in &sc.faults {
        by_kind
            .entry(f.kind)
            .or_default()
            .push(effective_ms(f, heal, deadline));
    }
    let faults = if by_kind.is_empty() {
        "no fault".to_string()
    } else {
        let parts: Vec<String> = by_kind
            .iter()
            .map(|(k, ds)| {
                let name = if ds.len() == 1 {
                    k.as_str().to_string()
                } else if k.as_str().ends_with('h') {
                    format!("{}es", k.as_str())
                } else {
                    format!("{}s", k.as_str())
                };
                if ds.iter().all(|d| *d == 0) {
                    format!("{} {name}", ds.len())
                } else if ds.len() <= 3 {
                    let list: Vec<String> = ds.iter().map(|d| secs(*d)).collect();
                    format!("{} {name} of {}", ds.len(), list.join(", "))
                } else {
                    format!("{} {name} of {} in all", ds.len(), secs(ds.iter().sum()))
                }
            })
            .collect();
        parts.join(", ")
    };
    let writes = match r {
        Some(r) => r.summary.metrics.get("writes_acked").copied().unwrap_or(0.0) as u64,
        None => Size::of(sc).writes,
    };
    let failure = match (&o.class, o.violation_ms) {
        (Some(c), Some(t)) if c.starts_with("safety: ") => {
            let node = o.node.map(|n| format!(" on node {n}")).unwrap_or_default();
            format!("{} broken{node} at {}", &c["safety: ".len()..], secs(t))
        }
        (Some(c), _) => c.clone(),
        (None, _) => o.status.as_str().to_string(),
    };
    format!(
        "{} nodes, {faults}, {writes} writes, {} run: {failure}",
        sc.slots(),
        secs(deadline)
    )
}

/// Write a search's result into `dir` (created): `scenario.toml` (the
/// shrunk scenario, runnable with `starling-sim run --seed`), `seed`,
/// `story.txt`, `attempts.txt` (`attempts`, one per line) and the shrunk
/// run's own outputs under `run/` (for `starling-sim replay`). Returns the
/// scenario file's path.
pub fn write(
    dir: &Path,
    sh: &Shrunk,
    source: &str,
    attempts: &[String],
    plant: Option<Plant>,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("scenario.toml");
    let mut sc = sh.scenario.clone();
    if !sc.name.ends_with("-shrunk") {
        sc.name = format!("{}-shrunk", sc.name);
    }
    sc.description = sh.story.clone();
    let mut text = String::new();
    let _ = writeln!(text, "# {}", sh.story);
    let _ = writeln!(
        text,
        "# Shrunk by `starling-sim shrink` from {source} ({} runs).",
        sh.runs
    );
    let _ = writeln!(text, "# Seed: {}", sh.seed);
    let env = plant
        .map(|p| format!("{PLANT_ENV}={} ", p.as_str()))
        .unwrap_or_default();
    let _ = writeln!(
        text,
        "# Reproduce: {env}starling-sim run {} --seed {}",
        path.display(),
        sh.seed
    );
    if plant.is_some() {
        let _ = writeln!(text, "# (a planted failure: it fails only with {PLANT_ENV} set)");
    }
    text.push('\n');
    text.push_str(&sc.to_toml());
    std::fs::write(&path, text)?;
    std::fs::write(dir.join("seed"), format!("{}\n", sh.seed))?;
    std::fs::write(dir.join("story.txt"), format!("{}\n", sh.story))?;
    let mut log = attempts.join("\n");
    log.push('\n');
    std::fs::write(dir.join("attempts.txt"), log)?;
    let run_dir = dir.join("run");
    match &sh.result {
        Some(r) => {
            let prov = Provenance {
                scenario_path: path.display().to_string(),
                git_rev: report::git_rev(),
                wall_ms: 0,
            };
            report::write_run(&run_dir, r, &prov)?;
            if let Some(p) = plant {
                std::fs::write(run_dir.join(PLANT_FILE), p.as_str())?;
            }
        }
        None => {
            std::fs::create_dir_all(&run_dir)?;
            std::fs::write(
                run_dir.join("panic.txt"),
                format!("{}\n", sh.outcome.reason.as_deref().unwrap_or("panic")),
            )?;
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_halve_down_to_one() {
        assert_eq!(chunks(4), vec![0..2, 2..4, 0..1, 1..2, 2..3, 3..4]);
        assert_eq!(chunks(1), vec![0..1]);
        assert!(chunks(0).is_empty());
    }

    #[test]
    fn removing_slots_renumbers_every_reference() {
        let mut sc = crate::swarm::scenario_for(3).resolve(3);
        sc.cluster.size = 5;
        sc.cluster.spare = 1;
        sc.faults.clear();
        sc.clock.nodes.clear();
        let text = r#"
            [[fault]]
            kind = "partition"
            at_ms = 1000
            groups = [[0, 1], [2, 4]]
            [[fault]]
            kind = "crash"
            at_ms = 2000
            nodes = [1]
            [[fault]]
            kind = "one-way"
            at_ms = 3000
            nodes = [3]
            to = [1]
            [[fault]]
            kind = "join"
            at_ms = 4000
            nodes = [5]
        "#;
        #[derive(serde::Deserialize)]
        struct F {
            fault: Vec<crate::scenario::FaultSpec>,
        }
        sc.faults = toml::from_str::<F>(text).expect("faults").fault;
        let s = remove_slots(&sc, &BTreeSet::from([1])).expect("some left");
        assert_eq!((s.cluster.size, s.cluster.spare), (4, 1));
        // The crash of node 1 and the one-way to node 1 go; the partition
        // loses node 1, node 4 becomes 3; the join of spare 5 becomes 4.
        assert_eq!(s.faults.len(), 2);
        assert_eq!(s.faults[0].groups, vec![vec![0], vec![1, 3]]);
        assert_eq!(s.faults[1].nodes, vec![4]);
        assert!(remove_slots(&sc, &(0..5).collect()).is_none());
    }

    #[test]
    fn shrinking_a_mass_restart_keeps_its_schedule_in_step_with_its_nodes() {
        let mut sc = crate::swarm::scenario_for(3).resolve(3);
        sc.cluster.size = 5;
        sc.cluster.spare = 0;
        sc.clock.nodes.clear();
        sc.faults = Scenario::parse(
            "[cluster]\nsize = 5\n[[fault]]\nkind = \"mass-restart\"\nat_ms = 1000\nnodes = [1, 3, 4]\n",
        )
        .expect("valid")
        .resolve(3)
        .faults;
        let s = remove_slots(&sc, &BTreeSet::from([3])).expect("some left");
        let f = &s.faults[0];
        assert_eq!(f.nodes, [1, 3]);
        let mut restarted: Vec<usize> = f.restarts.iter().map(|r| r.node).collect();
        restarted.sort_unstable();
        assert_eq!(restarted, [1, 3], "node 4 became 3, node 3's restart went");
        let o = Outcome::harness(Status::Panic, "x");
        for (what, cand) in fault_shapes(&sc, &o) {
            let f = &cand.faults[0];
            let mut restarted: Vec<usize> = f.restarts.iter().map(|r| r.node).collect();
            restarted.sort_unstable();
            assert_eq!(restarted, f.nodes, "{what}");
            assert!(Scenario::parse(&cand.to_toml()).is_ok(), "{what}");
        }
    }
}
