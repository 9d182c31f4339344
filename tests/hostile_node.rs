//! A hostile peer through real libp2p nodes: three honest nodes and one
//! hostile node on loopback (bootstrap peers, mDNS off). The hostile node
//! is a real member — its own identity, connections, gossipsub and
//! request-response — that also sends bytes its engine never produced,
//! through the `test-utils` hooks `NodeHandle::test_publish_raw` and
//! `NodeHandle::test_request_raw`. Each attack of `tests/hostile_peer.rs`
//! (which plays them against bare engines) is played here over the wire,
//! and the test asserts the safe outcome on every honest node, and that the
//! rejection was counted (`NodeHandle::counters`, the figures behind
//! `starling_rejected_messages_total{reason}` on `GET /metrics`).

#![cfg(feature = "node")]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use starling::core::crypto::Signature;
use starling::core::wire::{self, Delta, Hashes, KnowledgeSummary, Message, SyncPush, SyncRequest};
use starling::core::{
    Context, Dot, DotRange, Hlc, Key, Knowledge, Member, MemberStatus, Namespace, NodeId, NodeInfo, Payload,
    RejectReason, StateKey, Topic, Version, BUCKETS,
};
use starling::node::testing::{
    eventually, fast_protocol, key, launch, loopback_config, ns, wait_formed, ScratchDir,
};
use starling::node::NodeHandle;
use tokio::time::{sleep, timeout, Instant};

/// Formation, replication and hook answers are given this long.
const T: Duration = Duration::from_secs(30);
/// How long the honest outcome must hold after an attack.
const HOLD: Duration = Duration::from_secs(3);
const HONEST: usize = 3;

/// Three honest nodes and a hostile one, all seeing each other alive.
struct Harness {
    cluster: String,
    honest: Vec<NodeHandle>,
    hostile: NodeHandle,
    _dirs: Vec<ScratchDir>,
}

impl Harness {
    async fn start(cluster: &str) -> Harness {
        // Suspicion well above the heartbeat interval: on a loaded 2-core
        // machine a late heartbeat must not raise an incarnation the test
        // checks stays put.
        let mut honest_protocol = fast_protocol(cluster);
        honest_protocol.suspect_timeout_ms = 5_000;
        // The hostile node starts no periodic sync of its own, so the
        // honest nodes answer a sync request from it only when the test
        // sends one (a push is taken only right after an answered request).
        let mut hostile_protocol = honest_protocol.clone();
        hostile_protocol.sync_interval_ms = 3_600_000;
        let mut dirs = Vec::new();
        let mut nodes = Vec::new();
        let mut seed = None;
        for i in 0..=HONEST {
            let dir = ScratchDir::new().expect("a scratch directory");
            let (name, protocol) = if i < HONEST {
                (format!("honest{i}"), honest_protocol.clone())
            } else {
                ("hostile".to_string(), hostile_protocol.clone())
            };
            let bootstrap = seed.iter().cloned().collect();
            let config = loopback_config(dir.path(), &name, protocol, bootstrap);
            let (node, addr) = launch(config).await.expect("a loopback node starts");
            seed.get_or_insert(addr);
            nodes.push(node);
            dirs.push(dir);
        }
        wait_formed(&nodes, HONEST + 1, T)
            .await
            .expect("all four nodes see each other alive");
        let hostile = nodes.pop().expect("four nodes");
        // Gossipsub forwards only what a node's engine accepted, so a
        // forged message reaches an honest node only straight from the
        // hostile one: wait for its direct connections (and a moment for
        // gossipsub to learn their subscriptions).
        let h = hostile.clone();
        eventually(
            T,
            "the hostile node is connected to every honest node",
            move || {
                let h = h.clone();
                async move { h.status().await.is_ok_and(|s| s.connected_peers == HONEST) }
            },
        )
        .await;
        sleep(Duration::from_secs(1)).await;
        Harness {
            cluster: cluster.to_string(),
            honest: nodes,
            hostile,
            _dirs: dirs,
        }
    }

    fn all(&self) -> impl Iterator<Item = &NodeHandle> {
        self.honest.iter().chain(std::iter::once(&self.hostile))
    }

