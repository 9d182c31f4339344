//! Gray (canary) rollout rules, driven through `Engine::handle` with fake
//! time and the in-test network.

use std::collections::BTreeMap;

use starling::core::testing::{self, node, Net};
use starling::core::{
    cohort_bucket, CanaryTarget, Command, CommandError, CommandOutput, Config, Key, Namespace, NodeInfo,
    StateKey, WatchChange,
};

const T0: u64 = 1_700_000_000_000;

fn ns() -> Namespace {
    Namespace::new("prod").unwrap()
}

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

fn put(k: &str, v: &str) -> Command {
    testing::put("prod", k, v)
}

fn set_canary(k: &str, v: &str, selector: &str, percent: Option<u8>) -> Command {
    let target = CanaryTarget {
        tags: CanaryTarget::parse_selector(selector).unwrap(),
        percent,
    };
    testing::set_canary("prod", k, v, target)
}

fn read(net: &Net, i: usize, k: &str) -> Option<String> {
    net.engines[i]
        .kv_get(&ns(), &key(k))
        .map(|e| String::from_utf8(e.value).unwrap())
}

fn tag(net: &mut Net, i: usize, selector: &str) {
    let info = NodeInfo {
        name: format!("n{i}"),
        addrs: Vec::new(),
        tags: CanaryTarget::parse_selector(selector).unwrap(),
    };
    net.cmd(i, Command::SetInfo(info)).unwrap();
}

fn ok(r: Result<CommandOutput, CommandError>) {
    assert!(r.is_ok(), "command failed: {r:?}");
}

fn assert_converged(net: &Net) {
    let d0 = net.engines[0].digest();
    for (i, e) in net.engines.iter().enumerate() {
        assert_eq!(e.digest(), d0, "node {i} digest differs from node 0");
    }
}

/// Four nodes: 0 and 1 are eu gateways, 2 is a us gateway, 3 is a eu db.
fn tagged_net() -> Net {
    let mut net = Net::new(4, Config::default(), T0);
    tag(&mut net, 0, "role=gateway,region=eu");
    tag(&mut net, 1, "role=gateway,region=eu");
    tag(&mut net, 2, "role=gateway,region=us");
    tag(&mut net, 3, "role=db,region=eu");
    net.run();
    net
}

#[test]
fn a_tag_canary_is_read_only_by_matching_nodes_and_is_visible_everywhere() {
    let mut net = tagged_net();
    ok(net.cmd(3, put("feature/x", "off")));
    ok(net.cmd(2, set_canary("feature/x", "on", "role=gateway,region=eu", None)));
    net.run();
    assert_converged(&net);
    assert_eq!(read(&net, 0, "feature/x").as_deref(), Some("on"));
    assert_eq!(read(&net, 1, "feature/x").as_deref(), Some("on"));
    assert_eq!(read(&net, 2, "feature/x").as_deref(), Some("off"));
    assert_eq!(read(&net, 3, "feature/x").as_deref(), Some("off"));
    for i in 0..4 {
        let c = net.engines[i]
            .kv_canary(&ns(), &key("feature/x"))
            .expect("canary visible");
        assert_eq!(c.value, b"on");
        assert_eq!(c.active, i < 2, "node {i}");
        let e = net.engines[i].kv_get(&ns(), &key("feature/x")).unwrap();
        assert_eq!(e.served_from_canary(), i < 2);
        // The stable winner stays what conditional writes compare against.
        assert_eq!(e.siblings[0].1.as_deref(), Some(&b"off"[..]));
    }
    let listed = net.engines[0].kv_list(&ns(), "feature/", 10);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].value, b"on");
}

#[test]
fn promote_makes_the_canary_stable_everywhere_and_ends_it() {
    let mut net = tagged_net();
    ok(net.cmd(3, put("feature/x", "off")));
    ok(net.cmd(0, set_canary("feature/x", "on", "region=eu", None)));
    net.run();
    assert_eq!(read(&net, 2, "feature/x").as_deref(), Some("off"));
    ok(net.cmd(2, testing::promote_canary("prod", "feature/x")));
    net.run();
    assert_converged(&net);
    for i in 0..4 {
        assert_eq!(read(&net, i, "feature/x").as_deref(), Some("on"), "node {i}");
        assert!(net.engines[i].kv_canary(&ns(), &key("feature/x")).is_none());
    }
    let again = net.cmd(1, testing::promote_canary("prod", "feature/x"));
    assert_eq!(again, Err(CommandError::NotFound));
}

