//! Phi-accrual failure detection (Hayashibara et al.).
//!
//! For each peer the detector keeps a window of heartbeat inter-arrival
//! times. `phi(now)` says how unlikely it is, given that history, that the
//! next heartbeat is still on its way: `phi = -log10(P(interval > elapsed))`
//! under a normal distribution fitted to the window. A threshold of 8 means a
//! false suspicion about once in 10^8 heartbeats of a healthy peer.

/// Arrival history of one peer. Every node keeps one per member, so at a
/// thousand members it is kept small: intervals are milliseconds as `u32`
/// in a ring that grows only as heartbeats arrive (up to `capacity`).
#[derive(Clone, Debug)]
pub struct PhiDetector {
    intervals: Vec<u32>,
    /// Index of the oldest interval once the ring is full.
    head: u32,
    capacity: u32,
    sum: f64,
    sum_sq: f64,
    last_arrival_ms: Option<u64>,
    min_std_dev_ms: f64,
    acceptable_pause_ms: f64,
}

impl PhiDetector {
    /// A detector that assumes `expected_interval_ms` until it has data.
    pub fn new(expected_interval_ms: u64, capacity: usize) -> Self {
        let mut d = PhiDetector {
            intervals: Vec::new(),
            head: 0,
            capacity: capacity.clamp(2, u32::MAX as usize) as u32,
            sum: 0.0,
            sum_sq: 0.0,
            last_arrival_ms: None,
            // Heartbeats on a loaded host (or a GC-paused peer) arrive in
            // bursts: never assume a spread tighter than half an interval,
            // and tolerate one whole missed interval before phi climbs.
            min_std_dev_ms: (expected_interval_ms as f64 / 2.0).max(10.0),
            acceptable_pause_ms: expected_interval_ms as f64,
        };
        // Seed with the expected interval so the first judgements are sane.
        d.push(expected_interval_ms);
        d.push(expected_interval_ms);
        d
    }

    /// Record a heartbeat arrival.
    pub fn heartbeat(&mut self, now_ms: u64) {
        if let Some(last) = self.last_arrival_ms {
            if now_ms > last {
                self.push(now_ms - last);
            }
        }
        self.last_arrival_ms = Some(now_ms.max(self.last_arrival_ms.unwrap_or(0)));
    }

    fn push(&mut self, interval: u64) {
        let interval = interval.min(u64::from(u32::MAX)) as u32;
        if self.intervals.len() < self.capacity as usize {
            self.intervals.push(interval);
        } else {
            let slot = &mut self.intervals[self.head as usize];
            let old = f64::from(*slot);
            self.sum -= old;
            self.sum_sq -= old * old;
            *slot = interval;
            self.head = (self.head + 1) % self.capacity;
        }
        let v = f64::from(interval);
        self.sum += v;
        self.sum_sq += v * v;
    }

    fn mean_std(&self) -> (f64, f64) {
        let n = self.intervals.len() as f64;
        let mean = self.sum / n;
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        (
            mean + self.acceptable_pause_ms,
            var.sqrt().max(self.min_std_dev_ms),
        )
    }

    /// The time at which `phi` will cross `threshold` if no heartbeat
    /// arrives (phi grows monotonically with silence), so callers can check
    /// a deadline instead of evaluating phi on every tick.
    pub fn suspect_deadline_ms(&self, threshold: f64) -> Option<u64> {
        let last = self.last_arrival_ms?;
        let (mean, std) = self.mean_std();
        let y = threshold_y(threshold);
        Some(last + (mean + y * std).max(0.0).ceil() as u64)
    }

    /// Treat `now_ms` as an arrival without adding an interval (a peer just
    /// learned of, or just restarted tracking).
    pub fn reset(&mut self, now_ms: u64) {
        self.last_arrival_ms = Some(now_ms);
    }

    /// When the last heartbeat arrived.
    pub fn last_arrival_ms(&self) -> Option<u64> {
        self.last_arrival_ms
    }

    /// Mean inter-arrival time.
    pub fn mean_ms(&self) -> f64 {
        self.sum / self.intervals.len() as f64
    }

    /// Suspicion level at `now_ms`; 0 before any arrival.
    pub fn phi(&self, now_ms: u64) -> f64 {
        let Some(last) = self.last_arrival_ms else {
            return 0.0;
        };
        let elapsed = now_ms.saturating_sub(last) as f64;
        let (mean, std) = self.mean_std();
        phi_of_y((elapsed - mean) / std)
    }
}

/// Phi for a standardised elapsed time `y`, using a logistic approximation
/// of the normal distribution's upper tail.
fn phi_of_y(y: f64) -> f64 {
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    let p_later = if y > 0.0 {
        e / (1.0 + e)
    } else {
        1.0 - 1.0 / (1.0 + e)
    };
    -(p_later.max(f64::MIN_POSITIVE)).log10()
}

/// The standardised elapsed time at which phi reaches `threshold`
/// (bisection; phi is increasing in y). The engine asks for the same
/// threshold for every member on every check, so the last answer is
/// memoised per thread (a pure function: the memo changes no result). The
/// simulator measured the bisection's `exp`/`log10` at half of all CPU time
/// with 1,000 nodes.
fn threshold_y(threshold: f64) -> f64 {
    thread_local! {
        static LAST: std::cell::Cell<(u64, f64)> = const { std::cell::Cell::new((u64::MAX, 0.0)) };
    }
    let key = threshold.to_bits();
    if let Some(y) = LAST.with(|c| {
        let (k, y) = c.get();
        (k == key).then_some(y)
    }) {
        return y;
    }
    let y = threshold_y_uncached(threshold);
    LAST.with(|c| c.set((key, y)));
    y
}

fn threshold_y_uncached(threshold: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0f64, 40.0f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if phi_of_y(mid) < threshold {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_heartbeats_keep_phi_low() {
        let mut d = PhiDetector::new(1000, 100);
        for t in 0..50 {
            d.heartbeat(t * 1000);
        }
        assert!(d.phi(49_000 + 1000) < 1.0);
    }

    #[test]
    fn silence_makes_phi_grow_without_bound() {
        let mut d = PhiDetector::new(1000, 100);
        for t in 0..50 {
            d.heartbeat(t * 1000 + (t % 3) * 50);
        }
        let last = 49 * 1000 + 50;
        let a = d.phi(last + 2_000);
        let b = d.phi(last + 4_000);
        let c = d.phi(last + 10_000);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!(c > 8.0);
    }

    #[test]
    fn the_window_keeps_the_last_capacity_intervals() {
        let mut d = PhiDetector::new(1000, 4);
        for t in 0..10 {
            d.heartbeat(t * 500);
        }
        assert_eq!(d.intervals.len(), 4);
        assert!((d.mean_ms() - 500.0).abs() < 1e-9);
        assert!(d.sum_sq - 4.0 * 500.0 * 500.0 < 1e-6);
    }

    #[test]
    fn the_deadline_is_where_phi_crosses_the_threshold() {
        let mut d = PhiDetector::new(1000, 100);
        for t in 0..20 {
            d.heartbeat(t * 1000 + (t % 2) * 100);
        }
        let deadline = d.suspect_deadline_ms(8.0).unwrap();
        assert!(d.phi(deadline - 1) < 8.0 + 1e-6);
        assert!(d.phi(deadline + 1) >= 8.0);
    }
}
