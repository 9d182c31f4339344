//! The run summary both modes fill — verdict, reasons, violations, named
//! metrics, fault periods, logs — and the judging rules they share: write
//! reach quantiles, failure-detection figures, `[expect]` thresholds and
//! the verdict. [`crate::report`] renders a summary.

use std::collections::BTreeMap;

use crate::oracle::Violation;
use crate::scenario::{ExpectSpec, Scenario};

/// The verdict of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check passed.
    Valid,
    /// A safety check failed, or liveness failed although the cluster
    /// could have recovered.
    Invalid,
    /// Liveness failed, but faults were still in force (or the run ended
    /// too soon after the last one) for recovery to be required.
    Unknown,
}

impl Verdict {
    /// Process exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Valid => 0,
            Verdict::Invalid => 1,
            Verdict::Unknown => 2,
        }
    }

    /// The rule of both modes: invalid on a safety violation, a missed
    /// threshold, or a liveness failure when the cluster could have
    /// recovered; unknown on a liveness failure it could not recover from.
    pub fn of(safety_ok: bool, liveness_ok: bool, could_recover: bool, thresholds_ok: bool) -> Verdict {
        if !safety_ok || (!liveness_ok && could_recover) || !thresholds_ok {
            Verdict::Invalid
        } else if !liveness_ok {
            Verdict::Unknown
        } else {
            Verdict::Valid
        }
    }
}

/// Which mode produced a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The deterministic simulator.
    Sim,
    /// Real libp2p nodes in one process.
    Real,
}

/// What every run reports, whichever mode ran it.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The mode.
    pub mode: Mode,
    /// The resolved scenario (scenario ms).
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// The verdict.
    pub verdict: Verdict,
    /// Why it is not valid (safety, liveness, threshold misses).
    pub reasons: Vec<String>,
    /// Safety violations.
    pub violations: Vec<Violation>,
    /// Named scalar metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Per-write time to reach every core node (ms), sorted.
    pub write_reach_ms: Vec<u64>,
    /// Fault periods: (start ms, end ms, label), in the run's time.
    pub fault_periods: Vec<(u64, u64, String)>,
    /// history.jsonl lines.
    pub history: Vec<String>,
    /// events.jsonl lines.
    pub event_log: Vec<String>,
}

/// The `p` quantile of sorted `v` (0 when empty).
pub fn quantile(v: &[u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let idx = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[idx] as f64
}

/// Write reach metrics of sorted `reach`: p50, p99, max.
pub fn insert_reach(m: &mut BTreeMap<String, f64>, prefix: &str, reach: &[u64]) {
    m.insert(format!("{prefix}_p50_ms"), quantile(reach, 0.5));
    m.insert(format!("{prefix}_p99_ms"), quantile(reach, 0.99));
    m.insert(
        format!("{prefix}_max_ms"),
        reach.last().copied().unwrap_or(0) as f64,
    );
}

/// One crash as the failure detector saw it.
pub struct Detection<'a> {
    /// The crashed node slot.
    pub slot: usize,
    /// When it went down.
    pub down_ms: u64,
    /// Per observer slot: when it first held the node dead.
    pub dead_at: &'a BTreeMap<usize, u64>,
}

/// `crashes`, `detect_first_ms` (mean over crashes of the first observer's
/// delay, -1 if none) and `detect_all_ms` (worst delay until every core
/// observer held it dead, -1 if never).
pub fn insert_detection<'a>(
    m: &mut BTreeMap<String, f64>,
    crashes: impl IntoIterator<Item = Detection<'a>>,
    core: &[usize],
) {
    let mut first = Vec::new();
    let mut all_obs = Vec::new();
    let mut count = 0usize;
    for ep in crashes {
        count += 1;
        let observers: Vec<usize> = core.iter().copied().filter(|&o| o != ep.slot).collect();
        if let Some(f) = ep.dead_at.values().min() {
            first.push(f - ep.down_ms);
        }
        if !observers.is_empty() && observers.iter().all(|o| ep.dead_at.contains_key(o)) {
            let last = observers
                .iter()
                .map(|o| ep.dead_at[o])
                .max()
                .unwrap_or(ep.down_ms);
            all_obs.push(last - ep.down_ms);
        }
    }
    m.insert("crashes".into(), count as f64);
    m.insert(
        "detect_first_ms".into(),
        if first.is_empty() {
            -1.0
        } else {
            first.iter().sum::<u64>() as f64 / first.len() as f64
        },
    );
    m.insert(
        "detect_all_ms".into(),
        all_obs.iter().copied().max().map_or(-1.0, |v| v as f64),
    );
}