#[test]
fn abort_restores_the_stable_value_on_canary_nodes() {
    let mut net = tagged_net();
    ok(net.cmd(3, put("feature/x", "off")));
    ok(net.cmd(0, set_canary("feature/x", "on", "role=gateway", None)));
    net.run();
    assert_eq!(read(&net, 2, "feature/x").as_deref(), Some("on"));
    ok(net.cmd(3, testing::abort_canary("prod", "feature/x")));
    net.run();
    assert_converged(&net);
    for i in 0..4 {
        assert_eq!(read(&net, i, "feature/x").as_deref(), Some("off"), "node {i}");
    }
    let again = net.cmd(3, testing::abort_canary("prod", "feature/x"));
    assert_eq!(again, Err(CommandError::NotFound));
}

#[test]
fn a_percentage_canary_picks_nodes_by_id_the_same_way_on_every_node() {
    let n = 12;
    let mut net = Net::new(n, Config::default(), T0);
    ok(net.cmd(0, put("limits/rps", "100")));
    ok(net.cmd(0, set_canary("limits/rps", "200", "", Some(50))));
    net.run();
    assert_converged(&net);
    let mut in_canary = 0;
    for i in 0..n {
        let expected = if cohort_bucket(&node(i)) < 50 {
            "200"
        } else {
            "100"
        };
        assert_eq!(read(&net, i, "limits/rps").as_deref(), Some(expected), "node {i}");
        in_canary += usize::from(expected == "200");
    }
    assert!(
        in_canary > 0 && in_canary < n,
        "50% of 12 nodes picked {in_canary}"
    );
}

#[test]
fn a_canary_for_a_new_key_reads_as_present_only_on_targeted_nodes() {
    let mut net = tagged_net();
    ok(net.cmd(1, set_canary("feature/new", "yes", "region=us", None)));
    net.run();
    assert_eq!(read(&net, 2, "feature/new").as_deref(), Some("yes"));
    assert_eq!(read(&net, 0, "feature/new"), None);
    assert_eq!(net.engines[2].kv_list(&ns(), "", 10).len(), 1);
    assert!(net.engines[0].kv_list(&ns(), "", 10).is_empty());
}

#[test]
fn concurrent_canaries_converge_to_one_winner_and_a_partitioned_node_catches_up() {
    let mut net = tagged_net();
    ok(net.cmd(3, put("feature/x", "off")));
    net.run();
    net.isolate(&[2]);
    ok(net.cmd(0, set_canary("feature/x", "v-a", "role=gateway", None)));
    net.now += 3;
    ok(net.cmd(2, set_canary("feature/x", "v-b", "role=gateway", None)));
    net.run_for(3_000, 100);
    assert_ne!(read(&net, 0, "feature/x"), read(&net, 2, "feature/x"));
    net.heal();
    net.run_for(20_000, 100);
    assert_converged(&net);
    let winner = read(&net, 0, "feature/x");
    assert_eq!(winner.as_deref(), Some("v-b"), "the later HLC wins");
    assert_eq!(read(&net, 1, "feature/x"), winner);
    assert_eq!(read(&net, 2, "feature/x"), winner);
    assert_eq!(read(&net, 3, "feature/x").as_deref(), Some("off"));
}

#[test]
fn bad_targets_and_oversized_values_are_refused() {
    let mut net = Net::new(1, Config::default(), T0);
    let none = net.cmd(0, set_canary("k", "v", "", None));
    assert!(matches!(none, Err(CommandError::Invalid(_))), "{none:?}");
    let zero = net.cmd(0, set_canary("k", "v", "", Some(0)));
    assert!(matches!(zero, Err(CommandError::Invalid(_))), "{zero:?}");
    let target = CanaryTarget {
        tags: BTreeMap::new(),
        percent: Some(10),
    };
    let big = testing::set_canary(
        "prod",
        "k",
        vec![0; Config::default().max_value_bytes + 1],
        target,
    );
    assert!(matches!(net.cmd(0, big), Err(CommandError::TooLarge { .. })));
    assert!(net.engines[0].kv_canaries(&ns()).is_empty());
}

#[test]
fn retagging_a_node_moves_it_in_or_out_of_a_canary_and_tells_watchers() {
    let mut net = tagged_net();
    ok(net.cmd(3, put("feature/x", "off")));
    ok(net.cmd(3, set_canary("feature/x", "on", "region=us", None)));
    net.run();
    assert_eq!(read(&net, 0, "feature/x").as_deref(), Some("off"));
    let before = net.events[0].len();
    tag(&mut net, 0, "role=gateway,region=us");
    assert_eq!(read(&net, 0, "feature/x").as_deref(), Some("on"));
    let canary_key = StateKey::Canary {
        namespace: ns(),
        key: key("feature/x"),
    };
    let announced = net.events[0][before..]
        .iter()
        .any(|e| matches!(&e.change, WatchChange::Key { key, .. } if *key == canary_key));
    assert!(announced, "watchers of node 0 hear that its canary view changed");
    assert!(net.engines[0].canary_affects_me(&ns(), &key("feature/x")));
    assert!(!net.engines[1].canary_affects_me(&ns(), &key("feature/x")));
}
