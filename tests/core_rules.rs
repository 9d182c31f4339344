//! One test per rule of the protocol core, driven through
//! `Engine::handle(now, Input)` with fake time and an in-test network.

use std::collections::BTreeSet;

use starling::core::testing::{self, node, Net};
use starling::core::wire::{self, Delta, Message};
use starling::core::{
    Command, CommandError, CommandOutput, Config, Dot, Expect, HealthStatus, Hlc, IdError, InstanceId, Key,
    Member, MemberStatus, Namespace, NodeId, Payload, ServiceName, ServiceQuery, ServiceSpec, StateKey,
    Topic, Version, VersionId,
};

const T0: u64 = 1_700_000_000_000;

fn ns() -> Namespace {
    Namespace::new("prod").unwrap()
}

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

fn sk(k: &str) -> StateKey {
    testing::kv_key("prod", k)
}

fn put(k: &str, v: &str) -> Command {
    testing::put("prod", k, v)
}

fn put_if(k: &str, v: &str, expect: Expect) -> Command {
    testing::put_if("prod", k, v, expect)
}

fn delete(k: &str) -> Command {
    testing::delete("prod", k)
}

fn written(r: Result<CommandOutput, CommandError>) -> VersionId {
    match r {
        Ok(CommandOutput::Written { version, .. }) => version,
        other => panic!("expected a write, got {other:?}"),
    }
}

fn read(net: &Net, i: usize, k: &str) -> Option<String> {
    net.engines[i]
        .kv_get(&ns(), &key(k))
        .map(|e| String::from_utf8(e.value).unwrap())
}

fn status(net: &Net, at: usize, of: usize) -> Option<MemberStatus> {
    net.engines[at].member(&node(of)).map(|m| m.status)
}

fn rejected(net: &Net, i: usize, reason: &str) -> u64 {
    net.engines[i]
        .counters()
        .rejected
        .get(reason)
        .copied()
        .unwrap_or(0)
}

fn total_rejected(net: &Net, i: usize) -> u64 {
    net.engines[i].counters().rejected.values().sum()
}

fn assert_converged(net: &Net) {
    let d0 = net.engines[0].digest();
    for (i, e) in net.engines.iter().enumerate() {
        assert_eq!(e.digest(), d0, "node {i} digest differs from node 0");
    }
}

fn cfg() -> Config {
    Config::default()
}

// ----- concurrent writes -------------------------------------------------

#[test]
fn resolve_keeps_the_chosen_sibling_everywhere_and_refuses_a_non_live_version() {
    let mut net = Net::new(2, cfg(), T0);
    let a = written(net.cmd(0, put("db/url", "from-a")));
    net.now += 5;
    let b = written(net.cmd(1, put("db/url", "from-b")));
    net.run();
    assert_eq!(
        net.engines[0]
            .kv_get(&ns(), &key("db/url"))
            .unwrap()
            .siblings
            .len(),
        2
    );
    let keep = |to| testing::resolve("prod", "db/url", to);
    // Keep the loser on purpose: the explicit choice wins over the HLC rule.
    let winner = net.engines[0].kv_get(&ns(), &key("db/url")).unwrap().version.id;
    let loser = if winner == a { b } else { a };
    let loser_value = net.engines[0]
        .kv_get(&ns(), &key("db/url"))
        .unwrap()
        .siblings
        .into_iter()
        .find(|(v, _)| v.id == loser)
        .and_then(|(_, val)| val)
        .unwrap();
    written(net.cmd(0, keep(loser)));
    net.run();
    for e in &net.engines {
        let got = e.kv_get(&ns(), &key("db/url")).unwrap();
        assert_eq!(got.siblings.len(), 1, "resolve supersedes every sibling");
        assert_eq!(got.value, loser_value);
    }
    // The resolved-away versions are history now, not live: refused.
    assert_eq!(net.cmd(0, keep(loser)), Err(CommandError::NotFound));
}

#[test]
fn concurrent_writes_keep_both_siblings_and_every_node_picks_the_highest_hlc() {
    let mut net = Net::new(3, cfg(), T0);
    let a = written(net.cmd(0, put("db/url", "from-a")));
    net.now += 5;
    let b = written(net.cmd(1, put("db/url", "from-b")));
    // Deliver in reverse order of publication to make order irrelevant.
    net.queue.reverse();
    net.run();
    for i in 0..3 {
        let e = net.engines[i].kv_get(&ns(), &key("db/url")).unwrap();
        assert_eq!(e.value, b"from-b", "node {i}: later HLC wins");
        assert_eq!(e.version.id, b);
        let ids: BTreeSet<VersionId> = e.siblings.iter().map(|(v, _)| v.id).collect();
        assert_eq!(ids, BTreeSet::from([a, b]), "node {i} keeps both siblings");
        let vals: BTreeSet<Vec<u8>> = e.siblings.iter().map(|(_, v)| v.clone().unwrap()).collect();
        assert_eq!(vals, BTreeSet::from([b"from-a".to_vec(), b"from-b".to_vec()]));
    }
    assert_converged(&net);
}

/// `n` nodes each write `k` while cut off from the others (a concurrent
/// write per node), then the partition heals and anti-entropy runs.
fn concurrent_writes_of_one_key(n: usize, max_siblings: usize) -> Net {
    let mut c = cfg();
    c.max_siblings = max_siblings;
    let mut net = Net::new(n, c, T0);
    for i in 0..n {
        net.isolate(&[i]);
    }
    for i in 0..n {
        net.now += 3;
        written(net.cmd(i, put("hot", &format!("from-{i}"))));
    }
    net.drop_all();
    net.heal();
    net.run_for(3_000, 100);
    net.sync_all(2);
    net
}

#[test]
fn concurrent_writes_up_to_max_siblings_are_all_kept_on_every_node() {
    let net = concurrent_writes_of_one_key(4, 4);
    for i in 0..4 {
        let e = net.engines[i].kv_get(&ns(), &key("hot")).unwrap();
        assert_eq!(e.siblings.len(), 4, "node {i} keeps every sibling");
        assert_eq!(e.value, b"from-3", "node {i}: the latest wins");
        assert_eq!(rejected(&net, i, "siblings_limit"), 0, "node {i}");
    }
    assert_converged(&net);
}

