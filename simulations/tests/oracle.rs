//! The oracle's accounting of acknowledged writes, on engines driven by
//! hand: knowledge of a dot is not an excuse for its version being gone;
//! only a version or a delete the oracle saw is.

use starling::core::testing::{self, Net};
use starling::core::{Config, Engine, NodeInfo};
use starling_sim::oracle::Oracle;

const NS: &str = "app";

/// A two-node net whose persist batches have all been shown to `oracle`,
/// with node 0's write of `k` acknowledged as op 1 (write index 0).
fn written(cfg: Config) -> (Net, Oracle) {
    let mut net = Net::new(2, cfg, 1_000);
    let mut oracle = Oracle::new(2, 3);
    for i in 0..2 {
        oracle.new_identity(i, net.engines[i].node_id());
        oracle.current[i] = Some(net.engines[i].node_id());
    }
    net.cmd(0, testing::put(NS, "k", "v1")).unwrap();
    let key = testing::kv_key(NS, "k");
    let v = net.engines[0]
        .state()
        .get(&key)
        .unwrap()
        .winner()
        .unwrap()
        .clone();
    oracle.write_acked(1, key, &v, 0, net.now);
    net.run();
    show_batches(&net, &mut oracle);
    (net, oracle)
}

/// Feed every batch persisted so far to the oracle (each once).
fn show_batches(net: &Net, oracle: &mut Oracle) {
    for (i, batches) in net.batches.iter().enumerate() {
        for b in batches {
            oracle.on_batch(net.now, i, net.engines[i].node_id(), b);
        }
    }
}

#[test]
fn a_held_write_is_accounted_for_everywhere() {
    let (net, oracle) = written(Config::default());
    for e in &net.engines {
        assert!(oracle.accounted(e, 0));
    }
}

#[test]
fn a_known_dot_whose_version_vanished_is_a_lost_write() {
    let (net, oracle) = written(Config::default());
    // Node 1 restarts from a store that kept its knowledge of the write
    // but not the key: what a wrongly dropped version looks like.
    let mut snap = net.stores[1].snapshot();
    let before = snap.keys.len();
    snap.keys.retain(|(k, _)| *k != testing::kv_key(NS, "k"));
    assert_eq!(snap.keys.len(), before - 1, "the store held the key");
    let info = NodeInfo::default();
    let e = Engine::new(Config::default(), testing::keys(1), info, net.now, 7, Some(snap)).unwrap();
    let dot = net.engines[0]
        .state()
        .get(&testing::kv_key(NS, "k"))
        .unwrap()
        .winner()
        .unwrap()
        .dot;
    assert!(e.state().knowledge().contains(&dot), "knowledge kept the dot");
    assert!(
        !oracle.accounted(&e, 0),
        "knowledge alone must not account for a write"
    );
}

#[test]
fn a_write_deleted_and_collected_is_accounted_for() {
    let mut cfg = Config::default();
    cfg.tombstone_ttl_ms = 1_000;
    cfg.gc_interval_ms = 100;
    let (mut net, mut oracle) = written(cfg);
    net.cmd(1, testing::delete(NS, "k")).unwrap();
    net.run();
    net.run_for(5_000, 100);
    show_batches(&net, &mut oracle);
    for e in &net.engines {
        let ks = e.state().get(&testing::kv_key(NS, "k"));
        assert!(
            ks.is_none_or(|ks| ks.all().next().is_none()),
            "the delete was collected: {ks:?}"
        );
        assert!(
            oracle.accounted(e, 0),
            "a delete the oracle saw explains the absence"
        );
    }
}
