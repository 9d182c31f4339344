//! A stable-Rust stand-in for the `fuzz/` targets, so CI exercises the same
//! properties on every run: bytes from the network never panic the decoder
//! or an Engine, and whatever decodes survives an encode/decode round trip.
//!
//! Inputs are real encoded messages of every kind, mutated with a seeded RNG
//! (bit flips, truncation, extension, insertion, deletion, splicing,
//! "interesting" bytes), plus random bytes behind a valid header. A failure
//! prints the seed and the input; the real fuzzers (`cargo +nightly fuzz run
//! decode_envelope`, see docs/FUZZING.md) explore far more.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use starling::core::crypto::{member_claim, version_claim};
use starling::core::testing::{keys_of, Feeder, Role};
use starling::core::wire::{
    self, Delta, Hashes, Heartbeat, KnowledgeSummary, Message, MessageKind, SyncAck, SyncPush, SyncRequest,
    SyncResponse, WireError, HEADER_LEN, MAGIC, PROTOCOL_VERSION,
};
use starling::core::{
    Config, Context, Digest, Dot, DotRange, HealthStatus, Hlc, InstanceId, Key, Knowledge, Member,
    MemberStatus, Namespace, NodeId, NodeInfo, Payload, RejectReason, ServiceInstance, ServiceName,
    ServiceSpec, StateKey, Version, BUCKETS,
};

/// The global allocator of this test binary: the system's, recording the
/// largest single allocation made on each thread (see
/// [`a_sync_message_claiming_huge_lists_allocates_only_what_arrives`]).
struct Recording;

