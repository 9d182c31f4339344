//! Local commands: client writes (config keys, services, canaries), node
//! info and leaving, the TTL of owned service instances, and undoing a
//! batch that could not be made durable.

use super::{Action, Command, CommandError, CommandOutput, Engine, Expect, Topic};
use crate::core::canary::CanarySpec;
use crate::core::crypto::{member_claim, version_claim};
use crate::core::dots::Dot;
use crate::core::ids::{NodeId, StateKey};
use crate::core::membership::{Member, MemberStatus};
use crate::core::registry::{HealthStatus, ServiceInstance};
use crate::core::state::{KeyState, MergeOutcome, Payload, Version, VersionId};
use crate::core::wire::{Delta, Message};

impl Engine {
    pub(super) fn on_command(&mut self, id: u64, command: Command) {
        let result = self.run_command(command);
        if result.is_ok() {
            self.pending.commands.push(id);
        }
        self.out.push(Action::Reply { id, result });
    }

    /// Apply one command; `Err` leaves state unchanged.
    fn run_command(&mut self, command: Command) -> Result<CommandOutput, CommandError> {
        if self.left {
            return Err(CommandError::Left);
        }
        if let Some(ns) = command.written_namespace() {
            self.check_may_write(ns)?;
        }
        match command {
            Command::Put {
                namespace,
                key,
                value,
                expect,
            } => {
                if value.len() > self.cfg.max_value_bytes {
                    return Err(CommandError::TooLarge {
                        size: value.len(),
                        max: self.cfg.max_value_bytes,
                    });
                }
                let sk = StateKey::Kv { namespace, key };
                self.check_expect(&sk, expect.as_ref())?;
                Ok(self.write_local(sk, Payload::Value(value)))
            }
            Command::Delete {
                namespace,
                key,
                expect,
            } => {
                let sk = StateKey::Kv { namespace, key };
                if self.state.get(&sk).is_none_or(|ks| ks.is_deleted()) && expect != Some(Expect::Absent) {
                    return Err(CommandError::NotFound);
                }
                self.check_expect(&sk, expect.as_ref())?;
                Ok(self.write_local(sk, Payload::Tombstone))
            }
            Command::Rollback { namespace, key, to } => {
                let sk = StateKey::Kv { namespace, key };
                let payload = self
                    .state
                    .get(&sk)
                    .and_then(|ks| ks.all().find(|v| v.id() == to))
                    .map(|v| v.payload.clone())
                    .ok_or(CommandError::NotFound)?;
                Ok(self.write_local(sk, payload))
            }
            Command::Resolve { namespace, key, keep } => {
                let sk = StateKey::Kv { namespace, key };
                let payload = self
                    .state
                    .get(&sk)
                    .and_then(|ks| ks.live.iter().find(|v| v.id() == keep))
                    .map(|v| v.payload.clone())
                    .ok_or(CommandError::NotFound)?;
                Ok(self.write_local(sk, payload))
            }
            Command::RegisterService {
                namespace,
                service,
                instance,
                spec,
            } => {
                spec.validate().map_err(CommandError::Invalid)?;
                let sk = StateKey::Service {
                    namespace,
                    service,
                    instance,
                };
                if let Some(Payload::Instance(cur)) =
                    self.state.get(&sk).and_then(|ks| ks.winner()).map(|v| &v.payload)
                {
                    if cur.owner != self.me && !self.owner_gone(&cur.owner) {
                        return Err(CommandError::NotOwner(cur.owner.to_string()));
                    }
                }
                let inst = ServiceInstance {
                    spec,
                    owner: self.me,
                    health: HealthStatus::Passing,
                };
                self.owned_heartbeats.insert(sk.clone(), self.now_ms);
                Ok(self.write_local(sk, Payload::Instance(Box::new(inst))))
            }
            Command::HeartbeatService {
                namespace,
                service,
                instance,
                health,
            } => {
                let sk = StateKey::Service {
                    namespace,
                    service,
                    instance,
                };
                let cur = match self.own_registration(&sk) {
                    Some(i) => i,
                    None => return Err(self.not_owned(&sk)),
                };
                self.owned_heartbeats.insert(sk.clone(), self.now_ms);
                let want = health.unwrap_or(HealthStatus::Passing);
                if cur.health == want {
                    return Ok(CommandOutput::Done);
                }
                let inst = ServiceInstance { health: want, ..cur };
                Ok(self.write_local(sk, Payload::Instance(Box::new(inst))))
            }
            Command::DeregisterService {
                namespace,
                service,
                instance,
            } => {
                let sk = StateKey::Service {
                    namespace,
                    service,
                    instance,
                };
                // Only the owner's own deregistration removes an instance
                // (a tombstone supersedes its own origin's versions only).
                if self.own_registration(&sk).is_none() {
                    return Err(self.not_owned(&sk));
                }
                self.owned_heartbeats.remove(&sk);
                Ok(self.write_local(sk, Payload::Tombstone))
            }
            Command::SetCanary {
                namespace,
                key,
                value,
                target,
            } => {
                if value.len() > self.cfg.max_value_bytes {
                    return Err(CommandError::TooLarge {
                        size: value.len(),
                        max: self.cfg.max_value_bytes,
                    });
                }
                target.validate().map_err(CommandError::Invalid)?;
                let sk = StateKey::Canary { namespace, key };
                Ok(self.write_local(sk, Payload::Canary(Box::new(CanarySpec { value, target }))))
            }
            Command::PromoteCanary { namespace, key } => {
                let canary = self.kv_canary(&namespace, &key).ok_or(CommandError::NotFound)?;
                let out = self.write_local(
                    StateKey::Kv {
                        namespace: namespace.clone(),
                        key: key.clone(),
                    },
                    Payload::Value(canary.value),
                );
                self.write_local(StateKey::Canary { namespace, key }, Payload::Tombstone);
                Ok(out)
            }
            Command::AbortCanary { namespace, key } => {
                if self.kv_canary(&namespace, &key).is_none() {
                    return Err(CommandError::NotFound);
                }
                Ok(self.write_local(StateKey::Canary { namespace, key }, Payload::Tombstone))
            }
            Command::SetWriters { namespace, writers } => {
                let text = self.rule_for(&namespace, &writers)?;
                Ok(self.write_local(
                    super::acl::rule_key(&namespace),
                    Payload::Value(text.into_bytes()),
                ))
            }
            Command::ClearWriters { namespace } => {
                self.check_admin(&namespace)?;
                let key = super::acl::rule_key(&namespace);
                if self.state.get(&key).is_none_or(|ks| ks.is_deleted()) {
                    return Err(CommandError::NotFound);
                }
                Ok(self.write_local(key, Payload::Tombstone))
            }
            Command::SetInfo(info) => {
                info.validate().map_err(CommandError::Invalid)?;
                if info.tags != self.info.tags {
                    // Which canaries target this node may change: readers of
                    // those keys hear about it like any other change.
                    self.retargeted = self
                        .state
                        .iter()
                        .filter(|(k, _)| matches!(k, StateKey::Canary { .. }))
                        .map(|(k, _)| k.clone())
                        .collect();
                }
                self.info = std::sync::Arc::new(info);
                self.incarnation += 1;
                let rec = self.own_record(MemberStatus::Alive);
                self.members.merge(rec.clone());
                self.publish_members(vec![rec]);
                Ok(CommandOutput::Done)
            }
            Command::Leave => {
                let rec = self.own_record(MemberStatus::Left);
                self.members.merge(rec.clone());
                self.publish_members(vec![rec]);
                self.left = true;
                Ok(CommandOutput::Done)
            }
        }
    }

