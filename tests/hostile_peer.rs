//! A hostile peer, at the engine level: a cluster member that speaks the
//! real wire protocol and crafts what it sends. Each attack from the trust
//! review is played against honest engines in a `core::testing::Net`, and
//! the test asserts the safe outcome: the forged record or version is
//! rejected and counted, nothing honest is dropped, nobody is evicted.
//!
//! The liar is engine 0's identity's neighbour: it has its own keys (it is
//! a member) but not the victim's.

use starling::core::crypto::{member_claim, version_claim};
use starling::core::testing::{self, keys_of, node, Net};
use std::collections::BTreeMap;

use starling::core::wire::{self, Delta, Hashes, KnowledgeSummary, Message, SyncPush, SyncRequest};
use starling::core::{
    Config, Context, Dot, HealthStatus, Hlc, Input, Knowledge, Member, MemberStatus, NodeInfo, Payload,
    RejectReason, ServiceInstance, ServiceQuery, StateKey, Version,
};

const T0: u64 = 1_700_000_000_000;
/// Honest nodes 0..3; node 3 lies.
const HONEST: usize = 3;
const LIAR: usize = 3;

fn cfg() -> Config {
    let mut c = Config::default();
    c.heartbeat_interval_ms = 100;
    c.sync_interval_ms = 500;
    c
}

/// A formed cluster of three honest nodes and the liar.
fn cluster() -> Net {
    cluster_with(cfg())
}

/// [`cluster`] with another config.
fn cluster_with(cfg: Config) -> Net {
    let mut net = Net::new(HONEST + 1, cfg, T0);
    net.run_for(3_000, 50);
    for i in 0..=LIAR {
        assert_eq!(
            net.engines[i].members().len(),
            HONEST + 1,
            "node {i} sees everyone"
        );
    }
    net
}

/// The liar gossips `delta` to every honest node.
fn gossip(net: &mut Net, delta: Delta) {
    let bytes = wire::encode(
        &Message::Delta(delta),
        wire::cluster_id(&net.engines[0].config().cluster),
    );
    for i in 0..HONEST {
        net.input(
            i,
            Input::Gossip {
                from: node(LIAR),
                bytes: bytes.clone(),
            },
        );
    }
}

fn rejected(net: &Net, i: usize, reason: RejectReason) -> u64 {
    net.engines[i]
        .counters()
        .rejected
        .get(&reason)
        .copied()
        .unwrap_or(0)
}

fn status_of(net: &Net, at: usize, of: usize) -> MemberStatus {
    net.engines[at].member(&node(of)).expect("a known member").status
}

#[test]
fn a_forged_leave_at_the_highest_incarnation_evicts_nobody() {
    let mut net = cluster();
    let victim = net.engines[1].local_member();
    // What the review found: `{victim, u64::MAX, Left}` could not be
    // refuted. The liar cannot sign as the victim; it signs as itself.
    let claim = member_claim(&victim.node, &victim.info, u64::MAX, true);
    let forged = Member {
        incarnation: u64::MAX,
        status: MemberStatus::Left,
        proof: keys_of(node(LIAR)).sign(&claim),
        ..victim.clone()
    };
    gossip(
        &mut net,
        Delta {
            versions: Vec::new(),
            members: vec![forged],
        },
    );
    for i in 0..HONEST {
        assert_eq!(
            status_of(&net, i, 1),
            MemberStatus::Alive,
            "node {i} keeps the victim alive"
        );
        assert_eq!(
            rejected(&net, i, RejectReason::MemberBadSignature),
            1,
            "node {i} counted it"
        );
    }
    assert_eq!(
        net.engines[1].local_member().incarnation,
        victim.incarnation,
        "the victim had nothing to refute"
    );
    net.run_for(2_000, 50);
    for i in 0..HONEST {
        assert_eq!(status_of(&net, i, 1), MemberStatus::Alive);
    }
}