thread_local! {
    static LARGEST_ALLOCATION: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn note_allocation(size: usize) {
    let _ = LARGEST_ALLOCATION.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// recording touches only a const-initialized thread-local `Cell`.
unsafe impl std::alloc::GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note_allocation(layout.size());
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// Local time of every engine here; stamps near it pass the drift check.
const NOW_MS: u64 = 1_700_000_000_000;
/// Inputs per property.
const CASES: usize = 20_000;
/// Decoder size limit used in these tests.
const LIMIT: usize = 1 << 20;

fn cluster() -> u64 {
    wire::cluster_id(&Config::default().cluster)
}

fn node(i: u64) -> NodeId {
    NodeId::from_index(i)
}

fn member(i: u64, status: MemberStatus) -> Member {
    let mut tags = BTreeMap::new();
    tags.insert("region".to_string(), "eu-west".to_string());
    let info = NodeInfo {
        name: format!("node-{i}"),
        addrs: vec![format!("/ip4/10.0.0.{i}/tcp/7946")],
        tags,
    };
    // Signed by its subject, as a real record is.
    let claim = member_claim(&node(i), &info, i, status == MemberStatus::Left);
    Member {
        node: node(i),
        info: info.into(),
        incarnation: i,
        status,
        proof: keys_of(node(i)).sign(&claim),
    }
}

/// `v` signed by its origin for `key`.
fn signed(key: StateKey, mut v: Version) -> (StateKey, Version) {
    let claim = version_claim(&key, &v.dot, &v.ctx, &v.hlc, &v.payload, v.checksum);
    v.signature = Some(keys_of(v.dot.node).sign(&claim).0.to_vec());
    (key, v)
}

fn version(origin: u64, seq: u64, also_seen: &[(u64, u64)], payload: Payload) -> Version {
    let dot = Dot {
        node: node(origin),
        seq,
    };
    let mut ctx = Context::default();
    ctx.add(dot);
    for (n, s) in also_seen {
        ctx.add(Dot {
            node: node(*n),
            seq: *s,
        });
    }
    let checksum = payload.checksum();
    Version {
        dot,
        ctx,
        hlc: Hlc {
            wall_ms: NOW_MS - 1_000 + seq,
            logical: seq as u32 % 3,
        },
        payload,
        checksum,
        signature: None,
    }
}

fn kv(key: &str) -> StateKey {
    StateKey::Kv {
        namespace: Namespace::new("prod").unwrap(),
        key: Key::new(key).unwrap(),
    }
}

fn versions() -> Vec<(StateKey, Version)> {
    let mut meta = BTreeMap::new();
    meta.insert("zone".to_string(), "a".to_string());
    let spec = ServiceSpec {
        address: "10.0.0.9".to_string(),
        port: 8080,
        tags: BTreeSet::from(["blue".to_string()]),
        metadata: meta,
        weight: 50,
        ttl_ms: Some(10_000),
    };
    [
        (
            kv("db/url"),
            version(2, 1, &[], Payload::Value(b"pg://a".to_vec())),
        ),
        (
            kv("db/url"),
            version(3, 4, &[(2, 1)], Payload::Value(b"pg://b".to_vec())),
        ),
        (kv("feature/x"), version(2, 2, &[], Payload::Tombstone)),
        (
            StateKey::Service {
                namespace: Namespace::new("prod").unwrap(),
                service: ServiceName::new("api").unwrap(),
                instance: InstanceId::new("api-1").unwrap(),
            },
            version(
                3,
                5,
                &[],
                Payload::Instance(Box::new(ServiceInstance {
                    spec,
                    owner: node(3),
                    health: HealthStatus::Passing,
                })),
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| signed(k, v))
    .collect()
}

/// A one-bucket knowledge summary shipping `knowledge()`.
fn summary() -> KnowledgeSummary {
    let k = knowledge();
    KnowledgeSummary {
        buckets: Hashes(k.bucket_hashes(1)),
        shipped: vec![0],
        ranges: k,
    }
}

fn knowledge() -> Knowledge {
    Knowledge::from_ranges([
        (
            node(2),
            DotRange {
                base: 2,
                extra: BTreeSet::new(),
            },
        ),
        (
            node(3),
            DotRange {
                base: 0,
                extra: BTreeSet::from([4, 5]),
            },
        ),
    ])
}

/// A grave (collected delete) for one of the seed keys, as it travels:
/// the collected tombstone.
fn graves() -> Vec<(StateKey, Version)> {
    let (key, v) = versions().into_iter().next().expect("seed versions");
    let tomb = Version {
        dot: Dot {
            node: node(6),
            seq: 2,
        },
        payload: Payload::Tombstone,
        checksum: Payload::Tombstone.checksum(),
        ..v
    };
    vec![(key, tomb)]
}

fn manifest() -> BTreeMap<u16, Vec<Dot>> {
    let mut m = BTreeMap::new();
    m.insert(
        7,
        vec![Dot {
            node: node(2),
            seq: 1,
        }],
    );
    m.insert(200, Vec::new());
    m
}

/// One real message of every kind.
fn seed_messages() -> Vec<Message> {
    let buckets: Vec<u64> = (0..BUCKETS as u64).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
    vec![
        Message::Heartbeat(Heartbeat {
            seq: 9,
            node: member(2, MemberStatus::Alive).node,
            incarnation: 1,
            status: MemberStatus::Alive,
            info: Some((
                member(2, MemberStatus::Alive).info,
                member(2, MemberStatus::Alive).proof,
            )),
            hlc: Hlc {
                wall_ms: NOW_MS,
                logical: 1,
            },
            digest: Digest { hash: 42, keys: 3 },
            members_hash: 77,
            interval_ms: 1_000,
            high_seq: 7,
        }),
        Message::Delta(Delta {
            versions: versions(),
            members: vec![member(3, MemberStatus::Suspect)],
        }),
        Message::SyncRequest(SyncRequest {
            knowledge: KnowledgeSummary {
                buckets: Hashes(vec![0, 11]),
                shipped: Vec::new(),
                ranges: Knowledge::new(),
            },
            buckets: Hashes(buckets.clone()),
            members_hash: 5,
            member_buckets: Hashes(vec![1, 2, 3, 4]),
            high_seq: 9,
        }),
        Message::SyncResponse(SyncResponse {
            knowledge: summary(),
            buckets: Hashes(buckets.clone()),
            manifest: manifest(),
            graves: graves(),
            members: vec![member(2, MemberStatus::Alive), member(4, MemberStatus::Dead)],
            member_buckets: Hashes(vec![9, 8, 7, 6]),
            high_seq: 3,
        }),
        Message::SyncPush(SyncPush {
            versions: versions(),
            knowledge: summary(),
            manifest: manifest(),
            graves: graves(),
            members: vec![member(5, MemberStatus::Left)],
            wanted: Vec::new(),
        }),
        Message::SyncAck(SyncAck {
            applied: 3,
            versions: versions(),
            complete: true,
            returned: Vec::new(),
        }),
    ]
}

fn seed_bytes() -> Vec<Vec<u8>> {
    seed_messages()
        .iter()
        .map(|m| wire::encode(m, cluster()))
        .collect()
}

fn header(kind: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&MAGIC);
    h.push(PROTOCOL_VERSION);
    h.push(kind);
    h.extend_from_slice(&cluster().to_le_bytes());
    h
}

/// Bytes bincode's varint encoding treats specially, and boundary values.
const INTERESTING: [u8; 9] = [0, 1, 0x7f, 0x80, 250, 251, 252, 253, 0xff];

/// One mutated input, built from the seeds.
fn mutate(rng: &mut ChaCha8Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = seeds[rng.gen_range(0..seeds.len())].clone();
    let rounds = rng.gen_range(1..=3);
    for _ in 0..rounds {
        let len = bytes.len();
        match rng.gen_range(0..8) {
            // Flip a few bits (mostly in the body, where decoding happens).
            0 => {
                for _ in 0..rng.gen_range(1..=8) {
                    if len > 0 {
                        let at = rng.gen_range(HEADER_LEN.min(len - 1)..len);
                        bytes[at] ^= 1 << rng.gen_range(0..8);
                    }
                }
            }
            // Truncate.
            1 => bytes.truncate(rng.gen_range(0..=len)),
            // Extend with random bytes.
            2 => {
                for _ in 0..rng.gen_range(1..=64) {
                    bytes.push(rng.gen());
                }
            }
            // Overwrite a byte with an interesting value.
            3 => {
                if len > 0 {
                    let at = rng.gen_range(0..len);
                    bytes[at] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                }
            }
            // Insert random bytes in the middle.
            4 => {
                let at = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=16);
                let ins: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                bytes.splice(at..at, ins);
            }
            // Delete a range.
            5 => {
                if len > 0 {
                    let from = rng.gen_range(0..len);
                    let to = rng.gen_range(from..=len.min(from + 32));
                    bytes.drain(from..to);
                }
            }
            // Splice: this message's head with another's tail.
            6 => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let cut = rng.gen_range(0..=len);
                let from = rng.gen_range(0..=other.len());
                bytes.truncate(cut);
                bytes.extend_from_slice(&other[from..]);
            }
            // Random body behind a valid header (any kind byte, some invalid).
            _ => {
                bytes = header(rng.gen_range(0..8));
                for _ in 0..rng.gen_range(0..256) {
                    bytes.push(rng.gen());
                }
            }
        }
    }
    bytes
}

/// Decode; if it decodes, the round trip must give the same message back.
/// Returns whether it decoded.
fn check_round_trip(bytes: &[u8]) -> bool {
    let Ok(msg) = wire::decode(bytes, cluster(), LIMIT) else {
        return false;
    };
    let again = wire::encode(&msg, cluster());
    let back = wire::decode(&again, cluster(), usize::MAX).expect("a re-encoded message decodes");
    assert_eq!(back, msg, "decode(encode(m)) != m for input {bytes:02x?}");
    assert_eq!(
        wire::encode(&back, cluster()),
        again,
        "encoding is not deterministic"
    );
    true
}

/// A rejection counter by its reason's name (whatever the key type).
macro_rules! rejected {
    ($engine:expr, $reason:expr) => {
        $engine
            .counters()
            .rejected
            .iter()
            .filter(|(r, _)| r.as_str() == $reason)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
}

#[test]
fn every_seed_message_round_trips() {
    for (msg, bytes) in seed_messages().iter().zip(seed_bytes()) {
        assert_eq!(&wire::decode(&bytes, cluster(), LIMIT).unwrap(), msg);
    }
}

#[test]
fn mutated_messages_decode_or_fail_typed_and_decoded_ones_round_trip() {
    let seeds = seed_bytes();
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0001);
    let mut decoded = 0;
    for _ in 0..CASES {
        let input = mutate(&mut rng, &seeds);
        if check_round_trip(&input) {
            decoded += 1;
        }
    }
    // The mutations must not be so destructive that nothing gets past the
    // header: a share of them decodes, so the round trip is really checked.
    assert!(decoded > CASES / 100, "only {decoded} of {CASES} inputs decoded");
}

/// Random bytes: bare ones never get past the header checks (and fail for
/// the reason the header says), framed ones fail as an unknown kind or a
/// malformed body of the kind the header names, or decode and round-trip.
#[test]
fn random_bytes_are_rejected_for_the_reason_their_header_gives_or_round_trip() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0002);
    let mut by_reason: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut decoded = 0;
    for _ in 0..CASES {
        let len = rng.gen_range(0..128);
        let body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let framed = rng.gen_bool(0.5);
        let kind = rng.gen_range(0..8u8);
        let bytes = if framed {
            let mut b = header(kind);
            b.extend_from_slice(&body);
            b
        } else {
            body
        };
        let result = wire::decode(&bytes, cluster(), LIMIT);
        match (&result, framed) {
            (Ok(_), true) => {
                assert!(check_round_trip(&bytes));
                decoded += 1;
            }
            (Ok(m), false) => panic!("random bytes without a header decoded: {m:?} from {bytes:02x?}"),
            (Err(WireError::Truncated { len }), false) => assert!(*len < HEADER_LEN),
            (Err(WireError::BadMagic), false) => assert!(bytes.len() >= HEADER_LEN && bytes[..4] != MAGIC),
            (Err(WireError::UnknownKind(k)), true) => {
                assert_eq!(*k, kind);
                assert!(!(1..=6).contains(k), "kind {k} is known");
            }
            (Err(WireError::Malformed { kind: k, .. }), true) => assert_eq!(*k as u8, kind),
            (Err(e), _) => panic!("unexpected rejection {e:?} (framed: {framed}) of {bytes:02x?}"),
        }
        if let Err(e) = result {
            *by_reason.entry(e.reason()).or_default() += 1;
        }
    }
    for reason in ["truncated", "bad_magic", "unknown_kind", "malformed"] {
        assert!(
            by_reason.get(reason).copied().unwrap_or(0) > CASES / 100,
            "{reason}: {by_reason:?}"
        );
    }
    assert_eq!(by_reason.values().sum::<usize>() + decoded, CASES);
}

