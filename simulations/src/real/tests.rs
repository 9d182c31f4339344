//! Unit tests of the ledger and the watchdog.

#[allow(clippy::wildcard_imports)]
use super::*;

fn node(i: u64) -> NodeId {
    NodeId::from_index(i)
}

fn write(ledger: &mut Ledger, op: u64, origin: u64, seq: u64, ctx: &[(u64, u64)]) -> usize {
    let dot = Dot {
        node: node(origin),
        seq,
    };
    let mut c = Context::default();
    for &(n, s) in ctx {
        c.add(Dot {
            node: node(n),
            seq: s,
        });
    }
    c.add(dot);
    ledger.push(AckedWrite {
        op,
        key: TrackedKey::Kv("k/0".into()),
        id: VersionId::of(&dot),
        dot,
        hlc: Hlc {
            wall_ms: op,
            logical: 0,
        },
        tombstone: false,
        origin: origin as usize,
        ack_ms: op,
        ctx: c,
        arrivals: vec![None; 4],
        orphaned: false,
        during_fault: false,
        up_at_ack: vec![true; 4],
        reached_up_ms: None,
    })
}

fn held(ledger: &Ledger, i: usize, live: bool) -> Held {
    let w = &ledger.writes[i];
    Held {
        id: w.id,
        dot: w.dot,
        hlc: w.hlc,
        deleted: false,
        live,
        value: None,
    }
}

fn version(origin: u64, seq: u64, wall_ms: u64, live: bool, value: Option<&[u8]>) -> Held {
    let dot = Dot {
        node: node(origin),
        seq,
    };
    Held {
        id: VersionId::of(&dot),
        dot,
        hlc: Hlc { wall_ms, logical: 0 },
        deleted: value.is_none(),
        live,
        value: value.map(<[u8]>::to_vec),
    }
}

#[test]
fn the_watchdog_flags_a_node_going_back_and_accepts_progress() {
    let key = TrackedKey::Kv("k/0".into());
    let issued: BTreeSet<u64> = [1, 2].into_iter().collect();
    let (v1, v2) = (value_for(1, 16), value_for(2, 16));
    let fresh = || Watchdog::new(2);
    let mut w = fresh();
    let read = |w: &mut Watchdog, t, held: &[Held]| w.on_read(t, 0, 1, &key, held, &issued);
    // Progress: a write, then one superseding it, then a delete, then
    // collection of the whole key.
    read(&mut w, 1, &[version(1, 1, 10, true, Some(&v1))]);
    read(
        &mut w,
        2,
        &[
            version(2, 1, 20, true, Some(&v2)),
            version(1, 1, 10, false, Some(&v1)),
        ],
    );
    read(
        &mut w,
        3,
        &[version(3, 1, 30, true, None), version(2, 1, 20, false, Some(&v2))],
    );
    read(&mut w, 4, &[]);
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    // The collected delete's versions come back.
    read(&mut w, 5, &[version(2, 1, 20, true, Some(&v2))]);
    let kinds: Vec<&str> = w.violations.iter().map(|v| v.invariant).collect();
    assert_eq!(kinds, ["winner-monotonic", "no-resurrection"]);

    // Another node: the newest version disappears, a value nobody
    // wrote, too much history.
    let mut w = fresh();
    let other = |w: &mut Watchdog, t, held: &[Held]| w.on_read(t, 1, 1, &key, held, &issued);
    other(
        &mut w,
        1,
        &[
            version(2, 1, 20, true, Some(&v2)),
            version(1, 1, 10, false, Some(&v1)),
        ],
    );
    other(&mut w, 2, &[version(1, 1, 10, false, Some(&v1))]);
    other(&mut w, 3, &[version(4, 1, 40, true, Some(b"w9:forged"))]);
    other(
        &mut w,
        4,
        &[
            version(5, 1, 50, true, None),
            version(4, 1, 40, false, None),
            version(2, 1, 20, false, None),
            version(1, 1, 10, false, None),
        ],
    );
    let kinds: Vec<&str> = w.violations.iter().map(|v| v.invariant).collect();
    assert_eq!(kinds, ["versions-monotonic", "no-phantom-values", "limits"]);
    // A restart (new life) starts afresh; a node never holds itself dead.
    w.on_read(5, 1, 2, &key, &[version(1, 1, 10, true, Some(&v1))], &issued);
    assert_eq!(w.violations.len(), 3);
    w.on_self_view(6, 1, MemberStatus::Alive);
    w.on_self_view(7, 1, MemberStatus::Suspect);
    assert_eq!(w.violations.last().map(|v| v.invariant), Some("never-self-dead"));
    assert_eq!(w.reads, 5);
}