#[test]
fn suspicion_at_an_incarnation_the_subject_never_had_is_rejected_but_at_its_own_is_refuted() {
    let mut net = cluster();
    let victim = net.engines[1].local_member();
    // A higher incarnation than the victim signed, with its real proof
    // (of another incarnation): the proof does not cover it.
    let ahead = Member {
        incarnation: victim.incarnation + 5,
        status: MemberStatus::Dead,
        ..victim.clone()
    };
    gossip(
        &mut net,
        Delta {
            versions: Vec::new(),
            members: vec![ahead],
        },
    );
    for i in 0..HONEST {
        assert_eq!(status_of(&net, i, 1), MemberStatus::Alive, "node {i}");
        assert_eq!(rejected(&net, i, RejectReason::MemberBadSignature), 1);
    }
    // At its current incarnation, anyone may suspect it (that is what
    // failure detection does): it refutes, and stays a member everywhere.
    let suspect = Member {
        status: MemberStatus::Suspect,
        ..victim.clone()
    };
    gossip(
        &mut net,
        Delta {
            versions: Vec::new(),
            members: vec![suspect],
        },
    );
    net.run_for(2_000, 50);
    for i in 0..HONEST {
        let m = net.engines[i].member(&node(1)).expect("known");
        assert_eq!(m.status, MemberStatus::Alive, "node {i}");
        assert!(m.incarnation > victim.incarnation, "node {i}: refuted");
    }
}

/// A version as the liar would craft it: `dot` of any origin, signed by
/// the liar's own key.
fn forged_version(key: &StateKey, dot: Dot, ctx: Context, payload: Payload) -> Version {
    let hlc = Hlc {
        wall_ms: T0 + 2_000,
        logical: 0,
    };
    let checksum = payload.checksum();
    let claim = version_claim(key, &dot, &ctx, &hlc, &payload, checksum);
    Version {
        dot,
        ctx,
        hlc,
        checksum,
        payload,
        signature: Some(keys_of(node(LIAR)).sign(&claim).0.to_vec()),
    }
}

#[test]
fn a_version_under_another_origins_dot_is_rejected_and_the_origin_keeps_writing() {
    let mut net = cluster();
    let key = testing::kv_key("prod", "routes");
    // The review's attack: a dot `(victim, 2^63 - 1)` made every peer
    // reject the victim's later writes as out of range.
    let dot = Dot {
        node: node(1),
        seq: (u64::MAX / 2) - 1,
    };
    let mut ctx = Context::default();
    ctx.add(dot);
    let v = forged_version(&key, dot, ctx, Payload::Value(b"evil".to_vec()));
    gossip(
        &mut net,
        Delta {
            versions: vec![(key.clone(), v)],
            members: Vec::new(),
        },
    );
    for i in 0..HONEST {
        assert_eq!(
            rejected(&net, i, RejectReason::VersionBadSignature),
            1,
            "node {i}"
        );
        assert!(
            net.engines[i].state().get(&key).is_none(),
            "node {i} holds nothing of it"
        );
    }
    net.cmd(1, testing::put("prod", "routes", "honest"))
        .expect("the victim writes");
    net.run_for(1_000, 50);
    for i in 0..HONEST {
        let ks = net.engines[i]
            .state()
            .get(&key)
            .expect("the honest write arrived");
        assert_eq!(
            ks.winner().map(|w| w.payload.clone()),
            Some(Payload::Value(b"honest".to_vec()))
        );
    }
}

#[test]
fn a_context_naming_a_sequence_past_the_range_cannot_pin_a_key() {
    let mut net = cluster();
    let key = testing::kv_key("prod", "pinned");
    // The liar's own dot, honestly signed, but its context claims every
    // write node 1 will ever make.
    let dot = Dot {
        node: node(LIAR),
        seq: net.engines[LIAR].state().next_seq(&node(LIAR)),
    };
    let mut ctx = Context::default();
    ctx.add(dot);
    ctx.add(Dot {
        node: node(1),
        seq: u64::MAX,
    });
    let v = forged_version(&key, dot, ctx, Payload::Value(b"pin".to_vec()));
    gossip(
        &mut net,
        Delta {
            versions: vec![(key.clone(), v)],
            members: Vec::new(),
        },
    );
    for i in 0..HONEST {
        assert_eq!(rejected(&net, i, RejectReason::VersionBadContext), 1, "node {i}");
    }
    net.cmd(1, testing::put("prod", "pinned", "later"))
        .expect("write");
    net.run_for(1_000, 50);
    for i in 0..HONEST {
        let w = net.engines[i]
            .state()
            .get(&key)
            .and_then(|ks| ks.winner().cloned());
        assert_eq!(
            w.map(|w| w.payload),
            Some(Payload::Value(b"later".to_vec())),
            "node {i}"
        );
    }
}