/// Mutated messages through an engine in every role (gossip, request, the
/// answer to a pull, the answer to a push): the `Feeder` checks each
/// delivery is counted (and each undecodable one rejected for the
/// decoder's reason); here, that every role was reached on most inputs,
/// that inputs of every kind decoded in the role that expects them, and
/// that the engine is still usable.
#[test]
fn mutated_messages_never_panic_an_engine_and_are_all_accounted_for() {
    let seeds = seed_bytes();
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0003);
    let mut feeder = Feeder::new(NOW_MS);
    let mut reached: BTreeMap<(Role, Option<MessageKind>), usize> = BTreeMap::new();
    let rounds = CASES / 4;
    for i in 0..rounds {
        if i % 500 == 0 {
            feeder = Feeder::new(NOW_MS);
        }
        let input = mutate(&mut rng, &seeds);
        for d in feeder.feed(&input) {
            *reached.entry((d.role, d.decoded.ok())).or_default() += 1;
        }
    }
    let count = |role: Role| -> usize {
        reached
            .iter()
            .filter(|((r, _), _)| *r == role)
            .map(|(_, n)| n)
            .sum()
    };
    // Every round reaches every role: no sync is left in flight to block
    // the next round's.
    for role in [
        Role::Gossip,
        Role::Request,
        Role::PullResponse,
        Role::PushResponse,
    ] {
        assert_eq!(count(role), rounds, "{role:?}: {reached:?}");
    }
    for (role, kind) in [
        (Role::Gossip, MessageKind::Heartbeat),
        (Role::Gossip, MessageKind::Delta),
        (Role::Request, MessageKind::SyncRequest),
        (Role::Request, MessageKind::SyncPush),
        (Role::PullResponse, MessageKind::SyncResponse),
        (Role::PushResponse, MessageKind::SyncAck),
    ] {
        let n = reached.get(&(role, Some(kind))).copied().unwrap_or(0);
        assert!(
            n >= 20,
            "{kind:?} decoded as {role:?} only {n} times: {reached:?}"
        );
    }
    feeder.check_usable();
}

