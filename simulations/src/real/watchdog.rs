//! Safety checks on every read while a real-node run goes.

#[allow(clippy::wildcard_imports)]
use super::*;

// ----- safety as the run goes ---------------------------------------------------

/// What one node (in one life) was last seen holding for one key.
#[derive(Clone, Debug, Default)]
pub(super) struct KeySeen {
    /// Dots held at the last read.
    held: BTreeSet<Dot>,
    /// The highest HLC held at the last read (config keys).
    max_hlc: Option<Hlc>,
    /// Dots once seen superseded (not live).
    superseded: BTreeSet<Dot>,
    /// Dots dropped when the whole key was collected.
    collected: BTreeSet<Dot>,
}

/// Safety checks on every read of a tracked key while the run goes, the
/// real-node counterpart of the simulator's per-batch checks. A node's
/// reads are compared with its own earlier reads (in the same life: a
/// restart starts afresh):
/// * **no-phantom-values**: every value held was written by a client;
/// * **winner-monotonic**: a version once superseded is never live again;
/// * **versions-monotonic**: the newest version of a config key never
///   disappears while the key is held (trimming drops the oldest,
///   collection drops all);
/// * **no-resurrection**: a version dropped with its collected key never
///   comes back;
/// * **limits**: a key keeps at most `history_limit` superseded versions;
/// * **never-self-dead** (from the membership sampler): a node never holds
///   itself suspect or dead.
#[derive(Debug, Default)]
pub struct Watchdog {
    /// Superseded versions a config key may keep (`Config::history_limit`).
    pub history_limit: usize,
    seen: HashMap<(usize, u32, TrackedKey), KeySeen>,
    checked_values: BTreeSet<Dot>,
    /// Reads checked.
    pub reads: u64,
    /// Violations found, in order.
    pub violations: Vec<Violation>,
}

impl Watchdog {
    /// A watchdog for keys keeping at most `history_limit` superseded
    /// versions.
    pub fn new(history_limit: usize) -> Watchdog {
        Watchdog {
            history_limit,
            ..Watchdog::default()
        }
    }

    /// Check one read of `key` on node `slot` (in life `life`) at `t_ms`.
    pub fn on_read(
        &mut self,
        t_ms: u64,
        slot: usize,
        life: u32,
        key: &TrackedKey,
        held: &[Held],
        issued_puts: &BTreeSet<u64>,
    ) {
        let history_limit = self.history_limit;
        self.reads += 1;
        let mut found: Vec<(&'static str, String)> = Vec::new();
        for h in held {
            let Some(b) = &h.value else { continue };
            if !self.checked_values.insert(h.dot) {
                continue;
            }
            let ok =
                parse_value_op(b).is_some_and(|op| issued_puts.contains(&op) && value_for(op, b.len()) == *b);
            if !ok {
                found.push((
                    "no-phantom-values",
                    format!(
                        "{key} holds a value no client wrote: {:?}",
                        String::from_utf8_lossy(b)
                    ),
                ));
            }
        }
        let seen = self.seen.entry((slot, life, key.clone())).or_default();
        for h in held {
            if h.live && seen.superseded.contains(&h.dot) {
                found.push((
                    "winner-monotonic",
                    format!("{key}: version {:?} was superseded and is live again", h.dot),
                ));
            }
            if seen.collected.contains(&h.dot) {
                found.push((
                    "no-resurrection",
                    format!("{key}: version {:?} came back after the key was collected", h.dot),
                ));
            }
        }
        if let TrackedKey::Kv(_) = key {
            let old = held.iter().filter(|h| !h.live).count();
            if old > history_limit {
                found.push((
                    "limits",
                    format!("{key} keeps {old} superseded versions (limit {history_limit})"),
                ));
            }
            let max = held.iter().map(|h| h.hlc).max();
            match (seen.max_hlc, max) {
                (Some(before), Some(now)) if now < before => found.push((
                    "versions-monotonic",
                    format!("{key}: the newest version went back from {before:?} to {now:?}"),
                )),
                (Some(_), None) => {
                    let dropped = std::mem::take(&mut seen.held);
                    seen.collected.extend(dropped);
                }
                _ => {}
            }
            seen.max_hlc = max;
        }
        seen.superseded
            .extend(held.iter().filter(|h| !h.live).map(|h| h.dot));
        seen.held = held.iter().map(|h| h.dot).collect();
        for (invariant, detail) in found {
            self.violations.push(Violation {
                t_ms,
                invariant,
                node: Some(slot),
                detail,
            });
        }
    }

    /// Check a node's view of itself.
    pub fn on_self_view(&mut self, t_ms: u64, slot: usize, status: MemberStatus) {
        if matches!(status, MemberStatus::Suspect | MemberStatus::Dead) {
            self.violations.push(Violation {
                t_ms,
                invariant: "never-self-dead",
                node: Some(slot),
                detail: format!("the node holds itself {}", status.as_str()),
            });
        }
    }
}
