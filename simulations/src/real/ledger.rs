//! The ledger of acknowledged writes and the rule that decides whether a
//! node's view accounts for one (holds it or certainly supersedes it).

#[allow(clippy::wildcard_imports)]
use super::*;

// ----- the ledger and the checker -------------------------------------------

/// A config key or service instance the workload writes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrackedKey {
    /// A key of namespace `app`.
    Kv(String),
    /// An instance of service `api` in namespace `svc`.
    Instance(String),
}

impl std::fmt::Display for TrackedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrackedKey::Kv(k) => write!(f, "{NS_KV}/{k}"),
            TrackedKey::Instance(i) => write!(f, "{NS_SVC}/{SERVICE}/{i}"),
        }
    }
}

/// One version a node holds for a tracked key, as the node API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Version id.
    pub id: VersionId,
    /// Its dot.
    pub dot: Dot,
    /// Its HLC stamp.
    pub hlc: Hlc,
    /// A deletion.
    pub deleted: bool,
    /// Live (not superseded) on that node.
    pub live: bool,
    /// The value, for config keys.
    pub value: Option<Vec<u8>>,
}

impl Held {
    pub(super) fn of(v: &VersionInfo, value: Option<Vec<u8>>, live: bool) -> Held {
        Held {
            id: v.id,
            dot: Dot {
                node: v.origin,
                seq: v.seq,
            },
            hlc: v.hlc,
            deleted: v.deleted,
            live,
            value,
        }
    }
}

/// An acknowledged write, followed around the cluster.
#[derive(Clone, Debug)]
pub struct AckedWrite {
    /// Client operation id.
    pub op: u64,
    /// The key.
    pub key: TrackedKey,
    /// Its version id.
    pub id: VersionId,
    /// Its dot.
    pub dot: Dot,
    /// Its HLC stamp.
    pub hlc: Hlc,
    /// A delete.
    pub tombstone: bool,
    /// Node slot that acknowledged it.
    pub origin: usize,
    /// When it was acknowledged (real ms since the timeline started).
    pub ack_ms: u64,
    /// A lower bound of its causal context (what it certainly supersedes).
    pub ctx: Context,
    /// Per node slot: ms after the ack at which the node was seen holding
    /// it or something superseding it.
    pub arrivals: Vec<Option<u64>>,
    /// Its only holder lost its disk before anyone else had it.
    pub orphaned: bool,
    /// Acknowledged while a cut, pause or crash was in force.
    pub during_fault: bool,
    /// Per node slot: running when it was acknowledged.
    pub up_at_ack: Vec<bool>,
    /// ms after the ack at which every node running at the ack had it.
    pub reached_up_ms: Option<u64>,
}

impl AckedWrite {
    /// Node `slot` was seen holding it (or something superseding it)
    /// `after_ms` after the ack.
    pub fn arrived(&mut self, slot: usize, after_ms: u64) {
        if self.arrivals[slot].is_some() {
            return;
        }
        self.arrivals[slot] = Some(after_ms);
        if self.reached_up_ms.is_none() {
            let all: Option<Vec<u64>> = (0..self.arrivals.len())
                .filter(|&s| self.up_at_ack[s])
                .map(|s| self.arrivals[s])
                .collect();
            self.reached_up_ms = all.map(|a| a.into_iter().max().unwrap_or(0));
        }
    }
}

/// Every acknowledged write of a run, and every value ever sent.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// Acknowledged writes, in acknowledgement order.
    pub writes: Vec<AckedWrite>,
    /// Operation ids of every put issued (acknowledged or not): values
    /// carry them, so any other value is a phantom.
    pub issued_puts: BTreeSet<u64>,
    by_id: HashMap<VersionId, usize>,
    by_key: BTreeMap<TrackedKey, Vec<usize>>,
}

impl Ledger {
    /// Add an acknowledged write; returns its index.
    pub fn push(&mut self, w: AckedWrite) -> usize {
        let i = self.writes.len();
        self.by_id.insert(w.id, i);
        self.by_key.entry(w.key.clone()).or_default().push(i);
        self.writes.push(w);
        i
    }

    /// The acknowledged write with this version id.
    pub fn get(&self, id: VersionId) -> Option<&AckedWrite> {
        self.by_id.get(&id).map(|&i| &self.writes[i])
    }

