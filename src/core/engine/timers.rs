//! The engine's timers: one deadline per [`Timer`], `None` when it is not
//! armed, and the earliest one the driver must wake up for.

/// A periodic job of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Timer {
    /// Publish a heartbeat.
    Heartbeat,
    /// Housekeeping: owned instances' TTLs, expired syncs, and (when its
    /// own timer is due too) the failure check.
    Check,
    /// Scan every peer for silence (suspect, then dead). Nested in
    /// [`Timer::Check`]: it runs only on a tick that runs the check, so the
    /// driver is never woken for it (see [`Timer::wakes_driver`]).
    FailureCheck,
    /// Anti-entropy with a random peer.
    Sync,
    /// Tombstone collection.
    Gc,
}

impl Timer {
    /// Every timer.
    const ALL: [Timer; 5] = [
        Timer::Heartbeat,
        Timer::Check,
        Timer::FailureCheck,
        Timer::Sync,
        Timer::Gc,
    ];

    /// Whether [`TimerTable::next_timeout`] waits for this timer. The
    /// failure check does not: it is gated on [`Timer::Check`], which runs
    /// at least every quarter base interval, so a due failure check waits
    /// for the next check (the engine has always scheduled it this way).
    fn wakes_driver(self) -> bool {
        !matches!(self, Timer::FailureCheck)
    }
}

/// When each timer fires next; `None` when it is not armed.
#[derive(Clone, Debug, Default)]
pub(super) struct TimerTable {
    at_ms: [Option<u64>; Timer::ALL.len()],
}

impl TimerTable {
    /// Arm `timer` for `at_ms`, replacing its deadline.
    pub(super) fn set(&mut self, timer: Timer, at_ms: u64) {
        self.at_ms[timer as usize] = Some(at_ms);
    }

    /// Arm `timer` for `at_ms` unless it fires earlier already (an unarmed
    /// timer is armed).
    pub(super) fn set_earlier(&mut self, timer: Timer, at_ms: u64) {
        let at = self.get(timer).map_or(at_ms, |t| t.min(at_ms));
        self.set(timer, at);
    }

    /// When `timer` fires, if armed.
    pub(super) fn get(&self, timer: Timer) -> Option<u64> {
        self.at_ms[timer as usize]
    }

    /// Disarm `timer`.
    pub(super) fn clear(&mut self, timer: Timer) {
        self.at_ms[timer as usize] = None;
    }

    /// The earliest deadline of the timers that wake the driver, if any is
    /// armed.
    pub(super) fn next_timeout(&self) -> Option<u64> {
        Timer::ALL
            .into_iter()
            .filter(|t| t.wakes_driver())
            .filter_map(|t| self.get(t))
            .min()
    }

    /// The timers due at `now_ms` (armed for `now_ms` or earlier).
    pub(super) fn expired(&self, now_ms: u64) -> Expired {
        let mut due = Expired::default();
        for t in Timer::ALL {
            if self.get(t).is_some_and(|at| at <= now_ms) {
                due.0 |= 1 << t as u8;
            }
        }
        due
    }
}

/// The set of timers [`TimerTable::expired`] found due.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Expired(u8);

impl Expired {
    /// Whether `timer` was due.
    pub(super) fn contains(self, timer: Timer) -> bool {
        self.0 & (1 << timer as u8) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_table_has_no_timeout_and_nothing_due() {
        let t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        let due = t.expired(u64::MAX);
        assert!(Timer::ALL.into_iter().all(|timer| !due.contains(timer)));
    }

    #[test]
    fn the_next_timeout_is_the_earliest_armed_timer() {
        let mut t = TimerTable::default();
        t.set(Timer::Gc, 500);
        t.set(Timer::Heartbeat, 300);
        t.set(Timer::Sync, 400);
        assert_eq!(t.next_timeout(), Some(300));
        t.clear(Timer::Heartbeat);
        assert_eq!(t.next_timeout(), Some(400));
        t.set(Timer::Check, 100);
        assert_eq!(t.next_timeout(), Some(100));
    }

    #[test]
    fn the_failure_check_never_sets_the_timeout() {
        let mut t = TimerTable::default();
        t.set(Timer::FailureCheck, 10);
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::Check, 50);
        assert_eq!(t.next_timeout(), Some(50));
        assert!(t.expired(10).contains(Timer::FailureCheck));
        assert!(!t.expired(10).contains(Timer::Check));
    }

    #[test]
    fn a_timer_is_due_from_its_deadline_on_and_never_once_cleared() {
        let mut t = TimerTable::default();
        t.set(Timer::Sync, 1_000);
        t.set(Timer::Gc, 2_000);
        assert!(!t.expired(999).contains(Timer::Sync));
        assert!(t.expired(1_000).contains(Timer::Sync));
        assert!(!t.expired(1_000).contains(Timer::Gc));
        assert!(t.expired(5_000).contains(Timer::Gc));
        t.clear(Timer::Sync);
        assert!(!t.expired(u64::MAX).contains(Timer::Sync));
        assert_eq!(t.get(Timer::Sync), None);
    }

    #[test]
    fn set_earlier_only_moves_a_deadline_forward_and_arms_an_unarmed_timer() {
        let mut t = TimerTable::default();
        t.set_earlier(Timer::Heartbeat, 700);
        assert_eq!(t.get(Timer::Heartbeat), Some(700));
        t.set_earlier(Timer::Heartbeat, 900);
        assert_eq!(t.get(Timer::Heartbeat), Some(700));
        t.set_earlier(Timer::Heartbeat, 600);
        assert_eq!(t.get(Timer::Heartbeat), Some(600));
    }
}
