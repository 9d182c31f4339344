//! Property tests of the replicated state's merge laws and of convergence,
//! with the `crdts` crate as an independent oracle (version vectors and a
//! multi-value register for sibling sets).
//!
//! Which law is checked on which path:
//!
//! | law | production path (engines, `core::testing::Net`) | full-state `join` (test-only) |
//! |---|---|---|
//! | commutative | deltas in any order; `a·b` vs `b·a` by exchange | `a⊔b = b⊔a` |
//! | associative | `(a·b)·c = a·(b·c)`, with or without tombstone collection (grave contexts aside); every grouping converges once all have exchanged | without collection, or without trimming; **not** with both (ignored test) |
//! | idempotent | duplicated deltas; a second exchange changes nothing | `a⊔a = a` |
//! | live = maximal versions (MVReg oracle) | deltas received; random traffic with drops, then anti-entropy | replica states by hand |
//! | no resurrection after collection | partition, delete, collect, heal | — |
//!
//! The production path is what nodes run: commands through `Engine::drive`,
//! deltas published as gossip and merged by the receiver, and anti-entropy
//! as the real four-message exchange (request, response, push, ack).
//! `ReplicatedState::join` is never called by the engine: it is the
//! lattice's reference merge, kept here because it states the laws exactly
//! (and shows where history trimming makes them lossy).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use crdts::{CmRDT, CvRDT, MVReg, VClock};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};

use starling::core::testing::{self, node, Msg, Net};
use starling::core::wire;
use starling::core::{
    CommandError, CommandOutput, Config, Context, Dot, Expect, Hlc, Knowledge, Namespace, NodeId, Payload,
    ReplicatedState, StateKey, Version, VersionId,
};

const T0: u64 = 1_700_000_000_000;
const KEYS: [&str; 3] = ["a", "b/c", "d"];

fn ns() -> Namespace {
    Namespace::new("prod").unwrap()
}

fn sk(k: usize) -> StateKey {
    testing::kv_key("prod", KEYS[k % KEYS.len()])
}

/// Everything a state holds, for exact comparison: per key the live and
/// history dots in order.
type Contents = BTreeMap<StateKey, (Vec<Dot>, Vec<Dot>)>;

/// The versions held per key (graves hold none and are node-local).
fn contents(s: &ReplicatedState) -> Contents {
    s.iter()
        .filter(|(_, ks)| !ks.is_grave_only())
        .map(|(k, ks)| {
            (
                k.clone(),
                (
                    ks.live.iter().map(|v| v.dot).collect(),
                    ks.history.iter().map(|v| v.dot).collect(),
                ),
            )
        })
        .collect()
}

fn assert_same(a: &ReplicatedState, b: &ReplicatedState, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(contents(a), contents(b), "{}: contents differ", what);
    prop_assert_eq!(a.knowledge(), b.knowledge(), "{}: knowledge differs", what);
    prop_assert_eq!(a.digest(), b.digest(), "{}: digests differ", what);
    Ok(())
}

fn joined(a: &ReplicatedState, b: &ReplicatedState) -> ReplicatedState {
    let mut out = a.clone();
    out.join(b);
    out
}

// ----- the full-state join (test-only reference merge) -------------------
//
// Replica states built by hand (writes, single-version merges, joins,
// collection) and combined with `ReplicatedState::join`, which the engine
// never calls: these laws are those of the lattice itself. The laws on the
// path nodes run are further down ("laws on the production path").

#[derive(Clone, Debug)]
enum Step {
    /// Replica `r` writes key `k` (a tombstone if `tomb`); `tick` advances
    /// the shared clock (0 makes equal stamps, resolved by origin).
    Write {
        r: usize,
        k: usize,
        tomb: bool,
        tick: u64,
    },
    /// Merge one version from the log of all writes into replica `to`.
    Deliver { idx: usize, to: usize },
    /// Replica `a` joins replica `b`'s full state.
    Join { a: usize, b: usize },
    /// Replica `r` collects its tombstones.
    Collect { r: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 0..3usize, prop::bool::weighted(0.25), 0..2u64)
            .prop_map(|(r, k, tomb, tick)| Step::Write { r, k, tomb, tick }),
        4 => (any::<usize>(), 0..3usize).prop_map(|(idx, to)| Step::Deliver { idx, to }),
        1 => (0..3usize, 0..3usize).prop_map(|(a, b)| Step::Join { a, b }),
        1 => (0..3usize).prop_map(|r| Step::Collect { r }),
    ]
}

#[derive(Debug)]
struct World {
    replicas: Vec<ReplicatedState>,
    log: Vec<(StateKey, Version)>,
    clock: u64,
}

impl World {
    fn new(history_limit: usize) -> World {
        World {
            replicas: vec![ReplicatedState::new(history_limit); 3],
            log: Vec::new(),
            clock: 1,
        }
    }