    fn encode(&self, msg: Message) -> Vec<u8> {
        wire::encode(&msg, wire::cluster_id(&self.cluster))
    }

    /// The hostile node gossips `delta` on the delta topic (retrying while
    /// gossipsub has no peer for it yet).
    async fn gossip(&self, delta: Delta) {
        let bytes = self.encode(Message::Delta(delta));
        let mut last = String::new();
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            match self.hostile.test_publish_raw(Topic::Delta, bytes.clone()).await {
                Ok(()) => return,
                Err(e) => last = e,
            }
            sleep(Duration::from_millis(100)).await;
        }
        panic!("the hostile node could not publish: {last}");
    }

    /// The hostile node sends `msg` to `to` as a sync request; the answer
    /// (or why none came), within a bound.
    async fn request(&self, to: NodeId, msg: Message) -> Result<Message, String> {
        let bytes = self.encode(msg);
        let answer = timeout(T, self.hostile.test_request_raw(to, bytes))
            .await
            .expect("the hook answers within the bound")?;
        wire::decode(
            &answer,
            wire::cluster_id(&self.cluster),
            wire::ABSOLUTE_MAX_MESSAGE,
        )
        .map_err(|e| format!("undecodable answer: {e}"))
    }

    async fn shutdown(self) {
        for n in self.all() {
            let _ = n.stop_without_leave().await;
        }
    }
}

async fn rejected(node: &NodeHandle, reason: RejectReason) -> u64 {
    let c = node.counters().await.expect("counters");
    c.rejected.get(&reason).copied().unwrap_or(0)
}

async fn rejected_everywhere(nodes: &[NodeHandle], reason: RejectReason) -> Vec<u64> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(rejected(n, reason).await);
    }
    out
}

