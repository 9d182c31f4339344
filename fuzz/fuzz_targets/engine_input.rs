//! Network input to an Engine: any bytes, delivered in one of the roles the
//! network can hand them over in — as gossip, as a request, as the response
//! to a sync the engine has just started (where a `SyncResponse` is
//! expected) or as the response to the push of a sync in its second half
//! (where a `SyncAck` is expected) — must never panic, and the delivery
//! must show in the engine's counters (bad input is counted and dropped).
//! A local write and a tick afterwards check that whatever was accepted
//! left the engine usable.
//!
//! The roles are those of `starling::core::testing::Feeder` (which
//! `tests/wire_fuzz_smoke.rs` uses, delivering every input in all four
//! roles, twice). This target is the cheap form of the same thing, so
//! libFuzzer reaches tens of millions of executions on a small machine:
//!
//! - the first input byte picks the role (bits 0–1) and whether the rest
//!   goes as it is or behind a valid header whose kind is bits 4–6
//!   (bit 2), so one execution makes one delivery, not eight;
//! - every execution starts from a fresh engine at the same time, so the
//!   engine's own sync request is the same each time, and the real peer's
//!   answer to it (the push role) and the peer's own sync request (the
//!   request role) are computed once and replayed. The target checks on
//!   every execution that the engine's request still equals the one the
//!   cached answer was made for, so the replay cannot silently go stale.
//!
//! Nothing carries over from one execution to the next except those
//! cached peer messages, which never depend on the input: a crash input
//! replays alone.
//!
//! Run: `cargo +nightly fuzz run engine_input` (see docs/FUZZING.md).
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use starling::core::testing::{keys_of, put};
use starling::core::wire::{self, HEADER_LEN, MAGIC, PROTOCOL_VERSION};
use starling::core::{Action, Config, Counters, Engine, Input, NodeId, NodeInfo};

/// Local time of the run; remote stamps near it pass the drift check.
const NOW_MS: u64 = 1_700_000_000_000;
/// The engine under test.
const ME: u64 = 1;
/// A real peer with a write the engine lacks.
const PEER: u64 = 2;
/// A peer that is only a name (it never answers for itself).
const STRANGER: u64 = 3;

/// Messages from the real peer, the same for every execution.
struct PeerScript {
    /// The engine's sync request to the peer, as the peer answered it.
    engine_request: Vec<u8>,
    /// The peer's `SyncResponse` to that request.
    response: Vec<u8>,
    /// The peer's own `SyncRequest` to the engine.
    peer_request: Vec<u8>,
}

fn engine(i: u64, seed: u64, key: &str) -> Engine {
    let mut e = Engine::new(
        Config::default(),
        keys_of(NodeId::from_index(i)),
        NodeInfo::default(),
        NOW_MS,
        seed,
        None,
    )
    .expect("default config is valid");
    let reply = e.handle(
        NOW_MS,
        Input::Command {
            id: 1,
            command: put("prod", key, "v"),
        },
    );
    assert!(reply
        .iter()
        .any(|a| matches!(a, Action::Reply { result: Ok(_), .. })));
    e
}

/// The engine under test, fresh: node 1 with one local write.
fn fresh() -> Engine {
    engine(ME, 7, "db/url")
}

/// The first request in `acts`.
fn first_request(acts: &[Action]) -> Option<(u64, Vec<u8>)> {
    acts.iter().find_map(|a| match a {
        Action::SendRequest { id, bytes, .. } => Some((*id, bytes.clone())),
        _ => None,
    })
}

fn script() -> &'static PeerScript {
    static SCRIPT: OnceLock<PeerScript> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        let now = sync_time();
        let mut me = fresh();
        let mut peer = engine(PEER, 8, "peer/key");
        let (_, engine_request) = first_request(&me.handle(now, Input::PeerConnected(node(PEER))))
            .expect("the engine starts a sync with a new peer");
        let response = peer
            .handle(
                now,
                Input::Request {
                    from: node(ME),
                    id: 1,
                    bytes: engine_request.clone(),
                },
            )
            .into_iter()
            .find_map(|a| match a {
                Action::Respond { bytes, .. } => Some(bytes),
                _ => None,
            })
            .expect("the peer answers a sync request");
        let mut peer = engine(PEER, 8, "peer/key");
        let (_, peer_request) = first_request(&peer.handle(now, Input::PeerConnected(node(ME))))
            .expect("the peer starts a sync with a new peer");
        PeerScript {
            engine_request,
            response,
            peer_request,
        }
    })
}

fn node(i: u64) -> NodeId {
    NodeId::from_index(i)
}

/// When the deliveries happen: past the per-peer sync rate limit.
fn sync_time() -> u64 {
    NOW_MS + Config::default().sync_min_interval_ms + 1_000
}

fn total<K>(map: &BTreeMap<K, u64>) -> u64 {
    map.values().sum()
}

