//! The byzantine nemesis: liars.
//!
//! A liar of a `byzantine` fault keeps running its honest engine (its
//! writes, heartbeats and syncs go on as before) and, while the fault
//! lasts, also sends crafted messages every attack round, each built with
//! the real wire types ([`starling::core::wire`]) and put on the same
//! network model as honest traffic (gossip floods the mesh, requests cross
//! links, cuts stop both). A liar is a *keyed insider*: it signs with its
//! own simulated key, never with another node's (the simulator holds the
//! world secret, so it could; it does not).
//!
//! Three ways of lying:
//! * **On its own** (each round draws one attack from the fault's list):
//!   forged member records and versions gossiped as deltas, a spoofed
//!   heartbeat, a truncated message, a replayed sync push, a flood; or a
//!   sync it opens with a victim (a real [`SyncRequest`], then a crafted
//!   [`SyncPush`] inside the sync the victim answered: the wipe, inflated
//!   knowledge).
//! * **As a responder**: when an honest node's sync request reaches the
//!   liar, its engine answers honestly and the answer may be replaced
//!   (half the time, when the fault lists a responder attack) by an older
//!   recorded response, the wipe, or a response with inflated knowledge.
//! * Every draw comes from one stream per (fault, liar) of the run's seed,
//!   so a seed replays byte for byte.
//!
//! TODO(forged-grave): a grave (collected delete) naming a victim's dot, to
//! bury its versions on a liar's word. Not played while graves are being
//! made signed tombstone versions in the core; add it here (a responder
//! attack: graves travel in sync responses and pushes) once they are.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use starling::core::crypto::{member_claim, version_claim, Keys, Signature, SimulatedKeys};
use starling::core::wire::{
    self, Delta, Hashes, Heartbeat, KnowledgeSummary, Message, SyncPush, SyncRequest, SyncResponse,
};
use starling::core::{
    Context, Dot, DotRange, HealthStatus, Hlc, InstanceId, Key, Knowledge, Member, MemberStatus, NodeId,
    Payload, ServiceInstance, StateKey, Topic, Version, BUCKETS,
};

use super::{Ev, NodeState, Sim};
use crate::plan::{Byzantine, FaultAction};
use crate::rng::stream;
use crate::scenario::Attack;
use crate::workload::{api, ns_kv, ns_svc, service_spec};

/// The highest seq the engine takes from a peer (the core's
/// `MAX_REMOTE_SEQ`): attacks claim it, or go one past it.
const MAX_REMOTE_SEQ: u64 = u64::MAX / 2;
/// A liar's crafted versions under its own dots take seqs this far above
/// its engine's next one, so no crafted version ever shares a dot with one
/// its engine writes (that would be equivocation, not played here).
const OWN_SEQ_GAP: u64 = 1 << 32;
/// The stream kind of liars' draws (index: fault << 16 | node).
const STREAM_BYZANTINE: u64 = 9;
/// Sync messages kept per liar for replays.
const RECORDED: usize = 4;
/// One flood round sends this share of its burst as sync requests (the
/// rest as gossip).
const FLOOD_REQUEST_SHARE: usize = 8;

/// What a request a liar sent on its own waits for.
#[derive(Clone, Copy, Debug)]
pub(super) enum ByzReq {
    /// The answer opens a sync the liar then abuses with this attack.
    Probe(Attack),
    /// Nothing: the answer is dropped.
    Discard,
}

/// The liars of a run.
#[derive(Default)]
pub(super) struct Liars {
    /// Every slot any byzantine fault makes a liar.
    pub slots: BTreeSet<usize>,
    /// Per liar, the byzantine faults in force on it.
    active: BTreeMap<usize, BTreeSet<usize>>,
    rngs: BTreeMap<(usize, usize), ChaCha8Rng>,
    own_seq: BTreeMap<usize, u64>,
    pushes: BTreeMap<usize, Vec<Vec<u8>>>,
    responses: BTreeMap<usize, Vec<Vec<u8>>>,
    /// The request a liar's engine is answering now (set around its
    /// handling, read by the responder attacks).
    pub answering: Option<Vec<u8>>,
    /// Answers of a liar's engine held while it runs: (request, bytes).
    pub held: Vec<(u64, Vec<u8>)>,
    /// Attacks played, by name.
    pub sent: BTreeMap<&'static str, u64>,
}

