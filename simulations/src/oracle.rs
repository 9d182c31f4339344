//! The oracle: it sees every persist batch, client operation and fault, so
//! it knows the truth. It checks safety as the run goes and collects the
//! metrics the report is made of.

use std::collections::{BTreeMap, BTreeSet};

/// Hash maps of the oracle: it looks something up for every batch of every
/// node, so they hash with a multiply-rotate hasher instead of SipHash. Only
/// looked up, never iterated for output.
type HashMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

/// A small non-cryptographic hasher (word at a time, multiply and rotate).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

impl FastHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(26) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

use starling::core::{Dot, KeyState, MemberStatus, NodeId, Payload, PersistBatch, StateKey};

/// A version's rank: (HLC, origin).
type Rank = (starling::core::Hlc, NodeId);

/// One safety or liveness violation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Violation {
    /// Virtual time (ms since start).
    pub t_ms: u64,
    /// Which invariant.
    pub invariant: &'static str,
    /// Node slot, if one.
    pub node: Option<usize>,
    /// Details.
    pub detail: String,
}

/// An acknowledged write being followed around the cluster.
#[derive(Clone, Debug)]
pub struct WriteRec {
    /// Client operation id.
    pub op: u64,
    /// The key.
    pub key: StateKey,
    /// Its dot.
    pub dot: Dot,
    /// Node slot that acknowledged it.
    pub origin: usize,
    /// When it was acknowledged (ms).
    pub ack_ms: u64,
    /// Per node slot: ms after the ack at which the node had it (or
    /// something newer); `u32::MAX` if not (yet).
    pub arrivals: Vec<u32>,
    /// Its only holder lost its disk before anyone else had it.
    pub orphaned: bool,
    /// Its causal context (what it supersedes).
    pub ctx: starling::core::Context,
    /// Whether it is a delete.
    pub tombstone: bool,
    /// Its HLC stamp.
    pub hlc: starling::core::Hlc,
    /// Per liar slot: ms after the ack at which the liar first had it.
    /// Kept when the liar's disk is lost (its arrivals are not): what a
    /// liar once saw, its later lives may still claim.
    pub reached_liars: Vec<(usize, u32)>,
}

/// A log-bucketed histogram of milliseconds.
#[derive(Clone, Debug, Default)]
pub struct Histo {
    counts: Vec<u64>,
    /// Number of samples.
    pub n: u64,
    /// Largest sample.
    pub max: u64,
    sum: f64,
}

impl Histo {
    fn bucket(v: u64) -> usize {
        // 4 buckets per power of two.
        if v < 4 {
            return v as usize;
        }
        let lz = 63 - v.leading_zeros() as usize;
        let frac = ((v >> (lz - 2)) & 3) as usize;
        lz * 4 + frac - 4
    }

    fn lower(b: usize) -> u64 {
        if b < 4 {
            return b as u64;
        }
        let lz = (b + 4) / 4;
        let frac = (b + 4) % 4;
        (1u64 << lz) + ((frac as u64) << (lz - 2))
    }

    /// Add a sample.
    pub fn add(&mut self, v: u64) {
        let b = Self::bucket(v);
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.n += 1;
        self.max = self.max.max(v);
        self.sum += v as f64;
    }

    /// Approximate quantile (lower bucket bound, exact max).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let target = ((self.n as f64) * q).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (b, c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= target {
                return Self::lower(b).min(self.max);
            }
        }
        self.max
    }

    /// Mean.
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }
}

/// A crash of one identity, followed until every observer declares it dead.
#[derive(Clone, Debug)]
pub struct CrashEpisode {
    /// The node slot.
    pub slot: usize,
    /// The identity that crashed.
    pub id: NodeId,
    /// When.
    pub down_ms: u64,
    /// When it came back (same identity), if it did.
    pub up_ms: Option<u64>,
    /// First time any observer held it suspect.
    pub first_suspect_ms: Option<u64>,
    /// Per observer slot: when it first held it dead.
    pub dead_at: BTreeMap<usize, u64>,
}

