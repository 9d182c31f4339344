//! Criterion benchmarks of the sans-IO core: merge, wire encode/decode,
//! digest and delta computation, and one local write through the Engine.
//!
//! Run with `cargo bench -p starling --no-default-features --bench core`;
//! results are recorded in `docs/PERFORMANCE.md`. Every input is built with
//! the public API, deterministically (no RNG, no clock).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use starling::core::crypto::{version_claim, Ed25519Keys, Keys, Signature, SimulatedKeys, SIGNATURE_LEN};
use starling::core::wire::{self, Delta, Heartbeat, Message};
use starling::core::{
    Command, Config, Context, Digest, Dot, Engine, Hlc, Input, Key, Knowledge, MemberStatus, Namespace,
    NodeId, NodeInfo, Payload, PeerKnowledge, ReplicatedState, StateKey, Version,
};

/// Keys in the large state and delta.
const KEYS: u64 = 10_000;
/// Origins the writes are spread over.
const ORIGINS: u64 = 4;
/// Bytes per config value.
const VALUE_LEN: usize = 64;
/// Base wall-clock time of every stamp (any fixed value works).
const T0_MS: u64 = 1_700_000_000_000;

/// The `i`-th write: key `svc/<i>/url` in `prod`, a 64-byte value, from
/// origin `i % ORIGINS + 1` with that origin's next sequence number.
fn version(i: u64) -> (StateKey, Version) {
    let key = StateKey::Kv {
        namespace: Namespace::new("prod").expect("valid namespace"),
        key: Key::new(format!("svc/{i:05}/url")).expect("valid key"),
    };
    let dot = Dot {
        node: NodeId::from_index(i % ORIGINS + 1),
        seq: i / ORIGINS + 1,
    };
    let mut ctx = Context::default();
    ctx.add(dot);
    let mut value = format!("postgres://db-{i}.example.internal:5432/app").into_bytes();
    value.resize(VALUE_LEN, b'.');
    let payload = Payload::Value(value);
    let checksum = payload.checksum();
    let version = Version {
        dot,
        ctx,
        hlc: Hlc {
            wall_ms: T0_MS + i,
            logical: 0,
        },
        payload,
        checksum,
        signature: None,
    };
    (key, version)
}

fn versions(range: std::ops::Range<u64>) -> Vec<(StateKey, Version)> {
    range.map(version).collect()
}

fn state_of(vs: &[(StateKey, Version)]) -> ReplicatedState {
    let mut s = ReplicatedState::new(16);
    for (k, v) in vs {
        s.merge(k.clone(), v.clone());
    }
    s
}

fn heartbeat() -> Message {
    let mut tags = BTreeMap::new();
    tags.insert("role".to_string(), "edge".to_string());
    tags.insert("region".to_string(), "eu-west".to_string());
    tags.insert("env".to_string(), "prod".to_string());
    Message::Heartbeat(Heartbeat {
        seq: 12_345,
        node: NodeId::from_index(7),
        incarnation: 3,
        status: MemberStatus::Alive,
        // An announcing heartbeat (the larger kind).
        info: Some((
            NodeInfo {
                name: "edge-node-07".to_string(),
                addrs: vec![
                    "/ip4/10.0.3.17/tcp/7946".to_string(),
                    "/ip4/192.168.1.17/tcp/7946".to_string(),
                ],
                tags,
            }
            .into(),
            Signature([7; SIGNATURE_LEN]),
        )),
        hlc: Hlc {
            wall_ms: T0_MS,
            logical: 2,
        },
        digest: Digest {
            hash: 0x1234_5678_9abc_def0,
            keys: KEYS,
        },
        members_hash: 0x0fed_cba9_8765_4321,
        interval_ms: 1_000,
        high_seq: 0,
    })
}

