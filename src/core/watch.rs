//! Watch events and the bounded log watchers resume from.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::hlc::Hlc;
use super::ids::{NodeId, StateKey};
use super::membership::MemberStatus;
use super::state::VersionId;

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WatchChange {
    /// A config key or service instance: its new visible state.
    Key {
        /// Which register.
        key: StateKey,
        /// The winning version after the change, `None` if none is held.
        winner: Option<VersionId>,
        /// Its HLC.
        hlc: Option<Hlc>,
        /// Whether the key now reads as deleted.
        deleted: bool,
        /// Number of live versions (more than one: concurrent siblings).
        siblings: usize,
        /// Whether the change came from this node's own command.
        local: bool,
    },
    /// A member's status or incarnation changed.
    Member {
        /// Which member.
        node: NodeId,
        /// New status.
        status: MemberStatus,
        /// New incarnation.
        incarnation: u64,
    },
}

/// One applied change with its node-local revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Monotonically increasing on this node, never reused across restarts.
    pub revision: u64,
    /// The change.
    pub change: WatchChange,
}

/// Resuming from a revision the log no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("revision {requested} was compacted; oldest held is {oldest}, current is {current}: take a snapshot")]
pub struct SnapshotRequired {
    /// What was asked for.
    pub requested: u64,
    /// Oldest revision still held.
    pub oldest: u64,
    /// The latest revision.
    pub current: u64,
}

/// The last `capacity` events.
#[derive(Clone, Debug)]
pub struct WatchLog {
    events: VecDeque<WatchEvent>,
    capacity: usize,
    revision: u64,
    /// Revisions at or below this were never in this log (before restart).
    floor: u64,
}

impl WatchLog {
    /// An empty log starting after `revision`.
    pub fn new(capacity: usize, revision: u64) -> Self {
        WatchLog {
            events: VecDeque::new(),
            capacity,
            revision,
            floor: revision,
        }
    }

    /// The latest revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Append a change; returns the event.
    pub fn push(&mut self, change: WatchChange) -> WatchEvent {
        self.revision += 1;
        let ev = WatchEvent {
            revision: self.revision,
            change,
        };
        let len = self.events.len();
        if len == self.capacity {
            self.events.pop_front();
        } else if len == self.events.capacity() {
            // Grow by doubling, but never past the capacity (plain doubling
            // took a log of 10,000 events to room for 16,384).
            self.events.reserve_exact(len.max(16).min(self.capacity - len));
        }
        self.events.push_back(ev.clone());
        ev
    }

    /// Every event after `since`, or an error if some were compacted.
    pub fn since(&self, since: u64) -> Result<Vec<WatchEvent>, SnapshotRequired> {
        // `since` comes from clients (`?since=`, `Last-Event-ID`): any u64.
        let oldest = self
            .events
            .front()
            .map_or(self.revision.saturating_add(1), |e| e.revision);
        if since.saturating_add(1) < oldest && since < self.revision {
            return Err(SnapshotRequired {
                requested: since,
                oldest: oldest.saturating_sub(1).max(self.floor),
                current: self.revision,
            });
        }
        Ok(self
            .events
            .iter()
            .filter(|e| e.revision > since)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_from_the_largest_revision_is_empty_not_an_overflow() {
        let log = WatchLog::new(4, 0);
        assert_eq!(log.since(u64::MAX), Ok(Vec::new()));
    }

    fn change(i: u64) -> WatchChange {
        WatchChange::Member {
            node: NodeId::from_index(i),
            status: MemberStatus::Alive,
            incarnation: 0,
        }
    }

    #[test]
    fn resume_returns_exactly_the_events_after_the_revision() {
        let mut log = WatchLog::new(10, 0);
        for i in 0..5 {
            log.push(change(i));
        }
        let evs = log.since(2).unwrap();
        assert_eq!(evs.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(log.since(5).unwrap().is_empty());
    }

    #[test]
    fn the_log_never_makes_room_for_more_than_its_capacity() {
        let mut log = WatchLog::new(100, 0);
        for i in 0..250 {
            log.push(change(i));
            assert!(
                log.events.capacity() <= 100,
                "room for {} after {} events",
                log.events.capacity(),
                i + 1
            );
        }
        assert_eq!(log.events.len(), 100);
        assert_eq!(log.since(150).unwrap().len(), 100);
    }

    #[test]
    fn resuming_from_a_compacted_revision_requires_a_snapshot() {
        let mut log = WatchLog::new(3, 0);
        for i in 0..10 {
            log.push(change(i));
        }
        assert!(log.since(7).is_ok());
        let err = log.since(2).unwrap_err();
        assert_eq!(err.current, 10);
        // After a restart, revisions before the restart are gone.
        let log = WatchLog::new(3, 100);
        assert!(log.since(100).unwrap().is_empty());
        assert!(log.since(50).is_err());
    }
}