/// Each real message in every role: accepted where it belongs, and the
/// effect shows in the engine's counters.
#[test]
fn unmutated_seed_messages_take_effect_in_the_role_that_expects_them() {
    let mut feeder = Feeder::new(NOW_MS);
    for (msg, bytes) in seed_messages().iter().zip(seed_bytes()) {
        let before = feeder.engine().counters().clone();
        let deliveries = feeder.feed(&bytes);
        let roles: Vec<Role> = deliveries.iter().map(|d| d.role).collect();
        assert_eq!(
            roles,
            [
                Role::PushResponse,
                Role::PullResponse,
                Role::Gossip,
                Role::Request
            ],
            "every role reached for {:?}",
            msg.kind()
        );
        assert!(deliveries.iter().all(|d| d.decoded == Ok(msg.kind())));
        let after = feeder.engine().counters();
        match msg.kind() {
            MessageKind::Heartbeat => assert_eq!(after.heartbeats_received, before.heartbeats_received + 1),
            MessageKind::Delta => assert!(after.merged > before.merged, "the delta's versions merged"),
            // The feeder opens a real sync before the request role (so a
            // push there is inside one): that answer, then the seed's.
            MessageKind::SyncRequest => assert_eq!(after.syncs_served, before.syncs_served + 2),
            // The push carries the delta's versions again: held already.
            MessageKind::SyncPush => {
                assert!(after.duplicates > before.duplicates, "the push's versions judged")
            }
            // The real peer's pull completes nothing by itself; the
            // crafted response is taken in and answered with a push.
            MessageKind::SyncResponse => assert!(after.syncs_started >= before.syncs_started + 2),
            MessageKind::SyncAck => assert_eq!(
                after.syncs_completed,
                before.syncs_completed + 1,
                "the ack completes the sync it answers"
            ),
            other => panic!("no seed of kind {other:?}"),
        }
    }
    feeder.check_usable();
}

