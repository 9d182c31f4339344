//! The driver contract in code: a [`Runtime`] executes what the engine
//! decides, and [`Engine::drive`] feeds it one input's actions in the order
//! the contract demands.
//!
//! The contract, executed here once for every driver (the libp2p node, the
//! simulator and the in-memory test network):
//! * a [`PersistBatch`] comes first whenever state changed, and nothing after
//!   it runs until it is durable;
//! * if it cannot be made durable, every action after it is skipped (handed
//!   to [`Runtime::skipped`] so the driver can release what it holds for
//!   it) and the engine is fed [`Input::PersistFailed`], which undoes the
//!   batch, fails its commands and persists the restored state — driven
//!   through the same runtime;
//! * a request the runtime refuses at once ([`Runtime::send_request`]
//!   returning an error) is reported back as [`Input::RequestFailed`] before
//!   the next action runs;
//! * after draining, the driver sleeps at most until
//!   [`Engine::poll_timeout`] and then drives [`Input::Tick`].
//!
//! [`Engine::handle`] stays as the low-level API returning the actions as a
//! vector, for tests that inspect them.

use super::engine::{Action, CommandError, CommandOutput, Engine, Input, Topic};
use super::ids::NodeId;
use super::persist::PersistBatch;
use super::watch::WatchEvent;

/// A request the runtime could not even send (no route, peer blocked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestRefused;

/// What a driver provides to execute the engine's actions. Every method but
/// [`Runtime::persist`] and [`Runtime::send_request`] is infallible from the
/// engine's point of view: delivery is best effort and anti-entropy repairs
/// what is lost.
pub trait Runtime {
    /// Make `batch` durable before returning. `Err(reason)` means it is not:
    /// the engine undoes the batch and fails its commands with `reason`.
    fn persist(&mut self, batch: PersistBatch) -> Result<(), String>;
    /// Publish on a gossip topic.
    fn publish(&mut self, topic: Topic, bytes: Vec<u8>);
    /// Send a point-to-point request; its answer comes back as
    /// [`Input::Response`] or [`Input::RequestFailed`] with the same `id`.
    /// Return `Err` to fail it at once.
    fn send_request(&mut self, to: NodeId, id: u64, bytes: Vec<u8>) -> Result<(), RequestRefused>;
    /// Answer the [`Input::Request`] with this `id`.
    fn respond(&mut self, id: u64, bytes: Vec<u8>);
    /// Tell watchers.
    fn notify(&mut self, event: WatchEvent);
    /// Answer the [`Input::Command`] with this `id`.
    fn reply(&mut self, id: u64, result: Result<CommandOutput, CommandError>);
    /// An action skipped because the persist before it failed. The default
    /// drops it; a driver holding a reply channel for a skipped
    /// [`Action::Respond`] releases it here.
    fn skipped(&mut self, action: Action) {
        let _ = action;
    }
}

impl Engine {
    /// Feed one input and execute every action it causes through `rt`,
    /// following the driver contract (see [`Runtime`]).
    pub fn drive<R: Runtime + ?Sized>(&mut self, now_ms: u64, input: Input, rt: &mut R) {
        let actions = self.handle(now_ms, input);
        self.execute(now_ms, actions, rt);
    }

    /// [`Engine::drive`] for a gossip message whose bytes the driver shares
    /// between several engines (see [`Engine::handle_gossip`]).
    pub fn drive_gossip<R: Runtime + ?Sized>(&mut self, now_ms: u64, from: NodeId, bytes: &[u8], rt: &mut R) {
        let actions = self.handle_gossip(now_ms, from, bytes);
        self.execute(now_ms, actions, rt);
    }

    /// [`Engine::drive_gossip`] with the message's decoding shared by the
    /// engines it is delivered to (see [`Engine::handle_gossip_shared`]).
    pub fn drive_gossip_shared<R: Runtime + ?Sized>(
        &mut self,
        now_ms: u64,
        from: NodeId,
        bytes: &[u8],
        shared: &crate::core::wire::SharedDecode,
        rt: &mut R,
    ) {
        let actions = self.handle_gossip_shared(now_ms, from, bytes, Some(shared));
        self.execute(now_ms, actions, rt);
    }

