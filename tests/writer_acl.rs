//! Per-namespace writer rules (docs/SECURITY.md "Writer rules"), at the
//! engine level in a `core::testing::Net`: only the listed writers write a
//! governed namespace on every node, only admins write the rules, a node
//! that ignores the rules cannot get its writes in, and a write that beat
//! its revocation to some nodes is purged there with what it superseded
//! coming back.

use starling::core::testing::{self, node, Net};
use starling::core::{Command, CommandError, Config, Key, Namespace, NodeId, RejectReason};

const T0: u64 = 1_700_000_000_000;
const ADMIN: usize = 0;

fn cfg() -> Config {
    let mut c = Config::default();
    c.heartbeat_interval_ms = 100;
    c.sync_interval_ms = 500;
    c.acl_admins = vec![node(ADMIN).to_string()];
    c
}

/// A formed cluster of `n` nodes, node 0 the admin.
fn cluster(n: usize) -> Net {
    let mut net = Net::new(n, cfg(), T0);
    net.run_for(3_000, 50);
    for i in 0..n {
        assert_eq!(net.engines[i].members().len(), n, "node {i} sees everyone");
    }
    net
}

fn ns(name: &str) -> Namespace {
    Namespace::new(name).unwrap()
}

fn set_writers(net: &mut Net, at: usize, namespace: &str, writers: &[usize]) -> Result<(), CommandError> {
    net.cmd(
        at,
        Command::SetWriters {
            namespace: ns(namespace),
            writers: writers.iter().map(|w| node(*w)).collect::<Vec<NodeId>>(),
        },
    )
    .map(|_| ())
}

fn value(net: &Net, i: usize, namespace: &str, key: &str) -> Option<Vec<u8>> {
    net.engines[i]
        .kv_get(&ns(namespace), &Key::new(key).unwrap())
        .map(|e| e.value)
}

fn rejected(net: &Net, i: usize, reason: RejectReason) -> u64 {
    net.engines[i]
        .counters()
        .rejected
        .get(&reason)
        .copied()
        .unwrap_or(0)
}

fn settle(net: &mut Net) {
    net.run_for(2_000, 50);
    net.sync_all(2);
}

fn assert_converged(net: &Net) {
    let d0 = net.engines[0].digest();
    for i in 1..net.engines.len() {
        assert_eq!(net.engines[i].digest(), d0, "node {i} converged with node 0");
    }
}

#[test]
fn only_the_listed_writers_write_a_governed_namespace_and_earlier_writes_stay() {
    let mut net = cluster(4);
    net.cmd(1, testing::put("prod", "old", "by-1")).unwrap();
    settle(&mut net);

    set_writers(&mut net, ADMIN, "prod", &[2]).unwrap();
    settle(&mut net);
    for i in 0..4 {
        let rules = net.engines[i].writer_rules();
        assert!(
            rules[&ns("prod")].writers.contains_key(&node(2)),
            "node {i} holds the rule"
        );
    }

    // Node 1 is no writer any more, nor is node 3; node 2 is.
    for i in [1, 3] {
        let err = net.cmd(i, testing::put("prod", "k", "x")).unwrap_err();
        assert!(matches!(err, CommandError::NotPermitted(_)), "node {i}: {err:?}");
    }
    net.cmd(2, testing::put("prod", "k", "by-2")).unwrap();
    // Another namespace stays open.
    net.cmd(3, testing::put("dev", "k", "by-3")).unwrap();
    settle(&mut net);
    for i in 0..4 {
        assert_eq!(
            value(&net, i, "prod", "k").as_deref(),
            Some(&b"by-2"[..]),
            "node {i}"
        );
        assert_eq!(
            value(&net, i, "prod", "old").as_deref(),
            Some(&b"by-1"[..]),
            "node {i} keeps the earlier write"
        );
        assert_eq!(
            value(&net, i, "dev", "k").as_deref(),
            Some(&b"by-3"[..]),
            "node {i}"
        );
    }
    assert_converged(&net);

    // Clearing the rule opens the namespace again.
    net.cmd(
        ADMIN,
        Command::ClearWriters {
            namespace: ns("prod"),
        },
    )
    .unwrap();
    settle(&mut net);
    net.cmd(3, testing::put("prod", "k", "by-3")).unwrap();
    settle(&mut net);
    for i in 0..4 {
        assert!(net.engines[i].writer_rules().is_empty(), "node {i}");
        assert_eq!(
            value(&net, i, "prod", "k").as_deref(),
            Some(&b"by-3"[..]),
            "node {i}"
        );
    }
}

#[test]
fn only_an_admin_changes_the_rules_and_the_reserved_namespace_takes_no_plain_writes() {
    let mut net = cluster(3);
    let err = set_writers(&mut net, 1, "prod", &[1]).unwrap_err();
    assert!(matches!(err, CommandError::NotPermitted(_)), "{err:?}");
    let err = net
        .cmd(ADMIN, testing::put("starling.acl", "prod", "writer x"))
        .unwrap_err();
    assert!(matches!(err, CommandError::Invalid(_)), "{err:?}");
    let err = set_writers(&mut net, ADMIN, "starling.acl", &[1]).unwrap_err();
    assert!(matches!(err, CommandError::Invalid(_)), "{err:?}");
    assert!(net.engines[1].writer_rules().is_empty());
}

