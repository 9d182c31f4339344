//! What the engine asks to be made durable, and what it restarts from.
//!
//! The engine never writes to disk itself: each `handle` call that changed
//! state emits one [`PersistBatch`] *before* any action that exposes the
//! change (a reply, a publish, a sync response). The driver must make the
//! batch durable before executing the actions after it; if it cannot, it
//! feeds `Input::PersistFailed` back and skips them. [`MemoryStore`] is the
//! reference implementation used by tests and the simulator; the node's redb
//! store applies batches the same way.
//!
//! One exception is allowed: a batch of other nodes' member records alone
//! (no key, no knowledge) may be made durable up to a second later (the
//! node's store does so, `store::LAZY_SYNC_AFTER`): it holds only what
//! peers will say again. A store tells such a batch by its meta: a change
//! to this node's own record always comes with a new
//! [`PersistedMeta::incarnation`] (a start, a refutation, new info) or
//! [`PersistedMeta::left`], and the engine keeps it that way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dots::{DotRange, Knowledge};
use super::hlc::Hlc;
use super::ids::{NodeId, StateKey};
use super::membership::Member;
use super::state::KeyState;

/// Small per-node values persisted with every batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedMeta {
    /// This node's incarnation.
    pub incarnation: u64,
    /// The latest watch revision issued.
    pub revision: u64,
    /// The latest HLC stamp issued or observed.
    pub hlc: Hlc,
    /// Whether the node has left the cluster gracefully.
    pub left: bool,
}

/// One atomic unit of durable change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistBatch {
    /// Echoed back in `Input::PersistFailed`.
    pub id: u64,
    /// Keys whose state changed: the full new state, or `None` if removed.
    pub keys: Vec<(StateKey, Option<KeyState>)>,
    /// Origins whose knowledge range changed: the full new range.
    pub knowledge: Vec<(NodeId, DotRange)>,
    /// Member records that changed.
    pub members: Vec<Member>,
    /// Members whose records were dropped (reaped).
    pub removed_members: Vec<NodeId>,
    /// Node meta values after the batch.
    pub meta: PersistedMeta,
}

/// Everything a node restarts from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every key held.
    pub keys: Vec<(StateKey, KeyState)>,
    /// Knowledge per origin.
    pub knowledge: Vec<(NodeId, DotRange)>,
    /// Member records.
    pub members: Vec<Member>,
    /// Node meta values.
    pub meta: PersistedMeta,
}

impl Snapshot {
    /// The knowledge as a set.
    pub fn knowledge_set(&self) -> Knowledge {
        Knowledge::from_ranges(self.knowledge.iter().cloned())
    }
}

/// An in-memory store applying batches exactly like a durable one.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    keys: BTreeMap<StateKey, KeyState>,
    knowledge: BTreeMap<NodeId, DotRange>,
    members: BTreeMap<NodeId, Member>,
    meta: PersistedMeta,
    batches: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// Apply a batch.
    pub fn apply(&mut self, batch: &PersistBatch) {
        for (k, ks) in &batch.keys {
            match ks {
                Some(ks) => {
                    self.keys.insert(k.clone(), ks.clone());
                }
                None => {
                    self.keys.remove(k);
                }
            }
        }
        for (n, r) in &batch.knowledge {
            self.knowledge.insert(*n, r.clone());
        }
        for m in &batch.members {
            self.members.insert(m.node, m.clone());
        }
        for n in &batch.removed_members {
            self.members.remove(n);
        }
        self.meta = batch.meta.clone();
        self.batches += 1;
    }

    /// What a restart would load.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            keys: self.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            knowledge: self.knowledge.iter().map(|(k, v)| (*k, v.clone())).collect(),
            members: self.members.values().cloned().collect(),
            meta: self.meta.clone(),
        }
    }

    /// Batches applied so far.
    pub fn batches(&self) -> u64 {
        self.batches
    }
}