#[test]
fn a_service_instance_registered_for_another_owner_is_rejected() {
    let mut net = cluster();
    let key = StateKey::Service {
        namespace: starling::core::Namespace::new("prod").unwrap(),
        service: starling::core::ServiceName::new("api").unwrap(),
        instance: starling::core::InstanceId::new("api-1").unwrap(),
    };
    // Signed by the liar as the liar, but naming node 1 as the owner.
    let dot = Dot {
        node: node(LIAR),
        seq: net.engines[LIAR].state().next_seq(&node(LIAR)),
    };
    let mut ctx = Context::default();
    ctx.add(dot);
    let payload = Payload::Instance(Box::new(ServiceInstance {
        spec: testing::instance_spec("10.0.0.66", 80),
        owner: node(1),
        health: HealthStatus::Passing,
    }));
    let v = forged_version(&key, dot, ctx, payload);
    gossip(
        &mut net,
        Delta {
            versions: vec![(key.clone(), v)],
            members: Vec::new(),
        },
    );
    for i in 0..HONEST {
        assert_eq!(rejected(&net, i, RejectReason::VersionNotOwner), 1, "node {i}");
        assert!(net.engines[i].state().get(&key).is_none(), "node {i}");
    }
}

/// The liar opens a sync with honest node `i` (so a push is taken as its
/// second half) and pushes `push`.
fn push_inside_a_sync(net: &mut Net, i: usize, push: SyncPush) {
    let cluster = wire::cluster_id(&net.engines[0].config().cluster);
    let pull = SyncRequest::telling_nothing();
    for msg in [Message::SyncRequest(pull), Message::SyncPush(push)] {
        net.request_from(LIAR, i, wire::encode(&msg, cluster));
    }
}

#[test]
fn a_grave_not_signed_by_its_tombstones_origin_buries_nothing() {
    let mut net = cluster();
    let key = testing::kv_key("prod", "kept");
    net.cmd(1, testing::put("prod", "kept", "value"))
        .expect("node 1 writes");
    net.run_for(1_000, 50);
    let held = net.engines[1].state().get(&key).expect("written").live[0].clone();
    // A "collected delete" of that value under node 1's next dot: only
    // node 1 could sign it, the liar signs it as itself.
    let dot = Dot {
        node: node(1),
        seq: held.dot.seq + 1,
    };
    let mut ctx = held.ctx.clone();
    ctx.add(dot);
    let forged = forged_version(&key, dot, ctx.clone(), Payload::Tombstone);
    // And a "grave" that is no tombstone at all, under the liar's dot.
    let liar_dot = Dot {
        node: node(LIAR),
        seq: net.engines[LIAR].state().next_seq(&node(LIAR)),
    };
    let mut liar_ctx = held.ctx.clone();
    liar_ctx.add(liar_dot);
    let not_a_tombstone = forged_version(&key, liar_dot, liar_ctx, Payload::Value(b"x".to_vec()));
    let bucket = starling::core::ReplicatedState::bucket_of(&key) as u16;
    for i in 0..HONEST {
        push_inside_a_sync(
            &mut net,
            i,
            SyncPush {
                versions: Vec::new(),
                knowledge: KnowledgeSummary {
                    buckets: Hashes(vec![0]),
                    shipped: Vec::new(),
                    ranges: Knowledge::new(),
                },
                manifest: BTreeMap::from([(bucket, Vec::new())]),
                graves: vec![
                    (key.clone(), forged.clone()),
                    (key.clone(), not_a_tombstone.clone()),
                ],
                members: Vec::new(),
                wanted: Vec::new(),
            },
        );
    }
    net.run_for(2_000, 50);
    for i in 0..HONEST {
        assert_eq!(
            rejected(&net, i, RejectReason::VersionBadSignature),
            1,
            "node {i}"
        );
        assert_eq!(rejected(&net, i, RejectReason::BadGrave), 1, "node {i}");
        let ks = net.engines[i].state().get(&key).expect("the key is held");
        assert!(ks.grave.is_none(), "node {i} took no grave over");
        assert_eq!(
            ks.winner().map(|w| w.payload.clone()),
            Some(Payload::Value(b"value".to_vec())),
            "node {i} still reads the value"
        );
    }
}