/// Ground truth the oracle needs about a node slot.
#[derive(Clone, Debug, Default)]
pub struct Truth {
    /// Running (started, not crashed, not gone after leaving).
    pub up: bool,
    /// Paused.
    pub paused: bool,
    /// Faults touching it make suspicions of it expected until this time.
    pub disturbed_until: u64,
    /// It was told to leave (a record of it as left is its own).
    pub leaving: bool,
}

/// Safety checks and metrics.
pub struct Oracle {
    slots: usize,
    history_limit: usize,
    /// Violations so far.
    pub violations: Vec<Violation>,
    /// Identity → slot.
    pub slot_of: HashMap<NodeId, usize>,
    /// Every identity ever used.
    pub identities: BTreeSet<NodeId>,
    /// Per slot: the current ground truth.
    pub truth: Vec<Truth>,
    /// Acked writes.
    pub writes: Vec<WriteRec>,
    by_origin: HashMap<NodeId, BTreeMap<u64, usize>>,
    by_key: BTreeMap<StateKey, Vec<usize>>,
    cursor: Vec<HashMap<NodeId, u64>>,
    winners: Vec<HashMap<StateKey, (Dot, Rank)>>,
    collected: Vec<HashMap<StateKey, Vec<Dot>>>,
    /// Whether a node was out of reach for longer than `grave_ttl_ms`
    /// (a cut, a pause or a crash with its disk kept): then a version
    /// brought back after its key's grave expired is the protocol's
    /// documented limit (docs/DESIGN.md), counted in
    /// `resurrections_past_grave_ttl`, not a violation.
    pub graves_outlived: bool,
    /// Versions brought back after their key's grave expired, in a run
    /// where that is allowed (see `graves_outlived`).
    pub resurrections_past_grave_ttl: u64,
    knowledge_base: Vec<HashMap<NodeId, u64>>,
    /// Put operation ids (values carry them).
    pub put_ops: BTreeSet<u64>,
    checked: std::collections::HashSet<(Dot, u64), std::hash::BuildHasherDefault<FastHasher>>,
    /// Total (write, node) arrivals, for the divergence estimate.
    pub arrivals_total: u64,
    /// Reads served.
    pub reads: u64,
    /// Reads that missed an acknowledged earlier write.
    pub stale_reads: u64,
    /// Crash episodes.
    pub crashes: Vec<CrashEpisode>,
    /// Distinct (subject, incarnation) suspicions of undisturbed nodes.
    pub false_suspicions: BTreeSet<(NodeId, u64)>,
    /// Distinct (subject, incarnation) deaths of undisturbed nodes.
    pub false_deaths: BTreeSet<(NodeId, u64)>,
    /// Incarnation raises of running nodes (refutations).
    pub refutations: u64,
    own_incarnation: Vec<u64>,
    /// Membership changes observed (t, observer, subject slot, status) for
    /// the event log, small clusters only.
    pub member_log: Vec<(u64, usize, usize, MemberStatus)>,
    log_members: bool,
    /// Per slot: the identity running there now (set by the simulator).
    pub current: Vec<Option<NodeId>>,
    /// Slots of liars (byzantine faults): what they write and sign is not
    /// required to survive, and may hold values no client wrote.
    pub liars: BTreeSet<usize>,
    /// Per slot: the highest seq its current identity wrote.
    own_written: Vec<u64>,
    /// When each version was first persisted anywhere (ms).
    first_seen: HashMap<Dot, u64>,
    /// Every delete (tombstone) persisted anywhere, per key, whoever signed
    /// it: the only thing that explains a key gone from a node.
    deletes_seen: HashMap<StateKey, Vec<SeenDelete>>,
}