#[test]
fn past_max_siblings_every_node_keeps_the_same_highest_ranked_ones_and_drops_the_lowest() {
    let net = concurrent_writes_of_one_key(5, 4);
    for i in 0..5 {
        let e = net.engines[i].kv_get(&ns(), &key("hot")).unwrap();
        let vals: BTreeSet<Vec<u8>> = e.siblings.iter().map(|(_, v)| v.clone().unwrap()).collect();
        let want: BTreeSet<Vec<u8>> = (1..5).map(|j| format!("from-{j}").into_bytes()).collect();
        assert_eq!(
            vals, want,
            "node {i}: the earliest write ranks lowest and is dropped"
        );
    }
    assert!(
        (0..5).map(|i| rejected(&net, i, "siblings_limit")).sum::<u64>() >= 1,
        "counted"
    );
    assert_converged(&net);
    // Node 0's own dropped write stays seen there: its next write takes a
    // new dot and supersedes the four.
    let mut net = net;
    written(net.cmd(0, put("hot", "after")));
    net.run();
    for i in 0..5 {
        assert_eq!(read(&net, i, "hot").as_deref(), Some("after"), "node {i}");
    }
    assert_converged(&net);
}

#[test]
fn concurrent_writes_with_equal_hlc_pick_the_higher_origin_everywhere() {
    let mut net = Net::new(3, cfg(), T0);
    let a = net.cmd(0, put("k", "a"));
    let b = net.cmd(2, put("k", "c"));
    let (
        Ok(CommandOutput::Written { hlc: ha, .. }),
        Ok(CommandOutput::Written {
            hlc: hb, version: vb, ..
        }),
    ) = (a, b)
    else {
        panic!("writes failed");
    };
    assert_eq!(ha, hb, "both stamped in the same millisecond with fresh clocks");
    // Node 1 gets them in one order, the writers each get the other's.
    net.queue.reverse();
    net.run();
    for i in 0..3 {
        let e = net.engines[i].kv_get(&ns(), &key("k")).unwrap();
        assert_eq!(e.siblings.len(), 2);
        assert_eq!(e.version.id, vb, "node {i}: tie broken by origin id");
        assert_eq!(e.version.origin, node(2));
    }
    assert!(node(2) > node(0));
}

#[test]
fn a_write_that_saw_both_siblings_supersedes_them_and_keeps_them_as_history() {
    let mut net = Net::new(3, cfg(), T0);
    let a = written(net.cmd(0, put("k", "a")));
    let b = written(net.cmd(1, put("k", "b")));
    net.run();
    net.now += 10;
    let c = written(net.cmd(2, put("k", "c")));
    net.run();
    for i in 0..3 {
        let e = net.engines[i].kv_get(&ns(), &key("k")).unwrap();
        assert_eq!(e.siblings.len(), 1, "node {i}");
        assert_eq!(e.version.id, c);
        let hist: BTreeSet<VersionId> = net.engines[i]
            .kv_history(&ns(), &key("k"))
            .into_iter()
            .filter(|(_, _, live)| !live)
            .map(|(v, _, _)| v.id)
            .collect();
        assert_eq!(hist, BTreeSet::from([a, b]));
    }
    assert_converged(&net);
}

// ----- compare-and-set ---------------------------------------------------

#[test]
fn put_if_absent_succeeds_on_a_missing_key_and_conflicts_once_it_exists() {
    let mut net = Net::new(1, cfg(), T0);
    let v1 = written(net.cmd(0, put_if("k", "one", Expect::Absent)));
    assert_eq!(
        net.cmd(0, put_if("k", "two", Expect::Absent)),
        Err(CommandError::Conflict { current: Some(v1) })
    );
    assert_eq!(read(&net, 0, "k").as_deref(), Some("one"));
    // A deleted key reads as absent again.
    written(net.cmd(0, delete("k")));
    written(net.cmd(0, put_if("k", "three", Expect::Absent)));
    assert_eq!(read(&net, 0, "k").as_deref(), Some("three"));
}

#[test]
fn put_if_version_succeeds_on_the_current_winner_and_conflicts_on_a_stale_one() {
    let mut net = Net::new(2, cfg(), T0);
    let v1 = written(net.cmd(0, put("k", "one")));
    let v2 = written(net.cmd(0, put_if("k", "two", Expect::Version(v1))));
    assert_ne!(v1, v2);
    let before = net.engines[0].digest();
    assert_eq!(
        net.cmd(0, put_if("k", "stale", Expect::Version(v1))),
        Err(CommandError::Conflict { current: Some(v2) })
    );
    assert_eq!(net.engines[0].digest(), before, "a failed CAS changes nothing");
    assert_eq!(read(&net, 0, "k").as_deref(), Some("two"));
    // On another node, the precondition is judged on what it holds.
    net.run();
    assert_eq!(
        net.cmd(1, put_if("k", "x", Expect::Version(v1))),
        Err(CommandError::Conflict { current: Some(v2) })
    );
    written(net.cmd(1, put_if("k", "three", Expect::Version(v2))));
    // A version that never existed conflicts too.
    assert!(matches!(
        net.cmd(1, put_if("k", "y", Expect::Version(VersionId(42)))),
        Err(CommandError::Conflict { .. })
    ));
    // Delete with a stale expectation conflicts as well.
    assert!(matches!(
        net.cmd(1, testing::delete_if("prod", "k", Expect::Version(v2))),
        Err(CommandError::Conflict { .. })
    ));
    assert_eq!(read(&net, 1, "k").as_deref(), Some("three"));
}

// ----- history and rollback ----------------------------------------------