/// A gossip from a peer carrying our own member record at the highest
/// incarnation: forged (not signed by us), it is rejected and changes
/// nothing; signed by us (we once claimed it), the node refutes with
/// `incarnation + 1`, which must saturate rather than overflow.
#[test]
fn own_record_at_max_incarnation_from_a_peer_does_not_panic() {
    let delta = |me: Member| {
        wire::encode(
            &Message::Delta(Delta {
                versions: Vec::new(),
                members: vec![me],
            }),
            cluster(),
        )
    };
    let mut feeder = Feeder::new(NOW_MS);
    let before = feeder.engine().local_member().incarnation;
    let mut forged = member(1, MemberStatus::Suspect);
    forged.incarnation = u64::MAX;
    let deliveries = feeder.feed(&delta(forged));
    assert!(deliveries.iter().all(|d| d.decoded == Ok(MessageKind::Delta)));
    let local = feeder.engine().local_member();
    assert_eq!(local.incarnation, before, "a forged record moves nothing");
    let rejected = &feeder.engine().counters().rejected;
    assert!(rejected
        .get(&RejectReason::MemberBadSignature)
        .is_some_and(|n| *n > 0));

    let mut me = member(1, MemberStatus::Suspect);
    me.incarnation = u64::MAX;
    let claim = member_claim(&me.node, &me.info, me.incarnation, false);
    me.proof = keys_of(me.node).sign(&claim);
    feeder.feed(&delta(me));
    let local = feeder.engine().local_member();
    assert_eq!(local.incarnation, u64::MAX, "refuted at the highest incarnation");
    assert_eq!(local.status, MemberStatus::Alive, "and still alive");
    feeder.check_usable();
}