/// A tombstone the oracle saw persisted.
#[derive(Clone, Debug)]
struct SeenDelete {
    dot: Dot,
    ctx: starling::core::Context,
    hlc: starling::core::Hlc,
}

impl Oracle {
    /// An oracle for `slots` node slots.
    pub fn new(slots: usize, history_limit: usize) -> Oracle {
        Oracle {
            slots,
            history_limit,
            violations: Vec::new(),
            slot_of: HashMap::default(),
            identities: BTreeSet::new(),
            truth: vec![Truth::default(); slots],
            writes: Vec::new(),
            by_origin: HashMap::default(),
            by_key: BTreeMap::new(),
            cursor: vec![HashMap::default(); slots],
            winners: vec![HashMap::default(); slots],
            collected: vec![HashMap::default(); slots],
            graves_outlived: false,
            resurrections_past_grave_ttl: 0,
            knowledge_base: vec![HashMap::default(); slots],
            put_ops: BTreeSet::new(),
            checked: Default::default(),
            arrivals_total: 0,
            reads: 0,
            stale_reads: 0,
            crashes: Vec::new(),
            false_suspicions: BTreeSet::new(),
            false_deaths: BTreeSet::new(),
            refutations: 0,
            own_incarnation: vec![0; slots],
            member_log: Vec::new(),
            log_members: slots <= 50,
            current: vec![None; slots],
            liars: BTreeSet::new(),
            own_written: vec![0; slots],
            first_seen: HashMap::default(),
            deletes_seen: HashMap::default(),
        }
    }

    /// Whether `id` is (or was) the identity of a liar's slot.
    pub fn is_liar(&self, id: &NodeId) -> bool {
        self.slot_of.get(id).is_some_and(|s| self.liars.contains(s))
    }

    /// Whether a version signed at `signed_ms` by `author` may supersede
    /// acknowledged write `w`: it was signed after the write (nobody
    /// supersedes a write before it exists: a context claiming a future
    /// write is a pin), and, signed by a liar, after the write reached the
    /// liar (a liar's context may claim writes it never saw).
    fn fair_cover(&self, author: &NodeId, signed_ms: u64, w: &WriteRec) -> bool {
        if signed_ms < w.ack_ms {
            return false;
        }
        match self.slot_of.get(author) {
            Some(s) if self.liars.contains(s) => w
                .reached_liars
                .iter()
                .any(|(l, a)| l == s && w.ack_ms + *a as u64 <= signed_ms),
            _ => true,
        }
    }

    /// Record a violation.
    pub fn violate(&mut self, t_ms: u64, invariant: &'static str, node: Option<usize>, detail: String) {
        if self.violations.len() < 1000 {
            self.violations.push(Violation {
                t_ms,
                invariant,
                node,
                detail,
            });
        }
    }

    /// A new identity takes a slot (first start, or a restart with a lost disk).
    pub fn new_identity(&mut self, slot: usize, id: NodeId) {
        self.slot_of.insert(id, slot);
        self.identities.insert(id);
        self.cursor[slot].clear();
        self.winners[slot].clear();
        self.collected[slot].clear();
        self.knowledge_base[slot].clear();
        self.own_incarnation[slot] = 0;
        self.own_written[slot] = 0;
        let mut lost = 0;
        for w in &mut self.writes {
            if w.arrivals[slot] != u32::MAX {
                w.arrivals[slot] = u32::MAX;
                lost += 1;
            }
        }
        self.arrivals_total -= lost;
    }

    /// The disk of `slot` is about to be wiped: writes no other node holds
    /// are orphaned (their loss is explained by the fault). Not only the
    /// node's own writes: when every node that held a write loses its disk
    /// in turn (a mass restart on blank disks), the last wipe loses it. A
    /// liar's copy does not count: what it serves is its choice.
    pub fn disk_lost(&mut self, slot: usize) {
        let liars = &self.liars;
        for w in &mut self.writes {
            let elsewhere = w
                .arrivals
                .iter()
                .enumerate()
                .any(|(i, a)| i != slot && *a != u32::MAX && !liars.contains(&i));
            if !elsewhere {
                w.orphaned = true;
            }
        }
    }

