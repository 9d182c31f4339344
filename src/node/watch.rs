//! The watch hub: the node's open watchers, the fan-out of the engine's
//! [`WatchEvent`]s to them, and the drop of a watcher that falls behind.
//! Imports only the leaf `types`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::core::{Engine, SnapshotRequired, StateKey, WatchChange, WatchEvent};

use super::types::{MemberView, WatchError, WatchFilter, WatchItem};

/// Capacity of each watcher's queue; a watcher further behind is dropped.
pub(crate) const WATCH_QUEUE: usize = 1024;

/// A stream of [`WatchItem`]s; ends with an error item if the node dropped
/// the watcher.
pub struct WatchStream {
    rx: mpsc::Receiver<WatchItem>,
    closed: Arc<Mutex<Option<WatchError>>>,
    done: bool,
    /// The revision the watch started after.
    pub start_revision: u64,
}

impl futures::Stream for WatchStream {
    type Item = Result<WatchItem, WatchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(Ok(item))),
            Poll::Ready(None) => {
                self.done = true;
                let reason = self
                    .closed
                    .lock()
                    .expect("watch close lock is never poisoned")
                    .clone()
                    .unwrap_or(WatchError::Stopped);
                Poll::Ready(Some(Err(reason)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One open watcher: its filter and the sending end of its stream.
struct Watcher {
    filter: WatchFilter,
    tx: mpsc::Sender<WatchItem>,
    closed: Arc<Mutex<Option<WatchError>>>,
}

impl Watcher {
    /// Queue an item; a full queue drops the watcher (with the reason).
    /// False if the watcher is gone.
    fn deliver(&mut self, item: WatchItem, capacity: usize) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(WatchError::TooSlow(capacity));
                tracing::warn!("dropping a slow watcher");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn close(&self, reason: WatchError) {
        *self.closed.lock().expect("watch close lock is never poisoned") = Some(reason);
    }
}

/// The node's open watchers. Lives on the driver task; every method reads
/// the engine it is given, never holds it.
pub(crate) struct WatchHub {
    watchers: Vec<Watcher>,
    capacity: usize,
}

impl WatchHub {
    /// A hub whose watchers each queue at most `capacity` items.
    pub(crate) fn new(capacity: usize) -> Self {
        WatchHub {
            watchers: Vec::new(),
            capacity,
        }
    }

    /// Open a watcher for `filter`, first queueing the changes after `since`
    /// (or none: from the engine's current revision).
    pub(crate) fn subscribe(
        &mut self,
        engine: &Engine,
        filter: WatchFilter,
        since: Option<u64>,
    ) -> Result<WatchStream, SnapshotRequired> {
        let start = since.unwrap_or_else(|| engine.revision());
        let backlog = engine.watch_since(start)?;
        let (tx, rx) = mpsc::channel(self.capacity);
        let closed = Arc::new(Mutex::new(None));
        let mut w = Watcher {
            filter,
            tx,
            closed: closed.clone(),
        };
        let mut alive = true;
        for ev in backlog {
            if let Some(item) = item_for(engine, &w.filter, &ev) {
                if !w.deliver(item, self.capacity) {
                    alive = false;
                    break;
                }
            }
        }
        if alive {
            self.watchers.push(w);
        }
        Ok(WatchStream {
            rx,
            closed,
            done: false,
            start_revision: start,
        })
    }

    /// Hand `ev` to every watcher it matches, reading the values from
    /// `engine` now. Drops watchers that are gone or too far behind.
    pub(crate) fn notify(&mut self, engine: &Engine, ev: &WatchEvent) {
        let capacity = self.capacity;
        self.watchers
            .retain_mut(|w| match item_for(engine, &w.filter, ev) {
                Some(item) => w.deliver(item, capacity),
                None => !w.tx.is_closed(),
            });
    }

    /// Open watchers by kind (`kv`, `services`, `members`).
    pub(crate) fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for w in self.watchers.iter().filter(|w| !w.tx.is_closed()) {
            *counts.entry(w.filter.kind()).or_insert(0) += 1;
        }
        counts
    }

    /// End every watch with `reason`.
    pub(crate) fn close_all(&mut self, reason: WatchError) {
        for w in self.watchers.drain(..) {
            w.close(reason.clone());
        }
    }
}

/// What a watcher with `filter` is shown for `ev`, if anything.
fn item_for(engine: &Engine, filter: &WatchFilter, ev: &WatchEvent) -> Option<WatchItem> {
    match (&ev.change, filter) {
        (
            WatchChange::Key {
                key: StateKey::Kv { namespace, key },
                ..
            }
            | WatchChange::Key {
                key: StateKey::Canary { namespace, key },
                ..
            },
            WatchFilter::Kv {
                namespace: ns,
                prefix,
            },
        ) if namespace == ns
            && key.as_str().starts_with(prefix.as_str())
            && (matches!(
                ev.change,
                WatchChange::Key {
                    key: StateKey::Kv { .. },
                    ..
                }
            ) || engine.canary_affects_me(namespace, key)) =>
        {
            let entry = engine.kv_get(namespace, key);
            Some(WatchItem::Kv {
                revision: ev.revision,
                namespace: namespace.clone(),
                key: key.clone(),
                siblings: entry.as_ref().map_or(0, |e| e.siblings.len()),
                value: entry.as_ref().map(|e| e.value.clone()),
                version: entry.map(|e| e.version),
            })
        }
        (
            WatchChange::Key {
                key:
                    StateKey::Service {
                        namespace,
                        service,
                        instance,
                    },
                ..
            },
            WatchFilter::Services {
                namespace: ns,
                service: svc,
            },
        ) if namespace == ns && svc.as_ref().is_none_or(|s| s == service) => {
            let view = engine
                .services(namespace, service, &Default::default())
                .into_iter()
                .find(|v| &v.instance == instance);
            Some(WatchItem::Service {
                revision: ev.revision,
                namespace: namespace.clone(),
                service: service.clone(),
                instance: instance.clone(),
                view,
            })
        }
        (WatchChange::Member { node, .. }, WatchFilter::Members) => {
            engine.member(node).map(|m| WatchItem::Member {
                revision: ev.revision,
                member: MemberView::of(m),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::core::{Action, Command, Config, Input, Key, Namespace, NodeId, NodeInfo};

    fn engine() -> Engine {
        let info = NodeInfo {
            name: "a".into(),
            ..NodeInfo::default()
        };
        Engine::new(
            Config::default(),
            crate::core::crypto::test_keys(NodeId::from_index(1)),
            info,
            1_000,
            7,
            None,
        )
        .expect("default config is valid")
    }

    /// Put `key = value` in namespace `app`; the watch events it caused.
    fn put(e: &mut Engine, id: u64, key: &str, value: &str) -> Vec<WatchEvent> {
        let command = Command::Put {
            namespace: Namespace::new("app").unwrap(),
            key: Key::new(key).unwrap(),
            value: value.as_bytes().to_vec(),
            expect: None,
        };
        e.handle(1_000 + id, Input::Command { id, command })
            .into_iter()
            .filter_map(|a| match a {
                Action::Notify(ev) => Some(ev),
                _ => None,
            })
            .collect()
    }

    fn kv(prefix: &str) -> WatchFilter {
        WatchFilter::Kv {
            namespace: Namespace::new("app").unwrap(),
            prefix: prefix.into(),
        }
    }

    #[tokio::test]
    async fn a_watcher_gets_the_changes_its_filter_matches_and_only_those() {
        let mut e = engine();
        let mut hub = WatchHub::new(8);
        let mut cfg = hub.subscribe(&e, kv("cfg/"), None).unwrap();
        let mut members = hub.subscribe(&e, WatchFilter::Members, None).unwrap();
        assert_eq!(hub.counts(), BTreeMap::from([("kv", 1), ("members", 1)]));
        for (i, k) in ["cfg/a", "other/b"].into_iter().enumerate() {
            for ev in put(&mut e, i as u64 + 1, k, "v") {
                hub.notify(&e, &ev);
            }
        }
        hub.close_all(WatchError::Stopped);
        let Some(Ok(WatchItem::Kv { key, value, .. })) = cfg.next().await else {
            panic!("the cfg/ watcher sees cfg/a");
        };
        assert_eq!((key.as_str(), value.as_deref()), ("cfg/a", Some(&b"v"[..])));
        assert_eq!(
            cfg.next().await,
            Some(Err(WatchError::Stopped)),
            "and nothing else"
        );
        loop {
            match members.next().await {
                Some(Ok(item)) => assert!(matches!(item, WatchItem::Member { .. }), "{item:?}"),
                end => {
                    assert_eq!(end, Some(Err(WatchError::Stopped)));
                    break;
                }
            }
        }
        assert!(hub.counts().is_empty());
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_dropped_with_the_reason() {
        let mut e = engine();
        let mut hub = WatchHub::new(2);
        let mut slow = hub.subscribe(&e, kv(""), None).unwrap();
        for i in 1..=3 {
            for ev in put(&mut e, i, &format!("k{i}"), "v") {
                hub.notify(&e, &ev);
            }
        }
        assert!(hub.counts().is_empty(), "the slow watcher is gone from the hub");
        assert!(matches!(slow.next().await, Some(Ok(WatchItem::Kv { .. }))));
        assert!(matches!(slow.next().await, Some(Ok(WatchItem::Kv { .. }))));
        assert_eq!(slow.next().await, Some(Err(WatchError::TooSlow(2))));
        assert_eq!(slow.next().await, None);
    }

    #[tokio::test]
    async fn a_resumed_watch_replays_the_changes_after_its_revision() {
        let mut e = engine();
        put(&mut e, 1, "a", "1");
        let after_first = e.revision();
        put(&mut e, 2, "b", "2");
        let mut hub = WatchHub::new(8);
        let mut w = hub.subscribe(&e, kv(""), Some(after_first)).unwrap();
        assert_eq!(w.start_revision, after_first);
        let Some(Ok(WatchItem::Kv { key, .. })) = w.next().await else {
            panic!("the replayed change");
        };
        assert_eq!(key.as_str(), "b");
    }
}
