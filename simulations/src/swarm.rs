//! Swarm testing: a whole scenario drawn from one seed (cluster size,
//! network, clocks, workload and nemesis), so many seeds explore many
//! combinations nobody thought to write down.

use rand::seq::SliceRandom;
use rand::Rng;

use crate::rng::stream;
use crate::scenario::{Attack, BurstLoss, FaultKind, FaultSpec, Latency, Scenario};

/// Share of swarm scenarios with liars (a byzantine fault).
const BYZANTINE_SHARE: f64 = 0.25;
/// Share of swarm scenarios with a mass restart.
const MASS_RESTART_SHARE: f64 = 0.2;
/// Share of swarm scenarios with an overloaded node.
const OVERLOAD_SHARE: f64 = 0.2;
/// Share of swarm scenarios with a partition longer than the tombstone
/// and grave TTLs (which it makes short).
const LONG_PARTITION_SHARE: f64 = 0.15;

/// The scenario of swarm seed `seed`.
pub fn scenario_for(seed: u64) -> Scenario {
    let mut rng = stream(seed, 7, 0);
    let mut s: Scenario = toml::from_str("").expect("an empty scenario uses every default");
    s.name = format!("swarm-{seed}");
    s.description = "Drawn from the seed by `starling-sim swarm`.".into();
    s.cluster.size = rng.gen_range(3..=12);
    s.cluster.mesh_degree = rng.gen_range(2..=6);
    s.network.latency = match rng.gen_range(0..4) {
        0 => Latency::Constant {
            ms: rng.gen_range(0.5..20.0),
        },
        1 => Latency::Uniform {
            min_ms: 0.5,
            max_ms: rng.gen_range(1.0..50.0),
        },
        2 => Latency::Normal {
            mean_ms: rng.gen_range(1.0..30.0),
            std_ms: rng.gen_range(0.0..10.0),
        },
        _ => Latency::Lognormal {
            median_ms: rng.gen_range(0.5..20.0),
            sigma: rng.gen_range(0.1..1.0),
        },
    };
    s.network.loss = [0.0, 0.01, 0.05, 0.1][rng.gen_range(0..4)];
    if rng.gen_bool(0.3) {
        s.network.burst = Some(BurstLoss {
            p_enter: 0.01,
            p_exit: 0.2,
            loss_bad: 0.6,
        });
    }
    s.network.duplicate = [0.0, 0.02][rng.gen_range(0..2)];
    s.network.reorder = [0.0, 0.05][rng.gen_range(0..2)];
    s.clock.max_offset_ms = [0, 500, 5_000][rng.gen_range(0..3)];
    s.clock.max_drift_ppm = [0.0, 100.0][rng.gen_range(0..2)];
    s.protocol.cluster = "swarm".into();
    s.protocol.sync_interval_ms = rng.gen_range(2_000..15_000);
    s.protocol.heartbeat_interval_ms = [500, 1_000][rng.gen_range(0..2)];
    s.protocol.suspect_timeout_ms = rng.gen_range(2_000..8_000);
    if rng.gen_bool(0.3) {
        s.protocol.tombstone_ttl_ms = rng.gen_range(5_000..30_000);
        s.protocol.gc_interval_ms = 1_000;
    }
    s.protocol.history_limit = rng.gen_range(0..8);
    s.workload.writes_per_sec = rng.gen_range(1.0..20.0);
    s.workload.keys = rng.gen_range(1..30);
    s.workload.hot_keys = rng.gen_range(0..3);
    s.workload.concurrent = rng.gen_range(0.0..0.3);
    s.workload.delete_fraction = rng.gen_range(0.0..0.3);
    s.workload.services = rng.gen_range(0..5);
    s.nemesis.enabled = true;
    s.nemesis.start_ms = 5_000;
    s.nemesis.interval_ms = rng.gen_range(3_000..15_000);
    s.nemesis.mean_duration_ms = rng.gen_range(2_000..15_000);
    s.nemesis.kinds = [
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Crash,
        FaultKind::Pause,
        FaultKind::ClockJump,
        FaultKind::Swizzle,
    ]
    .into_iter()
    .filter(|_| rng.gen_bool(0.6))
    .collect();
    let heal = rng.gen_range(30_000..90_000);
    s.phases.heal_at_ms = Some(heal);
    s.phases.deadline_ms = heal + 60_000;
    // Drawn last, so a seed drawn without liars is the scenario it was
    // before liars existed.
    if rng.gen_bool(BYZANTINE_SHARE) {
        let n = s.cluster.size;
        let mut nodes: Vec<usize> = (0..n).collect();
        nodes.shuffle(&mut rng);
        nodes.truncate(rng.gen_range(1..=(n / 4).max(1)));
        nodes.sort_unstable();
        let mut f = FaultSpec::new(FaultKind::Byzantine, rng.gen_range(3_000..10_000));
        f.nodes = nodes;
        f.attacks = Attack::DEFAULT.to_vec();
        f.rate_per_s = Some([1.0, 2.0, 4.0, 8.0][rng.gen_range(0..4)]);
        f.burst = Some(rng.gen_range(5..=60));
        s.faults.push(f);
    }
    // Drawn after the liars, each in its own share of the seeds, so a
    // seed drawn without them is the scenario it was before they existed.
    if rng.gen_bool(MASS_RESTART_SHARE) {
        let mut f = FaultSpec::new(FaultKind::MassRestart, rng.gen_range(5_000..heal - 10_000));
        f.fraction = Some(rng.gen_range(0.5..=0.9));
        f.window_ms = Some(rng.gen_range(1_000..=8_000));
        f.downtime_ms = Some(rng.gen_range(500..=6_000));
        f.state = Some(if rng.gen_bool(0.1) { "lost" } else { "kept" }.into());
        s.faults.push(f);
    }
    if rng.gen_bool(OVERLOAD_SHARE) {
        let at = rng.gen_range(5_000..heal - 5_000);
        let mut f = FaultSpec::new(FaultKind::Overload, at);
        f.pick = Some(rng.gen_range(1..=(s.cluster.size / 3).max(1)));
        f.duration_ms = Some(rng.gen_range(3_000..=30_000).min(heal - at));
        let delay = [50, 200, 500, 1_000, 3_000][rng.gen_range(0..5)];
        f.delay_ms = Some(delay);
        f.jitter_ms = Some(if rng.gen_bool(0.5) { delay / 2 } else { 0 });
        s.faults.push(f);
    }
    if rng.gen_bool(LONG_PARTITION_SHARE) {
        long_partition(&mut s, &mut rng);
    }
    s
}

