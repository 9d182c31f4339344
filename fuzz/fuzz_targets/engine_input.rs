//! Network input to an Engine: any bytes, delivered as gossip, as a request
//! and as the response to a sync the engine started, must never panic (bad
//! input is counted and dropped). A local write and a tick afterwards check
//! that whatever was accepted left the engine usable.
//!
//! Run: `cargo +nightly fuzz run engine_input` (see docs/FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::core::wire::{self, HEADER_LEN, MAGIC, PROTOCOL_VERSION};
use starling::core::{Action, Command, Config, Engine, Input, Key, Namespace, NodeId, NodeInfo};

/// Local time of the run; remote stamps near it pass the drift check.
const NOW_MS: u64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let cfg = Config::default();
    let cluster = wire::cluster_id(&cfg.cluster);
    let me = NodeId::from_index(1);
    let peer = NodeId::from_index(2);
    let mut engine =
        Engine::new(cfg, me, NodeInfo::default(), NOW_MS, 7, None).expect("default config is valid");
    let ns = Namespace::new("prod").expect("valid namespace");
    let key = Key::new("fuzz/key").expect("valid key");
    let put = |id| Input::Command {
        id,
        command: Command::Put {
            namespace: ns.clone(),
            key: key.clone(),
            value: b"v".to_vec(),
            expect: None,
        },
    };
    engine.handle(NOW_MS, put(1));

    let mut inputs = vec![data.to_vec()];
    if let Some((&kind, body)) = data.split_first() {
        let mut framed = Vec::with_capacity(HEADER_LEN + body.len());
        framed.extend_from_slice(&MAGIC);
        framed.push(PROTOCOL_VERSION);
        framed.push(kind % 8);
        framed.extend_from_slice(&cluster.to_le_bytes());
        framed.extend_from_slice(body);
        inputs.push(framed);
    }
    let mut now = NOW_MS;
    for bytes in inputs {
        // Past the per-peer sync rate limit, so every round starts a sync.
        now += 2_000;
        // A connection starts a sync; its response will be the bytes.
        let sent = engine.handle(now, Input::PeerConnected(peer));
        let sync_id = sent.iter().find_map(|a| match a {
            Action::SendRequest { id, .. } => Some(*id),
            _ => None,
        });
        engine.handle(
            now,
            Input::Gossip {
                from: peer,
                bytes: bytes.clone(),
            },
        );
        engine.handle(
            now,
            Input::Request {
                from: peer,
                id: 1,
                bytes: bytes.clone(),
            },
        );
        if let Some(id) = sync_id {
            engine.handle(
                now,
                Input::Response {
                    from: peer,
                    id,
                    bytes,
                },
            );
        }
        engine.handle(now, Input::PeerDisconnected(peer));
    }
    engine.handle(now + 1, put(2));
    engine.handle(now + 60_000, Input::Tick);
});