// ----- bounds on what a peer can grow -------------------------------------

/// `n` concurrent writes of `key`, each by an identity the liar made up
/// (it holds their keys; versions of origins that are not members are
/// taken, so that a node that joins after an origin died converges), in
/// rank order (the same stamp, higher ids rank higher).
fn concurrent_siblings(key: &StateKey, n: usize) -> Vec<Version> {
    (0..n)
        .map(|i| {
            let dot = Dot {
                node: node(100 + i),
                seq: 1,
            };
            let mut ctx = Context::default();
            ctx.add(dot);
            let mut v = forged_version(key, dot, ctx, Payload::Value(format!("s{i}").into_bytes()));
            let claim = version_claim(key, &v.dot, &v.ctx, &v.hlc, &v.payload, v.checksum);
            v.signature = Some(keys_of(dot.node).sign(&claim).0.to_vec());
            v
        })
        .collect()
}

/// The liar gossips each version on its own to honest node `i`, in order.
fn gossip_each_to(net: &mut Net, i: usize, versions: &[Version], key: &StateKey) {
    let cluster = wire::cluster_id(&net.engines[0].config().cluster);
    for v in versions {
        let delta = Delta {
            versions: vec![(key.clone(), v.clone())],
            members: Vec::new(),
        };
        net.input(
            i,
            Input::Gossip {
                from: node(LIAR),
                bytes: wire::encode(&Message::Delta(delta), cluster),
            },
        );
    }
}

fn live_dots(net: &Net, i: usize, key: &StateKey) -> Vec<Dot> {
    net.engines[i]
        .state()
        .get(key)
        .map_or(Vec::new(), |ks| ks.live.iter().map(|v| v.dot).collect())
}

#[test]
fn a_flood_of_concurrent_siblings_stops_at_max_siblings_with_the_same_ones_kept_on_every_node() {
    let mut c = cfg();
    c.max_siblings = 4;
    let mut net = cluster_with(c);
    let key = testing::kv_key("prod", "hot");
    let flood = concurrent_siblings(&key, 10);
    // Each honest node gets the flood in another order.
    let mut reversed = flood.clone();
    reversed.reverse();
    let mut shuffled = flood.clone();
    shuffled.rotate_left(3);
    shuffled.swap(0, 7);
    for (i, order) in [flood.clone(), reversed, shuffled].iter().enumerate() {
        gossip_each_to(&mut net, i, order, &key);
    }
    let kept: Vec<Dot> = flood[6..].iter().rev().map(|v| v.dot).collect();
    for i in 0..HONEST {
        assert_eq!(
            live_dots(&net, i, &key),
            kept,
            "node {i} keeps the four first in rank"
        );
        assert_eq!(
            rejected(&net, i, RejectReason::SiblingsLimit),
            6,
            "node {i} refused or evicted six"
        );
        for v in &flood[..6] {
            assert!(
                !net.engines[i].state().knowledge().contains(&v.dot),
                "node {i} did not record a refused sibling as seen"
            );
        }
    }
    // An honest write that saw the four supersedes them and makes room for
    // three of the six refused: offered again, they are taken, and every
    // node ends with the same four (the write, then the three highest).
    net.cmd(1, testing::put("prod", "hot", "honest"))
        .expect("node 1 writes");
    net.run_for(3_000, 50);
    for i in 0..HONEST {
        gossip_each_to(&mut net, i, &flood, &key);
    }
    net.run_for(3_000, 50);
    net.sync_all(2);
    let first = live_dots(&net, 0, &key);
    assert_eq!(first[1..], [flood[5].dot, flood[4].dot, flood[3].dot]);
    for i in 0..HONEST {
        let ks = net.engines[i].state().get(&key).expect("held");
        assert_eq!(
            ks.winner().map(|w| w.payload.clone()),
            Some(Payload::Value(b"honest".to_vec())),
            "node {i}"
        );
        assert_eq!(live_dots(&net, i, &key), first, "node {i}");
        assert_eq!(
            net.engines[i].digest(),
            net.engines[0].digest(),
            "node {i} converged"
        );
    }
}