/// A partition that outlasts the tombstone and grave TTLs: short TTLs
/// (so the run stays short), frequent collection, deletes on few keys,
/// and a partition longer than the grave TTL. Tombstones and graves are
/// collected on one side while the other still holds the old values.
///
/// The TTLs stay several sync intervals long, as in any sane deployment
/// (a day against seconds by default): a TTL shorter than one round of
/// anti-entropy collects deletes a connected node simply has not synced
/// yet, which is a misconfiguration, not a long partition.
fn long_partition(s: &mut Scenario, rng: &mut impl Rng) {
    let p = &mut s.protocol;
    p.sync_interval_ms = rng.gen_range(1_000..=3_000);
    p.tombstone_ttl_ms = p.sync_interval_ms * rng.gen_range(3..=6);
    p.grave_ttl_ms = p.tombstone_ttl_ms + p.sync_interval_ms * rng.gen_range(3..=6);
    p.gc_interval_ms = 500;
    let at = rng.gen_range(5_000..15_000);
    let mut f = FaultSpec::new(FaultKind::Partition, at);
    let dur = p.grave_ttl_ms + rng.gen_range(2_000..=15_000);
    f.duration_ms = Some(dur);
    f.mode = Some(["halves", "majority", "minority", "one"][rng.gen_range(0..4)].into());
    s.faults.push(f);
    s.workload.delete_fraction = s.workload.delete_fraction.max(rng.gen_range(0.2..0.5));
    s.workload.keys = s.workload.keys.min(10);
    let heal = s.phases.heal_at_ms.unwrap_or(0).max(at + dur + 2_000);
    s.phases.heal_at_ms = Some(heal);
    s.phases.deadline_ms = heal + 60_000;
}