    fn apply(&mut self, s: &Step) {
        match *s {
            Step::Write { r, k, tomb, tick } => {
                self.clock += tick;
                let key = sk(k);
                let me = node(r);
                let st = &mut self.replicas[r];
                let mut ctx = st.get(&key).map(|ks| ks.context()).unwrap_or_default();
                let dot = Dot {
                    node: me,
                    seq: st.next_seq(&me),
                };
                ctx.add(dot);
                let payload = if tomb {
                    Payload::Tombstone
                } else {
                    Payload::Value(format!("{r}/{}", dot.seq).into_bytes())
                };
                let v = Version {
                    dot,
                    ctx,
                    hlc: Hlc {
                        wall_ms: self.clock,
                        logical: 0,
                    },
                    checksum: payload.checksum(),
                    payload,
                    signature: None,
                };
                st.merge(key.clone(), v.clone());
                self.log.push((key, v));
            }
            Step::Deliver { idx, to } => {
                if !self.log.is_empty() {
                    let (k, v) = self.log[idx % self.log.len()].clone();
                    self.replicas[to].merge(k, v);
                }
            }
            Step::Join { a, b } => {
                let other = self.replicas[b].clone();
                self.replicas[a].join(&other);
            }
            Step::Collect { r } => {
                self.replicas[r].collect_tombstones(self.clock + 1, 0);
            }
        }
    }
}

/// Replica states reached by random steps, with a history limit in
/// `limits`; without tombstone collection unless `gc`.
fn world_with(gc: bool, limits: std::ops::Range<usize>) -> impl Strategy<Value = World> {
    (limits, prop::collection::vec(step(), 0..40)).prop_map(move |(limit, steps)| {
        let mut w = World::new(limit);
        for s in steps.iter().filter(|s| gc || !matches!(s, Step::Collect { .. })) {
            w.apply(s);
        }
        w
    })
}

fn world() -> impl Strategy<Value = World> {
    world_with(true, 0..3)
}