/// Check `holds` every 100 ms for [`HOLD`]; panics (naming `what`) the
/// first time it does not.
async fn holds_for<F, Fut>(what: &str, mut holds: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let until = Instant::now() + HOLD;
    while Instant::now() < until {
        if let Err(e) = holds().await {
            panic!("{what}: {e}");
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until every honest node counted at least one more `reason`
/// rejection than in `before`.
async fn wait_counted(nodes: &[NodeHandle], reason: RejectReason, before: &[u64]) {
    let nodes = nodes.to_vec();
    let before = before.to_vec();
    eventually(
        T,
        &format!("every honest node counts {}", reason.as_str()),
        || {
            let (nodes, before) = (nodes.clone(), before.clone());
            async move {
                let now = rejected_everywhere(&nodes, reason).await;
                now.iter().zip(&before).all(|(n, b)| n > b)
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_leave_at_the_highest_incarnation_gossiped_by_a_real_node_evicts_nobody() {
    let h = Harness::start("hostile-evict").await;
    let victim = h.honest[1].clone();
    // The victim's real record, as every node lists it.
    let view = victim
        .members()
        .await
        .expect("members")
        .into_iter()
        .find(|m| m.node_id == victim.peer_id())
        .expect("the victim lists itself");
    assert_eq!(view.status, MemberStatus::Alive);
    let incarnation = view.incarnation;
    // `{victim, u64::MAX, Left}`: the hostile node cannot sign as the
    // victim, so the proof is garbage.
    let forged = Member {
        node: victim.node_id(),
        info: NodeInfo {
            name: view.name.clone(),
            addrs: view.addrs.clone(),
            tags: view.tags.clone(),
        }
        .into(),
        incarnation: u64::MAX,
        status: MemberStatus::Left,
        proof: Signature([0x5a; 64]),
    };
    let before = rejected_everywhere(&h.honest, RejectReason::MemberBadSignature).await;
    h.gossip(Delta {
        versions: Vec::new(),
        members: vec![forged],
    })
    .await;
    wait_counted(&h.honest, RejectReason::MemberBadSignature, &before).await;
    let honest = h.honest.clone();
    let victim_id = victim.peer_id();
    holds_for("the victim stays alive at its incarnation everywhere", || {
        let (honest, victim_id) = (honest.clone(), victim_id.clone());
        async move {
            for (i, n) in honest.iter().enumerate() {
                let members = n.members().await.map_err(|e| e.to_string())?;
                let m = members
                    .iter()
                    .find(|m| m.node_id == victim_id)
                    .ok_or(format!("honest{i} forgot the victim"))?;
                if m.status != MemberStatus::Alive || m.incarnation != incarnation {
                    return Err(format!(
                        "honest{i} lists the victim {:?} at incarnation {} (was alive at {incarnation})",
                        m.status, m.incarnation
                    ));
                }
            }
            Ok(())
        }
    })
    .await;
    h.shutdown().await;
}

/// Keys every honest node wrote, each twice (so that there is history a
/// liar could try to have dropped), as `(key, live value)`.
async fn write_keys(h: &Harness, n: &Namespace) -> Vec<(Key, Vec<u8>)> {
    let mut keys = Vec::new();
    for (i, node) in h.honest.iter().enumerate() {
        let k = key(&format!("from/honest{i}"));
        node.put(n, &k, b"old".to_vec()).await.expect("put");
        let live = format!("live{i}").into_bytes();
        node.put(n, &k, live.clone()).await.expect("put");
        keys.push((k, live));
    }
    for node in h.all() {
        for (k, v) in &keys {
            let (node, n, k, v) = (node.clone(), n.clone(), k.clone(), v.clone());
            eventually(T, &format!("{k} replicated to {}", node.peer_id()), || {
                let (node, n, k, v) = (node.clone(), n.clone(), k.clone(), v.clone());
                async move { node.get(&n, &k).await.expect("get").map(|e| e.value) == Some(v) }
            })
            .await;
        }
    }
    keys
}

/// Every key still reads its live value on every node, for [`HOLD`].
async fn keys_hold(h: &Harness, n: &Namespace, keys: &[(Key, Vec<u8>)], what: &str) {
    let nodes: Vec<NodeHandle> = h.all().cloned().collect();
    holds_for(what, || {
        let (nodes, n, keys) = (nodes.clone(), n.clone(), keys.to_vec());
        async move {
            for node in &nodes {
                for (k, v) in &keys {
                    let got = node.get(&n, k).await.map_err(|e| e.to_string())?;
                    if got.as_ref().map(|e| &e.value) != Some(v) {
                        return Err(format!("{} reads {k} as {got:?}", node.peer_id()));
                    }
                }
            }
            Ok(())
        }
    })
    .await;
}

/// The push of the wipe attack: "I have seen every write of every one of
/// `origins` (far past any real sequence number), and I hold none of them
/// in any bucket".
fn seen_and_dropped_everything(origins: &[NodeId]) -> SyncPush {
    let everything = DotRange {
        base: 1 << 40,
        extra: Default::default(),
    };
    SyncPush {
        versions: Vec::new(),
        knowledge: KnowledgeSummary {
            // One knowledge bucket, shipped: the ranges below are all of it.
            buckets: Hashes(vec![0]),
            shipped: vec![0],
            ranges: Knowledge::from_ranges(origins.iter().map(|o| (*o, everything.clone()))),
        },
        manifest: (0..BUCKETS as u16)
            .map(|b| (b, Vec::new()))
            .collect::<BTreeMap<_, _>>(),
        graves: Vec::new(),
        members: Vec::new(),
        wanted: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_claiming_everything_was_seen_and_dropped_wipes_nothing_with_or_without_a_sync() {
    let h = Harness::start("hostile-wipe").await;
    let n = ns("prod");
    let keys = write_keys(&h, &n).await;
    let target = h.honest[0].node_id();
    let origins: Vec<NodeId> = h.all().map(|x| x.node_id()).collect();
    let push = seen_and_dropped_everything(&origins);

    // 1. Out of the blue: refused and counted, answered with an empty,
    // incomplete ack that carries nothing. (Should a sync the
    // hostile node's engine started itself still be open at the target,
    // the push is taken as its second half; wait that out and go again.)
    let mut refused = false;
    for _ in 0..10 {
        let before = rejected(&h.honest[0], RejectReason::UnsolicitedPush).await;
        let answer = h.request(target, Message::SyncPush(push.clone())).await;
        let empty = matches!(
            &answer,
            Ok(Message::SyncAck(ack)) if ack.applied == 0 && ack.versions.is_empty() && !ack.complete
        );
        if empty && rejected(&h.honest[0], RejectReason::UnsolicitedPush).await > before {
            refused = true;
            break;
        }
        sleep(Duration::from_secs(1)).await;
    }
    assert!(
        refused,
        "an unsolicited push is refused and counted (unsolicited_push)"
    );
    keys_hold(&h, &n, &keys, "every key survives an unsolicited push").await;

    // 2. Inside a sync the hostile node opens itself: the push is taken in
    // (answered with an ack), and still drops no live value.
    let pull = SyncRequest::telling_nothing();
    let response = h
        .request(target, Message::SyncRequest(pull))
        .await
        .expect("the target answers a sync request");
    assert!(matches!(response, Message::SyncResponse(_)), "{response:?}");
    let ack = h
        .request(target, Message::SyncPush(push))
        .await
        .expect("a push right after an answered request is taken");
    assert!(matches!(ack, Message::SyncAck(_)), "{ack:?}");
    keys_hold(&h, &n, &keys, "every key survives a push inside a sync").await;

    // The answers went to the test, never to the hostile node's engine.
    let hostile = h.hostile.counters().await.expect("counters");
    assert_eq!(hostile.rejected.get(&RejectReason::UnexpectedResponse), None);
    assert_eq!(hostile.rejected.get(&RejectReason::ResponseFromWrongPeer), None);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_under_another_origins_dot_gossiped_by_a_real_node_is_rejected_and_the_origin_keeps_writing(
) {
    let h = Harness::start("hostile-dot").await;
    let (n, k) = (ns("prod"), key("routes"));
    let origin = &h.honest[1];
    let first = origin.put(&n, &k, b"v1".to_vec()).await.expect("put");
    for node in h.all() {
        let node = node.clone();
        let (n, k) = (n.clone(), k.clone());
        eventually(T, "the first write everywhere", || {
            let (node, n, k) = (node.clone(), n.clone(), k.clone());
            async move { node.get(&n, &k).await.expect("get").map(|e| e.value) == Some(b"v1".to_vec()) }
        })
        .await;
    }
    // The review's attack: a dot `(origin, 2^63 - 1)` made every peer
    // reject the origin's later writes. Signed with garbage: the hostile
    // node holds no key of the origin's.
    let dot = Dot {
        node: origin.node_id(),
        seq: (u64::MAX / 2) - 1,
    };
    let mut ctx = Context::default();
    ctx.add(first.dot);
    ctx.add(dot);
    let payload = Payload::Value(b"evil".to_vec());
    let forged = Version {
        dot,
        ctx,
        hlc: Hlc {
            wall_ms: first.hlc.wall_ms + 1,
            logical: 0,
        },
        checksum: payload.checksum(),
        payload,
        signature: Some(vec![0xa5; 64]),
    };
    let state_key = StateKey::Kv {
        namespace: n.clone(),
        key: k.clone(),
    };
    let before = rejected_everywhere(&h.honest, RejectReason::VersionBadSignature).await;
    h.gossip(Delta {
        versions: vec![(state_key, forged)],
        members: Vec::new(),
    })
    .await;
    wait_counted(&h.honest, RejectReason::VersionBadSignature, &before).await;
    for (i, node) in h.honest.iter().enumerate() {
        let e = node.get(&n, &k).await.expect("get").expect("the key is held");
        assert_eq!(e.value, b"v1", "honest{i} reads the origin's value");
        assert_eq!(e.siblings.len(), 1, "honest{i} holds nothing of the forgery");
    }
    // The origin writes on, and everyone takes it.
    origin.put(&n, &k, b"honest".to_vec()).await.expect("put");
    for node in h.all() {
        let node = node.clone();
        let (n, k) = (n.clone(), k.clone());
        eventually(T, "the origin's next write everywhere", || {
            let (node, n, k) = (node.clone(), n.clone(), k.clone());
            async move { node.get(&n, &k).await.expect("get").map(|e| e.value) == Some(b"honest".to_vec()) }
        })
        .await;
    }
    h.shutdown().await;
}