fn named<K: AsStr>(map: &BTreeMap<K, u64>, name: &str) -> u64 {
    map.iter()
        .filter(|(k, _)| k.name() == name)
        .map(|(_, n)| *n)
        .sum()
}

/// The counter keys' names.
trait AsStr {
    fn name(&self) -> &str;
}
impl AsStr for String {
    fn name(&self) -> &str {
        self
    }
}
impl AsStr for starling::core::RejectReason {
    fn name(&self) -> &str {
        self.as_str()
    }
}

/// Hands `bytes` to `e` as `input` and checks the accounting: one message
/// in (by the envelope's kind) and its bytes, and for bytes the decoder
/// rejects, exactly one rejection under the decoder's reason.
fn deliver(e: &mut Engine, now: u64, input: Input, bytes: &[u8]) {
    let cfg = e.config();
    let decoded =
        wire::decode(bytes, wire::cluster_id(&cfg.cluster), cfg.max_message_bytes).map(|m| m.kind());
    let kind = wire::peek_kind(bytes).map_or("unknown", |k| k.as_str());
    let before: Counters = e.counters().clone();
    e.handle(now, input);
    let after = e.counters();
    assert_eq!(
        total(&after.messages_in),
        total(&before.messages_in) + 1,
        "one message in"
    );
    assert_eq!(
        named(&after.messages_in, kind),
        named(&before.messages_in, kind) + 1,
        "counted as {kind}"
    );
    assert_eq!(
        total(&after.bytes_in),
        total(&before.bytes_in) + bytes.len() as u64,
        "its bytes counted"
    );
    if let Err(err) = decoded {
        assert_eq!(
            named(&after.rejected, err.reason()),
            named(&before.rejected, err.reason()) + 1,
            "rejected as {}",
            err.reason()
        );
        assert_eq!(
            total(&after.rejected),
            total(&before.rejected) + 1,
            "rejected once"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let script = script();
    let mut e = fresh();
    let cluster = wire::cluster_id(&e.config().cluster);
    let bytes = if control & 0b100 != 0 {
        let mut framed = Vec::with_capacity(HEADER_LEN + rest.len());
        framed.extend_from_slice(&MAGIC);
        framed.push(PROTOCOL_VERSION);
        framed.push((control >> 4) & 0b111);
        framed.extend_from_slice(&cluster.to_le_bytes());
        framed.extend_from_slice(rest);
        framed
    } else {
        rest.to_vec()
    };
    let now = sync_time();
    let (peer, stranger) = (node(PEER), node(STRANGER));
    match control & 0b11 {
        // Gossip: a `Heartbeat` or a `Delta` is expected.
        0 => {
            let input = Input::Gossip {
                from: peer,
                bytes: bytes.clone(),
            };
            deliver(&mut e, now, input, &bytes);
        }
        // A request inside a sync the peer opened (a push is taken only
        // as the second half of one): the peer's real request first.
        1 => {
            e.handle(
                now,
                Input::Request {
                    from: peer,
                    id: 0,
                    bytes: script.peer_request.clone(),
                },
            );
            let input = Input::Request {
                from: peer,
                id: 1,
                bytes: bytes.clone(),
            };
            deliver(&mut e, now, input, &bytes);
        }
        // The response to a sync the engine has just started.
        2 => {
            let (id, _) = first_request(&e.handle(now, Input::PeerConnected(stranger)))
                .expect("the engine starts a sync with a new peer");
            let input = Input::Response {
                from: stranger,
                id,
                bytes: bytes.clone(),
            };
            deliver(&mut e, now, input, &bytes);
        }
        // The response to the engine's push, after a real pull from the
        // peer (the peer's answer replayed).
        _ => {
            let (id, req) = first_request(&e.handle(now, Input::PeerConnected(peer)))
                .expect("the engine starts a sync with a new peer");
            assert_eq!(
                req, script.engine_request,
                "the cached peer answer is for this request"
            );
            let acts = e.handle(
                now,
                Input::Response {
                    from: peer,
                    id,
                    bytes: script.response.clone(),
                },
            );
            let (push, _) = first_request(&acts).expect("the engine pushes its half");
            let input = Input::Response {
                from: peer,
                id: push,
                bytes: bytes.clone(),
            };
            deliver(&mut e, now, input, &bytes);
        }
    }
    // Still usable: a local write is acknowledged and a tick runs.
    let acts = e.handle(
        now + 1,
        Input::Command {
            id: 99,
            command: put("prod", "after/fuzz", "ok"),
        },
    );
    assert!(
        acts.iter().any(|a| matches!(
            a,
            Action::Reply {
                id: 99,
                result: Ok(_)
            }
        )),
        "a local write after the input: {acts:?}"
    );
    e.handle(now + 60_001, Input::Tick);
});