fn vclock(ctx: &Context) -> VClock<NodeId> {
    ctx.dots()
        .iter()
        .map(|d| crdts::Dot::new(d.node, d.seq))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Test-only path: `ReplicatedState::join`.
    #[test]
    fn join_is_commutative(w in world()) {
        let (a, b) = (&w.replicas[0], &w.replicas[1]);
        assert_same(&joined(a, b), &joined(b, a), "a⊔b vs b⊔a")?;
    }

    /// Test-only path: `ReplicatedState::join`.
    #[test]
    fn join_is_associative_without_gc(w in world_with(false, 0..3)) {
        let (a, b, c) = (&w.replicas[0], &w.replicas[1], &w.replicas[2]);
        assert_same(&joined(&joined(a, b), c), &joined(a, &joined(b, c)), "(a⊔b)⊔c vs a⊔(b⊔c)")?;
    }

    /// Test-only path: `ReplicatedState::join`.
    #[test]
    fn join_is_associative_without_trimming(w in world_with(true, 64..65)) {
        let (a, b, c) = (&w.replicas[0], &w.replicas[1], &w.replicas[2]);
        assert_same(&joined(&joined(a, b), c), &joined(a, &joined(b, c)), "(a⊔b)⊔c vs a⊔(b⊔c)")?;
    }

    /// Test-only path: `ReplicatedState::join`.
    /// KNOWN FAILURE, left visible: with both history trimming and
    /// tombstone collection, `join` is not associative. Minimal case
    /// (history_limit 1): `a` holds `b/c` = v5 <- v7 (one origin); `b` holds
    /// another origin's value w1 and its tombstone t2; `c` collected w1/t2.
    /// `a⊔b` keeps w1 in its single history slot (higher origin) and trims
    /// v5; `⊔c` then drops w1 and t2, leaving no history. `b⊔c` drops w1/t2
    /// first, so `a⊔(b⊔c)` keeps v5. Trimming is lossy and depends on which
    /// versions happen to be held together. Anti-entropy still converges
    /// (the trimmed dot is in knowledge, so peers drop it: see
    /// `diverging_join_orders_agree_after_exchanging_states`), but the
    /// law as stated in `state.rs` does not hold; fixing it needs a
    /// trimming rule that is a function of the joined information only.
    #[test]
    #[ignore = "known: join is not associative when history trimming meets tombstone collection"]
    fn join_is_associative(w in world()) {
        let (a, b, c) = (&w.replicas[0], &w.replicas[1], &w.replicas[2]);
        assert_same(&joined(&joined(a, b), c), &joined(a, &joined(b, c)), "(a⊔b)⊔c vs a⊔(b⊔c)")?;
    }

    /// Test-only path: `ReplicatedState::join`.
    /// Whatever order three states are joined in, the results agree once
    /// they have been joined with each other (what anti-entropy does).
    #[test]
    fn diverging_join_orders_agree_after_exchanging_states(w in world()) {
        let (a, b, c) = (&w.replicas[0], &w.replicas[1], &w.replicas[2]);
        let x = joined(&joined(a, b), c);
        let y = joined(a, &joined(b, c));
        let z = joined(&joined(c, a), b);
        // Only history may differ between join orders, never live versions.
        let live = |s: &ReplicatedState| -> BTreeMap<StateKey, Vec<Dot>> {
            contents(s).into_iter().map(|(k, (live, _))| (k, live)).collect()
        };
        prop_assert_eq!(live(&x), live(&y));
        prop_assert_eq!(live(&y), live(&z));
        let (xy, yx) = (joined(&joined(&x, &y), &z), joined(&joined(&z, &y), &x));
        prop_assert_eq!(contents(&xy), contents(&yx));
        prop_assert_eq!(xy.digest(), yx.digest());
    }

    /// Test-only path: `ReplicatedState::join`.
    #[test]
    fn join_is_idempotent(w in world()) {
        for r in &w.replicas {
            assert_same(&joined(r, r), r, "a⊔a vs a")?;
        }
        let ab = joined(&w.replicas[0], &w.replicas[1]);
        assert_same(&joined(&ab, &w.replicas[1]), &ab, "(a⊔b)⊔b vs a⊔b")?;
    }

    /// Replica states built by hand (single-version `merge`, the function
    /// the engine calls per remote version, and `join`).
    /// The live versions of every key are exactly the maximal elements (by
    /// causal context) of every version the replica has seen: what an
    /// MVReg from `crdts` fed the same versions reads. A collected key reads
    /// as nothing, and its maximal versions were all tombstones.
    ///
    /// Without tombstone collection: a write to a collected key starts a
    /// fresh context (same origin's later seq still covers the tombstone,
    /// but the tombstone's other entries are gone), which our `covers`
    /// rule orders after the tombstone and an MVReg does not.
    #[test]
    fn live_versions_are_the_maximal_versions_seen(w in world_with(false, 0..3)) {
        for (r, st) in w.replicas.iter().enumerate() {
            let mut oracle: BTreeMap<StateKey, MVReg<Dot, NodeId>> = BTreeMap::new();
            for (k, v) in &w.log {
                if st.knowledge().contains(&v.dot) {
                    oracle.entry(k.clone()).or_default().apply(crdts::mvreg::Op::Put {
                        clock: vclock(&v.ctx),
                        val: v.dot,
                    });
                }
            }
            for (k, reg) in oracle {
                let want: BTreeSet<Dot> = reg.read().val.into_iter().collect();
                let got: BTreeSet<Dot> = st
                    .get(&k)
                    .map(|ks| ks.live.iter().map(|v| v.dot).collect())
                    .unwrap_or_default();
                if got.is_empty() {
                    let tombs = w.log.iter().filter(|(_, v)| want.contains(&v.dot)).all(|(_, v)| v.payload.is_tombstone());
                    prop_assert!(tombs, "replica {} dropped live values of {:?}: {:?}", r, k, want);
                } else {
                    prop_assert_eq!(got, want, "replica {} key {:?}", r, k);
                }
            }
        }
    }

    /// Our per-origin knowledge and per-key contexts agree with `crdts`'
    /// version vectors.
    #[test]
    fn knowledge_and_contexts_agree_with_crdts_version_vectors(
        a in prop::collection::vec((0..4u64, 1..30u64), 0..60),
        b in prop::collection::vec((0..4u64, 1..30u64), 0..60),
    ) {
        let build = |dots: &[(u64, u64)]| {
            let mut k = Knowledge::new();
            let mut set = BTreeSet::new();
            let mut vc: VClock<NodeId> = VClock::new();
            let mut ctx = Context::default();
            for &(n, s) in dots {
                let d = Dot { node: NodeId::from_index(n), seq: s };
                k.insert(d);
                set.insert(d);
                vc.apply(crdts::Dot::new(d.node, s));
                ctx.add(d);
            }
            (k, set, vc, ctx)
        };
        let (mut ka, sa, mut va, mut ca) = build(&a);
        let (kb, sb, vb, cb) = build(&b);
        for n in 0..4 {
            let id = NodeId::from_index(n);
            prop_assert_eq!(ka.max_seq(&id), va.get(&id));
            prop_assert_eq!(vclock(&ca).get(&id), va.get(&id));
        }
        for s in 1..30 {
            for n in 0..4 {
                let d = Dot { node: NodeId::from_index(n), seq: s };
                prop_assert_eq!(ka.contains(&d), sa.contains(&d));
                prop_assert_eq!(ca.covers(&d), va.get(&d.node) >= s);
            }
        }
        ka.union(&kb);
        va.merge(vb.clone());
        ca.join(&cb);
        prop_assert!(ca.is_well_formed());
        prop_assert_eq!(vclock(&ca), va.clone());
        let vv: BTreeMap<NodeId, u64> = va.iter().map(|d| (*d.actor, d.counter)).collect();
        prop_assert_eq!(ka.version_vector(), vv);
        for s in 1..30 {
            for n in 0..4 {
                let d = Dot { node: NodeId::from_index(n), seq: s };
                prop_assert_eq!(ka.contains(&d), sa.contains(&d) || sb.contains(&d), "{:?}", d);
            }
        }
    }
}

