//! Publishes gossip could not carry yet, held until it can.
//!
//! Gossipsub refuses a publish when it knows no peer subscribed to the
//! topic: a node alone, or one whose first connection is open but whose
//! peer has not yet sent its subscriptions (a few milliseconds on a LAN).
//! A node's first heartbeat, the one that announces it to the cluster,
//! used to fall into that gap; the cluster then learned of it only from
//! anti-entropy or its next heartbeat, an effective interval (one second
//! per member) later. The driver holds such publishes and sends them
//! the moment a peer subscribes to their topic.
//!
//! Bounded in count, bytes and age: what is dropped is repaired by
//! anti-entropy, as before. Only the latest heartbeat is worth holding
//! (each supersedes the one before, held or sent); deltas are held in
//! order.

use std::collections::VecDeque;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use crate::core::Topic;

/// A held publish older than this is dropped: by then anti-entropy or a
/// later heartbeat has done its work.
pub(crate) const HOLD_FOR: Duration = Duration::from_secs(5);
/// At most this many publishes are held (the oldest go first).
const MAX_HELD: usize = 32;
/// At most this many bytes are held (the oldest go first).
const MAX_HELD_BYTES: usize = 256 << 10;

/// Publishes waiting for a subscribed peer, oldest first.
#[derive(Debug)]
pub(crate) struct Held {
    msgs: VecDeque<(Topic, Vec<u8>, Instant)>,
    /// Publishes dropped unsent (too old, over the bounds, or a heartbeat
    /// superseded by the next).
    dropped: Counter,
}

impl Held {
    /// Nothing held; drops are counted on `dropped`.
    pub(crate) fn new(dropped: Counter) -> Self {
        Held {
            msgs: VecDeque::new(),
            dropped,
        }
    }

    /// Hold `bytes` for `topic`, first refused at `since`. A heartbeat
    /// replaces the one held before it.
    pub(crate) fn hold(&mut self, topic: Topic, bytes: Vec<u8>, since: Instant) {
        self.supersede(topic);
        self.msgs.push_back((topic, bytes, since));
        while self.msgs.len() > MAX_HELD || (self.held_bytes() > MAX_HELD_BYTES && self.msgs.len() > 1) {
            self.pop_oldest();
        }
    }

    /// A publish on `topic` went out (or is being held): a heartbeat held
    /// from before is superseded by it (dropped), deltas stay held.
    pub(crate) fn supersede(&mut self, topic: Topic) {
        if topic != Topic::Heartbeat {
            return;
        }
        let before = self.msgs.len();
        self.msgs.retain(|(t, _, _)| *t != Topic::Heartbeat);
        self.dropped.inc_by((before - self.msgs.len()) as u64);
    }

    /// Take the publishes held for `topic` that are still fresh at `now`,
    /// oldest first, with when each was first refused.
    pub(crate) fn take(&mut self, topic: Topic, now: Instant) -> Vec<(Vec<u8>, Instant)> {
        self.expire(now);
        let (taken, kept): (VecDeque<_>, VecDeque<_>) =
            self.msgs.drain(..).partition(|(t, _, _)| *t == topic);
        self.msgs = kept;
        taken
            .into_iter()
            .map(|(_, bytes, since)| (bytes, since))
            .collect()
    }

    fn expire(&mut self, now: Instant) {
        while self
            .msgs
            .front()
            .is_some_and(|(_, _, since)| now.duration_since(*since) >= HOLD_FOR)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if self.msgs.pop_front().is_some() {
            self.dropped.inc();
        }
    }

    /// Bytes held (at most [`MAX_HELD`] messages to add up).
    fn held_bytes(&self) -> usize {
        self.msgs.iter().map(|(_, b, _)| b.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_replaces_the_held_one_and_deltas_keep_their_order() {
        let now = Instant::now();
        let mut h = Held::new(Counter::default());
        h.hold(Topic::Heartbeat, vec![1], now);
        h.hold(Topic::Delta, vec![10], now);
        h.hold(Topic::Heartbeat, vec![2], now);
        h.hold(Topic::Delta, vec![11], now);
        let beats: Vec<Vec<u8>> = h
            .take(Topic::Heartbeat, now)
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        assert_eq!(beats, vec![vec![2]]);
        assert_eq!(h.dropped.get(), 1);
        let deltas: Vec<Vec<u8>> = h.take(Topic::Delta, now).into_iter().map(|(b, _)| b).collect();
        assert_eq!(deltas, vec![vec![10], vec![11]]);
        assert!(h.take(Topic::Delta, now).is_empty(), "taken once");
    }

    #[test]
    fn a_heartbeat_sent_since_supersedes_the_held_one() {
        let now = Instant::now();
        let mut h = Held::new(Counter::default());
        h.hold(Topic::Heartbeat, vec![1], now);
        h.hold(Topic::Delta, vec![10], now);
        h.supersede(Topic::Delta);
        h.supersede(Topic::Heartbeat);
        assert!(h.take(Topic::Heartbeat, now).is_empty());
        assert_eq!(h.dropped.get(), 1);
        assert_eq!(h.take(Topic::Delta, now).len(), 1, "a delta is not superseded");
    }

    #[test]
    fn held_publishes_expire_and_stay_within_the_bounds() {
        let start = Instant::now();
        let mut h = Held::new(Counter::default());
        h.hold(Topic::Delta, vec![0; 8], start);
        assert!(h.take(Topic::Delta, start + HOLD_FOR).is_empty(), "too old");
        assert_eq!(h.dropped.get(), 1);
        for i in 0..(MAX_HELD + 8) {
            h.hold(Topic::Delta, vec![i as u8], start);
        }
        let held = h.take(Topic::Delta, start);
        assert_eq!(held.len(), MAX_HELD);
        assert_eq!(held[0].0, vec![8], "the oldest went first");
        let big = vec![0; MAX_HELD_BYTES / 2 + 1];
        h.hold(Topic::Delta, big.clone(), start);
        h.hold(Topic::Delta, big.clone(), start);
        assert_eq!(h.take(Topic::Delta, start).len(), 1, "over the byte bound");
        // One message larger than the bound on its own is still held.
        h.hold(Topic::Delta, vec![0; MAX_HELD_BYTES + 1], start);
        assert_eq!(h.take(Topic::Delta, start).len(), 1);
        assert_eq!(h.held_bytes(), 0);
    }
}
