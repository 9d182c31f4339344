//! The workload's clients on real nodes: config writes and deletes and
//! service registrations and heartbeats, drawn by [`crate::workload`],
//! and the ledger entries of the writes acknowledged.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::workload::{beat_delay, beat_health, draw_write, gap_s, service_spec};

/// The versions a node holds for a tracked key.
pub(super) async fn read_held(h: &NodeHandle, key: &TrackedKey) -> Result<Vec<Held>, NodeError> {
    match key {
        TrackedKey::Kv(k) => {
            let key = Key::new(k.as_str()).expect("workload keys are valid");
            Ok(h.history(&ns_kv(), &key)
                .await?
                .iter()
                .map(|(v, value, live)| Held::of(v, value.clone(), *live))
                .collect())
        }
        TrackedKey::Instance(i) => Ok(h
            .services(&ns_svc(), &api(), ServiceQuery::default())
            .await?
            .iter()
            .filter(|v| v.instance.as_str() == i)
            .map(|v| Held::of(&v.version, None, true))
            .collect()),
    }
}

/// A write as its client saw it acknowledged.
pub(super) struct Ack {
    /// Client operation id.
    pub(super) op: u64,
    /// The node slot that acknowledged it.
    pub(super) slot: usize,
    /// The key.
    pub(super) key: TrackedKey,
    /// Its version id.
    pub(super) version: VersionId,
    /// Its dot (origin and sequence number), from the write result.
    pub(super) dot: Dot,
    /// Its stamp.
    pub(super) hlc: Hlc,
    /// A delete.
    pub(super) tombstone: bool,
    /// When it was acknowledged (real ms since the timeline started).
    pub(super) t_ms: u64,
}

impl Harness {
    /// Record an acknowledged write: `ack` as the client saw it, `pre`
    /// the writer's versions of the key just before. Returns its ledger
    /// index.
    pub(super) fn record_ack(self: &Arc<Self>, ack: Ack, pre: &[Held]) -> usize {
        let Ack {
            op,
            slot,
            key,
            version,
            dot,
            hlc,
            tombstone,
            t_ms: t,
        } = ack;
        let idx = {
            let mut g = self.lock();
            let mut ctx = Context::default();
            for h in pre {
                ctx.join(&g.ledger.ctx_of(h));
            }
            ctx.add(dot);
            let mut arrivals = vec![None; g.slots.len()];
            arrivals[slot] = Some(0);
            let up_at_ack: Vec<bool> = (0..g.slots.len()).map(|i| g.up(i)).collect();
            let reached_up_ms = if up_at_ack.iter().filter(|u| **u).count() <= 1 {
                Some(0)
            } else {
                None
            };
            let during_fault = !g.cuts.is_empty()
                || !g.paused.is_empty()
                || g.slots.iter().any(|s| s.state == SlotState::Down);
            g.ledger.push(AckedWrite {
                op,
                key: key.clone(),
                id: version,
                dot,
                hlc,
                tombstone,
                origin: slot,
                ack_ms: t,
                ctx,
                arrivals,
                orphaned: false,
                during_fault,
                up_at_ack,
                reached_up_ms,
            })
        };
        // Nodes may have it already (gossip can beat the reply here).
        for s in self.all_slots() {
            if s != slot {
                self.schedule_track(s, key.clone());
            }
        }
        idx
    }

    /// After the write, the writer's view: if the write is its only live
    /// version of the key, it supersedes everything the node holds there.
    pub(super) fn refine(&self, idx: usize, post: &[Held]) {
        let mut g = self.lock();
        let id = g.ledger.writes[idx].id;
        let live: Vec<&Held> = post.iter().filter(|h| h.live).collect();
        if live.len() == 1 && live[0].id == id {
            let mut ctx = g.ledger.writes[idx].ctx.clone();
            for h in post {
                ctx.join(&g.ledger.ctx_of(h));
            }
            g.ledger.writes[idx].ctx = ctx;
        }
    }

    /// Nodes a client can use: running and not paused.
    fn client_nodes(&self) -> Vec<usize> {
        self.lock().core()
    }

    pub(super) fn workload_on(&self) -> bool {
        let stop = self.sc.workload.stop_ms.unwrap_or(self.sc.phases.deadline_ms);
        self.now_ms() < self.real(stop)
    }

    pub(super) fn next_op(&self) -> u64 {
        let mut g = self.lock();
        g.next_op += 1;
        g.next_op
    }