// ----- laws on the production path ----------------------------------------
//
// Engines in a `core::testing::Net`: writes are commands, deltas travel as
// gossip and are merged by the receiving engine, and "merging two replicas"
// is the real anti-entropy exchange. Every world is built twice from the
// same ops (engines and the net are deterministic), and the two copies
// merge in different orders.

/// Writers in the law worlds.
const WRITERS: usize = 3;

#[derive(Clone, Debug)]
enum LawOp {
    /// Writer `n` writes key `k` (a delete if `tomb`) after `advance` ms.
    Write {
        n: usize,
        k: usize,
        tomb: bool,
        advance: u64,
    },
    /// Deliver one in-flight message (in any order).
    Deliver(usize),
    /// Deliver one in-flight message and keep it queued.
    Duplicate(usize),
    /// Lose one in-flight message (a lost request fails at the requester).
    Lose(usize),
    /// Writer `a` runs anti-entropy with writer `b`.
    Sync { a: usize, b: usize },
    /// Writer `n` ticks past the tombstone TTL (collecting tombstones);
    /// what the tick sends is lost.
    Collect { n: usize },
}

fn law_op(gc: bool) -> impl Strategy<Value = LawOp> {
    prop_oneof![
        6 => (0..WRITERS, 0..3usize, prop::bool::weighted(if gc { 0.4 } else { 0.25 }), 0..3u64)
            .prop_map(|(n, k, tomb, advance)| LawOp::Write { n, k, tomb, advance }),
        5 => any::<usize>().prop_map(LawOp::Deliver),
        1 => any::<usize>().prop_map(LawOp::Duplicate),
        3 => any::<usize>().prop_map(LawOp::Lose),
        1 => (0..WRITERS, 0..WRITERS).prop_map(|(a, b)| LawOp::Sync { a, b }),
        (if gc { 3 } else { 0 }) => (0..WRITERS).prop_map(|n| LawOp::Collect { n }),
    ]
}

#[derive(Clone, Debug)]
struct LawWorld {
    history_limit: usize,
    ops: Vec<LawOp>,
}

fn law_world(gc: bool, limits: std::ops::Range<usize>) -> impl Strategy<Value = LawWorld> {
    (limits, prop::collection::vec(law_op(gc), 0..40))
        .prop_map(|(history_limit, ops)| LawWorld { history_limit, ops })
}

/// Build the world: `WRITERS` engines with divergent states and nothing in
/// flight, plus `observers` engines that have received nothing. Returns
/// the net and, per observer, the gossip addressed to it, in publish order.
fn build(w: &LawWorld, observers: usize) -> (Net, Vec<Vec<Msg>>) {
    let cfg = config(w.history_limit);
    let ttl = cfg.tombstone_ttl_ms;
    let mut net = Net::new(WRITERS + observers, cfg, T0);
    let mut held = vec![Vec::new(); observers];
    let mut set_aside = |net: &mut Net| {
        for m in std::mem::take(&mut net.queue) {
            if m.to() >= WRITERS {
                held[m.to() - WRITERS].push(m);
            } else {
                net.queue.push(m);
            }
        }
    };
    for op in &w.ops {
        match *op {
            LawOp::Write { n, k, tomb, advance } => {
                net.now += advance;
                let key = KEYS[k];
                let cmd = if tomb {
                    testing::delete("prod", key)
                } else {
                    testing::put("prod", key, format!("{n}@{}", net.now))
                };
                match net.cmd(n, cmd) {
                    Ok(_) => {}
                    Err(CommandError::NotFound) if tomb => {} // nothing to delete
                    Err(e) => panic!("an unconditional write failed: {e}"),
                }
            }
            LawOp::Deliver(i) => {
                net.deliver_nth(i);
            }
            LawOp::Duplicate(i) => {
                net.duplicate_nth(i);
            }
            LawOp::Lose(i) => {
                net.fail_nth(i);
            }
            LawOp::Sync { a, b } if a != b => exchange_one_way(&mut net, a, b),
            LawOp::Sync { .. } => {}
            LawOp::Collect { n } => {
                net.now += ttl + 1;
                let before = net.queue.len();
                net.input(n, starling::core::Input::Tick);
                while net.queue.len() > before {
                    net.fail_nth(before);
                }
            }
        }
        set_aside(&mut net);
    }
    net.fail_all();
    set_aside(&mut net);
    for e in &net.engines {
        assert_eq!(e.inflight_syncs(), 0, "the world is built with nothing in flight");
    }
    (net, held)
}