#[test]
fn history_is_bounded_at_history_limit_keeping_the_most_recent_versions() {
    let mut c = cfg();
    c.history_limit = 3;
    let mut net = Net::new(2, c, T0);
    let mut ids = Vec::new();
    for n in 0..10 {
        net.now += 1;
        ids.push(written(net.cmd(0, put("k", &format!("v{n}")))));
    }
    net.run();
    for i in 0..2 {
        let h = net.engines[i].kv_history(&ns(), &key("k"));
        assert_eq!(h.len(), 4, "node {i}: one live + history_limit");
        assert!(h[0].2, "live first");
        let got: Vec<VersionId> = h.iter().map(|(v, _, _)| v.id).collect();
        let want: Vec<VersionId> = ids.iter().rev().take(4).copied().collect();
        assert_eq!(got, want, "node {i}: newest versions kept, newest first");
    }
    assert_converged(&net);
}

#[test]
fn rollback_restores_an_old_value_as_a_new_version() {
    let mut c = cfg();
    c.history_limit = 2;
    let mut net = Net::new(2, c, T0);
    let mut ids = Vec::new();
    for n in 0..4 {
        net.now += 1;
        ids.push(written(net.cmd(0, put("k", &format!("v{n}")))));
    }
    net.run();
    // v0 was trimmed: it cannot be rolled back to.
    let to = |id| testing::rollback("prod", "k", id);
    assert_eq!(net.cmd(0, to(ids[0])), Err(CommandError::NotFound));
    net.now += 1;
    let r = written(net.cmd(0, to(ids[1])));
    assert!(!ids.contains(&r), "a rollback is a new version");
    net.run();
    for i in 0..2 {
        let e = net.engines[i].kv_get(&ns(), &key("k")).unwrap();
        assert_eq!(e.value, b"v1");
        assert_eq!(e.version.id, r);
        assert_eq!(net.engines[i].kv_history(&ns(), &key("k")).len(), 3);
    }
    // Node 1 can roll back to a version it received by replication.
    net.now += 1;
    written(net.cmd(1, to(ids[3])));
    net.run();
    assert_eq!(read(&net, 0, "k").as_deref(), Some("v3"));
    assert_converged(&net);
}

// ----- deletes and tombstones --------------------------------------------

#[test]
fn a_delete_is_a_tombstone_that_reads_as_absent_everywhere() {
    let mut net = Net::new(3, cfg(), T0);
    written(net.cmd(0, put("k", "v")));
    written(net.cmd(0, put("other", "v")));
    net.run();
    net.now += 1;
    written(net.cmd(1, delete("k")));
    net.run();
    for i in 0..3 {
        assert_eq!(read(&net, i, "k"), None, "node {i}");
        let h = net.engines[i].kv_history(&ns(), &key("k"));
        assert!(h[0].0.deleted && h[0].2, "the live version is a tombstone");
        assert_eq!(h.len(), 2, "the deleted value stays in history");
        let listed: Vec<Key> = net.engines[i]
            .kv_list(&ns(), "", 100)
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(listed, vec![key("other")]);
    }
    assert_eq!(net.cmd(2, delete("k")), Err(CommandError::NotFound));
    assert_converged(&net);
}

fn gc_config() -> Config {
    let mut c = cfg();
    c.tombstone_ttl_ms = 2_000;
    c.gc_interval_ms = 200;
    c.sync_interval_ms = 500;
    c
}

#[test]
fn a_collected_tombstone_never_lets_a_stale_node_resurrect_the_key() {
    let mut net = Net::new(3, gc_config(), T0);
    written(net.cmd(0, put("k", "old")));
    net.run();
    // Node 2 misses the delete and keeps the old value.
    net.isolate(&[2]);
    net.now += 10;
    written(net.cmd(0, delete("k")));
    net.run();
    net.run_for(5_000, 100);
    for i in 0..2 {
        assert!(
            net.engines[i]
                .state()
                .get(&sk("k"))
                .is_none_or(|ks| ks.is_grave_only()),
            "node {i} collected the key"
        );
        assert!(net.engines[i].counters().tombstones_collected >= 1);
    }
    assert_eq!(read(&net, 2, "k").as_deref(), Some("old"), "node 2 is stale");
    net.heal();
    net.sync_all(2);
    net.run_for(3_000, 100);
    for i in 0..3 {
        assert_eq!(read(&net, i, "k"), None, "node {i}: key stays deleted");
    }
    assert_converged(&net);
}

#[test]
fn a_write_that_lost_to_a_delete_stays_lost_when_it_arrives_after_collection() {
    // The shrunk case of simulations/regressions/tombstone-gc-loses-concurrent-delete.toml.
    let mut net = Net::new(3, gc_config(), T0);
    written(net.cmd(0, put("k", "v0")));
    net.run();
    net.isolate(&[2]);
    // Node 2 overwrites (concurrently with the delete, and earlier by HLC),
    // node 0 deletes; the delete wins the key on the majority side and is
    // collected there long before the partition heals.
    net.now += 10;
    written(net.cmd(2, put("k", "stale-side")));
    net.now += 10;
    written(net.cmd(0, delete("k")));
    net.run_for(5_000, 100);
    assert!(net.engines[0].counters().tombstones_collected >= 1);
    let grave = net.engines[0].state().get(&sk("k")).expect("a grave stays");
    assert!(grave.is_grave_only());
    net.heal();
    net.sync_all(2);
    net.run_for(3_000, 100);
    for i in 0..3 {
        assert_eq!(read(&net, i, "k"), None, "node {i}: the delete still wins");
    }
    assert_converged(&net);
    // A write made after the delete (it saw the grave) wins as usual.
    written(net.cmd(0, put("k", "after")));
    net.run();
    net.run_for(1_000, 100);
    for i in 0..3 {
        assert_eq!(read(&net, i, "k").as_deref(), Some("after"), "node {i}");
    }
    assert_converged(&net);
}