    /// A client write was acknowledged.
    pub fn write_acked(
        &mut self,
        op: u64,
        key: StateKey,
        v: &starling::core::Version,
        origin: usize,
        ack_ms: u64,
    ) {
        let dot = v.dot;
        let idx = self.writes.len();
        let mut arrivals = vec![u32::MAX; self.slots];
        arrivals[origin] = 0;
        self.arrivals_total += 1;
        self.writes.push(WriteRec {
            op,
            key: key.clone(),
            dot,
            origin,
            ack_ms,
            arrivals,
            orphaned: false,
            ctx: v.ctx.clone(),
            tombstone: v.payload.is_tombstone(),
            hlc: v.hlc,
            reached_liars: if self.liars.contains(&origin) {
                vec![(origin, 0)]
            } else {
                Vec::new()
            },
        });
        self.by_origin.entry(dot.node).or_default().insert(dot.seq, idx);
        self.by_key.entry(key).or_default().push(idx);
    }

    /// Whether `engine` still accounts for acknowledged write `idx`: it
    /// holds it, holds a version superseding it, or collected a delete that
    /// superseded it (or outranked it, concurrent). Knowledge alone
    /// explains nothing: a dot known but whose version is gone must be
    /// justified by a version or a delete the oracle saw.
    pub fn accounted(&self, engine: &starling::core::Engine, idx: usize) -> bool {
        let w = &self.writes[idx];
        let state = engine.state();
        // A key reduced to a grave holds no version, like an absent one.
        let ks = state.get(&w.key).filter(|ks| ks.all().next().is_some());
        let holds = |dot: &Dot| ks.is_some_and(|ks| ks.all().any(|v| v.dot == *dot));
        // A live version covers a write only if it may (see `fair_cover`).
        let held = |rec: &WriteRec| {
            holds(&rec.dot)
                || ks.is_some_and(|ks| {
                    ks.live.iter().any(|v| {
                        v.ctx.covers(&rec.dot)
                            && self.fair_cover(
                                &v.dot.node,
                                self.first_seen.get(&v.dot).copied().unwrap_or(u64::MAX),
                                rec,
                            )
                    })
                })
        };
        if held(w) {
            return true;
        }
        // Superseded by an acknowledged write the node holds.
        if self.by_key[&w.key].iter().any(|&j| {
            let o = &self.writes[j];
            j != idx && o.ctx.covers(&w.dot) && self.fair_cover(&o.dot.node, o.ack_ms, w) && held(o)
        }) {
            return true;
        }
        // Deleted: a tombstone the oracle saw, which this node has seen
        // (knowledge) and no longer holds (collected), and which is the
        // write itself, supersedes it, or is concurrent and outranks it
        // (kept, it would make the write a losing sibling; the key reads as
        // deleted either way).
        let rank = (w.hlc, w.dot.node);
        let deleted = self.deletes_seen.get(&w.key).is_some_and(|ds| {
            ds.iter().any(|d| {
                state.knowledge().contains(&d.dot)
                    && !holds(&d.dot)
                    && ((d.dot == w.dot
                        // A collected delete of this very write explains
                        // its absence if nothing it outranks reads instead.
                        && ks.is_none_or(|ks| ks.winner().is_some_and(|win| win.rank() > rank)))
                        || (d.ctx.covers(&w.dot)
                            && self.fair_cover(
                                &d.dot.node,
                                self.first_seen.get(&d.dot).copied().unwrap_or(u64::MAX),
                                w,
                            ))
                        || (!w.ctx.covers(&d.dot) && (d.hlc, d.dot.node) > rank))
            })
        });
        if deleted {
            return true;
        }
        // Lost to a concurrent delete that outranks it and is kept as a
        // sibling: the key reads as deleted.
        ks.is_some_and(|ks| {
            ks.live
                .iter()
                .any(|v| v.payload.is_tombstone() && !w.ctx.covers(&v.dot) && (v.hlc, v.dot.node) > rank)
        })
    }