/// One anti-entropy run started by `a` with `b`, delivered to the end
/// (request, response, push, ack), after the per-peer rate limit.
fn exchange_one_way(net: &mut Net, a: usize, b: usize) {
    net.now += net.engines[a].config().sync_min_interval_ms + 1;
    let started = net.engines[a].counters().syncs_started;
    let completed = net.engines[a].counters().syncs_completed;
    net.sync(a, b);
    assert_eq!(
        net.engines[a].counters().syncs_started,
        started + 1,
        "{a} started a sync with {b}"
    );
    assert_eq!(
        net.engines[a].counters().syncs_completed,
        completed + 1,
        "{a}'s sync with {b} completed"
    );
}

/// Merge `a` and `b` the way nodes do: each runs anti-entropy with the other.
fn exchange(net: &mut Net, a: usize, b: usize) {
    exchange_one_way(net, a, b);
    exchange_one_way(net, b, a);
}

fn same_engines(x: &Net, i: usize, y: &Net, j: usize, what: &str) -> Result<(), TestCaseError> {
    assert_same(x.engines[i].state(), y.engines[j].state(), what)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Production path, delta merge: two observers receive every delta the
    /// writers published, one in publish order, the other in an arbitrary
    /// order with arbitrary duplicates. They end in the same state, whose
    /// live versions are the maximal versions received (the MVReg oracle).
    #[test]
    fn delivering_deltas_in_any_order_with_duplicates_gives_the_same_state(
        w in law_world(false, 0..3),
        picks in prop::collection::vec(any::<usize>(), 0..60),
        dups in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let (mut net, held) = build(&w, 2);
        let (x, y) = (WRITERS, WRITERS + 1);
        for m in held[0].clone() {
            net.deliver(m);
        }
        let mut rest = held[1].clone();
        for d in dups {
            if !rest.is_empty() {
                let copy = rest[d % rest.len()].clone();
                rest.push(copy);
            }
        }
        for p in picks {
            if rest.is_empty() {
                break;
            }
            let m = rest.remove(p % rest.len());
            net.deliver(m);
        }
        for m in rest {
            net.deliver(m);
        }
        prop_assert!(net.queue.is_empty(), "merging a delta sends nothing");
        same_engines(&net, x, &net, y, "in order vs any order with duplicates")?;
        // And it is the one the MVReg oracle gives for the versions
        // received: the live versions are the maximal ones.
        let cluster = wire::cluster_id(&net.engines[x].config().cluster);
        let mut oracle: BTreeMap<StateKey, MVReg<Dot, NodeId>> = BTreeMap::new();
        for m in &held[0] {
            let Msg::Gossip { bytes, .. } = m else {
                unreachable!("only gossip is addressed to an observer")
            };
            let Ok(wire::Message::Delta(d)) = wire::decode(bytes, cluster, usize::MAX) else {
                panic!("a writer published something other than a delta")
            };
            for (k, v) in d.versions {
                oracle.entry(k).or_default().apply(crdts::mvreg::Op::Put {
                    clock: vclock(&v.ctx),
                    val: v.dot,
                });
            }
        }
        let state = net.engines[x].state();
        prop_assert_eq!(state.len(), oracle.len(), "keys held");
        for (k, reg) in oracle {
            let want: BTreeSet<Dot> = reg.read().val.into_iter().collect();
            let got: BTreeSet<Dot> = state.get(&k).map(|ks| ks.live.iter().map(|v| v.dot).collect()).unwrap_or_default();
            prop_assert_eq!(got, want, "live versions of {:?}", k);
        }
    }

    /// Production path, anti-entropy: after `a` and `b` each run a sync
    /// with the other, both hold the same state, whichever started; and
    /// another exchange changes nothing.
    #[test]
    fn an_anti_entropy_exchange_agrees_is_commutative_and_idempotent(w in law_world(true, 0..3)) {
        let (mut ab, _) = build(&w, 0);
        let (mut ba, _) = build(&w, 0);
        exchange(&mut ab, 0, 1);
        exchange(&mut ba, 1, 0);
        same_engines(&ab, 0, &ab, 1, "a and b after exchanging")?;
        same_engines(&ab, 0, &ba, 0, "a·b vs b·a")?;
        same_engines(&ab, 0, &ba, 1, "a·b vs b·a (at b)")?;
        let before = contents(ab.engines[0].state());
        let digest = ab.engines[0].digest();
        exchange(&mut ab, 0, 1);
        prop_assert_eq!(contents(ab.engines[0].state()), before, "a second exchange changed a");
        prop_assert_eq!(ab.engines[0].digest(), digest);
        same_engines(&ab, 0, &ab, 1, "a and b after a second exchange")?;
        // The third replica took no part and is untouched in both copies.
        same_engines(&ab, 2, &ba, 2, "c, not in the exchange")?;
    }
}

static LAW_WORLDS_COLLECTED: AtomicUsize = AtomicUsize::new(0);

/// `(a·b)·c` and `a·(b·c)` by anti-entropy exchanges, at `a`.
fn both_groupings(w: &LawWorld) -> (Net, Net) {
    let (mut left, _) = build(w, 0);
    let (mut right, _) = build(w, 0);
    exchange(&mut left, 0, 1);
    exchange(&mut left, 0, 2);
    exchange(&mut right, 1, 2);
    exchange(&mut right, 0, 1);
    (left, right)
}