#[test]
fn a_write_that_outranks_a_collected_delete_wins_as_it_would_have() {
    let mut net = Net::new(3, gc_config(), T0);
    written(net.cmd(0, put("k", "v0")));
    net.run();
    net.isolate(&[2]);
    written(net.cmd(0, delete("k")));
    net.now += 10;
    written(net.cmd(2, put("k", "later")));
    net.run_for(5_000, 100);
    assert!(net.engines[0].counters().tombstones_collected >= 1);
    net.heal();
    net.sync_all(2);
    net.run_for(3_000, 100);
    for i in 0..3 {
        assert_eq!(read(&net, i, "k").as_deref(), Some("later"), "node {i}");
    }
    assert_converged(&net);
}

#[test]
fn a_node_that_saw_only_the_tombstone_never_resurrects_the_value_it_deleted() {
    // Node 0 writes; node 2 gets the value, node 3 does not. Node 1 deletes;
    // node 3 gets only the tombstone, node 2 misses it. Then 0 and 1 are
    // gone for good and 2 and 3 are cut off from each other past the
    // tombstone TTL before they meet.
    let mut net = Net::new(4, gc_config(), T0);
    written(net.cmd(0, put("k", "old")));
    net.queue.retain(|m| m.to() != 3);
    net.run();
    net.now += 10;
    written(net.cmd(1, delete("k")));
    net.queue.retain(|m| m.to() != 2);
    net.run();
    assert_eq!(read(&net, 2, "k").as_deref(), Some("old"));
    assert_eq!(read(&net, 3, "k"), None);
    net.isolate(&[0]);
    net.isolate(&[1]);
    net.isolate(&[2]);
    net.isolate(&[3]);
    net.run_for(5_000, 100);
    net.heal();
    net.isolate(&[0]);
    net.isolate(&[1]);
    net.sync(2, 3);
    net.sync(3, 2);
    net.run_for(3_000, 100);
    for i in [2, 3] {
        assert_eq!(read(&net, i, "k"), None, "node {i}: key stays deleted");
    }
    assert_eq!(net.engines[2].digest(), net.engines[3].digest());
}

// ----- clock drift -------------------------------------------------------

fn first_publish(actions: Vec<starling::core::Action>, topic: Topic) -> Vec<u8> {
    actions
        .into_iter()
        .find_map(|a| match a {
            starling::core::Action::Publish { topic: t, bytes } if t == topic => Some(bytes),
            _ => None,
        })
        .expect("a publish on the topic")
}

#[test]
fn a_remote_version_stamped_beyond_the_drift_limit_is_rejected_and_counted() {
    let mut net = Net::new(2, cfg(), T0);
    let drift = net.engines[1].config().max_clock_drift_ms;
    let acts = net.engines[0].handle(
        T0 + drift + 1,
        starling::core::Input::Command {
            id: 1,
            command: put("k", "future"),
        },
    );
    let bytes = first_publish(acts, Topic::Delta);
    net.input(
        1,
        starling::core::Input::Gossip {
            from: node(0),
            bytes: bytes.clone(),
        },
    );
    assert_eq!(read(&net, 1, "k"), None);
    assert_eq!(rejected(&net, 1, "clock_drift"), 1);
    assert_eq!(net.engines[1].counters().merged, 0);
    // Exactly at the limit it is accepted.
    net.now = T0 + 1;
    net.input(1, starling::core::Input::Gossip { from: node(0), bytes });
    assert_eq!(read(&net, 1, "k").as_deref(), Some("future"));
    assert_eq!(rejected(&net, 1, "clock_drift"), 1);
}

#[test]
fn a_heartbeat_stamped_beyond_the_drift_limit_is_rejected_and_counted() {
    let mut net = Net::new(2, cfg(), T0);
    let ahead = T0 + net.engines[1].config().max_clock_drift_ms + 1;
    net.engines[0].handle(
        ahead,
        starling::core::Input::Command {
            id: 1,
            command: put("k", "v"),
        },
    );
    let bytes = first_publish(
        net.engines[0].handle(ahead, starling::core::Input::Tick),
        Topic::Heartbeat,
    );
    net.input(1, starling::core::Input::Gossip { from: node(0), bytes });
    assert_eq!(rejected(&net, 1, "clock_drift"), 1);
    assert_eq!(net.engines[1].counters().heartbeats_received, 0);
    assert!(
        net.engines[1].member(&node(0)).is_none(),
        "a rejected heartbeat teaches nothing"
    );
    assert_eq!(net.engines[1].inflight_syncs(), 0, "nor starts a sync");
}

// ----- service TTL and owner health ---------------------------------------

fn svc() -> (ServiceName, InstanceId) {
    (
        ServiceName::new("api").unwrap(),
        InstanceId::new("api-1").unwrap(),
    )
}

fn register(ttl_ms: Option<u64>) -> Command {
    let spec = ServiceSpec {
        tags: BTreeSet::from(["v1".to_string()]),
        weight: 50,
        ttl_ms,
        ..testing::instance_spec("10.0.0.1", 8080)
    };
    testing::register_instance("prod", "api", "api-1", spec)
}

fn svc_heartbeat() -> Command {
    testing::heartbeat_instance("prod", "api", "api-1", None)
}

fn view(net: &Net, i: usize) -> starling::core::ServiceView {
    let (service, _) = svc();
    let mut v = net.engines[i].services(&ns(), &service, &ServiceQuery::default());
    assert_eq!(v.len(), 1, "node {i} sees the instance");
    v.remove(0)
}

#[test]
fn the_owner_marks_its_instance_critical_when_its_ttl_lapses_and_passing_on_the_next_heartbeat() {
    let mut net = Net::new(3, cfg(), T0);
    written(net.cmd(0, register(Some(3_000))));
    net.run();
    // Heartbeats inside the TTL keep it passing without new versions.
    for _ in 0..5 {
        net.run_for(2_000, 100);
        assert_eq!(net.cmd(0, svc_heartbeat()), Ok(CommandOutput::Done));
    }
    assert_eq!(net.engines[0].counters().writes, 1);
    net.run_for(3_500, 100);
    for i in 0..3 {
        let v = view(&net, i);
        assert_eq!(v.reported_health, HealthStatus::Critical, "node {i}");
        assert_eq!(v.health, HealthStatus::Critical);
        assert_eq!(v.version.origin, node(0), "written by the owner");
    }
    written(net.cmd(0, svc_heartbeat()));
    net.run();
    for i in 0..3 {
        assert_eq!(view(&net, i).health, HealthStatus::Passing, "node {i}");
    }
}

