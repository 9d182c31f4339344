//! Property tests of scenario generation: `swarm::scenario_for` and
//! `Scenario::resolve` never panic, over any seed and over wide ranges of
//! the parameters a scenario file sets, and always give a scenario that
//! loads again, resolves to itself, and runs to a verdict.

use proptest::prelude::*;
use starling_sim::plan::FaultPlan;
use starling_sim::scenario::{FaultKind, FaultSpec, Scenario};
use starling_sim::{RunOptions, Sim};

const KINDS: [FaultKind; FaultKind::ALL.len()] = FaultKind::ALL;

const MODES: [&str; 6] = ["one", "majority", "minority", "bridge", "ring", "halves"];

/// Everything a resolved scenario must be: loadable from its own text,
/// resolved once and for all, every node it names a slot, every fault
/// with a start inside the run or a plan that ignores it, and a plan.
fn check_resolved(r: &Scenario, seed: u64) -> Result<(), TestCaseError> {
    let text = r.to_toml();
    let back = Scenario::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    prop_assert_eq!(
        back.resolve(seed).to_toml(),
        text.clone(),
        "resolving again changes it"
    );
    prop_assert!(!r.nemesis.enabled);
    let slots = r.slots();
    for f in &r.faults {
        prop_assert!(f.pick.is_none() && f.mode.is_none(), "unresolved draw: {:?}", f);
        prop_assert!(
            f.nodes
                .iter()
                .chain(&f.to)
                .chain(&f.restore_order)
                .chain(f.groups.iter().flatten())
                .all(|&i| i < slots),
            "node out of range: {:?}",
            f
        );
        prop_assert!(f.duration_ms != Some(0), "a fault of no time: {:?}", f);
        if f.kind == FaultKind::MassRestart {
            let mut restarted: Vec<usize> = f.restarts.iter().map(|r| r.node).collect();
            restarted.sort_unstable();
            prop_assert_eq!(&restarted, &f.nodes, "a restart for each node and no other");
        }
    }
    let plan = FaultPlan::new(r);
    let timeline = plan.timeline();
    prop_assert!(
        timeline.windows(2).all(|w| w[0].0 <= w[1].0),
        "timeline out of order"
    );
    Ok(())
}

fn fault_strategy() -> impl Strategy<Value = FaultSpec> {
    (
        0..KINDS.len(),
        0u64..40_000,
        proptest::option::of(1u64..30_000),
        proptest::option::of(0..MODES.len()),
        proptest::option::of(0usize..25),
        any::<bool>(),
        -10_000i64..10_000,
        (
            proptest::option::of(0.0f64..1.2),
            proptest::option::of(0u64..20_000),
            proptest::option::of(0u64..70_000),
        ),
    )
        .prop_map(
            |(k, at_ms, duration_ms, mode, pick, lost, jump, (fraction, window, delay))| {
                let kind = KINDS[k];
                let mut f: FaultSpec =
                    toml::from_str(&format!("kind = \"{kind}\"\nat_ms = {at_ms}")).expect("a minimal fault");
                f.duration_ms = duration_ms;
                match kind {
                    FaultKind::Partition => f.mode = Some(MODES[mode.unwrap_or(0)].to_string()),
                    FaultKind::Crash => {
                        f.pick = Some(pick.unwrap_or(1).max(1));
                        f.state = Some(if lost { "lost" } else { "kept" }.into());
                    }
                    FaultKind::ClockJump => {
                        f.pick = pick;
                        f.jump_ms = Some(jump);
                    }
                    FaultKind::Byzantine => f.pick = Some(pick.unwrap_or(1).max(1)),
                    // A fraction, a pick or neither (the default share).
                    FaultKind::MassRestart => {
                        f.pick = pick.filter(|_| fraction.is_none());
                        f.fraction = fraction;
                        f.window_ms = window;
                        f.downtime_ms = delay;
                        f.state = Some(if lost { "lost" } else { "kept" }.into());
                    }
                    FaultKind::Overload => {
                        f.pick = pick;
                        f.delay_ms = delay;
                        f.jitter_ms = window;
                    }
                    // Join and leave name no spare slots here: nodes stay empty.
                    FaultKind::Join | FaultKind::Leave => {}
                    _ => f.pick = pick,
                }
                f
            },
        )
}