    /// A read at `slot` of `key` returned the winner `dot` (None: absent).
    /// Stale if an earlier acked write to the key had not reached the node.
    pub fn read(&mut self, t_ms: u64, slot: usize, key: &StateKey) -> bool {
        self.reads += 1;
        let Some(ws) = self.by_key.get(key) else {
            return false;
        };
        let stale = ws.iter().rev().take(16).any(|&i| {
            let w = &self.writes[i];
            w.ack_ms < t_ms && {
                let a = w.arrivals[slot];
                a == u32::MAX || w.ack_ms + a as u64 > t_ms
            }
        });
        if stale {
            self.stale_reads += 1;
        }
        stale
    }

    fn mark(&mut self, slot: usize, idx: usize, t_ms: u64) {
        let w = &mut self.writes[idx];
        if w.arrivals[slot] == u32::MAX {
            w.arrivals[slot] = t_ms.saturating_sub(w.ack_ms).min(u32::MAX as u64 - 1) as u32;
            self.arrivals_total += 1;
            if self.liars.contains(&slot) && !w.reached_liars.iter().any(|(l, _)| *l == slot) {
                w.reached_liars.push((slot, w.arrivals[slot]));
            }
        }
    }

    /// Check a persist batch of `slot` and follow writes into it.
    pub fn on_batch(&mut self, t_ms: u64, slot: usize, me: NodeId, batch: &PersistBatch) {
        // Versions new to this node come from the origins whose knowledge
        // the batch raises; every other version it holds was checked when
        // it arrived.
        let fresh: Vec<NodeId> = batch.knowledge.iter().map(|(n, _)| *n).collect();
        for (key, ks) in &batch.keys {
            self.check_key(t_ms, slot, me, key, ks.as_ref(), &fresh);
        }
        // Knowledge: it never shrinks, and it tells which writes arrived.
        for (origin, range) in &batch.knowledge {
            let prev_base = self.knowledge_base[slot].get(origin).copied().unwrap_or(0);
            if range.base < prev_base {
                self.violate(
                    t_ms,
                    "knowledge-monotonic",
                    Some(slot),
                    format!(
                        "knowledge of {} went back from {prev_base} to {}",
                        origin.short(),
                        range.base
                    ),
                );
            }
            self.knowledge_base[slot].insert(*origin, range.base);
            // Knowledge of an honest origin never runs ahead of what it
            // wrote: a node that believes it has seen writes never made
            // will never fetch them when they are (and, about itself,
            // writes past the range every peer accepts).
            if let Some(&o) = self.slot_of.get(origin) {
                if !self.liars.contains(&o)
                    && self.current_identity_is(o, *origin)
                    && range.max() > self.own_written[o]
                {
                    self.violate(
                        t_ms,
                        "knowledge-inflated",
                        Some(slot),
                        format!(
                            "holds knowledge of node {o} ({}) up to seq {}, which wrote up to {}",
                            origin.short(),
                            range.max(),
                            self.own_written[o]
                        ),
                    );
                }
            }
            let Some(seqs) = self.by_origin.get(origin) else {
                continue;
            };
            let cur = self.cursor[slot].get(origin).copied().unwrap_or(0);
            let mut hits: Vec<usize> = Vec::new();
            if range.base > cur {
                hits.extend(seqs.range(cur + 1..=range.base).map(|(_, i)| *i));
                self.cursor[slot].insert(*origin, range.base);
            }
            for s in &range.extra {
                if let Some(i) = seqs.get(s) {
                    hits.push(*i);
                }
            }
            for i in hits {
                self.mark(slot, i, t_ms);
            }
        }
        for m in &batch.members {
            self.on_member(t_ms, slot, me, m);
        }
        if batch.meta.incarnation > self.own_incarnation[slot] {
            if self.own_incarnation[slot] != 0 && self.truth[slot].up {
                self.refutations += 1;
            }
            self.own_incarnation[slot] = batch.meta.incarnation;
        }
    }