#[test]
fn a_non_owner_never_judges_an_instance_ttl_and_cannot_heartbeat_it() {
    let mut net = Net::new(3, cfg(), T0);
    // Every node knows the owner (an instance of an owner not in the view
    // reads critical).
    net.run_for(3_000, 100);
    written(net.cmd(0, register(Some(1_000))));
    net.run();
    // The owner is cut off: its heartbeats stop reaching anyone, but it is
    // not yet dead. Non-owners keep what the owner last wrote.
    net.isolate(&[0]);
    net.run_for(2_000, 100);
    assert_eq!(
        view(&net, 0).reported_health,
        HealthStatus::Critical,
        "the owner judged it"
    );
    for i in 1..3 {
        assert_ne!(status(&net, i, 0), Some(MemberStatus::Dead));
        let v = view(&net, i);
        assert_eq!(v.reported_health, HealthStatus::Passing, "node {i} wrote nothing");
        assert_eq!(v.health, HealthStatus::Passing);
        assert_eq!(net.engines[i].counters().writes, 0, "node {i}");
        assert!(matches!(
            net.cmd(i, svc_heartbeat()),
            Err(CommandError::NotOwner(_))
        ));
    }
}

#[test]
fn instances_whose_owner_is_dead_are_reported_critical_by_every_node_at_read_time() {
    let mut net = Net::new(3, cfg(), T0);
    written(net.cmd(0, register(None)));
    net.run_for(5_000, 100);
    net.isolate(&[0]);
    net.run_for(15_000, 100);
    let (service, _) = svc();
    for i in 1..3 {
        assert_eq!(status(&net, i, 0), Some(MemberStatus::Dead), "node {i}");
        let v = view(&net, i);
        assert_eq!(v.reported_health, HealthStatus::Passing, "nobody wrote a change");
        assert_eq!(
            v.health,
            HealthStatus::Critical,
            "derived at read time on node {i}"
        );
        assert_eq!(net.engines[i].counters().writes, 0);
        let healthy = ServiceQuery {
            healthy_only: true,
            ..ServiceQuery::default()
        };
        assert!(net.engines[i].services(&ns(), &service, &healthy).is_empty());
    }
}

// ----- failure detection and membership ---------------------------------

/// The trust review's open bound: dead and departed members were never
/// dropped, so a cluster whose nodes come back under new identities (no
/// persistent disk) filled `max_members`. A member held dead for
/// `member_reap_ms` is now dropped everywhere (and from the store), a
/// peer that still holds the old record does not bring it back, and the
/// identity is back as soon as it raises its incarnation.
#[test]
fn a_dead_member_is_reaped_after_member_reap_ms_and_stays_reaped() {
    let mut c = cfg();
    c.member_reap_ms = 20_000;
    c.gc_interval_ms = 1_000;
    let mut net = Net::new(4, c.clone(), T0);
    // The node to be reaped owns a service instance (no TTL).
    net.cmd(
        3,
        testing::register_instance("prod", "api", "api-3", testing::instance_spec("10.0.0.3", 80)),
    )
    .unwrap();
    net.run_for(10_000, 100);
    net.isolate(&[3]);
    let mut dead_at = None;
    while dead_at.is_none() && net.now < T0 + 60_000 {
        net.tick(100);
        net.run();
        if (0..3).all(|i| status(&net, i, 3) == Some(MemberStatus::Dead)) {
            dead_at = Some(net.now);
        }
    }
    let dead_at = dead_at.expect("the cut-off node is held dead by the others");
    let old_record = net.engines[0].member(&node(3)).cloned().expect("held dead");
    // It comes back without its disk, under a new identity.
    net.heal();
    net.restart_as(3, NodeId::from_index(1_003), c.clone());
    net.run_for(10_000, 100);
    for i in 0..3 {
        assert_eq!(status(&net, i, 3), Some(MemberStatus::Dead), "not reaped early");
    }
    while net.now < dead_at + c.member_reap_ms + 3 * c.gc_interval_ms {
        net.tick(100);
        net.run();
    }
    for i in 0..4 {
        assert_eq!(
            net.engines[i].member(&node(3)),
            None,
            "node {i} reaped the old identity"
        );
        let svc = net.engines[i].services(&ns(), &ServiceName::new("api").unwrap(), &ServiceQuery::default());
        assert_eq!(svc.len(), 1, "node {i} still holds the registration");
        assert_eq!(
            svc[0].health,
            HealthStatus::Critical,
            "node {i}: an instance of a reaped owner reads critical"
        );
        assert!(net.engines[i].member(&NodeId::from_index(1_003)).is_some());
    }
    assert!(net.engines[0].counters().members_reaped >= 1);
    assert!(
        net.stores[0].snapshot().members.iter().all(|m| m.node != node(3)),
        "the reaped record is gone from the store"
    );
    // A peer that has not reaped yet gossips the old record: ignored.
    let stale = wire::encode(
        &Message::Delta(Delta {
            versions: vec![],
            members: vec![old_record.clone()],
        }),
        wire::cluster_id(&c.cluster),
    );
    net.input(
        0,
        starling::core::Input::Gossip {
            from: node(1),
            bytes: stale,
        },
    );
    net.run();
    assert_eq!(net.engines[0].member(&node(3)), None);
    assert_eq!(
        net.engines[0].members_hash(),
        net.engines[1].members_hash(),
        "the views still agree"
    );
}