prop_compose! {
    /// A scenario with random cluster, clock, nemesis, phases and faults.
    fn scenario_strategy()(
        size in 1usize..20,
        spare in 0usize..3,
        mesh_degree in 1usize..8,
        bootstrap in 0usize..3,
        regions in 1usize..4,
        max_offset_ms in 0i64..10_000,
        max_drift_ppm in 0.0f64..500.0,
        nemesis in any::<bool>(),
        start_ms in 0u64..20_000,
        end_ms in proptest::option::of(0u64..60_000),
        interval_ms in 0u64..20_000,
        mean_duration_ms in 0u64..20_000,
        kinds in proptest::collection::vec(0..KINDS.len(), 0..5),
        deadline_ms in 1u64..120_000,
        heal in proptest::option::of(0.0f64..=1.0),
        faults in proptest::collection::vec(fault_strategy(), 0..6),
    ) -> Scenario {
        let mut s: Scenario = toml::from_str("").expect("defaults");
        s.name = "prop".into();
        s.cluster.size = size;
        s.cluster.spare = spare;
        s.cluster.mesh_degree = mesh_degree;
        s.cluster.bootstrap = ["full", "seeds", "region"][bootstrap].into();
        s.cluster.regions = regions;
        s.clock.max_offset_ms = max_offset_ms;
        s.clock.max_drift_ppm = max_drift_ppm;
        s.nemesis.enabled = nemesis;
        s.nemesis.start_ms = start_ms;
        s.nemesis.end_ms = end_ms;
        s.nemesis.interval_ms = interval_ms;
        s.nemesis.mean_duration_ms = mean_duration_ms;
        s.nemesis.kinds = kinds.into_iter().map(|k| KINDS[k]).collect();
        s.phases.deadline_ms = deadline_ms;
        s.phases.heal_at_ms = heal.map(|h| (h * deadline_ms as f64) as u64);
        s.faults = faults;
        s
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any swarm seed draws a scenario that loads, and resolves (with any
    /// seed) to a scenario that loads again and is resolved for good.
    #[test]
    fn swarm_scenarios_resolve_for_any_seed(seed in any::<u64>(), resolve_seed in any::<u64>()) {
        let sc = starling_sim::swarm::scenario_for(seed);
        let text = sc.to_toml();
        Scenario::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        check_resolved(&sc.resolve(resolve_seed), resolve_seed)?;
        check_resolved(&sc.resolve(seed), seed)?;
    }

    /// Any valid scenario file (random cluster, clocks, nemesis, phases,
    /// scripted faults with picks and modes) resolves without panicking
    /// to a scenario that loads again.
    #[test]
    fn any_scenario_resolves(sc in scenario_strategy(), seed in any::<u64>()) {
        let text = sc.to_toml();
        // Only what a scenario file may say.
        prop_assume!(Scenario::parse(&text).is_ok());
        check_resolved(&sc.resolve(seed), seed)?;
    }
}

proptest! {
    // Each case runs a simulation: fewer cases, small and short clusters.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Resolved scenarios run: the simulator reaches a verdict on them.
    #[test]
    fn resolved_scenarios_run_to_a_verdict(mut sc in scenario_strategy(), seed in any::<u64>()) {
        sc.cluster.size = sc.cluster.size.min(6);
        sc.phases.deadline_ms = sc.phases.deadline_ms.min(20_000);
        sc.phases.heal_at_ms = sc.phases.heal_at_ms.map(|h| h.min(sc.phases.deadline_ms));
        sc.nemesis.interval_ms = sc.nemesis.interval_ms.max(500);
        // A lasting fault with no end and no heal overflows the simulator
        // (`an_endless_fault_runs_to_a_verdict`, ignored): give it a heal.
        if sc.faults.iter().any(|f| f.duration_ms.is_none()) && sc.phases.heal_at_ms.is_none() {
            sc.phases.heal_at_ms = Some(sc.phases.deadline_ms);
        }
        let text = sc.to_toml();
        prop_assume!(Scenario::parse(&text).is_ok());
        let r = Sim::new(sc.resolve(seed), seed, RunOptions::default()).run();
        prop_assert_eq!(r.sim_ms, sc.phases.deadline_ms);
    }
}

/// Found by `resolved_scenarios_run_to_a_verdict`: a partition (or
/// one-way cut, swizzle, pause) with no `duration_ms` in a scenario with no
/// `heal_at_ms` has no end, and the simulator's `disturb` adds the
/// detection window to `u64::MAX` (`sim/faults.rs`, "attempt to add with
/// overflow" in debug builds; a wrapped, tiny grace period in release).
/// The swarm always heals, so a hunt never meets it; scenario files may.
#[test]
#[ignore = "open finding: sim/faults.rs disturb overflows on a fault with no end"]
fn an_endless_fault_runs_to_a_verdict() {
    let sc = Scenario::parse(
        "[cluster]\nsize = 3\n[phases]\ndeadline_ms = 10000\n\n[[fault]]\nkind = \"partition\"\nat_ms = 3000\ngroups = [[0]]\n",
    )
    .expect("a valid scenario");
    let r = Sim::new(sc.resolve(1), 1, RunOptions::default()).run();
    assert!(r.events > 0);
}