    fn check_key(
        &mut self,
        t_ms: u64,
        slot: usize,
        me: NodeId,
        key: &StateKey,
        ks: Option<&KeyState>,
        fresh: &[NodeId],
    ) {
        let Some(ks) = ks else {
            // Collected (tombstone GC) or emptied: remember what was dropped.
            if let Some((dot, _)) = self.winners[slot].remove(key) {
                self.collected[slot].entry(key.clone()).or_default().push(dot);
            }
            return;
        };
        // Limits.
        let limit = match key {
            StateKey::Kv { .. } | StateKey::Canary { .. } => self.history_limit,
            StateKey::Service { .. } => 0,
        };
        if ks.history.len() > limit {
            self.violate(
                t_ms,
                "limits",
                Some(slot),
                format!(
                    "{key:?} keeps {} history versions (limit {limit})",
                    ks.history.len()
                ),
            );
        }
        // No value nobody wrote (a version's content is checked once: it
        // is the same on every node, the engine checks its checksum).
        for v in ks.all() {
            if !fresh.contains(&v.dot.node) {
                continue;
            }
            if v.dot.node == me {
                self.own_written[slot] = self.own_written[slot].max(v.dot.seq);
            }
            if self.first_seen.insert(v.dot, t_ms).is_none() && v.payload.is_tombstone() {
                self.deletes_seen
                    .entry(key.clone())
                    .or_default()
                    .push(SeenDelete {
                        dot: v.dot,
                        ctx: v.ctx.clone(),
                        hlc: v.hlc,
                    });
            }
            // What a liar signed as itself may hold anything (it is a
            // member: no writer ACLs yet).
            if !self.checked.insert((v.dot, v.checksum)) || self.is_liar(&v.dot.node) {
                continue;
            }
            let value: Option<&[u8]> = match &v.payload {
                Payload::Value(b) => Some(b),
                Payload::Canary(c) => Some(&c.value),
                Payload::Instance(_) | Payload::Tombstone => None,
            };
            if let Some(b) = value {
                if !self.value_was_written(b) {
                    self.violate(
                        t_ms,
                        "no-phantom-values",
                        Some(slot),
                        format!(
                            "{key:?} holds a value no client wrote: {:?}",
                            String::from_utf8_lossy(b)
                        ),
                    );
                }
            }
            if let Payload::Instance(i) = &v.payload {
                if !self.identities.contains(&i.owner) {
                    self.violate(
                        t_ms,
                        "no-phantom-values",
                        Some(slot),
                        format!("{key:?} owned by unknown node {}", i.owner.short()),
                    );
                }
            }
        }
        // No resurrection after collection.
        let back = self.collected[slot].get(key).and_then(|dropped| {
            ks.all()
                .find(|v| dropped.iter().any(|d| d.node == v.dot.node && d.seq >= v.dot.seq))
                .map(|v| v.dot)
        });
        if let Some(dot) = back {
            if self.graves_outlived {
                // Counted once: the key starts over from what came back.
                self.resurrections_past_grave_ttl += 1;
                self.collected[slot].remove(key);
            } else {
                let detail = format!("{key:?} brought back version {dot:?} after it was collected");
                self.violate(t_ms, "no-resurrection", Some(slot), detail);
            }
        }
        // The winner never goes back, except to a causally newer version
        // or a higher-ranked sibling.
        let Some(w) = ks.winner() else {
            return;
        };
        let new = (w.dot, w.rank());
        if let Some((old_dot, old_rank)) = self.winners[slot].get(key).copied() {
            if old_dot != w.dot {
                let newer = w.ctx.covers(&old_dot)
                    || w.rank() > old_rank
                    || ks.live.iter().any(|l| l.dot != old_dot && l.ctx.covers(&old_dot));
                if !newer {
                    self.violate(
                        t_ms,
                        "winner-monotonic",
                        Some(slot),
                        format!("{key:?} winner went back from {old_dot:?} to {:?}", w.dot),
                    );
                }
            }
        }
        match self.winners[slot].get_mut(key) {
            Some(w) => *w = new,
            None => {
                self.winners[slot].insert(key.clone(), new);
            }
        }
    }

