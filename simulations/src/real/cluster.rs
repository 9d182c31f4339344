//! Node lives: starting a slot's node on loopback (with
//! [`starling::node::testing`]), crashes, restarts and joins.

use futures::StreamExt;
use starling::node::testing::{launch, loopback_config, ScratchDir};
use starling::node::{WatchFilter, WatchItem};

#[allow(clippy::wildcard_imports)]
use super::*;

/// Forward every change a node reports to the tracker.
pub(super) async fn subscribe(h: &NodeHandle, slot: usize, tx: &mpsc::UnboundedSender<(usize, TrackedKey)>) {
    let filters = [
        WatchFilter::Kv {
            namespace: ns_kv(),
            prefix: String::new(),
        },
        WatchFilter::Services {
            namespace: ns_svc(),
            service: Some(api()),
        },
    ];
    for filter in filters {
        let Ok(mut stream) = h.watch(filter, None).await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let key = match item {
                    Ok(WatchItem::Kv { key, .. }) => TrackedKey::Kv(key.to_string()),
                    Ok(WatchItem::Service { instance, .. }) => TrackedKey::Instance(instance.to_string()),
                    Ok(_) => continue,
                    Err(_) => break,
                };
                if tx.send((slot, key)).is_err() {
                    break;
                }
            }
        });
    }
}

pub(super) async fn stop_all(handles: Vec<NodeHandle>) {
    futures::future::join_all(handles.into_iter().map(|h| async move {
        let _ = h.stop_without_leave().await;
    }))
    .await;
}

impl Harness {
    pub(super) fn bootstrap_for(&self, n: usize) -> Vec<String> {
        let g = self.lock();
        let seeds = self.sc.cluster.seeds.max(1);
        let mut reachable: Vec<usize> = (0..g.slots.len())
            .filter(|&j| j != n && g.up(j) && !g.blocked(n, j) && g.slots[j].addr.is_some())
            .collect();
        if self.sc.cluster.bootstrap == "seeds" {
            let s: Vec<usize> = reachable.iter().copied().filter(|&j| j < seeds).collect();
            if !s.is_empty() {
                reachable = s;
            }
        }
        reachable
            .iter()
            .take(3)
            .filter_map(|&j| g.slots[j].addr.clone())
            .collect()
    }

    pub(super) async fn crash(self: &Arc<Self>, n: usize) {
        let Some((h, _)) = self.lock().handle(n) else {
            return;
        };
        let t = self.now_ms();
        {
            let mut g = self.lock();
            let s = &mut g.slots[n];
            s.state = SlotState::Down;
            s.handle = None;
            s.down_since_ms = t;
            let peer = s.peer.clone();
            g.crashes.push(CrashEp {
                slot: n,
                peer,
                down_ms: t,
                up_ms: None,
                dead_at: BTreeMap::new(),
            });
        }
        let _ = h.stop_without_leave().await;
        self.event("crash", serde_json::json!({"node": n}));
    }

    /// Start slot `n` (first start, restart, or restart on a blank disk).
    pub(super) async fn start_slot(self: &Arc<Self>, n: usize, blank: bool) -> Result<(), String> {
        let boot = self.bootstrap_for(n);
        let dir = if blank || self.lock().slots[n].dir.is_none() {
            ScratchDir::new().map_err(|e| format!("temp dir: {e}"))?
        } else {
            self.lock().slots[n].dir.take().expect("checked")
        };
        let started = launch(loopback_config(
            dir.path(),
            &format!("n{n}"),
            self.cfg.clone(),
            boot,
        ))
        .await
        .map_err(|e| e.to_string());
        let (h, addr) = match started {
            Ok(x) => x,
            Err(e) => {
                self.lock().slots[n].dir = Some(dir);
                return Err(e);
            }
        };
        subscribe(&h, n, &self.track_tx).await;
        let t = self.now_ms();
        {
            let mut g = self.lock();
            let s = &mut g.slots[n];
            if let Some(old) = s.id.filter(|id| *id != h.node_id()) {
                let (peer, down) = (s.peer.clone(), s.down_since_ms);
                s.old.push((old, peer, down));
            }
            s.state = SlotState::Up;
            s.id = Some(h.node_id());
            s.peer = h.peer_id();
            s.addr = Some(addr);
            s.handle = Some(h);
            s.dir = Some(dir);
            s.life += 1;
            let peer = s.peer.clone();
            for ep in g.crashes.iter_mut() {
                if ep.slot == n && ep.up_ms.is_none() && ep.peer == peer {
                    ep.up_ms = Some(t);
                }
            }
        }
        self.apply_blocks().await;
        Ok(())
    }

    pub(super) async fn restart(self: &Arc<Self>, n: usize, lost: bool) {
        if self.lock().slots[n].state != SlotState::Down {
            return;
        }
        if lost {
            // Bring arrivals up to date, then: writes only this node held
            // are lost with its disk (explained by the fault).
            let others: Vec<usize> = (0..self.sc.slots()).filter(|&s| s != n).collect();
            self.sweep(Some(&others)).await;
            let mut g = self.lock();
            for w in &mut g.ledger.writes {
                if w.origin == n && w.arrivals.iter().enumerate().all(|(i, a)| i == n || a.is_none()) {
                    w.orphaned = true;
                }
                w.arrivals[n] = None;
            }
        }
        let started = self.start_slot(n, lost).await;
        // Suspicions of it are expected until it has been back a while.
        self.disturb(&[n], 0);
        match started {
            Ok(()) => self.event(
                "restart",
                serde_json::json!({"node": n, "state": if lost { "lost" } else { "kept" }}),
            ),
            Err(e) => self.event("restart-failed", serde_json::json!({"node": n, "error": e})),
        }
    }
}