#[test]
fn the_phi_detector_marks_a_silent_node_suspect_then_dead() {
    let mut net = Net::new(3, cfg(), T0);
    net.run_for(10_000, 100);
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(status(&net, i, j), Some(MemberStatus::Alive), "{i} sees {j}");
        }
    }
    net.isolate(&[2]);
    let cut = net.now;
    let (mut suspect_at, mut dead_at) = (None, None);
    while net.now < cut + 30_000 && dead_at.is_none() {
        net.tick(100);
        net.run();
        match status(&net, 0, 2) {
            Some(MemberStatus::Suspect) if suspect_at.is_none() => suspect_at = Some(net.now),
            Some(MemberStatus::Dead) => dead_at = Some(net.now),
            _ => {}
        }
    }
    let suspect_at = suspect_at.expect("the silent node is suspected");
    let dead_at = dead_at.expect("then declared dead");
    assert!(
        suspect_at - cut >= 1_000,
        "not suspected before a heartbeat is even late"
    );
    assert!(dead_at - suspect_at >= net.engines[0].config().suspect_timeout_ms);
    assert_eq!(status(&net, 1, 2), Some(MemberStatus::Dead));
}

#[test]
fn a_node_that_keeps_heartbeating_is_never_suspected() {
    let mut net = Net::new(4, cfg(), T0);
    for _ in 0..1_200 {
        net.tick(100);
        net.run();
        for i in 0..4 {
            for m in net.engines[i].members() {
                assert_eq!(
                    m.status,
                    MemberStatus::Alive,
                    "node {i} at {}: {m:?}",
                    net.now - T0
                );
            }
        }
    }
    assert_eq!(net.engines[0].members().len(), 4);
}

#[test]
fn a_suspected_node_refutes_by_raising_its_incarnation_and_is_alive_everywhere() {
    let mut net = Net::new(3, cfg(), T0);
    net.run_for(5_000, 100);
    let inc = net.engines[2].local_member().incarnation;
    // Node 0 suspects node 2 and says so on gossip.
    // (Node 2's own alive record, passed on as suspect: its signature
    // holds, as it would for any honest declaration.)
    let suspicion = Member {
        status: MemberStatus::Suspect,
        ..net.engines[2].local_member()
    };
    assert_eq!(suspicion.incarnation, inc);
    let bytes = wire::encode(
        &Message::Delta(Delta {
            versions: vec![],
            members: vec![suspicion],
        }),
        wire::cluster_id(&net.engines[0].config().cluster),
    );
    for i in [1, 2] {
        net.input(
            i,
            starling::core::Input::Gossip {
                from: node(0),
                bytes: bytes.clone(),
            },
        );
    }
    assert_eq!(status(&net, 1, 2), Some(MemberStatus::Suspect));
    net.run();
    for i in 0..3 {
        let m = net.engines[i].member(&node(2)).unwrap();
        assert_eq!(m.status, MemberStatus::Alive, "node {i}");
        assert!(m.incarnation > inc, "node {i}: refuted at a higher incarnation");
    }
    net.run_for(10_000, 100);
    for i in 0..3 {
        assert_eq!(status(&net, i, 2), Some(MemberStatus::Alive));
    }
}

#[test]
fn a_peer_reported_unreachable_is_suspect_at_once_everywhere_and_refutes_if_alive() {
    let mut net = Net::new(3, cfg(), T0);
    net.run_for(5_000, 100);
    let inc = net.engines[0].member(&node(2)).unwrap().incarnation;
    // First-hand evidence at node 0 (its connection broke, the re-dial
    // failed): suspected there at once, no detector, no stagger.
    net.input(0, starling::core::Input::PeerUnreachable(node(2)));
    net.input(0, starling::core::Input::PeerUnreachable(node(2)));
    assert_eq!(
        net.engines[0].counters().unreachable_reports,
        1,
        "one report per loss"
    );
    // Declared within the first-hand spread (0.1 s), whatever the detector
    // says: node 2 heartbeated a moment ago.
    let mut suspected_at = None;
    for step in 1..=20 {
        net.run_for(10, 10);
        if status(&net, 0, 2) == Some(MemberStatus::Suspect)
            || net.engines[0].member(&node(2)).unwrap().incarnation > inc
        {
            suspected_at = Some(step * 10);
            break;
        }
    }
    assert!(
        suspected_at.is_some_and(|t| t <= 110),
        "suspected at {suspected_at:?} ms"
    );
    // The suspicion is gossiped; node 2 is in fact alive, hears it and
    // refutes at a higher incarnation, which everyone takes.
    net.run();
    for i in 0..3 {
        let m = net.engines[i].member(&node(2)).unwrap();
        assert_eq!(m.status, MemberStatus::Alive, "node {i}");
        assert!(m.incarnation > inc, "node {i}: refuted at a higher incarnation");
    }
    // A node never takes a report about itself.
    net.input(2, starling::core::Input::PeerUnreachable(node(2)));
    assert_eq!(status(&net, 2, 2), Some(MemberStatus::Alive));
}

#[test]
fn a_peer_reported_unreachable_and_really_gone_is_dead_after_the_suspect_timeout() {
    let mut net = Net::new(3, cfg(), T0);
    net.run_for(5_000, 100);
    net.isolate(&[2]);
    net.input(0, starling::core::Input::PeerUnreachable(node(2)));
    net.run_for(200, 10);
    // Node 1 has no evidence of its own: it takes node 0's word, gossiped,
    // long before its own detector would say anything.
    assert_eq!(status(&net, 1, 2), Some(MemberStatus::Suspect));
    let timeout = net.engines[0].config().suspect_timeout_ms;
    net.run_for(timeout + 1_000, 50);
    assert_eq!(status(&net, 0, 2), Some(MemberStatus::Dead));
    assert_eq!(status(&net, 1, 2), Some(MemberStatus::Dead));
    // Healed, it refutes and is alive everywhere again.
    net.heal();
    net.run_for(15_000, 100);
    for i in 0..3 {
        assert_eq!(status(&net, i, 2), Some(MemberStatus::Alive), "node {i}");
    }
}