    /// One client write (put or delete) on node `slot`.
    pub(super) async fn write_one(
        self: &Arc<Self>,
        slot: usize,
        h: NodeHandle,
        key: String,
        delete: bool,
        concurrent: bool,
    ) {
        let op = self.next_op();
        let tk = TrackedKey::Kv(key.clone());
        let k = Key::new(key.as_str()).expect("workload keys are valid");
        let pre = read_held(&h, &tk).await.unwrap_or_default();
        let (kind, res, value) = if delete {
            ("delete", h.delete(&ns_kv(), &k).await, None)
        } else {
            let value = value_for(op, self.sc.workload.value_bytes);
            self.lock().ledger.issued_puts.insert(op);
            ("put", h.put(&ns_kv(), &k, value.clone()).await, Some(value))
        };
        let value_json = value.map(|v| String::from_utf8_lossy(&v).into_owned());
        match res {
            Ok(wr) => {
                let t_ms = self.now_ms();
                let post = read_held(&h, &tk).await.unwrap_or_default();
                let ack = Ack {
                    op,
                    slot,
                    key: tk,
                    version: wr.version,
                    dot: wr.dot,
                    hlc: wr.hlc,
                    tombstone: delete,
                    t_ms,
                };
                let idx = self.record_ack(ack, &pre);
                self.history(
                    op,
                    slot,
                    kind,
                    &key,
                    serde_json::json!({"value": value_json, "version": wr.version.to_string(),
                        "hlc": [wr.hlc.wall_ms, wr.hlc.logical], "concurrent": concurrent}),
                    "ok",
                );
                self.refine(idx, &post);
            }
            Err(NodeError::Stopped) => self.history(
                op,
                slot,
                kind,
                &key,
                serde_json::json!({"value": value_json}),
                "no-reply",
            ),
            Err(e) => self.history(
                op,
                slot,
                kind,
                &key,
                serde_json::json!({"value": value_json, "error": e.to_string()}),
                "fail",
            ),
        }
    }

    /// The config-write workload: Poisson arrivals, concurrent writes to
    /// one key on 2–3 nodes at once, deletes.
    pub(super) async fn writer(self: Arc<Self>, seed: u64, mut stop: watch::Receiver<bool>) {
        let w = self.sc.workload.clone();
        if w.writes_per_sec <= 0.0 {
            return;
        }
        let mut rng = stream(seed, 1, 0);
        let mut t = self.real(w.start_ms) as f64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(self.at(t as u64)) => {}
                _ = stop.changed() => return,
            }
            if !self.workload_on() {
                return;
            }
            t += gap_s(&mut rng, w.writes_per_sec) * 1000.0 * self.scale;
            let candidates = self.client_nodes();
            let draw = draw_write(&w, &mut rng, &candidates);
            let targets: Vec<(usize, NodeHandle)> = {
                let g = self.lock();
                draw.targets
                    .iter()
                    .filter_map(|&n| g.handle(n).map(|(h, _)| (n, h)))
                    .collect()
            };
            let key = draw.key.to_string();
            let (delete, concurrent) = (draw.delete, draw.concurrent);
            futures::future::join_all(
                targets
                    .into_iter()
                    .map(|(n, h)| self.write_one(n, h, key.clone(), delete, concurrent)),
            )
            .await;
        }
    }

    /// One service instance: its owner registers it and heartbeats it.
    pub(super) async fn service(self: Arc<Self>, seed: u64, svc: usize, mut stop: watch::Receiver<bool>) {
        let w = self.sc.workload.clone();
        let mut rng = stream(seed, 3, svc as u64);
        let period = self.real(w.service_heartbeat_ms).max(10);
        let ttl = self.real(w.service_ttl_ms).max(100);
        let mut t = self.real(w.start_ms) + self.real((svc as u64 * 7_919) % 1_000);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(self.at(t)) => {}
                _ = stop.changed() => return,
            }
            t += beat_delay(&mut rng, period);
            let (owner, instance, registered) = {
                let g = self.lock();
                let s = &g.services[svc];
                (s.owner, s.instance.clone(), s.registered)
            };
            let Some((h, _)) = ({
                let g = self.lock();
                if g.paused.contains(&owner) {
                    None
                } else {
                    g.handle(owner)
                }
            }) else {
                continue;
            };
            let op = self.next_op();
            let inst = InstanceId::new(instance.as_str()).expect("valid instance id");
            let key_text = format!("{SERVICE}/{instance}");
            let tk = TrackedKey::Instance(instance.clone());
            let id = h.node_id();
            if registered != Some(id) {
                let spec = service_spec(owner, ttl);
                let pre = read_held(&h, &tk).await.unwrap_or_default();
                match h.register_service(&ns_svc(), &api(), &inst, spec).await {
                    Ok(wr) => {
                        let t_ms = self.now_ms();
                        self.lock().services[svc].registered = Some(id);
                        let ack = Ack {
                            op,
                            slot: owner,
                            key: tk,
                            version: wr.version,
                            dot: wr.dot,
                            hlc: wr.hlc,
                            tombstone: false,
                            t_ms,
                        };
                        self.record_ack(ack, &pre);
                        self.history(
                            op,
                            owner,
                            "register",
                            &key_text,
                            serde_json::json!({"version": wr.version.to_string()}),
                            "ok",
                        );
                    }
                    Err(e) => self.history(
                        op,
                        owner,
                        "register",
                        &key_text,
                        serde_json::json!({"error": e.to_string()}),
                        "fail",
                    ),
                }
                continue;
            }
            let health = beat_health(&w, &mut rng, self.workload_on());
            match h.heartbeat_service(&ns_svc(), &api(), &inst, Some(health)).await {
                Ok(()) => self.history(op, owner, health.as_str(), &key_text, serde_json::json!({}), "ok"),
                Err(e) => {
                    if matches!(e, NodeError::Command(starling::core::CommandError::NotFound)) {
                        self.lock().services[svc].registered = None;
                    }
                    self.history(
                        op,
                        owner,
                        health.as_str(),
                        &key_text,
                        serde_json::json!({"error": e.to_string()}),
                        "fail",
                    );
                }
            }
        }
    }
}