/// Most rounds of all-pairs exchanges before every replica must agree: a
/// grave's context grows while it travels (each version it buries adds
/// what that version superseded), so one round may leave a difference
/// that the next removes.
const CONVERGENCE_ROUNDS: usize = 4;

/// Every pair of writers exchanges, round after round, until all three
/// hold the same digest (at most `CONVERGENCE_ROUNDS`).
fn exchange_until_equal(net: &mut Net) {
    for _ in 0..CONVERGENCE_ROUNDS {
        exchange(net, 1, 2);
        exchange(net, 0, 2);
        exchange(net, 0, 1);
        let d = net.engines[0].digest();
        if net.engines[..WRITERS].iter().all(|e| e.digest() == d) {
            return;
        }
    }
}

/// Production path with tombstone collection: whichever grouping the
/// exchanges took, every replica holds the same state once all three have
/// exchanged with each other until their digests agree.
fn groupings_agree_after_everyone_exchanged(w: LawWorld) -> Result<(), TestCaseError> {
    let (mut left, mut right) = both_groupings(&w);
    if left.engines.iter().any(|e| e.counters().tombstones_collected > 0) {
        LAW_WORLDS_COLLECTED.fetch_add(1, Ordering::Relaxed);
    }
    for net in [&mut left, &mut right] {
        exchange_until_equal(net);
    }
    for i in 0..WRITERS {
        same_engines(&left, i, &right, 0, "after everyone exchanged")?;
    }
    Ok(())
}

#[test]
fn with_tombstone_collection_exchange_groupings_agree_once_everyone_has_exchanged() {
    // Batches of random worlds until at least 20 of them collected a
    // tombstone (about one in five does), so the law is exercised on
    // collections whatever the random seed.
    for _ in 0..16 {
        let mut runner = TestRunner::new(PtConfig::with_cases(128));
        runner
            .run(&law_world(true, 0..3), groupings_agree_after_everyone_exchanged)
            .unwrap_or_else(|e| panic!("{e}"));
        if LAW_WORLDS_COLLECTED.load(Ordering::Relaxed) >= 20 {
            return;
        }
    }
    panic!("too few worlds collected tombstones to mean anything");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Production path without tombstone collection: `(a·b)·c` and
    /// `a·(b·c)` hold exactly the same versions (history included),
    /// knowledge and digest, with or without history trimming.
    #[test]
    fn without_tombstone_collection_anti_entropy_exchanges_are_associative(w in law_world(false, 0..3)) {
        let (left, right) = both_groupings(&w);
        same_engines(&left, 0, &right, 0, "(a·b)·c vs a·(b·c)")?;
    }

    /// With tombstone collection too: a collection travels as its grave in
    /// the sync exchange (graves count in the bucket digests, so it reaches
    /// a peer that never held the key) and is taken over whole, so which
    /// grouping meets the grave first does not decide the versions held.
    /// (Before graves travelled, `b` writes `d`, `c` overwrites it, `b`
    /// deletes it without having seen that and collects the delete:
    /// `(a·b)·c` kept `c`'s write that `a·(b·c)` dropped.) A grave's
    /// context may still differ between groupings (it takes over the
    /// context of what it buried where); it is outside the digest.
    #[test]
    fn with_tombstone_collection_anti_entropy_exchanges_are_associative(w in law_world(true, 0..3)) {
        let (left, right) = both_groupings(&w);
        same_engines(&left, 0, &right, 0, "(a·b)·c vs a·(b·c)")?;
    }
}

/// Found by CI: `c` collected its delete of `a` while `a` wrote a
/// concurrent, lower-ranked value; `b` held nothing of key `a`. Graves were
/// not in the bucket digests, so `b`·`c` saw equal buckets for `a` and the
/// grave never reached `b`: `(a·b)·c` buried `a`'s value, `a·(b·c)` kept it.
#[test]
fn a_grave_travels_to_a_peer_that_never_held_the_key() {
    use LawOp::*;
    let w = LawWorld {
        history_limit: 0,
        ops: vec![
            Write {
                n: 0,
                k: 1,
                tomb: false,
                advance: 0,
            },
            Write {
                n: 2,
                k: 0,
                tomb: false,
                advance: 0,
            },
            Deliver(9629409263245876),
            Deliver(9468101083381793112),
            Lose(2024834525856182989),
            Write {
                n: 2,
                k: 0,
                tomb: true,
                advance: 0,
            },
            Write {
                n: 0,
                k: 0,
                tomb: false,
                advance: 0,
            },
            Write {
                n: 1,
                k: 1,
                tomb: true,
                advance: 1,
            },
            Write {
                n: 1,
                k: 2,
                tomb: true,
                advance: 0,
            },
            Collect { n: 2 },
        ],
    };
    let (left, right) = both_groupings(&w);
    assert!(
        left.engines[2].counters().tombstones_collected > 0,
        "the world collects a delete"
    );
    same_engines(&left, 0, &right, 0, "(a·b)·c vs a·(b·c)").unwrap_or_else(|e| panic!("{e}"));
}