    /// The driver could not make `batch` durable: undo its local writes,
    /// fail its commands with `reason`, and write what else it held again
    /// with the next batch.
    pub(super) fn on_persist_failed(&mut self, batch: u64, reason: String) {
        let Some((id, pending)) = self.last_batch.take() else {
            return;
        };
        if id != batch {
            self.last_batch = Some((id, pending));
            return;
        }
        self.counters.persist_failures += 1;
        for (k, dot) in pending.applied.iter().rev() {
            self.state.unapply(k, dot);
        }
        // Everything else the batch held stays in memory: write it again
        // with the next batch (after this input), from the state as it is
        // then.
        let w = pending.written;
        self.unpersisted.keys.extend(w.keys);
        self.unpersisted.origins.extend(w.origins);
        self.unpersisted.members.extend(w.members);
        self.persist_failing = true;
        for cmd in pending.commands {
            self.out.push(Action::Reply {
                id: cmd,
                result: Err(CommandError::NotDurable(reason.clone())),
            });
        }
    }

    /// Mark critical every owned instance whose TTL lapsed without a
    /// heartbeat from its client.
    pub(super) fn check_ttls(&mut self) {
        let now = self.now_ms;
        let mut lapsed = Vec::new();
        for (sk, last) in &self.owned_heartbeats {
            let Some(i) = self.own_registration(sk) else {
                continue;
            };
            if i.health == HealthStatus::Critical {
                continue;
            }
            if let Some(ttl) = i.spec.ttl_ms {
                if now.saturating_sub(*last) > ttl {
                    lapsed.push((sk.clone(), i.clone()));
                }
            }
        }
        for (sk, inst) in lapsed {
            if self.check_may_write(sk.namespace()).is_err() {
                continue; // every node would refuse it
            }
            let inst = ServiceInstance {
                health: HealthStatus::Critical,
                ..inst
            };
            self.write_local(sk, Payload::Instance(Box::new(inst)));
        }
    }

