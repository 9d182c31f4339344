//! The workload's clients: config writes and deletes, reads and service
//! heartbeats, drawn by [`crate::workload`] and issued as engine commands.

use starling::core::{Command, CommandError, CommandOutput, Input, StateKey};

use super::{Ev, Sim};
use crate::oracle::value_for;
use crate::workload::{
    beat_delay, beat_health, draw_write, gap_s, ns_kv, pick_key, pick_node, service_spec, WriteDraw,
};

impl Sim {
    // ----- workload ----------------------------------------------------

    pub(super) fn workload_on(&self) -> bool {
        self.now_ms() < self.sc.workload.stop_ms.unwrap_or(u64::MAX)
    }

    /// Nodes a client can use: running and not paused.
    fn client_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.runnable(i) && !self.nodes[i].paused)
            .collect()
    }

    pub(super) fn command(
        &mut self,
        i: usize,
        op: u64,
        command: Command,
    ) -> Option<Result<CommandOutput, CommandError>> {
        self.replies.clear();
        self.handle(i, Input::Command { id: op, command });
        let r = self
            .replies
            .iter()
            .find(|(id, _)| *id == op)
            .map(|(_, r)| r.clone());
        self.replies.clear();
        r
    }

    pub(super) fn record(
        &mut self,
        op: u64,
        node: usize,
        kind: &str,
        key: &str,
        extra: serde_json::Value,
        result: &str,
    ) {
        self.trace_ev(30, node, op);
        if self.opts.logs {
            let mut line = serde_json::json!({
                "op": op, "t_ms": self.now_ms(), "node": node, "type": kind, "key": key, "result": result,
            });
            if let (Some(o), serde_json::Value::Object(e)) = (line.as_object_mut(), extra) {
                o.extend(e);
            }
            self.history.push(line.to_string());
        }
    }

    pub(super) fn on_write(&mut self) {
        if !self.workload_on() {
            return;
        }
        let rate = self.sc.workload.writes_per_sec;
        let gap = (gap_s(&mut self.wl, rate) * 1e6) as u64;
        self.push(self.now + gap.max(1), Ev::Write);
        let candidates = self.client_nodes();
        let WriteDraw {
            key,
            concurrent,
            targets,
            delete,
        } = draw_write(&self.sc.workload, &mut self.wl, &candidates);
        let ns = ns_kv();
        for node in targets {
            let op = self.next_op;
            self.next_op += 1;
            let sk = StateKey::Kv {
                namespace: ns.clone(),
                key: key.clone(),
            };
            let (kind, cmd, value) = if delete {
                (
                    "delete",
                    Command::Delete {
                        namespace: ns.clone(),
                        key: key.clone(),
                        expect: None,
                    },
                    None,
                )
            } else {
                let value = value_for(op, self.sc.workload.value_bytes);
                self.oracle.put_ops.insert(op);
                (
                    "put",
                    Command::Put {
                        namespace: ns.clone(),
                        key: key.clone(),
                        value: value.clone(),
                        expect: None,
                    },
                    Some(value),
                )
            };
            let res = self.command(node, op, cmd);
            self.after_write(op, node, kind, &sk, key.as_str(), res, value, concurrent);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn after_write(
        &mut self,
        op: u64,
        node: usize,
        kind: &str,
        sk: &StateKey,
        key: &str,
        res: Option<Result<CommandOutput, CommandError>>,
        value: Option<Vec<u8>>,
        concurrent: bool,
    ) {
        let value_json = value.map(|v| String::from_utf8_lossy(&v).into_owned());
        match res {
            Some(Ok(CommandOutput::Written { version, hlc, .. })) => {
                let v = self.nodes[node]
                    .engine
                    .as_ref()
                    .and_then(|e| e.state().get(sk))
                    .and_then(|ks| ks.all().find(|v| v.id() == version))
                    .cloned();
                if let Some(v) = v {
                    self.oracle.write_acked(op, sk.clone(), &v, node, self.now_ms());
                }
                self.record(
                    op,
                    node,
                    kind,
                    key,
                    serde_json::json!({"value": value_json, "version": version.to_string(),
                        "hlc": [hlc.wall_ms, hlc.logical], "concurrent": concurrent}),
                    "ok",
                );
            }
            Some(Ok(_)) => self.record(op, node, kind, key, serde_json::json!({}), "ok"),
            Some(Err(e)) => self.record(
                op,
                node,
                kind,
                key,
                serde_json::json!({"value": value_json, "error": e.to_string()}),
                "fail",
            ),
            None => self.record(op, node, kind, key, serde_json::json!({}), "no-reply"),
        }
    }

    pub(super) fn on_read(&mut self) {
        if !self.workload_on() {
            return;
        }
        let rate = self.sc.workload.reads_per_sec;
        let gap = (gap_s(&mut self.wl, rate) * 1e6) as u64;
        self.push(self.now + gap.max(1), Ev::Read);
        let candidates = self.client_nodes();
        let Some(node) = pick_node(&mut self.wl, &candidates) else {
            return;
        };
        let key = pick_key(&self.sc.workload, &mut self.wl);
        let ns = ns_kv();
        let op = self.next_op;
        self.next_op += 1;
        let got = self.nodes[node].engine.as_ref().and_then(|e| e.kv_get(&ns, &key));
        let sk = StateKey::Kv {
            namespace: ns,
            key: key.clone(),
        };
        let stale = self.oracle.read(self.now_ms(), node, &sk);
        let (value, version, siblings) = match &got {
            Some(e) => (
                Some(String::from_utf8_lossy(&e.value).into_owned()),
                Some(e.version.id.to_string()),
                e.siblings.len(),
            ),
            None => (None, None, 0),
        };
        self.record(
            op,
            node,
            "read",
            key.as_str(),
            serde_json::json!({"value": value, "version": version, "siblings": siblings, "stale": stale}),
            "ok",
        );
    }

    pub(super) fn on_service_beat(&mut self, svc: usize) {
        let period = self.sc.workload.service_heartbeat_ms * 1000;
        let delay = beat_delay(&mut self.wl, period);
        self.push(self.now + delay, Ev::ServiceBeat { svc });
        let owner = self.services[svc].owner;
        if !self.runnable(owner) || self.nodes[owner].paused {
            return;
        }
        let StateKey::Service {
            namespace,
            service,
            instance,
        } = self.services[svc].key.clone()
        else {
            unreachable!("services are service keys")
        };
        let op = self.next_op;
        self.next_op += 1;
        let id = self.nodes[owner].id;
        let key_text = format!("{service}/{instance}");
        let sk = self.services[svc].key.clone();
        if self.services[svc].registered_identity != Some(id) {
            let spec = service_spec(owner, self.sc.workload.service_ttl_ms);
            let res = self.command(
                owner,
                op,
                Command::RegisterService {
                    namespace,
                    service,
                    instance,
                    spec,
                },
            );
            if matches!(res, Some(Ok(_))) {
                self.services[svc].registered_identity = Some(id);
            }
            self.after_write(op, owner, "register", &sk, &key_text, res, None, false);
            return;
        }
        let may_flap = self.workload_on();
        let health = beat_health(&self.sc.workload, &mut self.wl, may_flap);
        let res = self.command(
            owner,
            op,
            Command::HeartbeatService {
                namespace,
                service,
                instance,
                health: Some(health),
            },
        );
        if matches!(res, Some(Err(CommandError::NotFound))) {
            self.services[svc].registered_identity = None;
        }
        self.after_write(op, owner, health.as_str(), &sk, &key_text, res, None, false);
    }
}