#[test]
fn a_node_cut_off_long_enough_to_be_suspected_is_alive_everywhere_after_healing() {
    let mut net = Net::new(3, cfg(), T0);
    net.run_for(5_000, 100);
    net.isolate(&[1]);
    // This net models no connections, so only the heartbeat backstop sees
    // the cut: at the default fanin of 1, three nodes heartbeat every 3 s
    // each; suspect after about an interval of silence plus the detector's
    // spread, dead `suspect_timeout_ms` later.
    net.run_for(15_000, 100);
    assert!(
        matches!(
            status(&net, 0, 1),
            Some(MemberStatus::Suspect | MemberStatus::Dead)
        ),
        "{:?}",
        status(&net, 0, 1)
    );
    net.heal();
    net.run_for(15_000, 100);
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(status(&net, i, j), Some(MemberStatus::Alive), "{i} sees {j}");
        }
    }
}

#[test]
fn a_graceful_leave_gives_status_left_everywhere_and_refuses_later_commands() {
    let mut net = Net::new(3, cfg(), T0);
    written(net.cmd(2, register(None)));
    net.run_for(3_000, 100);
    assert_eq!(net.cmd(2, Command::Leave), Ok(CommandOutput::Done));
    net.run();
    for i in 0..3 {
        assert_eq!(status(&net, i, 2), Some(MemberStatus::Left), "node {i}");
        assert_eq!(view(&net, i).health, HealthStatus::Critical, "owner left");
    }
    assert!(net.engines[2].has_left());
    assert_eq!(net.cmd(2, put("k", "v")), Err(CommandError::Left));
    // Leave is final: it is not suspected, declared dead or refuted later.
    net.run_for(20_000, 100);
    for i in 0..3 {
        assert_eq!(status(&net, i, 2), Some(MemberStatus::Left), "node {i}");
    }
}

// ----- durability --------------------------------------------------------

#[test]
fn a_failed_persist_undoes_the_write_and_replies_not_durable() {
    let mut net = Net::new(2, cfg(), T0);
    let v1 = written(net.cmd(0, put("k", "one")));
    net.run();
    let before = net.engines[0].digest();
    net.fail_persist.insert(0);
    net.now += 1;
    assert_eq!(
        net.cmd(0, put("k", "two")),
        Err(CommandError::NotDurable("disk full".into()))
    );
    assert!(
        net.queue.is_empty(),
        "nothing after the failed persist was executed"
    );
    assert_eq!(net.engines[0].digest(), before, "the write was undone");
    let e = net.engines[0].kv_get(&ns(), &key("k")).unwrap();
    assert_eq!((e.value.as_slice(), e.version.id), (&b"one"[..], v1));
    assert_eq!(e.siblings.len(), 1, "the overwritten version is live again");
    assert_eq!(net.engines[0].counters().persist_failures, 1);
    // The node carries on: the next write succeeds and replicates.
    let v3 = written(net.cmd(0, put("k", "three")));
    net.run();
    assert_eq!(read(&net, 1, "k").as_deref(), Some("three"));
    assert_eq!(net.engines[1].kv_get(&ns(), &key("k")).unwrap().version.id, v3);
    assert_converged(&net);
}

// ----- hostile input -----------------------------------------------------

#[test]
fn malformed_oversized_foreign_and_future_bytes_are_counted_and_never_panic() {
    let mut c = cfg();
    c.max_value_bytes = 1024;
    c.max_message_bytes = 70_000;
    c.sync_budget_bytes = 35_000;
    let mut net = Net::new(2, c, T0);
    written(net.cmd(0, put("k", "v")));
    net.run();
    let cluster = wire::cluster_id("default");
    let good = wire::encode(
        &Message::Delta(Delta {
            versions: vec![],
            members: vec![],
        }),
        cluster,
    );
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", vec![]),
        ("truncated", good[..5].to_vec()),
        ("bad_magic", b"GARBAGE GARBAGE GARBAGE".to_vec()),
        (
            "wrong_cluster",
            wire::encode(
                &Message::SyncAck(wire::SyncAck {
                    applied: 1,
                    versions: Vec::new(),
                    complete: true,
                    returned: Vec::new(),
                }),
                wire::cluster_id("other"),
            ),
        ),
    ];
    let mut future = good.clone();
    future[4] = wire::PROTOCOL_VERSION + 1;
    cases.push(("unsupported_version", future));
    let mut kind = good.clone();
    kind[5] = 200;
    cases.push(("unknown_kind", kind));
    let mut junk = good[..wire::HEADER_LEN].to_vec();
    junk.extend_from_slice(&[0xff; 40]);
    cases.push(("malformed", junk));
    let mut big = good[..wire::HEADER_LEN].to_vec();
    big.resize(70_001, 0);
    cases.push(("too_large", big));
    let digest = net.engines[1].digest();
    for (n, (reason, bytes)) in cases.iter().enumerate() {
        let before = rejected(&net, 1, reason);
        let total = total_rejected(&net, 1);
        net.input(
            1,
            starling::core::Input::Gossip {
                from: node(0),
                bytes: bytes.clone(),
            },
        );
        net.input(
            1,
            starling::core::Input::Request {
                from: node(0),
                id: 1_000 + n as u64,
                bytes: bytes.clone(),
            },
        );
        assert_eq!(
            rejected(&net, 1, reason),
            before + 2,
            "case {n} ({reason}) counted"
        );
        assert_eq!(total_rejected(&net, 1), total + 2, "case {n}: counted once each");
        assert!(net.queue.is_empty(), "case {n}: no answer to junk");
    }
    // A response nobody asked for.
    net.input(
        1,
        starling::core::Input::Response {
            from: node(0),
            id: 999,
            bytes: good.clone(),
        },
    );
    assert_eq!(rejected(&net, 1, "unexpected_response"), 1);
    // A request kind sent as gossip, and gossip sent as a request.
    net.input(
        1,
        starling::core::Input::Gossip {
            from: node(0),
            bytes: wire::encode(
                &Message::SyncAck(wire::SyncAck {
                    applied: 3,
                    versions: Vec::new(),
                    complete: true,
                    returned: Vec::new(),
                }),
                cluster,
            ),
        },
    );
    net.input(
        1,
        starling::core::Input::Request {
            from: node(0),
            id: 5,
            bytes: good.clone(),
        },
    );
    assert_eq!(rejected(&net, 1, "unexpected_sync_ack_on_gossip"), 1);
    assert_eq!(rejected(&net, 1, "unexpected_delta_as_request"), 1);
    assert_eq!(net.engines[1].digest(), digest, "junk changed no state");
    assert_eq!(read(&net, 1, "k").as_deref(), Some("v"));
}