impl Liars {
    /// The liars of a run: these slots.
    pub fn new(slots: BTreeSet<usize>) -> Liars {
        Liars {
            slots,
            ..Default::default()
        }
    }

    /// Whether `slot` lies right now.
    pub fn lying(&self, slot: usize) -> bool {
        self.active.get(&slot).is_some_and(|f| !f.is_empty())
    }
}

fn push_recorded(list: &mut Vec<Vec<u8>>, bytes: Vec<u8>) {
    if list.len() >= RECORDED {
        list.remove(0);
    }
    list.push(bytes);
}

impl Sim {
    fn byz_fault(&self, fi: usize) -> Option<Byzantine> {
        match &self.plan.faults[fi].action {
            FaultAction::Byzantine(b) => Some(b.clone()),
            _ => None,
        }
    }

    fn byz_rng(&mut self, fi: usize, liar: usize) -> &mut ChaCha8Rng {
        let seed = self.seed;
        self.liars
            .rngs
            .entry((fi, liar))
            .or_insert_with(|| stream(seed, STREAM_BYZANTINE, (fi as u64) << 16 | liar as u64))
    }

    fn liar_keys(&self, liar: usize) -> SimulatedKeys {
        SimulatedKeys::new(self.nodes[liar].id, self.world_secret())
    }

    /// A byzantine fault starts: its liars start their rounds.
    pub(super) fn byz_start(&mut self, fi: usize, b: &Byzantine) {
        for (k, &n) in b.nodes.iter().enumerate() {
            self.liars.active.entry(n).or_default().insert(fi);
            // Spread the liars' rounds over one interval.
            let offset = b.interval_us * k as u64 / b.nodes.len().max(1) as u64;
            self.push(self.now + offset, Ev::Byzantine { fault: fi, node: n });
        }
    }

    /// A byzantine fault ends: its liars are honest again.
    pub(super) fn byz_end(&mut self, fi: usize, b: &Byzantine) {
        for n in &b.nodes {
            if let Some(f) = self.liars.active.get_mut(n) {
                f.remove(&fi);
            }
        }
    }

    /// One attack round of liar `liar` under fault `fi`, and the next.
    pub(super) fn byz_round(&mut self, fi: usize, liar: usize) {
        if !self.liars.active.get(&liar).is_some_and(|f| f.contains(&fi)) {
            return;
        }
        let Some(b) = self.byz_fault(fi) else { return };
        self.push(
            self.now + b.interval_us,
            Ev::Byzantine {
                fault: fi,
                node: liar,
            },
        );
        if !self.runnable(liar) || self.nodes[liar].paused {
            return;
        }
        let own: Vec<Attack> = b.attacks.iter().copied().filter(|a| !a.is_responder()).collect();
        if own.is_empty() {
            return;
        }
        let attack = own[self.byz_rng(fi, liar).gen_range(0..own.len())];
        self.trace_ev(60, liar, attack as u64);
        self.play(fi, liar, attack, b.burst);
    }

    fn count(&mut self, attack: Attack) {
        *self.liars.sent.entry(attack.as_str()).or_default() += 1;
    }