    /// This node's record, alive or left, signed.
    pub(super) fn own_record(&self, status: MemberStatus) -> Member {
        debug_assert!(matches!(status, MemberStatus::Alive | MemberStatus::Left));
        let claim = member_claim(
            &self.me,
            &self.info,
            self.incarnation,
            status == MemberStatus::Left,
        );
        Member {
            node: self.me,
            info: self.info.clone(),
            incarnation: self.incarnation,
            status,
            proof: self.keys.sign(&claim),
        }
    }

    /// This node's own live registration of the instance `sk`, if any
    /// (another owner's may rank above it).
    pub(super) fn own_registration(&self, sk: &StateKey) -> Option<ServiceInstance> {
        self.state.get(sk)?.live.iter().find_map(|v| match &v.payload {
            Payload::Instance(i) if i.owner == self.me && v.dot.node == self.me => Some((**i).clone()),
            _ => None,
        })
    }

    /// Why this node may not heartbeat or deregister `sk`: another node
    /// owns the registration, or there is none.
    fn not_owned(&self, sk: &StateKey) -> CommandError {
        match self.state.get(sk).and_then(|ks| ks.winner()).map(|v| &v.payload) {
            Some(Payload::Instance(i)) => CommandError::NotOwner(i.owner.to_string()),
            _ => CommandError::NotFound,
        }
    }

    fn owner_gone(&self, owner: &NodeId) -> bool {
        self.members
            .get(owner)
            .is_some_and(|m| matches!(m.status, MemberStatus::Dead | MemberStatus::Left))
    }

    fn check_expect(&self, sk: &StateKey, expect: Option<&Expect>) -> Result<(), CommandError> {
        let ks = self.state.get(sk);
        let winner = ks.and_then(|ks| ks.winner());
        let current = winner.filter(|v| !v.payload.is_tombstone()).map(|v| v.id());
        match expect {
            None => Ok(()),
            Some(Expect::Absent) if current.is_none() => Ok(()),
            Some(Expect::Version(id)) if winner.is_some_and(|w| w.id() == *id) => Ok(()),
            Some(_) => Err(CommandError::Conflict { current }),
        }
    }

