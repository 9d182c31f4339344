//! Following writes around the cluster: watch-driven reads, sweeps, the
//! membership and divergence sampler, and the convergence watch.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Harness {
    /// Read a tracked key on a node and mark the writes it shows.
    pub(super) async fn track(self: &Arc<Self>, slot: usize, key: TrackedKey) {
        loop {
            let got = self.lock().handle(slot);
            let Some((h, life)) = got else {
                self.lock().inflight.remove(&(slot, key.clone()));
                return;
            };
            let held = read_held(&h, &key).await;
            let t = self.now_ms();
            let mut g = self.lock();
            if let Ok(held) = held {
                if g.slots[slot].life == life {
                    let Inner { watchdog, ledger, .. } = &mut *g;
                    watchdog.on_read(t, slot, life, &key, &held, &ledger.issued_puts);
                    let idx: Vec<usize> = g.ledger.on_key(&key).to_vec();
                    for wi in idx {
                        if g.ledger.writes[wi].arrivals[slot].is_some() {
                            continue;
                        }
                        if g.ledger.accounted(wi, &held, t, self.tombstone_ttl_ms) {
                            let w = &mut g.ledger.writes[wi];
                            let after = t.saturating_sub(w.ack_ms);
                            w.arrived(slot, after);
                        }
                    }
                }
            }
            let again = g.inflight.get(&(slot, key.clone())).copied().unwrap_or(false);
            if again {
                g.inflight.insert((slot, key.clone()), false);
            } else {
                g.inflight.remove(&(slot, key.clone()));
                return;
            }
        }
    }

    /// Start a read of (slot, key) unless one is in flight (then it reads
    /// again when done).
    pub(super) fn schedule_track(self: &Arc<Self>, slot: usize, key: TrackedKey) {
        {
            let mut g = self.lock();
            let pending = g
                .ledger
                .on_key(&key)
                .iter()
                .any(|&wi| g.ledger.writes[wi].arrivals[slot].is_none());
            if !pending || !g.up(slot) {
                return;
            }
            if let Some(again) = g.inflight.get_mut(&(slot, key.clone())) {
                *again = true;
                return;
            }
            g.inflight.insert((slot, key.clone()), false);
        }
        let me = self.clone();
        tokio::spawn(async move { me.track(slot, key).await });
    }

    /// Read every pending (slot, key) pair now and wait for the answers.
    pub(super) async fn sweep(self: &Arc<Self>, only: Option<&[usize]>) {
        let pairs = self.lock().pending(only);
        futures::future::join_all(pairs.into_iter().map(|(s, k)| {
            let me = self.clone();
            async move {
                let Some((h, life)) = me.lock().handle(s) else {
                    return;
                };
                let Ok(held) = read_held(&h, &k).await else { return };
                let t = me.now_ms();
                let mut g = me.lock();
                if g.slots[s].life != life {
                    return;
                }
                for wi in g.ledger.on_key(&k).to_vec() {
                    if g.ledger.writes[wi].arrivals[s].is_none()
                        && g.ledger.accounted(wi, &held, t, me.tombstone_ttl_ms)
                    {
                        let w = &mut g.ledger.writes[wi];
                        let after = t.saturating_sub(w.ack_ms);
                        w.arrived(s, after);
                    }
                }
            }
        }))
        .await;
    }

    /// Feed watch notifications and a periodic sweep into reads.
    pub(super) async fn tracker(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<(usize, TrackedKey)>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                job = rx.recv() => {
                    let Some((s, k)) = job else { return };
                    self.schedule_track(s, k);
                }
                _ = tick.tick() => {
                    let pairs = self.lock().pending(None);
                    for (s, k) in pairs {
                        self.schedule_track(s, k);
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }

    /// Membership views (false suspicions and deaths, crash detection) and
    /// divergence samples.
    pub(super) async fn sampler(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let period = Duration::from_millis(self.real(self.sc.phases.sample_ms).clamp(100, 500));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let observers: Vec<(usize, NodeHandle)> = {
                let g = self.lock();
                g.core()
                    .into_iter()
                    .filter_map(|i| g.handle(i).map(|(h, _)| (i, h)))
                    .collect()
            };
            let views = futures::future::join_all(observers.iter().map(|(i, h)| async move {
                (
                    *i,
                    h.members().await.ok(),
                    h.status().await.ok().map(|s| s.digest),
                )
            }))
            .await;
            let t = self.now_ms();
            let mut g = self.lock();
            let mut digests = BTreeSet::new();
            for (o, members, digest) in views {
                if let Some(d) = digest {
                    digests.insert(d);
                }
                let Some(members) = members else { continue };
                for m in members {
                    if m.node_id == g.slots[o].peer {
                        g.watchdog.on_self_view(t, o, m.status);
                        continue;
                    }
                    let subject = (0..g.slots.len()).find(|&j| g.slots[j].peer == m.node_id);
                    if matches!(m.status, MemberStatus::Suspect | MemberStatus::Dead) {
                        if let Some(j) = subject {
                            let healthy = g.up(j) && !g.paused.contains(&j) && t > g.disturbed_until[j];
                            if healthy {
                                let k = (m.node_id.clone(), m.incarnation);
                                if m.status == MemberStatus::Suspect {
                                    g.false_suspicions.insert(k);
                                } else {
                                    g.false_deaths.insert(k);
                                }
                            }
                        }
                    }
                    if m.status == MemberStatus::Dead {
                        if let Some(ep) = g
                            .crashes
                            .iter_mut()
                            .rev()
                            .find(|ep| ep.peer == m.node_id && ep.up_ms.is_none())
                        {
                            ep.dead_at.entry(o).or_insert(t);
                        }
                    }
                }
            }
            let core = g.core();
            let missing = g.missing(&core);
            let up = (0..g.slots.len()).filter(|&i| g.up(i)).count();
            g.samples.push((t, up, digests.len(), missing));
        }
    }

    /// From the convergence reference on: the first moment the running
    /// nodes hold one digest and every acknowledged write.
    pub(super) async fn converge(self: Arc<Self>, ref_ms: u64, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(25)) => {}
                _ = stop.changed() => return,
            }
            let (handles, clean) = {
                let g = self.lock();
                let core = g.core();
                let clean = g.cuts.is_empty() && g.paused.is_empty() && g.missing(&core) == 0;
                (
                    core.iter()
                        .filter_map(|&i| g.handle(i).map(|(h, _)| h))
                        .collect::<Vec<_>>(),
                    clean,
                )
            };
            if !clean || handles.is_empty() {
                continue;
            }
            let digests: Vec<Option<String>> = futures::future::join_all(
                handles
                    .iter()
                    .map(|h| async move { h.status().await.ok().map(|s| s.digest) }),
            )
            .await;
            let first = &digests[0];
            if first.is_some() && digests.iter().all(|d| d == first) {
                let t = self.now_ms();
                let mut g = self.lock();
                let after = t.saturating_sub(g.last_heal_ms.max(ref_ms));
                g.converged_at = Some(t);
                g.converge_after_ms = Some(after);
                drop(g);
                self.event("converged", serde_json::json!({"after_ms": after}));
                return;
            }
        }
    }
}