#[test]
fn a_node_that_ignores_the_rules_gets_no_write_in_and_its_own_rules_are_refused() {
    let mut net = cluster(4);
    set_writers(&mut net, ADMIN, "prod", &[1]).unwrap();
    net.cmd(1, testing::put("prod", "k", "honest")).unwrap();
    settle(&mut net);

    // Node 3 restarts with a config of its own: it names itself the admin
    // (so it ignores node 0's rules and writes rules of its own).
    let mut rogue = cfg();
    rogue.acl_admins = vec![node(3).to_string()];
    net.restart_as(3, node(3), rogue);
    net.run_for(3_000, 50);
    assert!(
        net.engines[3].writer_rules().is_empty(),
        "the rogue holds no rule of node 0's"
    );
    net.cmd(3, testing::put("prod", "k", "forged")).unwrap();
    set_writers(&mut net, 3, "prod", &[3]).unwrap();
    set_writers(&mut net, 3, "dev", &[3]).unwrap();
    settle(&mut net);

    for i in 0..3 {
        assert_eq!(
            value(&net, i, "prod", "k").as_deref(),
            Some(&b"honest"[..]),
            "node {i}"
        );
        let rules = net.engines[i].writer_rules();
        assert_eq!(rules.len(), 1, "node {i} holds node 0's rule only");
        assert!(rules[&ns("prod")].writers.contains_key(&node(1)), "node {i}");
        assert!(
            rejected(&net, i, RejectReason::VersionNotPermitted) >= 1,
            "node {i} counted the refused versions"
        );
    }
    // Honest writers go on writing.
    net.cmd(1, testing::put("prod", "k", "honest-2")).unwrap();
    net.cmd(2, testing::put("dev", "k", "open")).unwrap();
    settle(&mut net);
    for i in 0..3 {
        assert_eq!(
            value(&net, i, "prod", "k").as_deref(),
            Some(&b"honest-2"[..]),
            "node {i}"
        );
        assert_eq!(
            value(&net, i, "dev", "k").as_deref(),
            Some(&b"open"[..]),
            "node {i}"
        );
    }
}

#[test]
fn a_write_that_beat_its_revocation_is_purged_and_what_it_superseded_comes_back() {
    let mut net = cluster(3);
    set_writers(&mut net, ADMIN, "prod", &[1, 2]).unwrap();
    settle(&mut net);
    net.cmd(1, testing::put("prod", "k", "v1")).unwrap();
    settle(&mut net);

    // The admin, cut off from nodes 1 and 2, takes node 1 out; node 1,
    // not knowing yet, overwrites the key, and node 2 takes the write.
    net.isolate(&[ADMIN]);
    set_writers(&mut net, ADMIN, "prod", &[2]).unwrap();
    net.cmd(1, testing::put("prod", "k", "v2")).unwrap();
    net.run_for(1_000, 50);
    for i in [1, 2] {
        assert_eq!(
            value(&net, i, "prod", "k").as_deref(),
            Some(&b"v2"[..]),
            "node {i} before the heal"
        );
    }

    net.heal();
    settle(&mut net);
    settle(&mut net);
    for i in 0..3 {
        assert_eq!(
            value(&net, i, "prod", "k").as_deref(),
            Some(&b"v1"[..]),
            "node {i}: the write after the revocation is gone, the one before is back"
        );
    }
    assert!(
        net.engines[2].counters().acl_purged >= 1,
        "node 2 purged the write"
    );
    assert!(
        net.engines[1].counters().acl_purged >= 1,
        "node 1 purged its own write"
    );
    assert_converged(&net);
    // Node 1 may not write any more; node 2 may.
    assert!(matches!(
        net.cmd(1, testing::put("prod", "k", "v3")),
        Err(CommandError::NotPermitted(_))
    ));
    net.cmd(2, testing::put("prod", "k", "v3")).unwrap();
    settle(&mut net);
    for i in 0..3 {
        assert_eq!(
            value(&net, i, "prod", "k").as_deref(),
            Some(&b"v3"[..]),
            "node {i}"
        );
    }
    assert_converged(&net);
}

#[test]
fn the_rules_survive_a_restart_from_the_store() {
    let mut net = cluster(2);
    set_writers(&mut net, ADMIN, "prod", &[0]).unwrap();
    settle(&mut net);
    let snapshot = net.stores[1].snapshot();
    let e = starling::core::Engine::new(
        cfg(),
        testing::keys(1),
        Default::default(),
        net.now,
        7,
        Some(snapshot),
    )
    .unwrap();
    assert!(e.writer_rules()[&ns("prod")].writers.contains_key(&node(0)));
}