fn bench_merge(c: &mut Criterion) {
    let all = versions(0..KEYS);
    let half = state_of(&all[..(KEYS / 2) as usize]);
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(KEYS));
    g.bench_function("10k_key_delta_into_empty", |b| {
        b.iter_batched(
            || (ReplicatedState::new(16), all.clone()),
            |(mut s, delta)| {
                for (k, v) in delta {
                    black_box(s.merge(k, v));
                }
                s
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("10k_key_delta_into_half_full", |b| {
        b.iter_batched(
            || (half.clone(), all.clone()),
            |(mut s, delta)| {
                for (k, v) in delta {
                    black_box(s.merge(k, v));
                }
                s
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_wire(c: &mut Criterion) {
    let cluster = wire::cluster_id("bench");
    let limit = 256 << 20;
    let delta = Message::Delta(Delta {
        versions: versions(0..KEYS),
        members: Vec::new(),
    });
    let hb = heartbeat();
    for (name, msg) in [("delta_10k_versions", &delta), ("heartbeat", &hb)] {
        let bytes = wire::encode(msg, cluster);
        assert_eq!(&wire::decode(&bytes, cluster, limit).expect("round trip"), msg);
        let mut g = c.benchmark_group(format!("wire/{name}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("encode", |b| b.iter(|| wire::encode(black_box(msg), cluster)));
        g.bench_function("decode", |b| {
            b.iter(|| wire::decode(black_box(&bytes), cluster, limit).expect("valid message"))
        });
        g.finish();
    }
}

fn bench_anti_entropy(c: &mut Criterion) {
    let all = versions(0..KEYS);
    let state = state_of(&all);
    // A peer that has seen everything but every hundredth write: 1% missing.
    let mut theirs: Knowledge = state.knowledge().clone();
    let mut missing = 0;
    for (_, v) in all.iter().step_by(100) {
        theirs.remove(&v.dot);
        missing += 1;
    }
    // What the engine does with a sync request: judge the peer's knowledge
    // summary (bucket hashes, plus the full ranges of the buckets that
    // differ, as a responder ships them) and walk the state for what the
    // peer lacks.
    let n = 256;
    let hashes = theirs.bucket_hashes(n);
    let ours = state.knowledge().bucket_hashes(n);
    let differing: Vec<bool> = hashes.iter().zip(&ours).map(|(a, b)| a != b).collect();
    let shipped: Vec<u16> = (0..n as u16).filter(|b| differing[*b as usize]).collect();
    let ranges = theirs.restricted(&differing);
    let peer = PeerKnowledge::new(state.knowledge(), &hashes, &shipped, ranges.clone())
        .expect("well-formed summary");
    let (delta, complete) = state.missing_for(&peer, usize::MAX);
    assert!(
        complete && delta.len() == missing,
        "the walk returns exactly the 1% missing"
    );

    let mut g = c.benchmark_group("anti_entropy");
    g.bench_function("digest_10k_keys", |b| b.iter(|| black_box(&state).digest()));
    g.throughput(Throughput::Elements(KEYS));
    g.bench_function("missing_for_10k_keys_1pct_missing", |b| {
        b.iter(|| {
            let peer = PeerKnowledge::new(state.knowledge(), &hashes, &shipped, ranges.clone())
                .expect("well-formed summary");
            black_box(&state).missing_for(black_box(&peer), usize::MAX)
        })
    });
    g.finish();
}

fn bench_engine(c: &mut Criterion) {
    let ns = Namespace::new("prod").expect("valid namespace");
    let keys: Vec<Key> = (0..1_000)
        .map(|i| Key::new(format!("app/{i:04}/flag")).expect("valid key"))
        .collect();
    // Real ed25519 keys: each write is signed, as in a node.
    let mut engine = Engine::new(
        Config::default(),
        Arc::new(Ed25519Keys::from_secret([1; 32])),
        NodeInfo::default(),
        T0_MS,
        1,
        None,
    )
    .expect("default config is valid");
    let mut now = T0_MS;
    let mut id = 0u64;
    let put = |engine: &mut Engine, key: &Key, now: u64, id: u64| {
        engine.handle(
            now,
            Input::Command {
                id,
                command: Command::Put {
                    namespace: ns.clone(),
                    key: key.clone(),
                    value: vec![b'x'; VALUE_LEN],
                    expect: None,
                },
            },
        )
    };
    // Warm state: every key written once.
    for key in &keys {
        id += 1;
        now += 1;
        put(&mut engine, key, now, id);
    }
    let mut g = c.benchmark_group("engine");
    g.bench_function("local_put_end_to_end", |b| {
        b.iter(|| {
            id += 1;
            now += 1;
            let key = &keys[(id % keys.len() as u64) as usize];
            let actions = put(&mut engine, key, now, id);
            debug_assert!(actions.len() >= 3, "persist, publish, reply");
            actions
        })
    });
    g.finish();
}

/// Versions received from peers, through the engine's gossip path: 1,000
/// versions from 4 origins, each signed by its origin, merged into a fresh
/// engine. With real ed25519 keys (as in a node) and with the simulator's
/// modelled keys (a keyed hash): the difference is what checking origin
/// signatures costs on the merge path.
fn bench_remote_merge(c: &mut Criterion) {
    const N: u64 = 1_000;
    let cluster = wire::cluster_id(&Config::default().cluster);
    // The first N writes, each re-authored by the keys of its origin
    // (`origin(index)`) and signed by them.
    let delta_signed_by = |origin: &dyn Fn(u64) -> Arc<dyn Keys>| {
        let versions: Vec<(StateKey, Version)> = (0..N)
            .map(|i| {
                let (key, mut v) = version(i);
                let keys = origin(i % ORIGINS + 1);
                v.dot.node = keys.id();
                v.hlc.wall_ms = T0_MS;
                let mut ctx = Context::default();
                ctx.add(v.dot);
                v.ctx = ctx;
                let claim = version_claim(&key, &v.dot, &v.ctx, &v.hlc, &v.payload, v.checksum);
                v.signature = Some(keys.sign(&claim).0.to_vec());
                (key, v)
            })
            .collect();
        wire::encode(
            &Message::Delta(Delta {
                versions,
                members: Vec::new(),
            }),
            cluster,
        )
    };
    let ed_delta = delta_signed_by(&|o| Arc::new(Ed25519Keys::from_secret([o as u8; 32])) as Arc<dyn Keys>);
    let modelled =
        delta_signed_by(&|o| Arc::new(SimulatedKeys::new(NodeId::from_index(o), 9)) as Arc<dyn Keys>);
    let mut g = c.benchmark_group("remote_merge");
    g.throughput(Throughput::Elements(N));
    let me = NodeId::from_index(99);
    let receiver = |keys: Arc<dyn Keys>| {
        Engine::new(Config::default(), keys, NodeInfo::default(), T0_MS, 1, None).expect("valid")
    };
    g.bench_function("1k_signed_versions_ed25519", |b| {
        b.iter_batched(
            || receiver(Arc::new(Ed25519Keys::from_secret([99; 32]))),
            |mut e| {
                let out = e.handle_gossip(T0_MS, NodeId::from_index(1), &ed_delta);
                assert_eq!(e.counters().merged, N, "every version verified and merged");
                out
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("1k_signed_versions_modelled", |b| {
        b.iter_batched(
            || receiver(Arc::new(SimulatedKeys::new(me, 9))),
            |mut e| {
                let out = e.handle_gossip(T0_MS, NodeId::from_index(1), &modelled);
                assert_eq!(e.counters().merged, N, "every version verified and merged");
                out
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_merge, bench_wire, bench_anti_entropy, bench_engine, bench_remote_merge
}
criterion_main!(benches);