    fn value_was_written(&self, b: &[u8]) -> bool {
        match parse_value_op(b) {
            Some(op) => self.put_ops.contains(&op) && value_for(op, b.len()) == b,
            None => false,
        }
    }

    fn on_member(&mut self, t_ms: u64, observer: usize, me: NodeId, m: &starling::core::Member) {
        if m.node == me {
            if matches!(m.status, MemberStatus::Suspect | MemberStatus::Dead) {
                self.violate(
                    t_ms,
                    "never-self-dead",
                    Some(observer),
                    format!("node persisted itself as {}", m.status.as_str()),
                );
            }
            return;
        }
        let Some(&subject) = self.slot_of.get(&m.node) else {
            return;
        };
        if self.log_members {
            self.member_log.push((t_ms, observer, subject, m.status));
        }
        let subject_is_current = self.current_identity_is(subject, m.node);
        // No honest node is evicted on anyone's word: it is held left only
        // after it left, and suspect, dead or left only at an incarnation
        // it signed.
        if subject_is_current && !self.liars.contains(&subject) && m.status != MemberStatus::Alive {
            let tr = &self.truth[subject];
            let forged_leave = m.status == MemberStatus::Left && tr.up && !tr.leaving;
            let unsigned = m.incarnation > self.own_incarnation[subject];
            if forged_leave || unsigned {
                self.violate(
                    t_ms,
                    "no-eviction",
                    Some(observer),
                    format!(
                        "holds node {subject} as {} at incarnation {} (its own: {}, {})",
                        m.status.as_str(),
                        m.incarnation,
                        self.own_incarnation[subject],
                        if tr.up { "up" } else { "down" }
                    ),
                );
            }
        }
        if matches!(m.status, MemberStatus::Suspect | MemberStatus::Dead) {
            let tr = &self.truth[subject];
            let healthy = subject_is_current && tr.up && !tr.paused && t_ms > tr.disturbed_until;
            if healthy {
                if m.status == MemberStatus::Suspect {
                    self.false_suspicions.insert((m.node, m.incarnation));
                } else {
                    self.false_deaths.insert((m.node, m.incarnation));
                }
            }
            for ep in self.crashes.iter_mut().rev() {
                if ep.id == m.node && ep.up_ms.is_none() {
                    if ep.first_suspect_ms.is_none() {
                        ep.first_suspect_ms = Some(t_ms);
                    }
                    if m.status == MemberStatus::Dead {
                        ep.dead_at.entry(observer).or_insert(t_ms);
                    }
                    break;
                }
            }
        }
    }

    fn current_identity_is(&self, slot: usize, id: NodeId) -> bool {
        self.current[slot] == Some(id)
    }
}

/// The value written by put operation `op`, `len` bytes long (at least the
/// prefix): `w<op>:` then a deterministic filler.
pub fn value_for(op: u64, len: usize) -> Vec<u8> {
    let mut v = format!("w{op}:").into_bytes();
    let mut x = crate::rng::splitmix(op);
    while v.len() < len {
        v.push(b'a' + (x % 26) as u8);
        x = crate::rng::splitmix(x);
    }
    v
}

/// The operation id a value was written by.
pub fn parse_value_op(b: &[u8]) -> Option<u64> {
    let rest = b.strip_prefix(b"w")?;
    let end = rest.iter().position(|c| *c == b':')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}