/// Check the `[expect]` thresholds against `m`; a miss adds a reason.
/// Time limits are multiplied by `scale` (real mode runs scaled); stale
/// reads are checked only where reads were issued, detection only when
/// something crashed. Returns whether every threshold was met.
pub fn check_expect(
    e: &ExpectSpec,
    m: &BTreeMap<String, f64>,
    scale: f64,
    reads_checked: bool,
    reasons: &mut Vec<String>,
) -> bool {
    let mut ok = true;
    let mut check = |name: &str, got: f64, limit: Option<u64>, scaled: bool| {
        if let Some(l) = limit {
            let l = if scaled { l as f64 * scale } else { l as f64 };
            if got < 0.0 || got > l {
                ok = false;
                reasons.push(format!("expect: {name} = {got} exceeds {l:.0}"));
            }
        }
    };
    check(
        "convergence_p99_ms",
        m["write_reach_p99_ms"],
        e.convergence_p99_ms,
        true,
    );
    check(
        "converge_after_heal_ms",
        m["converge_after_heal_ms"],
        e.converge_after_heal_ms,
        true,
    );
    check("false_deaths", m["false_deaths"], e.max_false_deaths, false);
    check(
        "false_suspicions",
        m["false_suspicions"],
        e.max_false_suspicions,
        false,
    );
    if reads_checked {
        check("stale_reads", m["stale_reads"], e.max_stale_reads, false);
    }
    if m["crashes"] > 0.0 {
        check("detect_all_ms", m["detect_all_ms"], e.detection_all_ms, true);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_is_unknown_only_when_the_cluster_could_not_recover() {
        assert_eq!(Verdict::of(true, true, true, true), Verdict::Valid);
        assert_eq!(Verdict::of(true, false, false, true), Verdict::Unknown);
        assert_eq!(Verdict::of(true, false, true, true), Verdict::Invalid);
        assert_eq!(Verdict::of(false, true, true, true), Verdict::Invalid);
        assert_eq!(Verdict::of(true, true, true, false), Verdict::Invalid);
    }

    #[test]
    fn thresholds_scale_time_limits_only() {
        let m: BTreeMap<String, f64> = [
            ("write_reach_p99_ms", 150.0),
            ("converge_after_heal_ms", -1.0),
            ("false_deaths", 2.0),
            ("false_suspicions", 3.0),
            ("crashes", 0.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let e = ExpectSpec {
            convergence_p99_ms: Some(1_000),
            max_false_deaths: Some(2),
            ..ExpectSpec::default()
        };
        let mut reasons = Vec::new();
        assert!(check_expect(&e, &m, 1.0, false, &mut reasons));
        assert!(!check_expect(&e, &m, 0.1, false, &mut reasons));
        assert_eq!(reasons, ["expect: convergence_p99_ms = 150 exceeds 100"]);
        let never = ExpectSpec {
            converge_after_heal_ms: Some(5_000),
            ..ExpectSpec::default()
        };
        assert!(
            !check_expect(&never, &m, 1.0, false, &mut reasons),
            "-1 means never"
        );
    }

    #[test]
    fn false_suspicions_are_checked_when_bounded() {
        let mut m: BTreeMap<String, f64> = [
            ("write_reach_p99_ms", 10.0),
            ("converge_after_heal_ms", -1.0),
            ("false_deaths", 0.0),
            ("false_suspicions", 1.0),
            ("crashes", 0.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut reasons = Vec::new();
        assert!(check_expect(&ExpectSpec::default(), &m, 1.0, false, &mut reasons));
        let none = ExpectSpec {
            max_false_suspicions: Some(0),
            ..ExpectSpec::default()
        };
        assert!(!check_expect(&none, &m, 1.0, false, &mut reasons));
        assert_eq!(reasons, ["expect: false_suspicions = 1 exceeds 0"]);
        m.insert("false_suspicions".into(), 0.0);
        assert!(check_expect(&none, &m, 1.0, false, &mut Vec::new()));
    }
}
