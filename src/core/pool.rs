//! A pool of immutable decoded data that the engines of one process share.
//!
//! Every engine decodes what its peers send on its own, so engines that run
//! side by side in one process (the simulator runs thousands) each hold a
//! copy of the same member self-descriptions and versions: at a thousand
//! members that is a million equal copies of each. An engine given a [`SharedPool`] keeps, of every
//! self-description it stores, the pool's copy when an equal one is held by
//! any engine of the pool, and offers its own otherwise. Sharing is by
//! content only: what an engine decodes, checks (signatures included) and
//! decides is exactly what it would without the pool; only the memory
//! differs. A node runs one engine and needs no pool (without one, an
//! engine shares nothing).
//!
//! The pool holds weak references: it keeps nothing alive on its own, and
//! forgets what no engine holds any more.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

use super::dots::{Context, Dot};
use super::membership::NodeInfo;

/// Shared handle to a pool; clones share it (see the module docs).
#[derive(Clone, Default)]
pub struct SharedPool(Arc<Mutex<Pool>>);

#[derive(Default)]
struct Pool {
    infos: Table<NodeInfo>,
    contexts: Table<Vec<Dot>>,
}

/// Values held somewhere, by content hash.
struct Table<T> {
    held: HashMap<u64, Vec<Weak<T>>>,
    /// Entries added since the last sweep of dead ones.
    added: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            held: HashMap::new(),
            added: 0,
        }
    }
}

impl<T: Hash + Eq> Table<T> {
    /// The held copy of `value` if there is one, else `value`, now held.
    fn share(&mut self, value: Arc<T>) -> Arc<T> {
        let mut h = std::hash::DefaultHasher::new();
        value.hash(&mut h);
        let slot = self.held.entry(h.finish()).or_default();
        let mut i = 0;
        while i < slot.len() {
            match slot[i].upgrade() {
                Some(held) if *held == *value => return held,
                Some(_) => i += 1,
                None => {
                    slot.swap_remove(i);
                }
            }
        }
        slot.push(Arc::downgrade(&value));
        self.added += 1;
        if self.added > self.held.len().max(1024) {
            self.sweep();
        }
        value
    }

    /// Forget what nobody holds any more.
    fn sweep(&mut self) {
        self.held.retain(|_, slot| {
            slot.retain(|w| w.strong_count() > 0);
            !slot.is_empty()
        });
        self.added = 0;
    }

    #[cfg(test)]
    fn live(&self) -> usize {
        self.held
            .values()
            .flatten()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

impl SharedPool {
    /// An empty pool.
    pub fn new() -> Self {
        SharedPool::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        // A panic while holding the lock leaves the pool consistent (a
        // cache of weak references): keep using it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool's copy of `info` if it holds an equal one, else `info`,
    /// now in the pool.
    pub(crate) fn info(&self, info: Arc<NodeInfo>) -> Arc<NodeInfo> {
        self.lock().infos.share(info)
    }

    /// The pool's copy of `ctx` if it holds an equal one, else `ctx`, now
    /// in the pool. Contexts are copied on write, so sharing one is safe.
    pub(crate) fn context(&self, ctx: Context) -> Context {
        Context::from_shared(self.lock().contexts.share(ctx.into_shared()))
    }

    /// Self-descriptions held by the pool (for tests).
    #[cfg(test)]
    fn infos_held(&self) -> usize {
        self.lock().infos.live()
    }
}

impl fmt::Debug for SharedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPool").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> Arc<NodeInfo> {
        Arc::new(NodeInfo {
            name: name.to_string(),
            addrs: vec![format!("/sim/{name}")],
            tags: [("region".to_string(), "a".to_string())].into_iter().collect(),
        })
    }

    #[test]
    fn equal_self_descriptions_are_kept_once_and_different_ones_apart() {
        let pool = SharedPool::new();
        let a = pool.info(info("a"));
        let again = pool.info(info("a"));
        let b = pool.info(info("b"));
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(*b, *info("b"));
        assert_eq!(pool.infos_held(), 2);
    }

    #[test]
    fn equal_contexts_are_kept_once_and_stay_copy_on_write() {
        let pool = SharedPool::new();
        let dot = |n: u64, seq: u64| Dot {
            node: crate::core::ids::NodeId::from_index(n),
            seq,
        };
        let mut a = Context::default();
        a.add(dot(1, 3));
        a.add(dot(2, 5));
        let mut b = Context::default();
        b.add(dot(2, 5));
        b.add(dot(1, 3));
        let a = pool.context(a);
        let mut b = pool.context(b);
        assert_eq!(a, b);
        b.add(dot(1, 4));
        assert!(a.covers(&dot(1, 3)) && !a.covers(&dot(1, 4)));
        assert!(b.covers(&dot(1, 4)));
    }

    #[test]
    fn the_pool_keeps_nothing_alive_on_its_own() {
        let pool = SharedPool::new();
        let a = pool.info(info("a"));
        drop(a);
        assert_eq!(pool.infos_held(), 0);
        let fresh = info("a");
        assert!(Arc::ptr_eq(&pool.info(fresh.clone()), &fresh));
    }
}