    /// Indices of the acknowledged writes to `key`.
    pub fn on_key(&self, key: &TrackedKey) -> &[usize] {
        self.by_key.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// What certainly lies in the causal context of a held version: its
    /// recorded context if it is a known write, else its own dot.
    pub(super) fn ctx_of(&self, h: &Held) -> Context {
        match self.get(h.id) {
            Some(w) => w.ctx.clone(),
            None => {
                let mut c = Context::default();
                c.add(h.dot);
                c
            }
        }
    }

    /// Whether a node holding `held` for the write's key accounts for
    /// acknowledged write `wi`: it holds it, or a version that certainly
    /// supersedes it (a later write of the same origin to the key, or a
    /// write whose recorded context covers it), or a delete superseding it
    /// was old enough to be collected (`now_ms`, `tombstone_ttl_ms`: real
    /// ms).
    pub fn accounted(&self, wi: usize, held: &[Held], now_ms: u64, tombstone_ttl_ms: u64) -> bool {
        let w = &self.writes[wi];
        if held.iter().any(|h| h.id == w.id) {
            return true;
        }
        // An origin's writes to one key are ordered: each one's context
        // includes everything the previous one's did.
        if held
            .iter()
            .any(|h| h.dot.node == w.dot.node && h.dot.seq > w.dot.seq)
        {
            return true;
        }
        if held
            .iter()
            .any(|h| self.get(h.id).is_some_and(|o| o.ctx.covers(&w.dot)))
        {
            return true;
        }
        let collectable = |o: &AckedWrite| {
            o.tombstone && o.ack_ms + tombstone_ttl_ms <= now_ms && !held.iter().any(|h| h.id == o.id)
        };
        if self.on_key(&w.key).iter().any(|&j| {
            let o = &self.writes[j];
            j != wi && o.ctx.covers(&w.dot) && collectable(o)
        }) {
            return true;
        }
        // A collected key (nothing held). The engine then judges by its
        // knowledge, which the node API does not show: here, a delete old
        // enough to be collected that is the write, covers it or outranks
        // it (collection drops a winning tombstone's concurrent siblings)
        // explains the absence. Reads see the same either way, and a node
        // that never had the key would differ from the others' digest.
        if held.is_empty()
            && self.on_key(&w.key).iter().any(|&j| {
                let o = &self.writes[j];
                collectable(o)
                    && (j == wi || o.ctx.covers(&w.dot) || (o.hlc, o.dot.node) > (w.hlc, w.dot.node))
            })
        {
            return true;
        }
        // The service API shows one version per instance (the winner): a
        // registration hidden behind a winner that outranks it is as much
        // as a reader can see.
        if matches!(w.key, TrackedKey::Instance(_))
            && held.iter().any(|h| (h.hlc, h.dot.node) >= (w.hlc, w.dot.node))
        {
            return true;
        }
        // A collected delete whose concurrent sibling outranks it reads as
        // it would had the tombstone been kept.
        w.tombstone
            && collectable(w)
            && held
                .iter()
                .filter(|h| h.live)
                .map(|h| (h.hlc, h.dot.node))
                .max()
                .is_some_and(|rank| rank > (w.hlc, w.dot.node))
    }
}

/// What one node held at the end.
#[derive(Clone, Debug, Default)]
pub struct NodeSnapshot {
    /// Node slot.
    pub slot: usize,
    /// Its peer id.
    pub peer: String,
    /// Its state digest.
    pub digest: String,
    /// Versions held per tracked key (every workload key and instance).
    pub held: BTreeMap<TrackedKey, Vec<Held>>,
    /// The kv listing: one line per live key (winner and siblings).
    pub listing: Vec<String>,
    /// The service table: one line per instance (version, owner, reported
    /// health).
    pub services: Vec<String>,
    /// Instances: (instance, owner, effective health healthy).
    pub service_health: Vec<(String, NodeId, bool)>,
    /// Members by peer id.
    pub members: BTreeMap<String, MemberStatus>,
}

/// The running nodes' state after the deadline.
#[derive(Clone, Debug, Default)]
pub struct FinalState {
    /// When it was read (real ms since the timeline started).
    pub t_ms: u64,
    /// One entry per running node.
    pub nodes: Vec<NodeSnapshot>,
}

/// An acknowledged write missing on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrite {
    /// Index in the ledger.
    pub write: usize,
    /// Its operation id.
    pub op: u64,
    /// The first node slot it is missing on.
    pub node: usize,
    /// Explained by a fault (its only holder lost its disk).
    pub explained: bool,
}

/// Every acknowledged write not accounted for on some node of `fin`.
pub fn lost_writes(ledger: &Ledger, fin: &FinalState, tombstone_ttl_ms: u64) -> Vec<LostWrite> {
    let mut out = Vec::new();
    for (wi, w) in ledger.writes.iter().enumerate() {
        let missing = fin.nodes.iter().find(|n| {
            let held = n.held.get(&w.key).map(Vec::as_slice).unwrap_or(&[]);
            !ledger.accounted(wi, held, fin.t_ms, tombstone_ttl_ms)
        });
        if let Some(n) = missing {
            out.push(LostWrite {
                write: wi,
                op: w.op,
                node: n.slot,
                explained: w.orphaned,
            });
        }
    }
    out
}

/// Values held anywhere that no client wrote: (node slot, key, value).
pub fn phantom_values(ledger: &Ledger, fin: &FinalState) -> Vec<(usize, TrackedKey, String)> {
    let mut out = Vec::new();
    for n in &fin.nodes {
        for (k, held) in &n.held {
            for h in held {
                let Some(b) = &h.value else { continue };
                let ok = parse_value_op(b)
                    .is_some_and(|op| ledger.issued_puts.contains(&op) && value_for(op, b.len()) == *b);
                if !ok {
                    out.push((n.slot, k.clone(), String::from_utf8_lossy(b).into_owned()));
                }
            }
        }
    }
    out
}
