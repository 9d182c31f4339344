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
use starling::core::wire::{
    self, Delta, Hashes, Heartbeat, KnowledgeSummary, Message, SyncAck, SyncPush, SyncRequest, SyncResponse,
    HEADER_LEN, MAGIC, PROTOCOL_VERSION,
};
use starling::core::{
    Action, Command, Config, Context, Digest, Dot, DotRange, Engine, HealthStatus, Hlc, Input, InstanceId,
    Key, Knowledge, Member, MemberStatus, Namespace, NodeId, NodeInfo, Payload, ServiceInstance, ServiceName,
    ServiceSpec, StateKey, Version, BUCKETS,
};

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
    Member {
        node: node(i),
        info: NodeInfo {
            name: format!("node-{i}"),
            addrs: vec![format!("/ip4/10.0.0.{i}/tcp/7946")],
            tags,
        },
        incarnation: i,
        status,
    }
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
        signature: seq.is_multiple_of(2).then(|| vec![0xab; 64]),
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
    vec![
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
                Payload::Instance(ServiceInstance {
                    spec,
                    owner: node(3),
                    health: HealthStatus::Passing,
                }),
            ),
        ),
    ]
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
            info: Some(member(2, MemberStatus::Alive).info),
            hlc: Hlc {
                wall_ms: NOW_MS,
                logical: 1,
            },
            digest: Digest { hash: 42, keys: 3 },
            members_hash: 77,
            interval_ms: 1_000,
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
        }),
        Message::SyncResponse(SyncResponse {
            knowledge: summary(),
            buckets: Hashes(buckets.clone()),
            manifest: manifest(),
            members: vec![member(2, MemberStatus::Alive), member(4, MemberStatus::Dead)],
            member_buckets: Hashes(vec![9, 8, 7, 6]),
        }),
        Message::SyncPush(SyncPush {
            versions: versions(),
            knowledge: summary(),
            manifest: manifest(),
            members: vec![member(5, MemberStatus::Left)],
        }),
        Message::SyncAck(SyncAck {
            applied: 3,
            versions: versions(),
            complete: true,
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

fn new_engine() -> Engine {
    let mut e = Engine::new(Config::default(), node(1), NodeInfo::default(), NOW_MS, 7, None).unwrap();
    e.handle(
        NOW_MS,
        Input::Command {
            id: 1,
            command: Command::Put {
                namespace: Namespace::new("prod").unwrap(),
                key: Key::new("db/url").unwrap(),
                value: b"pg://local".to_vec(),
                expect: None,
            },
        },
    );
    e
}

/// Deliver `bytes` as gossip, as a request, and as the response to a sync
/// the engine just started — as the `engine_input` fuzz target does.
fn feed(engine: &mut Engine, now: u64, bytes: &[u8]) {
    let peer = node(2);
    let sent = engine.handle(now, Input::PeerConnected(peer));
    let sync_id = sent.iter().find_map(|a| match a {
        Action::SendRequest { id, .. } => Some(*id),
        _ => None,
    });
    engine.handle(
        now,
        Input::Gossip {
            from: peer,
            bytes: bytes.to_vec(),
        },
    );
    engine.handle(
        now,
        Input::Request {
            from: peer,
            id: 1,
            bytes: bytes.to_vec(),
        },
    );
    if let Some(id) = sync_id {
        engine.handle(
            now,
            Input::Response {
                from: peer,
                id,
                bytes: bytes.to_vec(),
            },
        );
    }
    engine.handle(now, Input::PeerDisconnected(peer));
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

#[test]
fn random_bytes_never_panic_the_decoder() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0002);
    for _ in 0..CASES {
        let len = rng.gen_range(0..128);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if rng.gen_bool(0.5) {
            let mut framed = header(rng.gen_range(0..8));
            framed.append(&mut bytes);
            bytes = framed;
        }
        check_round_trip(&bytes);
    }
}

#[test]
fn mutated_messages_never_panic_an_engine() {
    let seeds = seed_bytes();
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0003);
    let mut engine = new_engine();
    let mut now = NOW_MS;
    for i in 0..CASES / 4 {
        if i % 500 == 0 {
            engine = new_engine();
        }
        // Past the per-peer sync rate limit, so every round starts a sync.
        now += 2_000;
        let input = mutate(&mut rng, &seeds);
        feed(&mut engine, now, &input);
    }
    // Still usable: a local write goes through and the timers run.
    let actions = engine.handle(
        now + 1,
        Input::Command {
            id: 99,
            command: Command::Put {
                namespace: Namespace::new("prod").unwrap(),
                key: Key::new("after/fuzz").unwrap(),
                value: b"ok".to_vec(),
                expect: None,
            },
        },
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Reply {
            id: 99,
            result: Ok(_)
        }
    )));
    engine.handle(now + 60_000, Input::Tick);
}

#[test]
fn unmutated_seed_messages_are_accepted_by_an_engine_without_panic() {
    let mut engine = new_engine();
    let mut now = NOW_MS;
    for bytes in seed_bytes() {
        now += 2_000;
        feed(&mut engine, now, &bytes);
    }
}

/// A gossip from a peer carrying our own member record at the highest
/// incarnation makes the node refute with `incarnation + 1`.
#[test]
fn own_record_at_max_incarnation_from_a_peer_does_not_panic() {
    let mut engine = new_engine();
    let mut me = member(1, MemberStatus::Suspect);
    me.incarnation = u64::MAX;
    let bytes = wire::encode(
        &Message::Delta(Delta {
            versions: Vec::new(),
            members: vec![me],
        }),
        cluster(),
    );
    feed(&mut engine, NOW_MS + 2_000, &bytes);
}

/// A sync response whose knowledge claims every dot up to `u64::MAX` of
/// some origin (here: of the node itself).
#[test]
fn knowledge_up_to_u64_max_in_a_sync_response_does_not_panic() {
    for origin in [1, 2] {
        let mut engine = new_engine();
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
                members: Vec::new(),
                member_buckets: Hashes(Vec::new()),
            }),
            cluster(),
        );
        feed(&mut engine, NOW_MS + 2_000, &bytes);
        assert_eq!(
            engine.counters().rejected.get("knowledge_seq_out_of_range"),
            Some(&1)
        );
        let actions = engine.handle(
            NOW_MS + 2_001,
            Input::Command {
                id: 5,
                command: Command::Put {
                    namespace: Namespace::new("prod").unwrap(),
                    key: Key::new("after/max").unwrap(),
                    value: b"x".to_vec(),
                    expect: None,
                },
            },
        );
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Reply { id: 5, result: Ok(_) })));
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
