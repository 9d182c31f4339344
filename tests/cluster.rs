//! Five real libp2p nodes in one process, on loopback with bootstrap peers
//! and mDNS off: replication, concurrency, services, partitions, restarts
//! and membership.

#![cfg(feature = "node")]

use std::time::Duration;

use starling::core::{
    HealthStatus, InstanceId, MemberStatus, Namespace, ServiceName, ServiceQuery, ServiceSpec,
};
use starling::node::testing::{
    eventually, fast_protocol, key, launch, loopback_config, ns, wait_formed, Cluster,
};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_becomes_visible_on_all_five() {
    let mut c = Cluster::start(5, "write-visible").await;
    let (n, k) = (ns("prod"), key("db/url"));
    c.node(2).put(&n, &k, b"pg://one".to_vec()).await.unwrap();
    c.wait_value(&n, &k, Some(b"pg://one"), T).await;
    c.node(4).delete(&n, &k).await.unwrap();
    c.wait_value(&n, &k, None, T).await;
    c.wait_converged(T).await;
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_on_two_nodes_converge_to_the_same_winner_everywhere() {
    let mut c = Cluster::start(5, "concurrent").await;
    let (n, k) = (ns("prod"), key("feature/flag"));
    // Cut 0 and 1 off from each other and everyone, so the writes are truly
    // concurrent, then heal.
    let ids: Vec<_> = c.running().map(|h| h.node_id()).collect();
    c.node(0).set_blocked_peers(ids.clone()).await.unwrap();
    c.node(1).set_blocked_peers(ids.clone()).await.unwrap();
    let a = c.node(0).put(&n, &k, b"A".to_vec()).await.unwrap();
    let b = c.node(1).put(&n, &k, b"B".to_vec()).await.unwrap();
    c.node(0).set_blocked_peers(vec![]).await.unwrap();
    c.node(1).set_blocked_peers(vec![]).await.unwrap();
    c.wait_converged(T).await;
    let mut winners = Vec::new();
    for node in c.running() {
        let e = node.get(&n, &k).await.unwrap().expect("key present");
        assert_eq!(e.siblings.len(), 2, "both concurrent writes are kept as siblings");
        winners.push(e.version.id);
    }
    assert!(winners.windows(2).all(|w| w[0] == w[1]), "same winner everywhere");
    let expected = if (a.hlc, c.node(0).node_id()) > (b.hlc, c.node(1).node_id()) {
        a.version
    } else {
        b.version
    };
    assert_eq!(winners[0], expected, "the winner is the highest (hlc, origin)");
    c.shutdown_all().await;
}

fn spec(ttl_ms: Option<u64>) -> ServiceSpec {
    ServiceSpec {
        address: "10.0.0.7".into(),
        port: 8080,
        tags: ["eu".to_string()].into_iter().collect(),
        metadata: Default::default(),
        weight: 50,
        ttl_ms,
    }
}

/// Wait until every running node reports `inst` critical.
async fn wait_critical_everywhere(
    c: &Cluster,
    n: &Namespace,
    svc: &ServiceName,
    inst: &InstanceId,
    what: &str,
) {
    for node in c.running() {
        let (node, n, svc, inst) = (node.clone(), n.clone(), svc.clone(), inst.clone());
        eventually(T, what, || {
            let (node, n, svc, inst) = (node.clone(), n.clone(), svc.clone(), inst.clone());
            async move {
                node.services(&n, &svc, ServiceQuery::default())
                    .await
                    .unwrap()
                    .iter()
                    .any(|v| v.instance == inst && v.health == HealthStatus::Critical)
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_healthy_everywhere_then_unhealthy_when_its_ttl_lapses_or_its_owner_dies() {
    let mut c = Cluster::start(5, "services").await;
    let n = ns("prod");
    let svc = ServiceName::new("api").unwrap();
    let ttl_inst = InstanceId::new("api-ttl").unwrap();
    let owned_inst = InstanceId::new("api-owned").unwrap();
    c.node(1)
        .register_service(&n, &svc, &ttl_inst, spec(Some(1_500)))
        .await
        .unwrap();
    c.node(3)
        .register_service(&n, &svc, &owned_inst, spec(None))
        .await
        .unwrap();
    let healthy = ServiceQuery {
        healthy_only: true,
        ..Default::default()
    };
    for node in c.running() {
        let (node, n, svc, q) = (node.clone(), n.clone(), svc.clone(), healthy.clone());
        eventually(T, "both instances healthy everywhere", || {
            let (node, n, svc, q) = (node.clone(), n.clone(), svc.clone(), q.clone());
            async move { node.services(&n, &svc, q).await.unwrap().len() == 2 }
        })
        .await;
    }
    // No heartbeat for the TTL instance: its owner marks it critical.
    wait_critical_everywhere(&c, &n, &svc, &ttl_inst, "TTL instance critical everywhere").await;
    // Kill the owner of the other one (no leave): it turns critical everywhere.
    let owner = c.nodes[3].take().unwrap();
    owner.stop_without_leave().await.unwrap();
    wait_critical_everywhere(
        &c,
        &n,
        &svc,
        &owned_inst,
        "dead owner's instance critical everywhere",
    )
    .await;
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_three_partition_heals_and_loses_no_acknowledged_write() {
    let mut c = Cluster::start(5, "partition").await;
    let n = ns("prod");
    let ids: Vec<_> = c.running().map(|h| h.node_id()).collect();
    let (left, right) = (vec![0usize, 1], vec![2usize, 3, 4]);
    for &i in &left {
        c.node(i)
            .set_blocked_peers(right.iter().map(|&j| ids[j]).collect())
            .await
            .unwrap();
    }
    for &i in &right {
        c.node(i)
            .set_blocked_peers(left.iter().map(|&j| ids[j]).collect())
            .await
            .unwrap();
    }
    let mut acked = Vec::new();
    for round in 0..10 {
        for &i in left.iter().chain(right.iter()) {
            let k = key(&format!("side{i}/k{round}"));
            let v = format!("v{round}-n{i}").into_bytes();
            c.node(i).put(&n, &k, v.clone()).await.unwrap();
            acked.push((k, v));
        }
    }
    // Both sides also write one shared key.
    c.node(0).put(&n, &key("shared"), b"left".to_vec()).await.unwrap();
    c.node(3)
        .put(&n, &key("shared"), b"right".to_vec())
        .await
        .unwrap();
    // While split, the right side cannot see the left side's writes.
    assert!(c.node(3).get(&n, &key("side0/k0")).await.unwrap().is_none());
    for i in 0..5 {
        c.node(i).set_blocked_peers(vec![]).await.unwrap();
    }
    c.wait_converged(T).await;
    for node in c.running() {
        for (k, v) in &acked {
            let got = node.get(&n, k).await.unwrap().map(|e| e.value);
            assert_eq!(
                got.as_ref(),
                Some(v),
                "acknowledged write {k} lost on {}",
                node.peer_id()
            );
        }
        let shared = node.get(&n, &key("shared")).await.unwrap().unwrap();
        assert_eq!(
            shared.siblings.len(),
            2,
            "both sides' writes to the shared key are kept"
        );
    }
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_restarts_with_its_identity_and_writes_and_catches_up() {
    let mut c = Cluster::start(5, "restart").await;
    let n = ns("prod");
    let victim = c.nodes[3].take().unwrap();
    let id_before = victim.node_id();
    victim.put(&n, &key("own"), b"mine".to_vec()).await.unwrap();
    victim.stop_without_leave().await.unwrap();
    c.node(0)
        .put(&n, &key("missed"), b"while down".to_vec())
        .await
        .unwrap();
    c.restart(3).await;
    assert_eq!(c.node(3).node_id(), id_before, "identity survives restart");
    // Offline read right away: its own acknowledged write is there.
    assert_eq!(
        c.node(3).get(&n, &key("own")).await.unwrap().unwrap().value,
        b"mine"
    );
    c.wait_value(&n, &key("missed"), Some(b"while down"), T).await;
    c.wait_value(&n, &key("own"), Some(b"mine"), T).await;
    c.wait_converged(T).await;
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_goes_suspect_then_dead_and_a_graceful_one_goes_left() {
    let mut c = Cluster::start(5, "members").await;
    let killed = c.nodes[4].take().unwrap();
    let killed_id = killed.peer_id();
    let left = c.nodes[3].take().unwrap();
    let left_id = left.peer_id();
    killed.stop_without_leave().await.unwrap();
    left.shutdown().await.unwrap();
    for node in c.running() {
        let node = node.clone();
        let (kid, lid) = (killed_id.clone(), left_id.clone());
        eventually(T, "killed node dead and graceful node left", || {
            let (node, kid, lid) = (node.clone(), kid.clone(), lid.clone());
            async move {
                let m = node.members().await.unwrap();
                let status = |id: &str| m.iter().find(|m| m.node_id == id).map(|m| m.status);
                status(&kid) == Some(MemberStatus::Dead) && status(&lid) == Some(MemberStatus::Left)
            }
        })
        .await;
    }
    c.shutdown_all().await;
}

/// A node that crashes seconds after joining, when each of its links is
/// one it chose (inbound and young on the other side, like a temporary
/// connection), is suspected at once: its probes told the peers it chose
/// that the links were its neighbour links, so they re-dial and find it
/// gone. The heartbeat detector is held back (phi threshold 100, 2 s
/// heartbeats: 15 s of silence or more), so only that path can see it
/// within the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_crashes_right_after_joining_is_suspected_by_the_peers_it_chose() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let config = |i: usize, bootstrap: Vec<String>| {
        let mut protocol = fast_protocol("young-crash");
        protocol.heartbeat_interval_ms = 2_000;
        protocol.suspect_timeout_ms = 2_000;
        protocol.phi_threshold = 100.0;
        let mut c = loopback_config(dirs[i].path(), &format!("n{i}"), protocol, bootstrap);
        c.limits.neighbours = 1;
        c
    };
    let (a, addr_a) = launch(config(0, vec![])).await.unwrap();
    let (c, _) = launch(config(1, vec![addr_a.clone()])).await.unwrap();
    wait_formed(&[a.clone(), c.clone()], 2, T).await.unwrap();
    let (b, _) = launch(config(2, vec![addr_a])).await.unwrap();
    wait_formed(&[a.clone(), b.clone(), c.clone()], 3, T)
        .await
        .unwrap();
    // Long enough for b's first probe on its chosen link, well short of
    // links::KEPT_AGE (15 s).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b_id = b.peer_id();
    b.stop_without_leave().await.unwrap();
    let killed = tokio::time::Instant::now();
    for node in [&a, &c] {
        let (node, b_id) = (node.clone(), b_id.clone());
        eventually(Duration::from_secs(8), "the crashed node suspected", || {
            let (node, b_id) = (node.clone(), b_id.clone());
            async move {
                let m = node.members().await.unwrap();
                m.iter().any(|m| {
                    m.node_id == b_id && matches!(m.status, MemberStatus::Suspect | MemberStatus::Dead)
                })
            }
        })
        .await;
    }
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "suspected by the heartbeat detector's clock, not the re-dial's"
    );
    a.stop_without_leave().await.unwrap();
    c.stop_without_leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_different_clusters_never_merge_state() {
    let mut a = Cluster::start(2, "cluster-a").await;
    let d = tempfile::tempdir().unwrap();
    let cfg = loopback_config(
        d.path(),
        "intruder",
        fast_protocol("cluster-b"),
        vec![a.seed_addr.clone()],
    );
    let b = starling::node::Node::start(cfg).await.unwrap();
    b.put(&ns("prod"), &key("x"), b"from b".to_vec()).await.unwrap();
    a.node(0)
        .put(&ns("prod"), &key("y"), b"from a".to_vec())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.node(0).get(&ns("prod"), &key("x")).await.unwrap().is_none());
    assert!(b.get(&ns("prod"), &key("y")).await.unwrap().is_none());
    assert_eq!(b.members().await.unwrap().len(), 1, "no cross-cluster members");
    b.stop_without_leave().await.unwrap();
    a.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_receives_exactly_the_changes_made_across_a_partition_once_it_heals() {
    use futures::StreamExt;
    use starling::node::{WatchFilter, WatchItem};

    let mut c = Cluster::start(3, "watch-partition").await;
    let n = ns("app");
    let filter = WatchFilter::Kv {
        namespace: n.clone(),
        prefix: "cfg/".into(),
    };
    let mut watch = c.node(2).watch(filter.clone(), None).await.unwrap();
    let since = watch.start_revision;
    // Cut node 2 off, change five keys on the other side, heal.
    let ids: Vec<_> = c.running().map(|h| h.node_id()).collect();
    c.node(2).set_blocked_peers(ids.clone()).await.unwrap();
    for i in 0..2 {
        c.node(i).set_blocked_peers(vec![ids[2]]).await.unwrap();
    }
    let written: Vec<(String, String)> = (0..5).map(|i| (format!("cfg/k{i}"), format!("v{i}"))).collect();
    for (k, v) in &written {
        c.node(0).put(&n, &key(k), v.as_bytes().to_vec()).await.unwrap();
    }
    c.node(0)
        .put(&ns("other"), &key("cfg/x"), b"not watched".to_vec())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        c.node(2).get(&n, &key("cfg/k0")).await.unwrap().is_none(),
        "node 2 is cut off"
    );
    for i in 0..3 {
        c.node(i).set_blocked_peers(vec![]).await.unwrap();
    }
    let collect = |mut w: starling::node::WatchStream| async move {
        let mut got = Vec::new();
        while got.len() < 5 {
            let item = tokio::time::timeout(T, w.next())
                .await
                .expect("a change within the timeout")
                .expect("stream open")
                .expect("not dropped");
            match item {
                WatchItem::Kv {
                    revision, key, value, ..
                } => got.push((
                    revision,
                    key.as_str().to_string(),
                    value.map(|v| String::from_utf8(v).unwrap()),
                )),
                other => panic!("unexpected {other:?}"),
            }
        }
        got
    };
    let live = collect(watch).await;
    assert!(
        live.windows(2).all(|w| w[0].0 < w[1].0),
        "revisions increase: {live:?}"
    );
    let mut keys: Vec<(String, String)> = live
        .iter()
        .map(|(_, k, v)| (k.clone(), v.clone().expect("a put")))
        .collect();
    keys.sort();
    assert_eq!(keys, written, "exactly the five changes, each once");
    // Resuming from the start revision replays the same changes.
    watch = c.node(2).watch(filter, Some(since)).await.unwrap();
    let replay = collect(watch).await;
    assert_eq!(replay, live);
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_rule_set_on_the_admin_holds_on_every_node_even_against_a_node_that_drops_it() {
    let mut c = Cluster::start(3, "writer-rules").await;
    let mut protocol = fast_protocol("writer-rules");
    protocol.acl_admins = vec![c.node(0).peer_id()];
    for node in c.running() {
        node.reconfigure(protocol.clone()).await.unwrap();
    }
    let (prod, k) = (ns("prod"), key("k"));
    c.node(0)
        .set_writers(&prod, vec![c.node(1).node_id()])
        .await
        .unwrap();
    for i in 0..3 {
        let node = c.node(i).clone();
        let prod = prod.clone();
        eventually(T, &format!("the rule on n{i}"), || {
            let (node, prod) = (node.clone(), prod.clone());
            async move {
                node.writer_rules()
                    .await
                    .unwrap()
                    .rules
                    .contains_key(prod.as_str())
            }
        })
        .await;
    }
    let refused = c.node(2).put(&prod, &k, b"from 2".to_vec()).await.unwrap_err();
    assert!(refused.to_string().contains("not permitted"), "{refused}");
    c.node(1).put(&prod, &k, b"from 1".to_vec()).await.unwrap();
    c.wait_value(&prod, &k, Some(b"from 1"), T).await;

    // Node 2 stops honouring the rules (no admins: it drops them) and
    // writes anyway: nobody else takes the write.
    let mut rogue = fast_protocol("writer-rules");
    rogue.acl_admins = Vec::new();
    c.node(2).reconfigure(rogue).await.unwrap();
    c.node(2).put(&prod, &k, b"forged".to_vec()).await.unwrap();
    let node0 = c.node(0).clone();
    eventually(T, "node 0 refused the rogue's version", || {
        let node0 = node0.clone();
        async move {
            let counters = node0.counters().await.unwrap();
            counters
                .rejected
                .get("version_not_permitted")
                .copied()
                .unwrap_or(0)
                > 0
        }
    })
    .await;
    for i in 0..2 {
        let got = c.node(i).get(&prod, &k).await.unwrap().map(|e| e.value);
        assert_eq!(got.as_deref(), Some(&b"from 1"[..]), "n{i}");
    }
    c.shutdown_all().await;
}