    /// Execute actions that [`Engine::handle`] returned, in order.
    pub fn execute<R: Runtime + ?Sized>(&mut self, now_ms: u64, actions: Vec<Action>, rt: &mut R) {
        let mut iter = actions.into_iter().enumerate();
        while let Some((k, action)) = iter.next() {
            match action {
                Action::Persist(batch) => {
                    debug_assert_eq!(k, 0, "driver contract: a Persist comes before every other action");
                    let id = batch.id;
                    if let Err(reason) = rt.persist(batch) {
                        for (_, skipped) in iter {
                            rt.skipped(skipped);
                        }
                        // The undo persists the restored state itself.
                        self.drive(now_ms, Input::PersistFailed { batch: id, reason }, rt);
                        return;
                    }
                }
                Action::Publish { topic, bytes } => rt.publish(topic, bytes),
                Action::SendRequest { to, id, bytes } => {
                    if rt.send_request(to, id, bytes).is_err() {
                        self.drive(now_ms, Input::RequestFailed { id }, rt);
                    }
                }
                Action::Respond { id, bytes } => rt.respond(id, bytes),
                Action::Notify(event) => rt.notify(event),
                Action::Reply { id, result } => rt.reply(id, result),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Config, Key, Namespace, NodeInfo, StateKey};

    /// Records what it is asked to do; fails the first persist when told.
    #[derive(Default)]
    struct Recorder {
        fail_next_persist: bool,
        calls: Vec<&'static str>,
        replies: Vec<Result<CommandOutput, CommandError>>,
        skipped: usize,
        /// Every batch asked for, and whether it was made durable.
        batches: Vec<(PersistBatch, bool)>,
    }

    impl Runtime for Recorder {
        fn persist(&mut self, batch: PersistBatch) -> Result<(), String> {
            self.calls.push("persist");
            let fail = std::mem::take(&mut self.fail_next_persist);
            self.batches.push((batch, !fail));
            if fail {
                return Err("disk full".into());
            }
            Ok(())
        }
        fn publish(&mut self, _topic: Topic, _bytes: Vec<u8>) {
            self.calls.push("publish");
        }
        fn send_request(&mut self, _to: NodeId, _id: u64, _bytes: Vec<u8>) -> Result<(), RequestRefused> {
            self.calls.push("send");
            Err(RequestRefused)
        }
        fn respond(&mut self, _id: u64, _bytes: Vec<u8>) {
            self.calls.push("respond");
        }
        fn notify(&mut self, _event: WatchEvent) {
            self.calls.push("notify");
        }
        fn reply(&mut self, _id: u64, result: Result<CommandOutput, CommandError>) {
            self.calls.push("reply");
            self.replies.push(result);
        }
        fn skipped(&mut self, _action: Action) {
            self.skipped += 1;
        }
    }

    fn engine() -> Engine {
        engine_of(1)
    }

    fn engine_of(index: u64) -> Engine {
        let info = NodeInfo {
            name: "a".into(),
            ..NodeInfo::default()
        };
        Engine::new(
            Config::default(),
            crate::core::crypto::test_keys(NodeId::from_index(index)),
            info,
            1_000,
            7,
            None,
        )
        .expect("default config is valid")
    }

    fn put(value: &str) -> Input {
        Input::Command {
            id: 9,
            command: crate::core::Command::Put {
                namespace: Namespace::new("app").expect("valid namespace"),
                key: Key::new("k").expect("valid key"),
                value: value.as_bytes().to_vec(),
                expect: None,
            },
        }
    }

    #[test]
    fn a_write_is_persisted_before_it_is_published_and_acknowledged() {
        let mut e = engine();
        let mut rt = Recorder::default();
        e.drive(1_000, put("v"), &mut rt);
        assert_eq!(rt.calls.first(), Some(&"persist"));
        assert!(rt.calls.contains(&"publish"));
        assert!(matches!(rt.replies.as_slice(), [Ok(_)]));
        assert!(e
            .kv_get(&Namespace::new("app").unwrap(), &Key::new("k").unwrap())
            .is_some());
    }

    #[test]
    fn a_failed_persist_skips_the_rest_undoes_the_write_and_fails_the_command() {
        let mut e = engine();
        let mut rt = Recorder {
            fail_next_persist: true,
            ..Recorder::default()
        };
        e.drive(1_000, put("v"), &mut rt);
        assert!(
            rt.skipped > 0,
            "the publish and the reply after the failed persist are skipped"
        );
        assert!(!rt.calls.contains(&"publish"), "nothing unpersisted is published");
        assert!(
            matches!(rt.replies.as_slice(), [Err(CommandError::NotDurable(r))] if r == "disk full"),
            "the command fails with the runtime's reason: {:?}",
            rt.replies
        );
        assert!(e
            .kv_get(&Namespace::new("app").unwrap(), &Key::new("k").unwrap())
            .is_none());
    }

    /// What the review found: only local writes were undone, so versions
    /// merged from a peer in a failed batch stayed in memory and never
    /// reached the disk, while a later batch could store the origin's
    /// knowledge without them (lost at the next restart). Now the next
    /// batch writes them again.
    #[test]
    fn versions_merged_from_a_peer_in_a_failed_batch_are_written_with_the_next_one() {
        let mut b = engine_of(2);
        let delta = b
            .handle(1_000, put("theirs"))
            .into_iter()
            .find_map(|a| match a {
                Action::Publish { bytes, .. } => Some(bytes),
                _ => None,
            })
            .expect("b publishes its write");
        let mut a = engine();
        let mut rt = Recorder {
            fail_next_persist: true,
            ..Recorder::default()
        };
        a.drive_gossip(1_001, b.node_id(), &delta, &mut rt);
        let key = StateKey::Kv {
            namespace: Namespace::new("app").unwrap(),
            key: Key::new("k").unwrap(),
        };
        assert!(
            matches!(rt.batches.as_slice(), [(first, false)] if first.keys.iter().any(|(k, _)| *k == key))
        );
        assert!(a.state().get(&key).is_some(), "the merged version is still held");
        // The next input's batch carries it (and b's knowledge) again.
        a.drive(1_002, Input::Tick, &mut rt);
        let (retry, durable) = rt.batches.last().expect("a batch after the failure");
        assert!(*durable);
        assert!(
            retry
                .keys
                .iter()
                .any(|(k, ks)| *k == key && ks.as_ref().is_some_and(|ks| !ks.live.is_empty())),
            "the key is written with its version: {retry:?}"
        );
        assert!(retry.knowledge.iter().any(|(n, _)| *n == b.node_id()));
    }
}
