//! Hybrid logical clock.
//!
//! A stamp is `(wall_ms, logical)`; the node that made it is the origin of the
//! version it stamps. The clock never reads the time itself: every call takes
//! the caller's `now_ms`, so the same code runs under the simulator's virtual
//! time and the node's wall clock.

use serde::{Deserialize, Serialize};

/// One HLC stamp. Ordered by physical milliseconds, then the logical counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Physical component: milliseconds since the Unix epoch.
    pub wall_ms: u64,
    /// Logical counter, for events within one millisecond.
    pub logical: u32,
}

/// A remote stamp the clock refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HlcError {
    /// The remote stamp is further ahead of local time than the allowed
    /// drift. Nothing changed; the message carrying it should be dropped
    /// (and counted).
    #[error("remote clock {remote_ms} ms is {ahead_ms} ms ahead of local time (limit {max_drift_ms} ms)")]
    TooFarAhead {
        /// The remote physical time.
        remote_ms: u64,
        /// How far ahead of `now` it was.
        ahead_ms: u64,
        /// The configured limit.
        max_drift_ms: u64,
    },
}

/// The local hybrid logical clock.
#[derive(Clone, Debug)]
pub struct HlcClock {
    last: Hlc,
    max_drift_ms: u64,
}

impl HlcClock {
    /// A clock that rejects remote stamps more than `max_drift_ms` ahead.
    pub fn new(max_drift_ms: u64) -> Self {
        HlcClock {
            last: Hlc::default(),
            max_drift_ms,
        }
    }

    /// Change the drift limit (hot reload).
    pub fn set_max_drift(&mut self, max_drift_ms: u64) {
        self.max_drift_ms = max_drift_ms;
    }

    /// The last stamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A fresh stamp for a local event, strictly greater than every stamp
    /// issued or observed before.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        self.last = if now_ms > self.last.wall_ms {
            Hlc {
                wall_ms: now_ms,
                logical: 0,
            }
        } else {
            bump(self.last)
        };
        self.last
    }

    /// Check a remote stamp against the drift limit without observing it.
    pub fn check(&self, remote: Hlc, now_ms: u64) -> Result<(), HlcError> {
        let ahead_ms = remote.wall_ms.saturating_sub(now_ms);
        if ahead_ms > self.max_drift_ms {
            return Err(HlcError::TooFarAhead {
                remote_ms: remote.wall_ms,
                ahead_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        Ok(())
    }

    /// Fold a remote stamp into the clock, so later local stamps order after
    /// it. Rejects stamps too far in the future (state unchanged).
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<(), HlcError> {
        self.check(remote, now_ms)?;
        if remote > self.last {
            self.last = remote;
        }
        Ok(())
    }

    /// Restore after a restart: never issue a stamp at or below `floor`.
    pub fn restore(&mut self, floor: Hlc) {
        if floor > self.last {
            self.last = floor;
        }
    }
}

fn bump(h: Hlc) -> Hlc {
    match h.logical.checked_add(1) {
        Some(logical) => Hlc {
            wall_ms: h.wall_ms,
            logical,
        },
        None => Hlc {
            wall_ms: h.wall_ms + 1,
            logical: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_stamps_are_strictly_increasing_even_when_time_stands_still_or_goes_back() {
        let mut c = HlcClock::new(60_000);
        let a = c.tick(1000);
        let b = c.tick(1000);
        let d = c.tick(900);
        assert!(a < b && b < d);
        assert_eq!(d.wall_ms, 1000);
    }

    #[test]
    fn observed_remote_stamp_orders_later_local_stamps_after_it() {
        let mut c = HlcClock::new(60_000);
        c.tick(1000);
        let remote = Hlc {
            wall_ms: 5000,
            logical: 7,
        };
        c.observe(remote, 1000).unwrap();
        assert!(c.tick(1001) > remote);
    }

    #[test]
    fn remote_stamp_beyond_drift_limit_is_rejected_and_clock_unchanged() {
        let mut c = HlcClock::new(60_000);
        let before = c.tick(1_000);
        let far = Hlc {
            wall_ms: 1_000 + 60_001,
            logical: 0,
        };
        let err = c.observe(far, 1_000).unwrap_err();
        assert!(matches!(err, HlcError::TooFarAhead { ahead_ms: 60_001, .. }));
        assert_eq!(c.last(), before);
        // Exactly at the limit is accepted.
        let edge = Hlc {
            wall_ms: 61_000,
            logical: 0,
        };
        assert!(c.observe(edge, 1_000).is_ok());
    }
}
