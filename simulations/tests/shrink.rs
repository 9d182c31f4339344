//! The hunt and the shrinker on a planted failure (`STARLING_SIM_PLANT`,
//! `hunt::Plant`): every real seed passes today, so a deliberately wrong
//! check gives them something to find. A big random scenario that fails
//! the planted check must shrink to a handful of nodes and faults, still
//! failing the same way; and the command line (`swarm`, `shrink`, `run`,
//! `replay`) must carry the failure from one to the next.

use std::path::{Path, PathBuf};
use std::process::Command;

use starling_sim::hunt::{run_judged, Outcome, Plant, Status, PLANT_ENV};
use starling_sim::shrink::{shrink, ShrinkOptions, Size};
use starling_sim::Scenario;

const PLANT: Option<Plant> = Some(Plant::SplitWrite);

/// The first swarm seed whose scenario is big (at least 8 nodes and 5
/// faults) and fails the planted check: its resolved scenario and outcome.
fn big_planted_failure() -> (u64, Scenario, Outcome) {
    (1..300)
        .find_map(|seed| {
            let sc = starling_sim::swarm::scenario_for(seed).resolve(seed);
            if sc.slots() < 8 || sc.faults.len() < 5 {
                return None;
            }
            let (o, _) = run_judged(&sc, seed, PLANT);
            (o.status == Status::Invalid && o.class.as_deref() == Some("safety: planted-split-write"))
                .then_some((seed, sc, o))
        })
        .expect("a swarm seed in 1..300 with 8+ nodes and 5+ faults fails the planted check")
}

#[test]
fn a_planted_failure_in_a_big_random_scenario_shrinks_to_a_handful_of_nodes_and_faults() {
    let (seed, sc, target) = big_planted_failure();
    let from = Size::of(&sc);
    let opts = ShrinkOptions {
        plant: PLANT,
        ..ShrinkOptions::default()
    };
    let mut attempts = 0;
    let sh = shrink(&sc, seed, &target, &opts, |_| attempts += 1).expect("the failure reproduces");
    eprintln!(
        "seed {seed}: {} → {} in {} runs: {}",
        from, sh.size, sh.runs, sh.story
    );
    assert_eq!(sh.runs, attempts, "every run is reported as an attempt");
    assert!(sh.runs <= opts.max_runs);
    assert!(
        sh.outcome.same_failure(&target),
        "{:?} vs {:?}",
        sh.outcome,
        target
    );
    // A handful: the planted check needs two nodes, a partition and two
    // writes of one key.
    assert!(
        sh.size.nodes <= 3,
        "{} nodes left (from {})",
        sh.size.nodes,
        from.nodes
    );
    assert!(
        sh.size.faults <= 2,
        "{} faults left (from {})",
        sh.size.faults,
        from.faults
    );
    assert!(sh.size.fault_ms < from.fault_ms);
    assert!(sh.size.run_ms < from.run_ms);
    assert!(sh.size.writes < from.writes);
    assert!(sh.story.contains("planted-split-write"), "{}", sh.story);
    assert!(
        sh.story.starts_with(&format!("{} nodes, ", sh.size.nodes)),
        "{}",
        sh.story
    );

    // The shrunk scenario, as a file would hold it, fails the same way
    // again, and only with the plant.
    let back = Scenario::parse(&sh.scenario.to_toml()).expect("the shrunk scenario loads");
    let (again, _) = run_judged(&back.resolve(seed), seed, PLANT);
    assert!(again.same_failure(&target), "{again:?}");
    let (plain, _) = run_judged(&back.resolve(seed), seed, None);
    assert_ne!(plain.class, target.class);

    // The search is deterministic.
    let twice = shrink(&sc, seed, &target, &opts, |_| {}).expect("reproduces");
    assert_eq!(twice.scenario.to_toml(), sh.scenario.to_toml());
    assert_eq!(twice.runs, sh.runs);
}