    fn play(&mut self, fi: usize, liar: usize, attack: Attack, burst: usize) {
        match attack {
            Attack::Flood => {
                self.count(attack);
                let gossiped = [
                    Attack::ForgedDot,
                    Attack::HugeSeq,
                    Attack::PinContext,
                    Attack::ForeignInstance,
                    Attack::ForgedTombstone,
                    Attack::ForgedLeave,
                    Attack::ForgedAlive,
                    Attack::Truncated,
                    Attack::SpoofedHeartbeat,
                ];
                let requests = burst / FLOOD_REQUEST_SHARE;
                for _ in 0..burst - requests {
                    let a = gossiped[self.byz_rng(fi, liar).gen_range(0..gossiped.len())];
                    self.play(fi, liar, a, 0);
                }
                for _ in 0..requests {
                    if let Some(v) = self.pick_victim(fi, liar) {
                        let bytes = self.encode_for(liar, &Message::SyncRequest(probe_request()));
                        self.byz_request(liar, v, bytes, ByzReq::Discard);
                    }
                }
            }
            Attack::ForgedLeave | Attack::ForgedDead | Attack::ForgedAlive | Attack::Slander => {
                if let Some(m) = self.forged_member(fi, liar, attack) {
                    self.count(attack);
                    let msg = Message::Delta(Delta {
                        versions: Vec::new(),
                        members: vec![m],
                    });
                    self.byz_gossip(liar, Topic::Delta, &msg);
                }
            }
            Attack::ForgedDot
            | Attack::HugeSeq
            | Attack::PinContext
            | Attack::PinInRange
            | Attack::ForeignInstance
            | Attack::ForgedTombstone => {
                if let Some(kv) = self.forged_version(fi, liar, attack) {
                    self.count(attack);
                    let msg = Message::Delta(Delta {
                        versions: vec![kv],
                        members: Vec::new(),
                    });
                    self.byz_gossip(liar, Topic::Delta, &msg);
                }
            }
            Attack::SpoofedHeartbeat => {
                let Some(v) = self.pick_victim(fi, liar) else {
                    return;
                };
                let vid = self.nodes[v].id;
                let local = self.local_ms(liar);
                let seq = self.byz_rng(fi, liar).gen();
                let Some(e) = self.nodes[liar].engine.as_ref() else {
                    return;
                };
                let incarnation = e.member(&vid).map_or(1, |m| m.incarnation.saturating_add(1));
                let hb = Heartbeat {
                    seq,
                    node: vid,
                    incarnation,
                    status: MemberStatus::Alive,
                    info: None,
                    hlc: Hlc {
                        wall_ms: local,
                        logical: 0,
                    },
                    digest: e.digest(),
                    members_hash: e.members_hash(),
                    interval_ms: e.heartbeat_interval_ms(),
                    // Were it believed, every claim about the victim's
                    // writes would pass.
                    high_seq: u64::MAX / 2,
                };
                self.count(attack);
                self.byz_gossip(liar, Topic::Heartbeat, &Message::Heartbeat(hb));
            }
            Attack::Truncated => {
                let Some(e) = self.nodes[liar].engine.as_ref() else {
                    return;
                };
                let msg = Message::Delta(Delta {
                    versions: Vec::new(),
                    members: vec![e.local_member()],
                });
                let mut bytes = self.encode_for(liar, &msg);
                let rng = self.byz_rng(fi, liar);
                let cut = rng.gen_range(0..bytes.len());
                let as_request = rng.gen_bool(0.5);
                bytes.truncate(cut);
                self.count(attack);
                if as_request {
                    if let Some(v) = self.pick_victim(fi, liar) {
                        self.byz_request(liar, v, bytes, ByzReq::Discard);
                    }
                } else {
                    self.trace_ev(61, liar, bytes.len() as u64);
                    self.flood(liar, Topic::Delta, bytes);
                }
            }
            Attack::ReplayPush => {
                let recorded = self.liars.pushes.get(&liar).cloned().unwrap_or_default();
                if recorded.is_empty() {
                    return;
                }
                let k = self.byz_rng(fi, liar).gen_range(0..recorded.len());
                if let Some(v) = self.pick_victim(fi, liar) {
                    self.count(attack);
                    self.byz_request(liar, v, recorded[k].clone(), ByzReq::Discard);
                }
            }
            Attack::WipePush | Attack::InflatePush => {
                if let Some(v) = self.pick_victim(fi, liar) {
                    self.count(attack);
                    let bytes = self.encode_for(liar, &Message::SyncRequest(probe_request()));
                    self.byz_request(liar, v, bytes, ByzReq::Probe(attack));
                }
            }
            // Played when the liar answers a sync request.
            Attack::ReplayResponse | Attack::WipeResponse | Attack::InflateKnowledge => {}
        }
    }

    fn encode_for(&self, _liar: usize, msg: &Message) -> Vec<u8> {
        wire::encode(msg, wire::cluster_id(&self.cfg.cluster))
    }

    fn byz_gossip(&mut self, liar: usize, topic: Topic, msg: &Message) {
        let bytes = self.encode_for(liar, msg);
        self.trace_ev(61, liar, bytes.len() as u64);
        self.flood(liar, topic, bytes);
    }

    fn byz_request(&mut self, liar: usize, to: usize, bytes: Vec<u8>, what: ByzReq) {
        let id = self.nodes[to].id;
        let req = self.send_request(liar, id, 0, bytes);
        if let Some(r) = self.reqs.get_mut(&req) {
            r.byz = Some(what);
        }
    }