/// A member record of a made-up identity (the liar makes the keys).
fn made_up_member(i: usize, info: NodeInfo) -> Member {
    let id = node(i);
    let claim = member_claim(&id, &info, 1, false);
    Member {
        node: id,
        info: info.into(),
        incarnation: 1,
        status: MemberStatus::Alive,
        proof: keys_of(id).sign(&claim),
    }
}

#[test]
fn records_of_made_up_identities_past_max_members_are_refused_and_known_members_still_change() {
    let mut c = cfg();
    c.max_members = HONEST + 1 + 2;
    let mut net = cluster_with(c);
    let flood: Vec<Member> = (100..110)
        .map(|i| made_up_member(i, NodeInfo::default()))
        .collect();
    gossip(
        &mut net,
        Delta {
            versions: Vec::new(),
            members: flood,
        },
    );
    for i in 0..HONEST {
        assert_eq!(net.engines[i].members().len(), HONEST + 1 + 2, "node {i} is full");
        assert_eq!(rejected(&net, i, RejectReason::MemberLimit), 8, "node {i}");
    }
    // At the bound, a known member still refutes, changes its info, and
    // every member stays alive.
    let mut info = (*net.engines[2].local_member().info).clone();
    info.tags.insert("role".into(), "edge".into());
    net.cmd(2, starling::core::Command::SetInfo(info))
        .expect("set info");
    net.run_for(2_000, 50);
    for i in 0..HONEST {
        let m = net.engines[i].member(&node(2)).expect("known");
        assert_eq!(
            m.info.tags.get("role").map(String::as_str),
            Some("edge"),
            "node {i}"
        );
        for j in 0..=LIAR {
            assert_eq!(status_of(&net, i, j), MemberStatus::Alive, "node {i} on {j}");
        }
    }
}

#[test]
fn a_member_record_with_an_oversized_self_description_is_refused() {
    let mut net = cluster();
    let info = NodeInfo {
        name: "big".into(),
        addrs: (0..1_000).map(|i| format!("/ip4/10.0.0.1/tcp/{i}")).collect(),
        tags: Default::default(),
    };
    gossip(
        &mut net,
        Delta {
            versions: Vec::new(),
            members: vec![made_up_member(100, info)],
        },
    );
    for i in 0..HONEST {
        assert_eq!(rejected(&net, i, RejectReason::MemberBadInfo), 1, "node {i}");
        assert!(net.engines[i].member(&node(100)).is_none(), "node {i}");
    }
}

// ----- deregistration by the owner only -----------------------------------

fn instance_key() -> StateKey {
    StateKey::Service {
        namespace: starling::core::Namespace::new("prod").unwrap(),
        service: starling::core::ServiceName::new("api").unwrap(),
        instance: starling::core::InstanceId::new("api-1").unwrap(),
    }
}

fn listed(net: &Net, i: usize) -> Vec<starling::core::NodeId> {
    net.engines[i]
        .services(
            &starling::core::Namespace::new("prod").unwrap(),
            &starling::core::ServiceName::new("api").unwrap(),
            &ServiceQuery::default(),
        )
        .into_iter()
        .map(|v| v.owner)
        .collect()
}