#[test]
fn a_search_keeps_to_its_run_budget() {
    let (seed, sc, target) = big_planted_failure();
    let opts = ShrinkOptions {
        max_runs: 5,
        plant: PLANT,
        ..ShrinkOptions::default()
    };
    let sh = shrink(&sc, seed, &target, &opts, |_| {}).expect("reproduces");
    assert_eq!(sh.runs, 5);
    assert!(sh.stopped.is_some());
    assert!(sh.outcome.same_failure(&target));
    // Without the plant the recorded failure does not reproduce.
    let err = shrink(&sc, seed, &target, &ShrinkOptions::default(), |_| {})
        .err()
        .expect("no plant, no failure");
    assert!(err.contains(PLANT_ENV), "{err}");
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_starling-sim"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("starling-sim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn output(c: &mut Command) -> (i32, String) {
    let o = c.output().expect("starling-sim runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

#[test]
fn the_command_line_hunts_shrinks_reruns_and_replays_a_planted_failure() {
    let out = scratch("cli");
    // A clean hunt: every seed valid, one ` valid ` line per seed (CI
    // counts them), exit 0, a summary with nothing to report.
    let (code, log) = output(
        bin()
            .args(["swarm", "--seeds", "1..5", "--jobs", "2", "--out"])
            .arg(&out),
    );
    assert_eq!(code, 0, "{log}");
    assert_eq!(log.lines().filter(|l| l.contains(" valid ")).count(), 4, "{log}");
    assert!(log.contains("hunt: no failure"), "{log}");
    let seeds_in_order: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" valid "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(seeds_in_order, ["1", "2", "3", "4"]);

    // With the plant, stop at the first failure.
    let planted = out.join("planted");
    let (code, log) = output(
        bin()
            .env(PLANT_ENV, "split-write")
            .args([
                "swarm",
                "--seeds",
                "1..100",
                "--jobs",
                "2",
                "--until-failure",
                "--out",
            ])
            .arg(&planted),
    );
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("stopped early"), "{log}");
    assert!(log.contains("invalid: safety: planted-split-write"), "{log}");
    let failed = log
        .lines()
        .find_map(|l| l.strip_prefix("FAIL swarm-"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a FAIL line")
        .to_string();
    let run_dir = planted.join(&failed);

    // Shrink it: the plant is recorded in the run directory.
    let (code, log) = output(bin().args(["shrink", "--max-runs", "120"]).arg(&run_dir));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("story: "), "{log}");
    let shrunk = run_dir.join("shrunk");
    for f in [
        "scenario.toml",
        "seed",
        "story.txt",
        "attempts.txt",
        "run/results.json",
    ] {
        assert!(shrunk.join(f).exists(), "{f} missing: {log}");
    }
    let seed = std::fs::read_to_string(shrunk.join("seed")).unwrap();
    assert_eq!(seed.trim(), failed);
    let sc = Scenario::load(&shrunk.join("scenario.toml")).expect("loadable");
    assert!(sc.slots() <= 3, "{} nodes", sc.slots());

    // `run` reproduces it (with the plant), `replay` replays it.
    let (code, log) = output(
        bin()
            .env(PLANT_ENV, "split-write")
            .arg("run")
            .arg(shrunk.join("scenario.toml"))
            .args(["--seed", seed.trim(), "--out"])
            .arg(out.join("rerun")),
    );
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("planted-split-write"), "{log}");
    let (code, log) = output(bin().arg("replay").arg(shrunk.join("run")));
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("identical to the recording"), "{log}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn shrink_refuses_a_valid_run() {
    let out = scratch("valid");
    let (code, log) = output(bin().args(["swarm", "--seeds", "2..3", "--out"]).arg(&out));
    assert_eq!(code, 0, "{log}");
    let (code, log) = output(bin().arg("shrink").arg(Path::new(&out).join("2")));
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("nothing to shrink"), "{log}");
    let _ = std::fs::remove_dir_all(&out);
}
