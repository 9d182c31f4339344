//! The fault kinds users of Serf and Consul hit: a mass restart, an
//! overloaded node, a partition longer than the tombstone and grave TTLs,
//! and the check that the cluster merges again after the last fault. Each
//! runs to a valid verdict, and the fault is seen to have happened.

use std::path::PathBuf;
use std::process::Command;

use starling_sim::plan::{FaultAction, FaultPlan};
use starling_sim::scenario::FaultKind;
use starling_sim::{RunOptions, RunResult, Scenario, Verdict};

const SEEDS: [u64; 3] = [1, 2, 3];

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

fn scenario(name: &str) -> Scenario {
    Scenario::load(&path(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn logged() -> RunOptions {
    RunOptions {
        progress: false,
        logs: true,
    }
}

fn assert_valid(name: &str, r: &RunResult) {
    assert_eq!(
        r.summary.verdict,
        Verdict::Valid,
        "{name} seed {}: {:#?}",
        r.summary.seed,
        r.summary.reasons
    );
    assert_eq!(r.summary.metrics["lost_writes"], 0.0);
    assert!(r.summary.metrics["writes_acked"] > 0.0);
}

fn events(r: &RunResult, kind: &str) -> Vec<serde_json::Value> {
    r.summary
        .event_log
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == kind)
        .collect()
}

#[test]
fn a_mass_restart_stops_most_nodes_and_every_one_comes_back_alive_everywhere() {
    let sc = scenario("mass-restart");
    for seed in SEEDS {
        let r = starling_sim::run(&sc, seed, logged());
        assert_valid("mass-restart", &r);
        // 70 % of 10 nodes on their disks, then 2 on blank disks.
        assert_eq!(r.summary.metrics["mass_restarts"], 9.0, "seed {seed}");
        let crashes = events(&r, "crash");
        let restarts = events(&r, "restart");
        assert_eq!((crashes.len(), restarts.len()), (9, 9), "seed {seed}");
        assert_eq!(
            restarts.iter().filter(|e| e["detail"]["state"] == "lost").count(),
            2
        );
        // The first seven stops fall inside the 4 s window, each node back
        // within its 3 s downtime.
        let first: Vec<u64> = crashes[..7].iter().map(|e| e["t_ms"].as_u64().unwrap()).collect();
        assert!(first.iter().all(|t| (10_000..=14_000).contains(t)), "{first:?}");
        assert!(restarts[..7]
            .iter()
            .all(|e| (10_000..=17_000).contains(&e["t_ms"].as_u64().unwrap())));
        // Merged again: every up node alive in every view, one digest.
        assert!(r.summary.metrics["merged_after_fault_ms"] >= 0.0);
        assert_eq!(r.summary.metrics["core_nodes"], 10.0);
    }
}

#[test]
fn a_mass_restart_resolves_to_an_explicit_schedule_inside_its_window() {
    let r = scenario("mass-restart").resolve(7);
    let f = &r.faults[0];
    assert_eq!(f.kind, FaultKind::MassRestart);
    assert_eq!(f.nodes.len(), 7, "70 % of 10 nodes");
    assert_eq!(f.fraction, None, "resolved into nodes");
    assert_eq!(f.restarts.len(), 7);
    for x in &f.restarts {
        assert!(f.nodes.contains(&x.node));
        assert!(x.stop_ms <= 4_000 && (750..=3_000).contains(&x.down_ms), "{x:?}");
    }
    // Resolving again changes nothing.
    let again = Scenario::parse(&r.to_toml()).unwrap().resolve(7);
    assert_eq!(again.to_toml(), r.to_toml());
    // The plan ends the fault when its last node is back.
    let plan = FaultPlan::new(&r);
    let last = f.restarts.iter().map(|x| f.at_ms + x.stop_ms + x.down_ms).max();
    assert_eq!(plan.faults[0].end_ms, last);
}

/// The overloaded node receives every message late: gossip delivery
/// latency (measured at delivery, in virtual time) is far higher while
/// the fault lasts than in the same run without it.
#[test]
fn an_overloaded_node_takes_its_messages_late_not_never() {
    let sc = scenario("overload");
    let mut calm = sc.clone();
    calm.faults.clear();
    for seed in SEEDS {
        let r = starling_sim::run(&sc, seed, RunOptions::default());
        assert_valid("overload", &r);
        let m = &r.summary.metrics;
        assert!(m["overload_inputs_late"] > 100.0, "seed {seed}: {m:?}");
        // 800 ms + up to 400 on node 2, 3 s on node 4.
        assert!(
            (800.0..=3_000.0).contains(&m["overload_late_mean_ms"]),
            "{}",
            m["overload_late_mean_ms"]
        );
        let base = starling_sim::run(&calm, seed, RunOptions::default());
        let p99_during = |r: &RunResult| {
            r.samples
                .iter()
                .filter(|s| (10_000..=27_000).contains(&s.t_ms))
                .map(|s| s.gossip_p99_ms)
                .fold(0.0, f64::max)
        };
        let (late, calm_p99) = (p99_during(&r), p99_during(&base));
        assert!(late >= 800.0, "seed {seed}: gossip p99 {late} ms under overload");
        assert!(
            calm_p99 < 100.0,
            "seed {seed}: gossip p99 {calm_p99} ms without it"
        );
        // And nothing is late once it ends (and its backlog drained).
        let after = r
            .samples
            .iter()
            .filter(|s| s.t_ms >= 40_000)
            .map(|s| s.gossip_p99_ms);
        assert!(
            after.clone().all(|p| p < 100.0),
            "{:?}",
            after.collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_long_partition_outlives_the_ttls_and_the_summary_says_so() {
    let sc = scenario("long-partition");
    for seed in SEEDS {
        let r = starling_sim::run(&sc, seed, RunOptions::default());
        assert_valid("long-partition", &r);
        let m = &r.summary.metrics;
        assert_eq!(
            (m["cuts_past_tombstone_ttl"], m["cuts_past_grave_ttl"]),
            (1.0, 1.0)
        );
        assert!(
            r.summary.fault_periods[0]
                .2
                .ends_with("(outlives tombstone_ttl_ms and grave_ttl_ms)"),
            "{:?}",
            r.summary.fault_periods
        );
    }
}

/// A node overloaded until the heal, its inputs 4 s late: its backlog
/// drains for seconds after the heal, so it merges again seconds late.
const BACKLOG: &str = "[cluster]\nsize = 6\nmesh_degree = 3\n\
     [network]\nlatency = { dist = \"constant\", ms = 2.0 }\n\
     [protocol]\nsync_interval_ms = 5000\n\
     [workload]\nwrites_per_sec = 5.0\n\
     [[fault]]\nkind = \"overload\"\nat_ms = 5000\nnodes = [2]\ndelay_ms = 4000\njitter_ms = 0\n\
     [phases]\nheal_at_ms = 25000\ndeadline_ms = 60000\nsample_ms = 100\n";

#[test]
fn a_cluster_not_merged_again_within_the_bound_is_invalid_and_says_what_is_not_merged() {
    let sc = Scenario::parse(&format!("{BACKLOG}[expect]\nmerged_within_ms = 1000\n")).unwrap();
    for seed in SEEDS {
        let r = starling_sim::run(&sc, seed, RunOptions::default());
        assert_eq!(r.summary.verdict, Verdict::Invalid, "{:#?}", r.summary.reasons);
        let reason = r
            .summary
            .reasons
            .iter()
            .find(|x| x.contains("not merged again within 1000 ms of the last fault step at 25000 ms"))
            .unwrap_or_else(|| panic!("{:#?}", r.summary.reasons));
        assert!(
            reason.contains("at 26000 ms: 2 digests on 6 up nodes, nodes [0, 1, 3, 4, 5] vs [2]"),
            "{reason}"
        );
        // It merged later, within the backlog's 4 s.
        let after = r.summary.metrics["merged_after_fault_ms"];
        assert!((1_000.0..=4_100.0).contains(&after), "{reason}");
        assert!(reason.contains(&format!("merged after {after} ms")), "{reason}");
    }
    // The same runs with the default bound, or the check off, are valid.
    for expect in ["", "[expect]\nmerged_within_ms = 0\n"] {
        let sc = Scenario::parse(&format!("{BACKLOG}{expect}")).unwrap();
        let r = starling_sim::run(&sc, 1, RunOptions::default());
        assert_eq!(r.summary.verdict, Verdict::Valid, "{:#?}", r.summary.reasons);
    }
}

#[test]
fn a_cluster_left_cut_is_unknown_not_invalid_when_it_does_not_merge() {
    // The cut lasts to the deadline: nobody could merge.
    let sc = Scenario::parse(
        "[cluster]\nsize = 4\n[workload]\nwrites_per_sec = 5.0\nstop_ms = 10000\n\
         [[fault]]\nkind = \"partition\"\nmode = \"halves\"\nat_ms = 5000\nduration_ms = 60000\n\
         [phases]\ndeadline_ms = 40000\n[expect]\nmerged_within_ms = 2000\n",
    )
    .unwrap();
    let r = starling_sim::run(&sc, 1, RunOptions::default());
    assert_eq!(r.summary.verdict, Verdict::Unknown, "{:#?}", r.summary.reasons);
    assert!(
        r.summary.reasons.iter().any(|x| x.contains("a cut is in force")),
        "{:#?}",
        r.summary.reasons
    );
}

#[test]
fn the_swarm_draws_mass_restarts_overloads_and_partitions_past_the_ttls() {
    let (mut restarts, mut overloads, mut long) = (0, 0, 0);
    for seed in 1..=200 {
        let sc = starling_sim::swarm::scenario_for(seed);
        let plan = FaultPlan::new(&sc.resolve(seed));
        restarts += plan
            .faults
            .iter()
            .any(|f| matches!(f.action, FaultAction::MassRestart { .. })) as usize;
        overloads += plan.faults.iter().any(|f| f.kind == FaultKind::Overload) as usize;
        let p = &sc.protocol;
        let past_graves = sc
            .faults
            .iter()
            .any(|f| f.kind == FaultKind::Partition && f.duration_ms.is_some_and(|d| d > p.grave_ttl_ms));
        if past_graves {
            long += 1;
            // Short, but several rounds of anti-entropy long.
            assert!(p.tombstone_ttl_ms >= 3 * p.sync_interval_ms, "seed {seed}");
            assert!(p.grave_ttl_ms <= 60_000, "seed {seed}");
        }
    }
    for (what, n) in [
        ("mass restarts", restarts),
        ("overloads", overloads),
        ("long partitions", long),
    ] {
        assert!((10..=80).contains(&n), "{what}: {n} of 200 seeds");
    }
}

/// `starling-sim check-determinism` passes on scenarios with the new
/// kinds: same seed, same trace, history, events and metrics.
#[test]
fn check_determinism_passes_with_mass_restarts_and_overload() {
    for name in ["mass-restart", "overload", "long-partition"] {
        let out = Command::new(env!("CARGO_BIN_EXE_starling-sim"))
            .args(["check-determinism"])
            .arg(path(name))
            .args(["--seed", "5"])
            .output()
            .expect("the binary runs");
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A different seed draws another schedule: a different trace.
        let a = starling_sim::run(&scenario(name), 5, RunOptions::default());
        let b = starling_sim::run(&scenario(name), 6, RunOptions::default());
        assert_ne!(a.trace_hash, b.trace_hash, "{name}");
    }
}

/// A pause shorter than the probe timeout breaks no link, as on a real
/// node (its neighbours' probes wait `limits.probe_timeout_ms`): nobody
/// suspects the paused node (1.5 s is also short of what the heartbeat
/// detector waits at a 1 s interval). With a probe timeout shorter than
/// the pause its neighbours give up on its links and suspect it.
#[test]
fn a_pause_shorter_than_the_probe_timeout_breaks_no_link() {
    let text = |probe_timeout_ms: u64| {
        format!(
            r#"
name = "short-pause"
[cluster]
size = 5
mesh_degree = 3
probe_timeout_ms = {probe_timeout_ms}
[protocol]
cluster = "short-pause"
[workload]
writes_per_sec = 2.0
[[fault]]
kind = "pause"
at_ms = 10000
duration_ms = 1500
nodes = [1]
[phases]
deadline_ms = 30000
"#
        )
    };
    let suspicions_of_1 = |r: &RunResult| {
        events(r, "member")
            .iter()
            .filter(|e| e["subject"] == 1 && e["status"] == "suspect")
            .count()
    };
    for seed in SEEDS {
        let held = starling_sim::run(&Scenario::parse(&text(2_000)).unwrap(), seed, logged());
        assert_valid("short-pause", &held);
        assert_eq!(
            suspicions_of_1(&held),
            0,
            "seed {seed}: 1.5 s pause, 2 s probe timeout"
        );
        let given_up = starling_sim::run(&Scenario::parse(&text(100)).unwrap(), seed, logged());
        assert_valid("short-pause", &given_up);
        assert!(
            suspicions_of_1(&given_up) > 0,
            "seed {seed}: 1.5 s pause, 100 ms probe timeout"
        );
    }
}