fn version(node_ix: usize, seq: u64, payload: Payload) -> Version {
    let dot = Dot {
        node: node(node_ix),
        seq,
    };
    let mut ctx = starling::core::Context::default();
    ctx.add(dot);
    Version {
        dot,
        ctx,
        hlc: Hlc {
            wall_ms: T0,
            logical: 0,
        },
        checksum: payload.checksum(),
        payload,
        signature: None,
    }
}

#[test]
fn well_framed_versions_that_break_the_rules_are_counted_and_dropped() {
    let mut c = cfg();
    c.max_value_bytes = 1024;
    c.max_message_bytes = 70_000;
    c.sync_budget_bytes = 35_000;
    let mut net = Net::new(2, c, T0);
    let cluster = wire::cluster_id("default");
    let mut bad_checksum = version(0, 1, Payload::Value(b"v".to_vec()));
    bad_checksum.checksum ^= 1;
    let zero_seq = version(0, 0, Payload::Value(b"v".to_vec()));
    let mut no_own_dot = version(0, 2, Payload::Value(b"v".to_vec()));
    no_own_dot.ctx = starling::core::Context::default();
    let too_big = version(0, 3, Payload::Value(vec![7; 1025]));
    let cases = [
        ("version_checksum_mismatch", bad_checksum),
        ("version_zero_seq", zero_seq),
        ("version_context_misses_own_dot", no_own_dot),
        ("version_value_too_large", too_big),
    ];
    for (reason, v) in cases {
        let bytes = wire::encode(
            &Message::Delta(Delta {
                versions: vec![(sk("k"), v)],
                members: vec![],
            }),
            cluster,
        );
        net.input(1, starling::core::Input::Gossip { from: node(0), bytes });
        assert_eq!(rejected(&net, 1, reason), 1, "{reason}");
    }
    assert!(net.engines[1].state().is_empty());
    assert_eq!(net.engines[1].counters().merged, 0);
}

// ----- limits ------------------------------------------------------------

#[test]
fn crossing_a_limit_gives_a_typed_error_and_changes_nothing() {
    let mut c = cfg();
    c.max_value_bytes = 1024;
    c.max_message_bytes = 70_000;
    c.sync_budget_bytes = 35_000;
    let mut net = Net::new(1, c, T0);
    let r = net.cmd(0, testing::put("prod", "k", vec![0; 1025]));
    assert_eq!(
        r,
        Err(CommandError::TooLarge {
            size: 1025,
            max: 1024
        })
    );
    assert!(net.engines[0].state().is_empty());
    assert!(
        net.batches[0]
            .iter()
            .all(|b| b.keys.is_empty() && b.knowledge.is_empty()),
        "no write was persisted"
    );
    // Exactly at the limit is fine.
    let r = net.cmd(0, testing::put("prod", "k", vec![0; 1024]));
    written(r);
    // Keys, namespaces and service names are validated when parsed.
    assert!(matches!(
        Key::new("k".repeat(513)),
        Err(IdError::Length { max: 512, .. })
    ));
    assert!(Key::new("k".repeat(512)).is_ok());
    assert!(matches!(Namespace::new("pr od"), Err(IdError::Invalid { .. })));
    assert!(matches!(
        Namespace::new("n".repeat(65)),
        Err(IdError::Length { max: 64, .. })
    ));
    // A service spec out of range is refused.
    let spec = ServiceSpec {
        weight: 101,
        ..testing::instance_spec("h", 1)
    };
    let r = net.cmd(0, testing::register_instance("prod", "api", "api-1", spec));
    assert!(matches!(r, Err(CommandError::Invalid(_))));
    assert_eq!(net.engines[0].state().len(), 1);
}

#[test]
fn every_applied_change_gets_a_strictly_increasing_watch_revision() {
    let mut net = Net::new(2, cfg(), T0);
    written(net.cmd(0, put("a", "1")));
    written(net.cmd(1, put("b", "1")));
    net.run();
    written(net.cmd(1, delete("a")));
    net.run();
    for i in 0..2 {
        let revs: Vec<u64> = net.events[i].iter().map(|e| e.revision).collect();
        assert!(revs.windows(2).all(|w| w[0] < w[1]), "node {i}: {revs:?}");
        assert_eq!(net.engines[i].revision(), *revs.last().unwrap());
        let resumed = net.engines[i].watch_since(revs[0]).unwrap();
        assert_eq!(resumed.len(), revs.len() - 1);
    }
}

#[test]
fn listing_by_prefix_returns_live_keys_of_the_namespace_in_order_for_any_prefix() {
    let mut net = Net::new(1, cfg(), T0);
    for k in ["db/url", "db/user", "dbx", "app/name", "db/old"] {
        written(net.cmd(0, put(k, "v")));
    }
    written(net.cmd(0, delete("db/old")));
    let other = Namespace::new("staging").unwrap();
    net.cmd(0, testing::put("staging", "db/url", "s")).unwrap();
    let list = |prefix: &str| -> Vec<String> {
        net.engines[0]
            .kv_list(&ns(), prefix, 100)
            .into_iter()
            .map(|e| e.key.as_str().to_string())
            .collect()
    };
    // "" and "db/" are not valid keys themselves; they are valid prefixes.
    assert_eq!(list(""), ["app/name", "db/url", "db/user", "dbx"]);
    assert_eq!(list("db/"), ["db/url", "db/user"]);
    assert_eq!(list("db"), ["db/url", "db/user", "dbx"]);
    assert_eq!(list("zz"), Vec::<String>::new());
    assert_eq!(net.engines[0].kv_list(&ns(), "", 2).len(), 2);
    assert_eq!(net.engines[0].kv_list(&other, "", 100).len(), 1);
}