// ----- engines over a lossy network --------------------------------------

#[derive(Clone, Debug)]
enum NetOp {
    Put { n: usize, k: usize },
    PutIfAbsent { n: usize, k: usize },
    Delete { n: usize, k: usize },
    Deliver(usize),
    Duplicate(usize),
    Drop(usize),
    Advance(u64),
}

fn net_op() -> impl Strategy<Value = NetOp> {
    prop_oneof![
        4 => (0..5usize, 0..3usize).prop_map(|(n, k)| NetOp::Put { n, k }),
        1 => (0..5usize, 0..3usize).prop_map(|(n, k)| NetOp::PutIfAbsent { n, k }),
        2 => (0..5usize, 0..3usize).prop_map(|(n, k)| NetOp::Delete { n, k }),
        5 => any::<usize>().prop_map(NetOp::Deliver),
        1 => any::<usize>().prop_map(NetOp::Duplicate),
        2 => any::<usize>().prop_map(NetOp::Drop),
        2 => (0..3u64).prop_map(NetOp::Advance),
    ]
}

#[derive(Clone, Debug)]
struct Scenario {
    nodes: usize,
    history_limit: usize,
    ops: Vec<NetOp>,
    deliver_rest: bool,
    stale: usize,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        3..=5usize,
        0..3usize,
        prop::collection::vec(net_op(), 0..50),
        any::<bool>(),
        any::<usize>(),
    )
        .prop_map(|(nodes, history_limit, ops, deliver_rest, stale)| Scenario {
            nodes,
            history_limit,
            ops,
            deliver_rest,
            stale: stale % nodes,
        })
}

fn config(history_limit: usize) -> Config {
    let mut c = Config::default();
    c.history_limit = history_limit;
    c.tombstone_ttl_ms = 1_000;
    c.gc_interval_ms = 100;
    c
}

/// Every acknowledged write, with the version as its origin stored it.
type Acked = Vec<(StateKey, Version)>;

fn play(sc: &Scenario, net: &mut Net) -> Acked {
    let mut acked = Vec::new();
    for op in &sc.ops {
        match *op {
            NetOp::Put { n, k } | NetOp::PutIfAbsent { n, k } | NetOp::Delete { n, k } => {
                let n = n % sc.nodes;
                let key = KEYS[k % KEYS.len()];
                let value = format!("{n}@{}", net.now);
                let command = match op {
                    NetOp::Put { .. } => testing::put("prod", key, value),
                    NetOp::PutIfAbsent { .. } => testing::put_if("prod", key, value, Expect::Absent),
                    _ => testing::delete("prod", key),
                };
                if let Ok(CommandOutput::Written { version, .. }) = net.cmd(n, command) {
                    acked.push((sk(k), held(net, n, &sk(k), version).expect("just written")));
                }
            }
            NetOp::Deliver(i) => {
                net.deliver_nth(i);
            }
            NetOp::Duplicate(i) => {
                net.duplicate_nth(i);
            }
            NetOp::Drop(i) => {
                net.drop_nth(i);
            }
            NetOp::Advance(ms) => net.now += ms,
        }
    }
    if sc.deliver_rest {
        net.run();
    } else {
        net.drop_all();
    }
    acked
}

fn held(net: &Net, n: usize, k: &StateKey, id: VersionId) -> Option<Version> {
    net.engines[n]
        .state()
        .get(k)
        .and_then(|ks| ks.all().find(|v| v.id() == id).cloned())
}

fn engine_contents(net: &Net, n: usize) -> Contents {
    contents(net.engines[n].state())
}