#[test]
fn a_foreign_tombstone_on_another_owners_instance_removes_it_on_no_node() {
    let mut net = cluster();
    let spec = testing::instance_spec("10.0.0.1", 80);
    net.cmd(1, testing::register_instance("prod", "api", "api-1", spec))
        .expect("node 1 registers");
    net.run_for(1_000, 50);
    let reg = net.engines[1].state().get(&instance_key()).expect("held").live[0].clone();
    let dot = Dot {
        node: node(LIAR),
        seq: net.engines[LIAR].state().next_seq(&node(LIAR)),
    };
    // As the old rule wanted it: a tombstone whose context covers the
    // owner's registration. Refused outright.
    let mut covering = reg.ctx.clone();
    covering.add(dot);
    let sweeping = forged_version(&instance_key(), dot, covering, Payload::Tombstone);
    // With the liar's own context only: a valid tombstone, which removes
    // only what the liar itself registered (nothing).
    let mut own = Context::default();
    let own_dot = Dot {
        seq: dot.seq + 1,
        ..dot
    };
    own.add(own_dot);
    let harmless = forged_version(&instance_key(), own_dot, own, Payload::Tombstone);
    gossip(
        &mut net,
        Delta {
            versions: vec![(instance_key(), sweeping), (instance_key(), harmless)],
            members: Vec::new(),
        },
    );
    net.run_for(2_000, 50);
    net.sync_all(1);
    for i in 0..HONEST {
        assert_eq!(
            rejected(&net, i, RejectReason::VersionForeignContext),
            1,
            "node {i}"
        );
        assert_eq!(
            listed(&net, i),
            vec![node(1)],
            "node {i} still lists the instance"
        );
    }
    // A non-owner's deregistration command is refused locally too.
    assert!(matches!(
        net.cmd(2, testing::deregister_instance("prod", "api", "api-1")),
        Err(starling::core::CommandError::NotOwner(_))
    ));
    // The owner's own deregistration removes it everywhere.
    net.cmd(1, testing::deregister_instance("prod", "api", "api-1"))
        .expect("the owner deregisters");
    net.run_for(2_000, 50);
    for i in 0..HONEST {
        assert!(listed(&net, i).is_empty(), "node {i} dropped it");
        assert_eq!(net.engines[i].digest(), net.engines[0].digest(), "node {i}");
    }
}

#[test]
fn an_owner_restarting_with_a_new_identity_registers_its_instance_again() {
    let mut net = cluster();
    let spec = testing::instance_spec("10.0.0.1", 80);
    net.cmd(
        1,
        testing::register_instance("prod", "api", "api-1", spec.clone()),
    )
    .expect("node 1 registers");
    net.run_for(1_000, 50);
    // Node 1 loses its disk: gone long enough to be dead, then back under
    // a new identity.
    net.isolate(&[1]);
    net.run_for(15_000, 100);
    assert_eq!(status_of(&net, 0, 1), MemberStatus::Dead);
    let reborn = node(11);
    net.restart_as(1, reborn, cfg());
    net.heal();
    net.run_for(5_000, 100);
    let moved = starling::core::ServiceSpec {
        address: "10.0.0.2".into(),
        ..spec
    };
    net.cmd(1, testing::register_instance("prod", "api", "api-1", moved))
        .expect("the new identity registers the instance again");
    net.run_for(3_000, 100);
    for i in 0..HONEST {
        let v = net.engines[i].services(
            &starling::core::Namespace::new("prod").unwrap(),
            &starling::core::ServiceName::new("api").unwrap(),
            &ServiceQuery::default(),
        );
        assert_eq!(v.len(), 1, "node {i}");
        assert_eq!(
            (v[0].owner, v[0].spec.address.as_str()),
            (reborn, "10.0.0.2"),
            "node {i}"
        );
        assert_eq!(v[0].health, HealthStatus::Passing, "node {i}");
    }
}