#[test]
fn a_write_is_accounted_only_when_held_or_certainly_superseded() {
    let mut l = Ledger::default();
    let a = write(&mut l, 1, 1, 1, &[]);
    let b = write(&mut l, 2, 2, 1, &[(1, 1)]); // saw a
    let c = write(&mut l, 3, 3, 1, &[]); // concurrent with both
    let a2 = write(&mut l, 4, 1, 2, &[]); // a's origin again
    let hb = [held(&l, b, true)];
    assert!(l.accounted(a, &hb, 10, 1_000), "b supersedes a");
    assert!(
        !l.accounted(c, &hb, 10, 1_000),
        "c is concurrent: it must be held"
    );
    assert!(
        l.accounted(a, &[held(&l, a2, true)], 10, 1_000),
        "a later write of a's origin"
    );
    assert!(!l.accounted(b, &[held(&l, a2, true)], 10, 1_000));
    assert!(!l.accounted(a, &[], 10, 1_000));
}

#[test]
fn a_collected_key_accounts_only_for_writes_an_old_enough_delete_explains() {
    let mut l = Ledger::default();
    let p = write(&mut l, 1, 1, 1, &[]);
    let d = write(&mut l, 2, 2, 1, &[]); // concurrent delete, outranks p
    l.writes[d].tombstone = true;
    let late = write(&mut l, 5_000, 3, 1, &[]); // outranks the delete
    assert!(
        !l.accounted(p, &[], 100, 1_000),
        "the delete is too young to be collected"
    );
    assert!(
        l.accounted(p, &[], 2_000, 1_000),
        "collected behind the winning delete"
    );
    assert!(l.accounted(d, &[], 2_000, 1_000), "the delete itself");
    assert!(
        !l.accounted(late, &[], 9_000, 1_000),
        "nothing explains a later put's absence"
    );
}

#[test]
fn an_overload_fault_is_refused_when_the_scenario_is_prepared_for_real_nodes() {
    let sc = Scenario::parse(
        "[cluster]\nsize = 3\n[phases]\nheal_at_ms = 10000\ndeadline_ms = 20000\n\
         [[fault]]\nkind = \"overload\"\nat_ms = 2000\nnodes = [1]\n",
    )
    .expect("a valid scenario");
    let e = prepare(&sc, 1, &RealOptions::default()).unwrap_err();
    assert!(e.contains("kind overload is not supported by swarm-real"), "{e}");
}

#[test]
fn a_mass_restart_is_prepared_for_real_nodes_as_restarts() {
    let sc = Scenario::parse(
        "[cluster]\nsize = 5\n[phases]\nheal_at_ms = 10000\ndeadline_ms = 20000\n\
         [[fault]]\nkind = \"mass-restart\"\nat_ms = 2000\nfraction = 0.6\n",
    )
    .expect("a valid scenario");
    let p = prepare(&sc, 1, &RealOptions::default()).expect("mass restarts run on real nodes");
    assert!(
        p.skipped.iter().all(|s| !s.contains("mass-restart")),
        "{:?}",
        p.skipped
    );
    let plan = FaultPlan::new(&p.scenario);
    let bounces = plan
        .timeline()
        .into_iter()
        .filter(|(_, s)| matches!(s, Step::Bounce { .. }))
        .count();
    assert_eq!(bounces, 2 * 3, "3 of 5 nodes stop and come back");
}