fn check_converged(net: &Net, nodes: &[usize]) -> Result<(), TestCaseError> {
    let first = nodes[0];
    for &n in nodes {
        prop_assert_eq!(
            net.engines[n].digest(),
            net.engines[first].digest(),
            "node {} digest",
            n
        );
        prop_assert_eq!(
            engine_contents(net, n),
            engine_contents(net, first),
            "node {} contents",
            n
        );
        prop_assert_eq!(
            net.engines[n].kv_list(&ns(), "", 100),
            net.engines[first].kv_list(&ns(), "", 100),
            "node {} reads",
            n
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Writes on 3-5 nodes, gossip delivered in any order with duplicates
    /// and drops, then anti-entropy: every node holds the same versions and
    /// reads the same values, and no acknowledged write is lost — the live
    /// versions are exactly the maximal acknowledged writes.
    #[test]
    fn any_delivery_order_with_drops_converges_after_anti_entropy(sc in scenario()) {
        let mut net = Net::new(sc.nodes, config(sc.history_limit), T0);
        let acked = play(&sc, &mut net);
        net.sync_all(2);
        let all: Vec<usize> = (0..sc.nodes).collect();
        check_converged(&net, &all)?;
        let state = net.engines[0].state();
        let mut oracle: BTreeMap<StateKey, MVReg<Dot, NodeId>> = BTreeMap::new();
        for (k, v) in &acked {
            let ks = state.get(k);
            let kept = ks.is_some_and(|ks| ks.all().any(|h| h.dot == v.dot || h.supersedes(v)));
            prop_assert!(kept, "acknowledged write {:?} to {:?} lost", v.dot, k);
            oracle.entry(k.clone()).or_default().apply(crdts::mvreg::Op::Put {
                clock: vclock(&v.ctx),
                val: v.dot,
            });
        }
        for (k, reg) in oracle {
            let want: BTreeSet<Dot> = reg.read().val.into_iter().collect();
            let got: BTreeSet<Dot> = state.get(&k).unwrap().live.iter().map(|v| v.dot).collect();
            prop_assert_eq!(got, want, "live versions of {:?}", k);
        }
        for (k, ks) in state.iter() {
            prop_assert!(ks.history.len() <= sc.history_limit, "history of {:?} over the limit", k);
        }
    }
}

static COLLECTED_CASES: AtomicUsize = AtomicUsize::new(0);

/// After random traffic, one node is cut off holding whatever it holds; the
/// others converge, delete every key and collect the tombstones; after
/// healing and anti-entropy, no deleted key comes back anywhere.
fn gc_never_resurrects(sc: Scenario) -> Result<(), TestCaseError> {
    let mut net = Net::new(sc.nodes, config(sc.history_limit), T0);
    play(&sc, &mut net);
    let rest: Vec<usize> = (0..sc.nodes).filter(|n| *n != sc.stale).collect();
    net.isolate(&[sc.stale]);
    net.sync_all(2);
    check_converged(&net, &rest)?;
    let deleter = rest[0];
    let mut deleted = Vec::new();
    for (k, key) in KEYS.iter().enumerate() {
        if let Ok(CommandOutput::Written { version, .. }) = net.cmd(deleter, testing::delete("prod", key)) {
            let tomb = held(&net, deleter, &sk(k), version).expect("just written");
            deleted.push((k, tomb));
        }
    }
    net.run();
    net.run_for(3_000, 250);
    let before: u64 = rest
        .iter()
        .map(|n| net.engines[*n].counters().tombstones_collected)
        .sum();
    if before > 0 {
        COLLECTED_CASES.fetch_add(1, Ordering::Relaxed);
    }
    net.heal();
    net.sync_all(2);
    net.run_for(2_000, 250);
    let all: Vec<usize> = (0..sc.nodes).collect();
    check_converged(&net, &all)?;
    // No version the delete superseded is live anywhere. (A write the
    // deleter never saw, made on the cut-off node, is concurrent with the
    // delete and may legitimately stay live as a sibling.)
    for (k, tomb) in deleted {
        for n in 0..sc.nodes {
            let Some(ks) = net.engines[n].state().get(&sk(k)) else {
                continue;
            };
            for v in &ks.live {
                prop_assert!(
                    v.payload.is_tombstone() || !tomb.supersedes(v),
                    "node {} resurrected {:?} at {:?}",
                    n,
                    KEYS[k],
                    v.dot
                );
            }
        }
    }
    for (k, ks) in net.engines[0].state().iter() {
        prop_assert!(
            ks.history.len() <= sc.history_limit,
            "history of {:?} over the limit",
            k
        );
    }
    Ok(())
}

#[test]
fn tombstone_collection_never_resurrects_a_deleted_key() {
    let mut runner = TestRunner::new(PtConfig::with_cases(48));
    runner
        .run(&scenario(), gc_never_resurrects)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        COLLECTED_CASES.load(Ordering::Relaxed) >= 10,
        "too few cases collected tombstones to mean anything"
    );
}

/// Found while fixing the above: `1` buries its own value under the
/// collected delete and the grave takes over that value's context, which
/// `0` (already knowing the value as superseded) never adds. The versions
/// are the same either way; the grave contexts stay out of the digests so
/// the replicas still agree.
#[test]
fn replicas_agree_when_graves_buried_different_versions() {
    use LawOp::*;
    let w = LawWorld {
        history_limit: 0,
        ops: vec![
            Write {
                n: 2,
                k: 0,
                tomb: false,
                advance: 0,
            },
            Write {
                n: 1,
                k: 0,
                tomb: false,
                advance: 0,
            },
            Write {
                n: 1,
                k: 0,
                tomb: false,
                advance: 0,
            },
            Deliver(100594871289118908),
            Deliver(47232712177132050),
            Deliver(6696016745755484744),
            Deliver(4201228246734479539),
            Write {
                n: 2,
                k: 0,
                tomb: true,
                advance: 0,
            },
            Write {
                n: 0,
                k: 0,
                tomb: false,
                advance: 0,
            },
            Collect { n: 2 },
        ],
    };
    groupings_agree_after_everyone_exchanged(w).unwrap_or_else(|e| panic!("{e}"));
}