    /// Write `payload` to `sk` as a new local version superseding every
    /// live one, and publish it as a delta.
    fn write_local(&mut self, sk: StateKey, payload: Payload) -> CommandOutput {
        let mut ctx = self.state.get(&sk).map(KeyState::context).unwrap_or_default();
        if matches!(sk, StateKey::Service { .. }) {
            // A service version supersedes its own origin's only (see
            // `KeyOrder::Registrations`): its context names no other.
            ctx = ctx.only(&self.me);
        }
        let dot = Dot {
            node: self.me,
            seq: self.state.next_seq(&self.me),
        };
        ctx.add(dot);
        let hlc = self.clock.tick(self.now_ms);
        let checksum = payload.checksum();
        let sig = self
            .keys
            .sign(&version_claim(&sk, &dot, &ctx, &hlc, &payload, checksum));
        let v = Version {
            dot,
            ctx,
            hlc,
            payload,
            checksum,
            signature: Some(sig.0.to_vec()),
        };
        let outcome = self.state.merge(sk.clone(), v.clone());
        debug_assert_eq!(outcome, MergeOutcome::Applied, "a fresh local dot is always new");
        debug_assert!(
            matches!(sk, StateKey::Service { .. })
                || self
                    .state
                    .get(&sk)
                    .and_then(|ks| ks.winner())
                    .is_some_and(|w| w.dot == dot),
            "a local write supersedes every live version, so it is the winner"
        );
        debug_assert!(
            self.state
                .get(&sk)
                .is_some_and(|ks| ks.live.iter().any(|l| l.dot == dot)),
            "a local write is live"
        );
        self.counters.writes += 1;
        self.pending.applied.push((sk.clone(), dot));
        self.pending.local_keys.insert(sk.clone());
        let delta = Delta {
            versions: vec![(sk, v)],
            members: Vec::new(),
        };
        let bytes = self.encode(&Message::Delta(delta));
        self.counters.deltas_sent += 1;
        self.out.push(Action::Publish {
            topic: Topic::Delta,
            bytes,
        });
        CommandOutput::Written {
            version: dot_id(&dot),
            hlc,
            dot,
        }
    }
}

fn dot_id(dot: &Dot) -> VersionId {
    VersionId::of(dot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Config;
    use crate::core::ids::{Key, Namespace};
    use crate::core::membership::NodeInfo;

    fn put(key: &Key, value: &[u8]) -> Command {
        Command::Put {
            namespace: Namespace::new("prod").expect("valid namespace"),
            key: key.clone(),
            value: value.to_vec(),
            expect: None,
        }
    }

    #[test]
    fn a_write_reports_the_dot_it_stored() {
        let me = NodeId::from_index(4);
        let mut e = Engine::new(
            Config::default(),
            crate::core::crypto::test_keys(me),
            NodeInfo::default(),
            1_000,
            4,
            None,
        )
        .expect("valid config");
        let key = Key::new("routes").expect("valid key");
        let sk = StateKey::Kv {
            namespace: Namespace::new("prod").expect("valid namespace"),
            key: key.clone(),
        };
        let mut dots = Vec::new();
        for value in [&b"a"[..], b"b", b"c"] {
            let Ok(CommandOutput::Written { version, hlc, dot }) = e.run_command(put(&key, value)) else {
                panic!("the put was not written");
            };
            assert_eq!(version, VersionId::of(&dot), "the id is the dot's");
            let stored = e
                .state
                .get(&sk)
                .and_then(|ks| ks.winner())
                .expect("the write is held");
            assert_eq!(
                (stored.dot, stored.hlc),
                (dot, hlc),
                "the reported dot and stamp are the stored ones"
            );
            dots.push(dot);
        }
        assert_eq!(
            dots,
            (1..=3).map(|seq| Dot { node: me, seq }).collect::<Vec<_>>(),
            "this node's writes take its next sequence numbers"
        );
    }
}