    /// A random honest node that is up (a victim), if any.
    fn pick_victim(&mut self, fi: usize, liar: usize) -> Option<usize> {
        let honest: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.liars.slots.contains(&i) && self.nodes[i].state == NodeState::Up)
            .collect();
        if honest.is_empty() {
            return None;
        }
        let k = self.byz_rng(fi, liar).gen_range(0..honest.len());
        Some(honest[k])
    }

    /// The next dot of the liar's own for a crafted version.
    fn own_dot(&mut self, liar: usize) -> Option<Dot> {
        let id = self.nodes[liar].id;
        let next = self.nodes[liar].engine.as_ref()?.state().next_seq(&id);
        let c = self.liars.own_seq.entry(liar).or_default();
        *c += 1;
        Some(Dot {
            node: id,
            seq: next + OWN_SEQ_GAP + *c,
        })
    }

    fn forged_member(&mut self, fi: usize, liar: usize, attack: Attack) -> Option<Member> {
        let victim = self.pick_victim(fi, liar)?;
        let vid = self.nodes[victim].id;
        let keys = self.liar_keys(liar);
        let m = self.nodes[liar].engine.as_ref()?.member(&vid)?.clone();
        let rng = self.byz_rng(fi, liar);
        Some(match attack {
            Attack::ForgedLeave => Member {
                incarnation: u64::MAX,
                status: MemberStatus::Left,
                proof: keys.sign(&member_claim(&vid, &m.info, u64::MAX, true)),
                ..m
            },
            // The victim's real proof, of another incarnation.
            Attack::ForgedDead => Member {
                incarnation: u64::MAX - rng.gen_range(0..1_000),
                status: MemberStatus::Dead,
                ..m
            },
            Attack::ForgedAlive => {
                let inc = m.incarnation.saturating_add(1 + rng.gen_range(0..3));
                Member {
                    incarnation: inc,
                    status: MemberStatus::Alive,
                    proof: keys.sign(&member_claim(&vid, &m.info, inc, false)),
                    ..m
                }
            }
            _ => Member {
                status: if rng.gen_bool(0.5) {
                    MemberStatus::Suspect
                } else {
                    MemberStatus::Dead
                },
                ..m
            },
        })
    }

    fn forged_version(&mut self, fi: usize, liar: usize, attack: Attack) -> Option<(StateKey, Version)> {
        let victim = self.pick_victim(fi, liar)?;
        let vid = self.nodes[victim].id;
        let liar_id = self.nodes[liar].id;
        let hlc = Hlc {
            wall_ms: self.local_ms(liar),
            logical: 0,
        };
        let own = self.own_dot(liar)?;
        // A config key the liar holds (else one the workload writes).
        let keys: Vec<(StateKey, Context, Option<Dot>)> = {
            let e = self.nodes[liar].engine.as_ref()?;
            e.state()
                .iter()
                .filter(|(k, _)| matches!(k, StateKey::Kv { .. }))
                .map(|(k, ks)| (k.clone(), ks.context(), ks.winner().map(|w| w.dot)))
                .collect()
        };
        let knowledge_of = |sim: &Sim, n: &NodeId| {
            sim.nodes[liar]
                .engine
                .as_ref()
                .map_or(0, |e| e.state().knowledge().max_seq(n))
        };
        let rng = self.byz_rng(fi, liar);
        let (key, kctx, winner) = if keys.is_empty() {
            let k = StateKey::Kv {
                namespace: ns_kv(),
                key: Key::new(crate::workload::key_name(0)).expect("valid key"),
            };
            (k, Context::default(), None)
        } else {
            keys[rng.gen_range(0..keys.len())].clone()
        };
        let coin = rng.gen_bool(0.5);
        let with = |ctx: &Context, dots: &[Dot]| {
            let mut c = ctx.clone();
            for d in dots {
                c.add(*d);
            }
            c
        };
        let value = |what: &str| Payload::Value(format!("byz:{what}").into_bytes());
        let mut signed = true;
        let (key, dot, ctx, payload) = match attack {
            Attack::ForgedDot => {
                let seq = if coin {
                    knowledge_of(self, &vid) + 1
                } else {
                    MAX_REMOTE_SEQ - 1
                };
                let dot = Dot { node: vid, seq };
                (key, dot, with(&kctx, &[dot]), value("forged-dot"))
            }
            Attack::HugeSeq => {
                let dot = if coin {
                    Dot {
                        node: liar_id,
                        seq: MAX_REMOTE_SEQ + 1 + own.seq % 1_000,
                    }
                } else {
                    Dot {
                        node: vid,
                        seq: u64::MAX,
                    }
                };
                (key, dot, with(&kctx, &[dot]), value("huge-seq"))
            }
            Attack::PinContext | Attack::PinInRange => {
                let pin = if attack == Attack::PinContext {
                    u64::MAX
                } else {
                    MAX_REMOTE_SEQ
                };
                let ctx = with(&kctx, &[own, Dot { node: vid, seq: pin }]);
                (key, own, ctx, value("pin"))
            }
            Attack::ForeignInstance => {
                let key = StateKey::Service {
                    namespace: ns_svc(),
                    service: api(),
                    instance: InstanceId::new(format!("byz{liar}-{}", own.seq % 1_000)).expect("valid"),
                };
                let payload = Payload::Instance(Box::new(ServiceInstance {
                    spec: service_spec(victim, 10_000),
                    owner: vid,
                    health: HealthStatus::Passing,
                }));
                (key, own, with(&Context::default(), &[own]), payload)
            }
            Attack::ForgedTombstone => {
                // The victim is the origin of the key's winner when honest.
                let origin = winner
                    .map(|w| w.node)
                    .filter(|n| {
                        self.oracle
                            .slot_of
                            .get(n)
                            .is_some_and(|s| !self.liars.slots.contains(s))
                    })
                    .unwrap_or(vid);
                let dot = Dot {
                    node: origin,
                    seq: knowledge_of(self, &origin) + 1,
                };
                signed = coin;
                (key, dot, with(&kctx, &[dot]), Payload::Tombstone)
            }
            _ => return None,
        };
        let checksum = payload.checksum();
        let signature = signed.then(|| {
            let claim = version_claim(&key, &dot, &ctx, &hlc, &payload, checksum);
            let Signature(bytes) = self.liar_keys(liar).sign(&claim);
            bytes.to_vec()
        });
        Some((
            key,
            Version {
                dot,
                ctx,
                hlc,
                payload,
                checksum,
                signature,
            },
        ))
    }

    /// The answer to a request a liar sent on its own arrived.
    pub(super) fn byz_response(&mut self, liar: usize, responder: usize, what: ByzReq, bytes: &[u8]) {
        let ByzReq::Probe(attack) = what else { return };
        if !self.runnable(liar) || self.nodes[liar].paused {
            return;
        }
        let max = self.cfg.max_message_bytes;
        let Ok(Message::SyncResponse(resp)) = wire::decode(bytes, wire::cluster_id(&self.cfg.cluster), max)
        else {
            return;
        };
        let push = match attack {
            // The wipe: "I have seen everything you have" (the victim's own
            // knowledge hashes) and "I hold nothing" (an empty manifest for
            // every bucket).
            Attack::WipePush => SyncPush {
                versions: Vec::new(),
                knowledge: KnowledgeSummary {
                    buckets: resp.knowledge.buckets.clone(),
                    shipped: Vec::new(),
                    ranges: Knowledge::new(),
                },
                manifest: (0..BUCKETS as u16).map(|b| (b, Vec::new())).collect(),
                graves: Vec::new(),
                members: Vec::new(),
                wanted: Vec::new(),
            },
            // Knowledge of every origin claimed up to the range limit, and
            // a version under the victim's dot.
            _ => {
                let Some(e) = self.nodes[liar].engine.as_ref() else {
                    return;
                };
                let n = resp.knowledge.buckets.0.len();
                let ranges = Knowledge::from_ranges(e.state().knowledge().iter().map(|(o, _)| {
                    (
                        *o,
                        DotRange {
                            base: MAX_REMOTE_SEQ,
                            extra: BTreeSet::new(),
                        },
                    )
                }));
                let fi = self.liars.active.get(&liar).and_then(|f| f.first().copied());
                let forged = fi.and_then(|fi| self.forged_version(fi, liar, Attack::ForgedDot));
                SyncPush {
                    versions: forged.into_iter().collect(),
                    knowledge: KnowledgeSummary {
                        buckets: resp.knowledge.buckets.clone(),
                        shipped: (0..n as u16).collect(),
                        ranges,
                    },
                    manifest: BTreeMap::new(),
                    graves: Vec::new(),
                    members: Vec::new(),
                    wanted: Vec::new(),
                }
            }
        };
        let bytes = self.encode_for(liar, &Message::SyncPush(push));
        self.trace_ev(62, liar, responder as u64);
        self.byz_request(liar, responder, bytes, ByzReq::Discard);
    }

    /// A liar's engine sends a request: its sync pushes are kept for replays.
    pub(super) fn byz_record_request(&mut self, liar: usize, bytes: &[u8]) {
        if bytes.get(5) == Some(&5) {
            push_recorded(self.liars.pushes.entry(liar).or_default(), bytes.to_vec());
        }
    }

    /// A liar's engine answers a request with `bytes`: what goes out
    /// instead. Sync responses are recorded for replays, and half of them
    /// replaced when the liar's faults list a responder attack.
    pub(super) fn byz_answer(&mut self, liar: usize, bytes: Vec<u8>) -> Vec<u8> {
        let max = self.cfg.max_message_bytes;
        let cid = wire::cluster_id(&self.cfg.cluster);
        let Ok(Message::SyncResponse(resp)) = wire::decode(&bytes, cid, max) else {
            return bytes;
        };
        let older = self.liars.responses.get(&liar).cloned().unwrap_or_default();
        push_recorded(self.liars.responses.entry(liar).or_default(), bytes.clone());
        let Some(fi) = self.liars.active.get(&liar).and_then(|f| f.first().copied()) else {
            return bytes;
        };
        let Some(b) = self.byz_fault(fi) else { return bytes };
        let answers: Vec<Attack> = b.attacks.iter().copied().filter(|a| a.is_responder()).collect();
        if answers.is_empty() || !self.byz_rng(fi, liar).gen_bool(0.5) {
            return bytes;
        }
        let attack = answers[self.byz_rng(fi, liar).gen_range(0..answers.len())];
        self.trace_ev(63, liar, attack as u64);
        let forged = match attack {
            Attack::ReplayResponse => {
                if older.is_empty() {
                    return bytes;
                }
                let k = self.byz_rng(fi, liar).gen_range(0..older.len());
                self.count(attack);
                return older[k].clone();
            }
            // The wipe: the requester's own knowledge claimed, nothing held
            // in any bucket.
            Attack::WipeResponse => {
                let Some(Ok(Message::SyncRequest(req))) =
                    self.liars.answering.as_ref().map(|r| wire::decode(r, cid, max))
                else {
                    return bytes;
                };
                SyncResponse {
                    knowledge: KnowledgeSummary {
                        buckets: req.knowledge.buckets,
                        shipped: Vec::new(),
                        ranges: Knowledge::new(),
                    },
                    buckets: Hashes(resp.buckets.0.iter().map(|h| !h).collect()),
                    manifest: (0..BUCKETS as u16).map(|b| (b, Vec::new())).collect(),
                    graves: Vec::new(),
                    members: Vec::new(),
                    member_buckets: Hashes(Vec::new()),
                    high_seq: resp.high_seq,
                }
            }
            // The liar's whole knowledge shipped, one honest origin's range
            // inflated to the range limit.
            _ => {
                let Some(v) = self.pick_victim(fi, liar) else {
                    return bytes;
                };
                let vid = self.nodes[v].id;
                let Some(e) = self.nodes[liar].engine.as_ref() else {
                    return bytes;
                };
                let n = resp.knowledge.buckets.0.len();
                let mut ranges: BTreeMap<NodeId, DotRange> = e
                    .state()
                    .knowledge()
                    .iter()
                    .map(|(o, r)| (*o, r.clone()))
                    .collect();
                ranges.insert(
                    vid,
                    DotRange {
                        base: MAX_REMOTE_SEQ,
                        extra: BTreeSet::new(),
                    },
                );
                SyncResponse {
                    knowledge: KnowledgeSummary {
                        buckets: resp.knowledge.buckets.clone(),
                        shipped: (0..n as u16).collect(),
                        ranges: Knowledge::from_ranges(ranges),
                    },
                    ..resp
                }
            }
        };
        self.count(attack);
        wire::encode(&Message::SyncResponse(forged), cid)
    }
}

/// A sync request that tells nothing (one knowledge bucket, no state or
/// member hashes): the responder answers with its whole knowledge, a
/// manifest of every bucket and every member record.
fn probe_request() -> SyncRequest {
    SyncRequest::telling_nothing()
}
