//! Criterion benchmarks of picking one instance of a service with 100
//! instances: the pure pick (eligibility + strategy, `core::pick`) for each
//! strategy and, with the `node` feature, `NodeHandle::pick` end to end
//! (a read on the node's task that copies the service's instances, then
//! the pick).
//!
//! Run with `cargo bench -p starling --bench pick`; results are recorded
//! in `docs/PERFORMANCE.md`. Inputs are built deterministically; the random
//! strategies draw from a seeded RNG.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use starling::core::{
    candidates, HealthStatus, Hlc, InstanceId, Namespace, NodeId, PickState, ServiceName, ServiceSpec,
    ServiceView, Strategy, VersionId, VersionInfo,
};

/// Instances of the service.
const INSTANCES: usize = 100;

/// Instance `i`: weight 1 + i % 100, zone `z{i % 3}`, every tenth one
/// warning (so the health filter has work to do).
fn spec(i: usize) -> ServiceSpec {
    ServiceSpec {
        address: format!("10.0.{}.{}", i / 250, i % 250),
        port: 8080,
        tags: ["v1".to_string()].into_iter().collect(),
        metadata: [("zone".to_string(), format!("z{}", i % 3))]
            .into_iter()
            .collect(),
        weight: u8::try_from(1 + i % 100).expect("weight fits"),
        ttl_ms: None,
    }
}

fn views() -> Vec<ServiceView> {
    (0..INSTANCES)
        .map(|i| {
            let health = if i % 10 == 9 {
                HealthStatus::Warning
            } else {
                HealthStatus::Passing
            };
            ServiceView {
                namespace: Namespace::new("prod").expect("valid namespace"),
                service: ServiceName::new("api").expect("valid service"),
                instance: InstanceId::new(format!("api-{i:03}")).expect("valid instance id"),
                spec: spec(i),
                owner: NodeId::from_index(1),
                reported_health: health,
                health,
                version: VersionInfo {
                    id: VersionId(i as u64),
                    hlc: Hlc {
                        wall_ms: 1_700_000_000_000,
                        logical: 0,
                    },
                    origin: NodeId::from_index(1),
                    seq: i as u64 + 1,
                    checksum: 0,
                    size: 0,
                    deleted: false,
                },
            }
        })
        .collect()
}

fn strategies() -> [(&'static str, Strategy); 4] {
    [
        ("random", Strategy::WeightedRandom),
        ("round_robin", Strategy::RoundRobin),
        ("least_outstanding", Strategy::LeastOutstanding),
        (
            "hash",
            Strategy::Hash {
                key: "user-4242".into(),
            },
        ),
    ]
}

fn bench_core_pick(c: &mut Criterion) {
    let vs = views();
    let tags = BTreeSet::new();
    let mut g = c.benchmark_group("pick_100");
    for (name, strategy) in strategies() {
        let mut state = PickState::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        g.bench_function(name, |b| {
            b.iter(|| {
                let cands = candidates(black_box(&vs), &tags, Some("z1")).expect("eligible instances");
                state
                    .pick(&cands.instances, &strategy, &mut rng)
                    .map(|v| v.spec.port)
            })
        });
    }
    g.finish();
}

#[cfg(feature = "node")]
fn bench_node_pick(c: &mut Criterion) {
    use starling::core::{PickOptions, ServiceQuery};
    use starling::node::{Node, NodeConfig};

    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = NodeConfig::default();
    config.data_dir = dir.path().to_path_buf();
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.mdns = false;
    config.http = None;
    let (ns, api) = (
        Namespace::new("prod").expect("valid namespace"),
        ServiceName::new("api").expect("valid service"),
    );
    let node = rt.block_on(async {
        let node = Node::start(config).await.expect("node starts");
        for i in 0..INSTANCES {
            let id = InstanceId::new(format!("api-{i:03}")).expect("valid instance id");
            node.register_service(&ns, &api, &id, spec(i))
                .await
                .expect("registered");
        }
        node
    });
    let mut g = c.benchmark_group("node_pick_100");
    // Baseline: the list read a pick starts with (node task round trip,
    // 100 instance views built and returned).
    g.bench_function("list_baseline", |b| {
        b.iter(|| {
            rt.block_on(node.services(&ns, &api, ServiceQuery::default()))
                .expect("node answers")
                .len()
        })
    });
    for (name, strategy) in strategies() {
        let options = PickOptions::new(strategy);
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(node.pick(&ns, &api, options.clone()))
                    .expect("node answers")
                    .map(|p| p.instance().spec.port)
            })
        });
    }
    g.finish();
    rt.block_on(node.shutdown()).expect("node stops");
}

#[cfg(not(feature = "node"))]
fn bench_node_pick(_: &mut Criterion) {}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_core_pick, bench_node_pick
}
criterion_main!(benches);
