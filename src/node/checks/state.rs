//! One check's status as its runs move it: thresholds, counts, last
//! output. Pure: the runner passes the time in.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::core::HealthStatus;

/// Longest output kept per check, bytes.
pub(crate) const MAX_OUTPUT_LEN: usize = 512;

/// What one run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Passing, warning or critical.
    pub status: HealthStatus,
    /// One line saying what happened.
    pub output: String,
}

impl Outcome {
    pub(crate) fn new(status: HealthStatus, output: impl Into<String>) -> Outcome {
        Outcome {
            status,
            output: truncate(output.into()),
        }
    }
}

/// A check's state on the node that runs it (not replicated).
#[derive(Clone, Debug)]
pub(crate) struct CheckState {
    /// Status after the thresholds; `None` before the first run.
    pub status: Option<HealthStatus>,
    /// Passing runs in a row.
    pub consecutive_successes: u32,
    /// Non-passing runs in a row.
    pub consecutive_failures: u32,
    /// Output of the last run.
    pub output: String,
    /// Output of the last non-passing run.
    pub last_error: Option<String>,
    /// Wall-clock time of the last run, ms since the Unix epoch.
    pub last_run_ms: Option<u64>,
    /// Runs so far.
    pub runs: u64,
    /// Since when the status has been critical.
    pub critical_since: Option<Instant>,
}

/// Thresholds of one check.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Thresholds {
    pub failures_before_critical: u32,
    pub successes_before_passing: u32,
}

impl CheckState {
    pub(crate) fn new() -> CheckState {
        CheckState {
            status: None,
            consecutive_successes: 0,
            consecutive_failures: 0,
            output: String::new(),
            last_error: None,
            last_run_ms: None,
            runs: 0,
            critical_since: None,
        }
    }

    /// Take one run's outcome. Returns the new status if it changed.
    pub(crate) fn record(
        &mut self,
        outcome: Outcome,
        t: Thresholds,
        now: Instant,
        wall_ms: u64,
    ) -> Option<HealthStatus> {
        self.runs = self.runs.saturating_add(1);
        self.last_run_ms = Some(wall_ms);
        let passed = outcome.status == HealthStatus::Passing;
        if passed {
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_successes = 0;
            self.last_error = Some(outcome.output.clone());
        }
        self.output = outcome.output;
        let next = match self.status {
            // The first run decides at once: a registration says nothing
            // about the service yet.
            None => Some(outcome.status),
            Some(_) if passed && self.consecutive_successes >= t.successes_before_passing => {
                Some(HealthStatus::Passing)
            }
            Some(_) if !passed && self.consecutive_failures >= t.failures_before_critical => {
                Some(outcome.status)
            }
            Some(_) => None,
        };
        let changed = next.filter(|n| Some(*n) != self.status);
        if let Some(n) = changed {
            self.status = Some(n);
            self.critical_since = (n == HealthStatus::Critical).then_some(now);
        }
        changed
    }

    /// Whether the check has been critical for at least `after`.
    pub(crate) fn critical_for(&self, after: Duration, now: Instant) -> bool {
        self.critical_since
            .is_some_and(|since| now.saturating_duration_since(since) >= after)
    }
}

/// A check's status as the API shows it (on the node that runs it).
/// Fields in alphabetical order, as the HTTP API writes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CheckStatus {
    /// Non-passing runs in a row.
    pub consecutive_failures: u32,
    /// Passing runs in a row.
    pub consecutive_successes: u32,
    /// Instance id.
    pub instance: String,
    /// Its interval, ms.
    pub interval_ms: u64,
    /// `http`, `tcp` or `command`.
    pub kind: String,
    /// The output of the last run that did not pass (`null`: none yet).
    pub last_error: Option<String>,
    /// When it last ran, ms since the Unix epoch (`null`: not yet).
    pub last_run_ms: Option<u64>,
    /// The check's name.
    pub name: String,
    /// Namespace of the instance.
    pub namespace: String,
    /// One line from the last run (`GET http://...: HTTP 200 OK`,
    /// `TCP connect ...: connected`, `exit 0: ...`).
    pub output: String,
    /// Runs since the check was armed on this node.
    pub runs: u64,
    /// Service of the instance.
    pub service: String,
    /// Status after the thresholds; `null` before the first run.
    pub status: Option<HealthStatus>,
    /// What it probes: URL, address or command line.
    pub target: String,
    /// Its timeout, ms.
    pub timeout_ms: u64,
}

fn truncate(mut s: String) -> String {
    let s_trim = s.trim_end();
    s.truncate(s_trim.len());
    if s.len() > MAX_OUTPUT_LEN {
        let mut end = MAX_OUTPUT_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::*;

    fn run(s: &mut CheckState, status: HealthStatus, t: Thresholds, now: Instant) -> Option<HealthStatus> {
        s.record(Outcome::new(status, status.as_str()), t, now, 1)
    }

    #[test]
    fn the_first_run_decides_then_thresholds_apply_both_ways() {
        let t = Thresholds {
            failures_before_critical: 3,
            successes_before_passing: 2,
        };
        let now = Instant::now();
        let mut s = CheckState::new();
        assert_eq!(run(&mut s, Passing, t, now), Some(Passing));
        assert_eq!(run(&mut s, Critical, t, now), None);
        assert_eq!(run(&mut s, Critical, t, now), None);
        assert_eq!(run(&mut s, Passing, t, now), None, "a pass resets the failures");
        assert_eq!(run(&mut s, Critical, t, now), None);
        assert_eq!(run(&mut s, Warning, t, now), None);
        assert_eq!(
            run(&mut s, Critical, t, now),
            Some(Critical),
            "third failure in a row"
        );
        assert_eq!(s.last_error.as_deref(), Some("critical"));
        assert_eq!(run(&mut s, Passing, t, now), None);
        assert_eq!(
            run(&mut s, Passing, t, now),
            Some(Passing),
            "second success in a row"
        );
        assert_eq!(s.consecutive_successes, 2);
        assert_eq!(s.runs, 9);
    }

    #[test]
    fn warnings_count_as_failures_and_take_their_own_status() {
        let t = Thresholds {
            failures_before_critical: 2,
            successes_before_passing: 1,
        };
        let now = Instant::now();
        let mut s = CheckState::new();
        run(&mut s, Passing, t, now);
        assert_eq!(run(&mut s, Warning, t, now), None);
        assert_eq!(run(&mut s, Warning, t, now), Some(Warning));
        assert_eq!(
            run(&mut s, Critical, t, now),
            Some(Critical),
            "past the threshold every failed run sets its own status"
        );
        assert_eq!(s.consecutive_failures, 3);
    }

    #[test]
    fn critical_time_is_counted_from_the_status_change() {
        let t = Thresholds {
            failures_before_critical: 1,
            successes_before_passing: 1,
        };
        let start = Instant::now();
        let mut s = CheckState::new();
        run(&mut s, Critical, t, start);
        let later = start + Duration::from_secs(5);
        run(&mut s, Critical, t, later);
        assert!(s.critical_for(Duration::from_secs(5), later));
        assert!(!s.critical_for(Duration::from_secs(6), later));
        run(&mut s, Passing, t, later);
        assert!(!s.critical_for(Duration::ZERO, later));
    }

    #[test]
    fn output_is_bounded() {
        let o = Outcome::new(Passing, "é".repeat(MAX_OUTPUT_LEN));
        assert!(o.output.len() <= MAX_OUTPUT_LEN + '…'.len_utf8());
        assert_eq!(Outcome::new(Passing, "ok\n").output, "ok");
    }
}