/// A sync response whose knowledge claims every dot up to `u64::MAX` of
/// some origin (here: of the node itself).
/// What a sync response or push looks like to the decoder up to its
/// manifest, with the manifest's one bucket claiming `claimed` dots (the
/// length prefix of a list is a varint, as a `u64` is) and nothing after.
#[derive(serde::Serialize)]
struct ClaimingManifest {
    knowledge: KnowledgeSummary,
    buckets: Hashes,
    manifest: BTreeMap<u16, u64>,
}

/// The codec never allocates what a peer claims: a manifest (or any
/// list) announcing 2^40 dots in a few bytes fails to decode having
/// allocated at most a bounded first chunk (serde preallocates at most
/// 1 MiB for a list, whatever its length prefix says), and a message is
/// at most `max_message_bytes` before it is decoded at all.
#[test]
fn a_sync_message_claiming_huge_lists_allocates_only_what_arrives() {
    let cfg = bincode::config::standard();
    let body = bincode::serde::encode_to_vec(
        ClaimingManifest {
            knowledge: summary(),
            buckets: Hashes(vec![7; BUCKETS]),
            manifest: BTreeMap::from([(3, 1u64 << 40)]),
        },
        cfg,
    )
    .expect("encodes");
    for kind in [MessageKind::SyncResponse, MessageKind::SyncPush] {
        let mut bytes = header(kind as u8);
        bytes.extend_from_slice(&body);
        LARGEST_ALLOCATION.with(|l| l.set(0));
        let decoded = wire::decode(&bytes, cluster(), 32 << 20);
        let largest = LARGEST_ALLOCATION.with(|l| l.get());
        assert!(
            matches!(decoded, Err(WireError::Malformed { .. })),
            "{kind:?}: {decoded:?}"
        );
        assert!(
            largest <= 1 << 20,
            "{kind:?}: decoding {} bytes allocated {largest} bytes at once",
            bytes.len()
        );
    }
}

#[test]
fn knowledge_up_to_u64_max_in_a_sync_response_does_not_panic() {
    for origin in [1, 2] {
        let mut feeder = Feeder::new(NOW_MS);
        let knowledge = Knowledge::from_ranges([(
            node(origin),
            DotRange {
                base: u64::MAX,
                extra: BTreeSet::from([u64::MAX]),
            },
        )]);
        let bytes = wire::encode(
            &Message::SyncResponse(SyncResponse {
                knowledge: KnowledgeSummary {
                    buckets: Hashes(knowledge.bucket_hashes(1)),
                    shipped: vec![0],
                    ranges: knowledge,
                },
                buckets: Hashes(vec![0; BUCKETS]),
                manifest: BTreeMap::new(),
                graves: Vec::new(),
                members: Vec::new(),
                member_buckets: Hashes(Vec::new()),
                high_seq: 0,
            }),
            cluster(),
        );
        feeder.feed(&bytes);
        assert_eq!(rejected!(feeder.engine(), "knowledge_seq_out_of_range"), 1);
        feeder.check_usable();
    }
}

/// Seed the cargo-fuzz corpora with one real message of every kind:
/// `cargo test -p starling --no-default-features --test wire_fuzz_smoke -- --ignored write_fuzz_seed_corpus`
/// (writes `fuzz/corpus/<target>/seed-<n>`; the corpus is git-ignored).
#[test]
#[ignore = "writes files into fuzz/corpus; run on demand before fuzzing"]
fn write_fuzz_seed_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in ["decode_envelope", "engine_input"] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, bytes) in seed_bytes().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), bytes).unwrap();
        }
    }
}
