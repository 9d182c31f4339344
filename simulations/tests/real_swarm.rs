//! Real-node mode: a small scenario (five libp2p nodes in this process, a
//! 2 + 3 partition that heals, concurrent writes, deletes, services) runs
//! through the library entry point and must pass every check; the checker
//! must catch a lost write.
#![cfg(feature = "real")]

use starling::core::{Context, Dot, Hlc, VersionId};
use starling_sim::real::{self, AckedWrite, RealOptions, TrackedKey};
use starling_sim::{Scenario, Verdict};

const SCENARIO: &str = r#"
name = "real-partition-heal"
description = "Five real nodes split 2 + 3 for 5 s while clients write on both sides, then heal."

[cluster]
size = 5

[protocol]
cluster = "real-test"
heartbeat_interval_ms = 200
suspect_timeout_ms = 1000
sync_interval_ms = 1000
sync_min_interval_ms = 200
sync_timeout_ms = 2000

[workload]
writes_per_sec = 8.0
reads_per_sec = 0.0
keys = 6
hot_keys = 2
hot_fraction = 0.5
concurrent = 0.25
delete_fraction = 0.15
services = 2
service_ttl_ms = 3000
service_heartbeat_ms = 500
start_ms = 500

[[fault]]
kind = "partition"
groups = [[0, 1], [2, 3, 4]]
at_ms = 2000
duration_ms = 5000

[phases]
heal_at_ms = 7000
deadline_ms = 15000
"#;

#[test]
fn a_partitioned_real_cluster_converges_and_the_checker_catches_a_lost_write() {
    let sc = Scenario::parse(SCENARIO).unwrap();
    let opts = RealOptions {
        time_scale: Some(1.0),
        ..RealOptions::default()
    };
    let r = real::run(&sc, 1, &opts).expect("the harness runs");
    assert_eq!(r.summary.verdict, Verdict::Valid, "{:#?}", r.summary.reasons);
    let m = &r.summary.metrics;
    assert_eq!(m["core_nodes"], 5.0);
    assert!(m["writes_acked"] >= 20.0, "the workload wrote: {m:?}");
    assert!(
        r.ledger.writes.iter().any(|w| w.origin <= 1) && r.ledger.writes.iter().any(|w| w.origin >= 2),
        "writes were acknowledged on both sides of the partition"
    );
    assert_eq!(m["lost_writes"], 0.0);
    assert_eq!(
        m["writes_unreached_at_end"], 0.0,
        "every write reached every node"
    );
    assert!(m["converge_after_heal_ms"] >= 0.0, "converged after the heal");
    assert!(
        m["safety_reads_checked"] >= m["writes_acked"],
        "every arrival read was checked for safety as the run went: {m:?}"
    );

    // Every output is written, plots included.
    let out = tempfile::tempdir().unwrap();
    let prov = starling_sim::report::Provenance {
        scenario_path: "real-partition-heal.toml".into(),
        git_rev: None,
        wall_ms: r.wall_ms,
    };
    real::write_run(out.path(), &r, &prov).unwrap();
    for f in [
        "summary.md",
        "results.json",
        "history.jsonl",
        "metrics.csv",
        "scenario.resolved.toml",
    ] {
        assert!(out.path().join(f).is_file(), "{f} written");
    }
    for f in ["convergence.svg", "latency.svg", "divergence.svg"] {
        let svg = std::fs::read_to_string(out.path().join(f)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{f} is an SVG"
        );
        assert!(
            svg.contains("<path") || svg.contains("<polyline"),
            "{f} draws a line"
        );
    }
    let summary = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    assert!(summary.contains("**Verdict: Valid**"), "{summary}");
    assert!(
        r.summary.fault_periods.len() == 1 && r.skipped.is_empty(),
        "{:?}",
        r.skipped
    );

    // The checker is not vacuous: on the same final state, an acknowledged
    // write that no node holds is reported lost...
    assert!(real::lost_writes(&r.ledger, &r.final_state, r.tombstone_ttl_ms).is_empty());
    let mut ledger = r.ledger.clone();
    let model = ledger
        .writes
        .iter()
        .find(|w| matches!(w.key, TrackedKey::Kv(_)))
        .cloned()
        .expect("a config write");
    let dot = Dot {
        node: model.dot.node,
        seq: 1_000_000_000,
    };
    let mut ctx = Context::default();
    ctx.add(dot);
    let fabricated = ledger.push(AckedWrite {
        op: 999_999,
        key: TrackedKey::Kv("k/0".into()),
        id: VersionId::of(&dot),
        dot,
        hlc: Hlc {
            wall_ms: model.hlc.wall_ms + 1,
            logical: 0,
        },
        tombstone: false,
        origin: model.origin,
        ack_ms: r.final_state.t_ms,
        ctx,
        arrivals: vec![None; 5],
        orphaned: false,
        during_fault: false,
        up_at_ack: vec![true; 5],
        reached_up_ms: None,
    });
    let lost = real::lost_writes(&ledger, &r.final_state, r.tombstone_ttl_ms);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(
        (lost[0].write, lost[0].op, lost[0].explained),
        (fabricated, 999_999, false)
    );

    // ...and so is a real write one node dropped, unless something that
    // certainly saw it is still held there.
    let mut fin = r.final_state.clone();
    let victim = fin.nodes[0].slot;
    let (wi, w) = r
        .ledger
        .writes
        .iter()
        .enumerate()
        .find(|(_, w)| matches!(w.key, TrackedKey::Kv(_)))
        .expect("a config write");
    fin.nodes[0].held.insert(w.key.clone(), Vec::new());
    let lost = real::lost_writes(&r.ledger, &fin, r.tombstone_ttl_ms);
    assert!(
        lost.iter().any(|l| l.write == wi && l.node == victim),
        "dropping every version of {} on node {victim} loses op {}: {lost:?}",
        w.key,
        w.op
    );
}
