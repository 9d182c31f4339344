//! The fault plan: a resolved scenario's faults typed once, with the one
//! rule for when each ends and the one timeline both modes follow.
//!
//! A scenario file writes faults as flat [`FaultSpec`] tables (that text is
//! what `scenario.resolved.toml` keeps, so replays stay byte-identical);
//! [`FaultPlan::new`] turns them into [`Fault`]s whose [`FaultAction`]
//! carries only what that kind of fault uses. The simulator and real mode
//! both run from the plan: the same end times, the same swizzle schedule,
//! the same fault periods in their reports.

use std::collections::BTreeSet;

use crate::scenario::{
    Attack, FaultKind, FaultSpec, Restart, Scenario, DEFAULT_ATTACK_RATE, DEFAULT_FLOOD_BURST,
    MAX_FLOOD_BURST, OVERLOAD_DELAY_MS,
};

/// Default time between swizzle steps.
const SWIZZLE_STEP_MS: u64 = 2_000;

/// What one fault does, with what that kind of fault needs.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// Nodes reach each other only within a common group; nodes in no
    /// group form one more.
    Partition {
        /// The groups (may overlap: bridge and ring modes).
        groups: Vec<Vec<usize>>,
    },
    /// Messages from `from` to `to` are dropped.
    OneWay {
        /// Senders.
        from: BTreeSet<usize>,
        /// Receivers (everyone else when the scenario names none).
        to: BTreeSet<usize>,
    },
    /// Clog `nodes` one by one, then restore them in `restore_order`.
    Swizzle(Swizzle),
    /// Stop nodes.
    Crash {
        /// The nodes.
        nodes: Vec<usize>,
        /// Restart them (at the fault's end or the heal); `false` for a
        /// permanent crash.
        restart: bool,
        /// Restart on the same disk (same identity) rather than a blank one.
        keep_state: bool,
    },
    /// Most of the cluster restarts: each node stops and comes back on
    /// its own schedule (see [`Step::Bounce`]); any still down at the
    /// fault's end come back then.
    MassRestart {
        /// Each node's stop and downtime, fitted into the fault (a stop at
        /// or after its end is dropped; a restart comes by its end).
        restarts: Vec<Restart>,
        /// Restart on the same disk (same identity) rather than a blank one.
        keep_state: bool,
    },
    /// Hold nodes' inputs and timers until the fault ends.
    Pause {
        /// The nodes.
        nodes: Vec<usize>,
    },
    /// Overloaded nodes: each input (message, response, timer) reaches
    /// them `delay_ms` plus a draw in `0..=jitter_ms` late, never before an
    /// earlier input from the same source.
    Overload {
        /// The nodes.
        nodes: Vec<usize>,
        /// The fixed part of the delay (ms).
        delay_ms: u64,
        /// The drawn part's most (ms).
        jitter_ms: u64,
    },
    /// Move nodes' clocks by `jump_ms`.
    ClockJump {
        /// The nodes.
        nodes: Vec<usize>,
        /// The jump (may be negative).
        jump_ms: i64,
    },
    /// Start spare nodes.
    Join {
        /// The nodes.
        nodes: Vec<usize>,
    },
    /// Leave gracefully, then stop.
    Leave {
        /// The nodes.
        nodes: Vec<usize>,
    },
    /// Liars: the nodes keep their honest engine and, while the fault
    /// lasts, also send crafted messages.
    Byzantine(Byzantine),
}

/// A byzantine fault: who lies, how, and how often.
#[derive(Clone, Debug, PartialEq)]
pub struct Byzantine {
    /// The liars.
    pub nodes: Vec<usize>,
    /// The attacks each round draws from.
    pub attacks: Vec<Attack>,
    /// Time between one liar's attack rounds (µs of virtual time).
    pub interval_us: u64,
    /// Messages of one flood round.
    pub burst: usize,
}

/// A swizzle: clog nodes one by one, restore them in another order.
#[derive(Clone, Debug, PartialEq)]
pub struct Swizzle {
    /// Clogged in this order.
    pub nodes: Vec<usize>,
    /// Restored in this order.
    pub restore_order: Vec<usize>,
    /// Time between steps (scenario ms).
    pub step_ms: u64,
}

impl Swizzle {
    /// When the restores start, in any time unit: `n` steps before `end`,
    /// but not before `earliest` (one step after the last clog).
    pub fn restore_start(&self, end: u64, step: u64, earliest: u64) -> u64 {
        end.saturating_sub(self.nodes.len() as u64 * step).max(earliest)
    }
}

/// One fault of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// What it does.
    pub action: FaultAction,
    /// Its kind.
    pub kind: FaultKind,
    /// When it starts (scenario ms).
    pub at_ms: u64,
    /// When it ends (scenario ms); `None`: it has no end (an instant
    /// fault, a permanent crash, or no duration and no heal).
    pub end_ms: Option<u64>,
    /// A short label for reports.
    pub label: String,
    /// The scenario's text of it (for event logs).
    pub spec: FaultSpec,
}

impl Fault {
    /// Whether it lasts a period that reports shade (instant faults do not).
    pub fn has_period(&self) -> bool {
        !matches!(
            self.kind,
            FaultKind::ClockJump | FaultKind::Join | FaultKind::Leave
        )
    }

    /// Whether it cuts links (and its end lifts the cut).
    pub fn is_cut(&self) -> bool {
        matches!(
            self.kind,
            FaultKind::Partition | FaultKind::OneWay | FaultKind::Swizzle
        )
    }
}

/// A fault's end (scenario ms), the one rule of both modes: instant faults
/// and permanent crashes have none; anything else lasts its duration, or
/// until the heal without one, and never past the heal.
pub fn fault_end_ms(f: &FaultSpec, heal_ms: Option<u64>) -> Option<u64> {
    match f.kind {
        FaultKind::ClockJump | FaultKind::Join | FaultKind::Leave => None,
        FaultKind::Crash if f.permanent => None,
        // Without a duration, it ends when its last node is back.
        FaultKind::MassRestart if f.duration_ms.is_none() => {
            let last = f
                .restarts
                .iter()
                .map(|r| r.stop_ms + r.down_ms)
                .max()
                .unwrap_or(0);
            let end = f.at_ms + last.max(1);
            Some(end.min(heal_ms.unwrap_or(u64::MAX)))
        }
        _ => f
            .duration_ms
            .map(|d| f.at_ms + d)
            .or(heal_ms)
            .map(|e| e.min(heal_ms.unwrap_or(u64::MAX))),
    }
}

/// Steps of the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Fault `i` starts.
    FaultStart(usize),
    /// Fault `i` ends.
    FaultEnd(usize),
    /// A swizzle clogs or restores one node.
    Swizzle {
        /// The fault.
        fault: usize,
        /// The node.
        node: usize,
        /// Clog (or restore).
        clog: bool,
    },
    /// A node of a mass restart stops (`up` false) or comes back.
    Bounce {
        /// The fault.
        fault: usize,
        /// The node.
        node: usize,
        /// Comes back (or stops).
        up: bool,
    },
    /// Every fault ends.
    Heal,
    /// Convergence is measured from here.
    ConvergeRef,
    /// The run ends.
    Deadline,
}

impl Step {
    /// Order of steps at one instant: ends before swizzle steps before
    /// starts before mass-restart steps, the heal after them, then the
    /// reference and the deadline.
    fn rank(&self) -> u8 {
        match self {
            Step::FaultEnd(_) => 0,
            Step::Swizzle { .. } => 1,
            Step::FaultStart(_) => 2,
            Step::Bounce { .. } => 3,
            Step::Heal => 4,
            Step::ConvergeRef => 5,
            Step::Deadline => 6,
        }
    }
}

/// A resolved scenario's faults and phases, typed.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// The faults, in scenario order (sorted by start).
    pub faults: Vec<Fault>,
    /// When every fault ends (scenario ms).
    pub heal_ms: Option<u64>,
    /// When the run ends.
    pub deadline_ms: u64,
    /// Convergence is measured from here: the heal, else the workload's
    /// end, else the deadline.
    pub converge_ref_ms: u64,
}

impl FaultPlan {
    /// The plan of a resolved scenario (every pick and mode made explicit
    /// by [`Scenario::resolve`]).
    pub fn new(sc: &Scenario) -> FaultPlan {
        let slots = sc.slots();
        let heal_ms = sc.phases.heal_at_ms;
        let faults = sc
            .faults
            .iter()
            .map(|f| {
                let end_ms = fault_end_ms(f, heal_ms);
                let mut label = f.label();
                let outlived = outlived_ttls(f, f.at_ms, end_ms, sc);
                if outlived != Outlived::None {
                    label.push_str(&format!(" (outlives {})", outlived.as_str()));
                }
                Fault {
                    action: action_of(f, slots, end_ms),
                    kind: f.kind,
                    at_ms: f.at_ms,
                    end_ms,
                    label,
                    spec: f.clone(),
                }
            })
            .collect();
        let deadline_ms = sc.phases.deadline_ms;
        FaultPlan {
            faults,
            heal_ms,
            deadline_ms,
            converge_ref_ms: heal_ms
                .or(sc.workload.stop_ms)
                .unwrap_or(deadline_ms)
                .min(deadline_ms),
        }
    }

    /// Every node slot any byzantine fault makes a liar: the checks of a
    /// run are about the others (see `oracle`).
    pub fn liars(&self) -> BTreeSet<usize> {
        self.faults
            .iter()
            .filter_map(|f| match &f.action {
                FaultAction::Byzantine(b) => Some(b.nodes.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Cuts (partitions, one-way cuts, swizzles) that last longer than the
    /// protocol's tombstone TTL, and those of them that last longer than
    /// its grave TTL too.
    pub fn cuts_past_ttls(&self, sc: &Scenario) -> (usize, usize) {
        let all: Vec<Outlived> = self
            .faults
            .iter()
            .map(|f| outlived_ttls(&f.spec, f.at_ms, f.end_ms, sc))
            .collect();
        (
            all.iter().filter(|o| **o != Outlived::None).count(),
            all.iter().filter(|o| **o == Outlived::Graves).count(),
        )
    }

    /// Whether any fault crashes nodes (a mass restart does).
    pub fn has_crash(&self) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f.kind, FaultKind::Crash | FaultKind::MassRestart))
    }

    /// Each mass-restart step `(ms, step)`, for every fault: its nodes'
    /// stops and restarts, in plan order.
    pub fn bounces(&self) -> Vec<(u64, Step)> {
        let mut v = Vec::new();
        for (fi, f) in self.faults.iter().enumerate() {
            let FaultAction::MassRestart { restarts, .. } = &f.action else {
                continue;
            };
            for r in restarts {
                let node = r.node;
                v.push((
                    f.at_ms + r.stop_ms,
                    Step::Bounce {
                        fault: fi,
                        node,
                        up: false,
                    },
                ));
                v.push((
                    f.at_ms + r.stop_ms + r.down_ms,
                    Step::Bounce {
                        fault: fi,
                        node,
                        up: true,
                    },
                ));
            }
        }
        v
    }

    /// Fault periods for reports: (start, end, label) in scenario ms, ends
    /// clamped to the deadline; instant faults have none.
    pub fn periods(&self) -> Vec<(u64, u64, String)> {
        self.faults
            .iter()
            .filter(|f| f.has_period())
            .map(|f| {
                let end = f.end_ms.unwrap_or(self.deadline_ms);
                (f.at_ms, end.min(self.deadline_ms), f.label.clone())
            })
            .collect()
    }

    /// The fixed steps in plan order: each fault's start and end, then the
    /// heal if it comes before the deadline. The simulator queues exactly
    /// these at the start (swizzle steps it chains as they run).
    pub fn schedule(&self) -> Vec<(u64, Step)> {
        let mut v = Vec::new();
        for (fi, f) in self.faults.iter().enumerate() {
            v.push((f.at_ms, Step::FaultStart(fi)));
            if let Some(end) = f.end_ms {
                v.push((end, Step::FaultEnd(fi)));
            }
        }
        v.extend(self.bounces());
        if let Some(h) = self.heal_ms.filter(|h| *h < self.deadline_ms) {
            v.push((h, Step::Heal));
        }
        v
    }

    /// The whole timeline up to the deadline, in time order: the fixed
    /// steps (those at or after the deadline dropped), every swizzle step,
    /// the convergence reference and the deadline.
    pub fn timeline(&self) -> Vec<(u64, Step)> {
        let deadline = self.deadline_ms;
        let mut v: Vec<(u64, Step)> = Vec::new();
        for (fi, f) in self.faults.iter().enumerate() {
            if f.at_ms >= deadline {
                continue;
            }
            v.push((f.at_ms, Step::FaultStart(fi)));
            if let Some(e) = f.end_ms.filter(|e| *e < deadline) {
                v.push((e, Step::FaultEnd(fi)));
            }
            let FaultAction::Swizzle(sw) = &f.action else {
                continue;
            };
            let step = sw.step_ms;
            let n = sw.nodes.len() as u64;
            for (k, &node) in sw.nodes.iter().enumerate() {
                v.push((
                    f.at_ms + k as u64 * step,
                    Step::Swizzle {
                        fault: fi,
                        node,
                        clog: true,
                    },
                ));
            }
            if let Some(e) = f.end_ms {
                let start = sw.restore_start(e, step, f.at_ms + n * step);
                for (k, &node) in sw.restore_order.iter().enumerate() {
                    let t = start + k as u64 * step;
                    if t < e {
                        v.push((
                            t,
                            Step::Swizzle {
                                fault: fi,
                                node,
                                clog: false,
                            },
                        ));
                    }
                }
            }
        }
        v.extend(self.bounces().into_iter().filter(|(t, _)| *t < deadline));
        if let Some(h) = self.heal_ms.filter(|h| *h < deadline) {
            v.push((h, Step::Heal));
        }
        if self.converge_ref_ms < deadline {
            v.push((self.converge_ref_ms, Step::ConvergeRef));
        }
        v.push((deadline, Step::Deadline));
        // Stable: at equal times by rank, then in plan order.
        v.sort_by_key(|(t, s)| (*t, s.rank()));
        v
    }
}

/// What a cut outlived: nothing, the tombstone TTL, or the grave TTL too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outlived {
    None,
    Tombstones,
    Graves,
}

impl Outlived {
    fn as_str(self) -> &'static str {
        match self {
            Outlived::None => "",
            Outlived::Tombstones => "tombstone_ttl_ms",
            Outlived::Graves => "tombstone_ttl_ms and grave_ttl_ms",
        }
    }
}

/// How a fault's cut compares with the TTLs: tombstones and graves are
/// collected on one side of a cut that lasts longer, while the other side
/// still holds what they delete (until the end, or the deadline).
fn outlived_ttls(f: &FaultSpec, at_ms: u64, end_ms: Option<u64>, sc: &Scenario) -> Outlived {
    // A paused node, or one crashed and restarted with its disk kept, is
    // out of reach the same way: it comes back holding what the others
    // deleted.
    let out_of_reach = match f.kind {
        FaultKind::Partition | FaultKind::OneWay | FaultKind::Swizzle | FaultKind::Pause => true,
        FaultKind::Crash => !f.permanent && f.state.as_deref() != Some("lost"),
        _ => false,
    };
    if !out_of_reach {
        return Outlived::None;
    }
    let deadline = sc.phases.deadline_ms;
    let lasts = end_ms.unwrap_or(deadline).min(deadline).saturating_sub(at_ms);
    if lasts > sc.protocol.grave_ttl_ms {
        Outlived::Graves
    } else if lasts > sc.protocol.tombstone_ttl_ms {
        Outlived::Tombstones
    } else {
        Outlived::None
    }
}

fn action_of(f: &FaultSpec, slots: usize, end_ms: Option<u64>) -> FaultAction {
    let nodes = f.nodes.clone();
    match f.kind {
        FaultKind::Partition => FaultAction::Partition {
            groups: f.groups.clone(),
        },
        FaultKind::OneWay => {
            let from: BTreeSet<usize> = nodes.into_iter().collect();
            let to = if f.to.is_empty() {
                (0..slots).filter(|i| !from.contains(i)).collect()
            } else {
                f.to.iter().copied().collect()
            };
            FaultAction::OneWay { from, to }
        }
        FaultKind::Swizzle => FaultAction::Swizzle(Swizzle {
            nodes,
            restore_order: f.restore_order.clone(),
            step_ms: f.step_ms.unwrap_or(SWIZZLE_STEP_MS),
        }),
        FaultKind::Crash => FaultAction::Crash {
            nodes,
            restart: !f.permanent,
            keep_state: f.state.as_deref() != Some("lost"),
        },
        FaultKind::MassRestart => {
            // Fitted into the fault: a stop at or after its end is
            // dropped, a restart comes by its end.
            let span = end_ms.map_or(u64::MAX, |e| e.saturating_sub(f.at_ms));
            let restarts = f
                .restarts
                .iter()
                .filter(|r| nodes.contains(&r.node) && r.stop_ms < span)
                .map(|r| Restart {
                    node: r.node,
                    stop_ms: r.stop_ms,
                    down_ms: r.down_ms.min(span - r.stop_ms).max(1),
                })
                .collect();
            FaultAction::MassRestart {
                restarts,
                keep_state: f.state.as_deref() != Some("lost"),
            }
        }
        FaultKind::Pause => FaultAction::Pause { nodes },
        FaultKind::Overload => FaultAction::Overload {
            nodes,
            delay_ms: f.delay_ms.unwrap_or(OVERLOAD_DELAY_MS),
            jitter_ms: f.jitter_ms.unwrap_or(f.delay_ms.unwrap_or(OVERLOAD_DELAY_MS) / 2),
        },
        FaultKind::ClockJump => FaultAction::ClockJump {
            nodes,
            jump_ms: f.jump_ms.unwrap_or(0),
        },
        FaultKind::Join => FaultAction::Join { nodes },
        FaultKind::Leave => FaultAction::Leave { nodes },
        FaultKind::Byzantine => FaultAction::Byzantine(Byzantine {
            nodes,
            attacks: if f.attacks.is_empty() {
                Attack::DEFAULT.to_vec()
            } else {
                f.attacks.clone()
            },
            interval_us: (1e6 / f.rate_per_s.unwrap_or(DEFAULT_ATTACK_RATE)).max(1.0) as u64,
            burst: f.burst.unwrap_or(DEFAULT_FLOOD_BURST).clamp(1, MAX_FLOOD_BURST),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(text: &str) -> Scenario {
        Scenario::parse(text).expect("valid scenario").resolve(1)
    }

    #[test]
    fn an_unknown_fault_kind_is_an_error_when_the_scenario_is_read() {
        let e = Scenario::parse("[[fault]]\nkind = \"meteor\"\nat_ms = 1\n").unwrap_err();
        assert!(e.0.contains("meteor"), "{}", e.0);
        let e =
            Scenario::parse("[nemesis]\nenabled = true\nkinds = [\"partition\", \"flood\"]\n").unwrap_err();
        assert!(e.0.contains("flood"), "{}", e.0);
    }

    #[test]
    fn mass_restart_and_overload_settings_are_checked_when_the_scenario_is_read() {
        let bad = [
            ("kind = \"mass-restart\"\nat_ms = 1\nfraction = 1.5\n", "fraction"),
            (
                "kind = \"mass-restart\"\nat_ms = 1\ndowntime_ms = 0\n",
                "downtime_ms",
            ),
            (
                "kind = \"mass-restart\"\nat_ms = 1\npermanent = true\n",
                "permanent",
            ),
            (
                "kind = \"mass-restart\"\nat_ms = 1\nrestarts = [{ node = 9, stop_ms = 0, down_ms = 5 }]\n",
                "restarts",
            ),
            ("kind = \"overload\"\nat_ms = 1\ndelay_ms = 100000\n", "at most"),
            (
                "kind = \"crash\"\nat_ms = 1\nwindow_ms = 10\n",
                "for mass-restart",
            ),
            ("kind = \"pause\"\nat_ms = 1\ndelay_ms = 10\n", "for overload"),
        ];
        for (fault, want) in bad {
            let text = format!("[cluster]\nsize = 3\n[[fault]]\n{fault}");
            let e = Scenario::parse(&text).unwrap_err();
            assert!(e.0.contains(want), "{text}: {}", e.0);
        }
    }

    #[test]
    fn a_mass_restart_stops_and_restarts_each_node_inside_the_fault() {
        let sc = scenario(
            "[cluster]\nsize = 10\n[phases]\nheal_at_ms = 30000\ndeadline_ms = 40000\n\
             [[fault]]\nkind = \"mass-restart\"\nat_ms = 1000\nwindow_ms = 2000\ndowntime_ms = 1000\n\
             [[fault]]\nkind = \"mass-restart\"\nat_ms = 5000\nduration_ms = 600\nnodes = [1, 2]\n\
             restarts = [{ node = 1, stop_ms = 100, down_ms = 5000 }, { node = 2, stop_ms = 700, down_ms = 10 }]\n\
             [[fault]]\nkind = \"overload\"\nat_ms = 2000\ndelay_ms = 300\n",
        );
        let f = &sc.faults[0];
        assert!((6..=8).contains(&f.nodes.len()), "60-80 % of 10: {:?}", f.nodes);
        assert_eq!(f.state.as_deref(), Some("kept"));
        let plan = FaultPlan::new(&sc);
        // Each node stops then comes back, inside the fault.
        let steps = plan.bounces();
        assert_eq!(steps.len(), 2 * f.nodes.len() + 2);
        for (t, s) in &steps {
            let Step::Bounce { fault, .. } = s else {
                panic!("{s:?}")
            };
            let pf = &plan.faults[*fault];
            assert!(*t >= pf.at_ms && *t <= pf.end_ms.unwrap(), "{t} {s:?}");
        }
        // The second fault's restarts are fitted into its 600 ms: node 1
        // comes back at its end, node 2's stop after it is dropped.
        let FaultAction::MassRestart { restarts, keep_state } = &plan.faults[2].action else {
            panic!("{:?}", plan.faults[2].action)
        };
        assert!(*keep_state);
        assert_eq!(restarts.len(), 1);
        assert_eq!(
            (restarts[0].node, restarts[0].stop_ms + restarts[0].down_ms),
            (1, 600)
        );
        assert_eq!(
            plan.faults[1].action,
            FaultAction::Overload {
                nodes: plan.faults[1].spec.nodes.clone(),
                delay_ms: 300,
                jitter_ms: 150
            }
        );
        assert_eq!(plan.faults[1].spec.nodes.len(), 1, "one node by default");
        // The timeline keeps them in time order.
        let tl = plan.timeline();
        assert!(tl.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn a_byzantine_fault_resolves_its_attacks_and_names_its_liars() {
        let sc = scenario(
            "[cluster]\nsize = 5\n[phases]\nheal_at_ms = 10000\ndeadline_ms = 20000\n\
             [[fault]]\nkind = \"byzantine\"\nat_ms = 1000\nnodes = [3, 4]\n\
             [[fault]]\nkind = \"byzantine\"\nat_ms = 2000\nduration_ms = 1000\nnodes = [1]\n\
             attacks = [\"forged-leave\", \"wipe-response\"]\nrate_per_s = 10.0\nburst = 3\n",
        );
        assert_eq!(sc.faults[0].attacks, Attack::DEFAULT.to_vec(), "made explicit");
        assert_eq!(sc.faults[0].rate_per_s, Some(DEFAULT_ATTACK_RATE));
        let plan = FaultPlan::new(&sc);
        assert_eq!(plan.liars().into_iter().collect::<Vec<_>>(), [1, 3, 4]);
        assert_eq!(plan.faults[0].end_ms, Some(10_000), "until the heal");
        let FaultAction::Byzantine(b) = &plan.faults[1].action else {
            panic!("a byzantine action");
        };
        assert_eq!(b.attacks, [Attack::ForgedLeave, Attack::WipeResponse]);
        assert_eq!((b.interval_us, b.burst), (100_000, 3));
        // Resolving again changes nothing.
        assert_eq!(
            sc.to_toml(),
            Scenario::parse(&sc.to_toml()).unwrap().resolve(1).to_toml()
        );
    }

    #[test]
    fn byzantine_settings_are_checked_when_the_scenario_is_read() {
        let bad = [
            ("[[fault]]\nkind = \"byzantine\"\nat_ms = 1\n", "name the liars"),
            (
                "[[fault]]\nkind = \"byzantine\"\nat_ms = 1\nnodes = [0]\nattacks = [\"forged-grave\"]\n",
                "forged-grave",
            ),
            (
                "[[fault]]\nkind = \"byzantine\"\nat_ms = 1\nnodes = [0]\nburst = 0\n",
                "burst",
            ),
            (
                "[[fault]]\nkind = \"byzantine\"\nat_ms = 1\nnodes = [0]\nrate_per_s = 0.0\n",
                "rate_per_s",
            ),
            (
                "[[fault]]\nkind = \"pause\"\nat_ms = 1\nnodes = [0]\nattacks = [\"flood\"]\n",
                "byzantine faults",
            ),
        ];
        for (text, want) in bad {
            let e = Scenario::parse(text).unwrap_err();
            assert!(e.0.contains(want), "{text}: {}", e.0);
        }
    }

    #[test]
    fn faults_end_at_their_duration_or_the_heal_whichever_is_first() {
        let sc = scenario(
            "[phases]\nheal_at_ms = 10000\ndeadline_ms = 20000\n\
             [[fault]]\nkind = \"partition\"\nat_ms = 1000\nduration_ms = 2000\nmode = \"halves\"\n\
             [[fault]]\nkind = \"pause\"\nat_ms = 2000\nnodes = [1]\n\
             [[fault]]\nkind = \"crash\"\nat_ms = 3000\nduration_ms = 50000\nnodes = [2]\nstate = \"lost\"\n\
             [[fault]]\nkind = \"crash\"\nat_ms = 4000\nnodes = [3]\npermanent = true\n\
             [[fault]]\nkind = \"clock-jump\"\nat_ms = 5000\nnodes = [0]\njump_ms = -300\n",
        );
        let plan = FaultPlan::new(&sc);
        let ends: Vec<Option<u64>> = plan.faults.iter().map(|f| f.end_ms).collect();
        assert_eq!(ends, [Some(3_000), Some(10_000), Some(10_000), None, None]);
        assert!(matches!(
            plan.faults[2].action,
            FaultAction::Crash {
                restart: true,
                keep_state: false,
                ..
            }
        ));
        assert!(matches!(
            plan.faults[3].action,
            FaultAction::Crash { restart: false, .. }
        ));
        assert_eq!(
            plan.faults[4].action,
            FaultAction::ClockJump {
                nodes: vec![0],
                jump_ms: -300
            }
        );
        // Instant faults have no period; a permanent crash lasts to the end.
        let periods = plan.periods();
        assert_eq!(periods.len(), 4);
        assert_eq!((periods[3].0, periods[3].1), (4_000, 20_000));
    }

    #[test]
    fn the_timeline_orders_steps_and_swizzles_within_the_fault() {
        let sc = scenario(
            "[cluster]\nsize = 5\n[phases]\nheal_at_ms = 20000\ndeadline_ms = 30000\n\
             [[fault]]\nkind = \"swizzle\"\nat_ms = 1000\nduration_ms = 10000\nnodes = [0, 1]\nstep_ms = 1000\n",
        );
        let plan = FaultPlan::new(&sc);
        let tl = plan.timeline();
        let times: Vec<u64> = tl.iter().map(|(t, _)| *t).collect();
        let mut sorted = times.clone();
        sorted.sort_unstable();
        assert_eq!(times, sorted);
        let swizzles: Vec<(u64, bool)> = tl
            .iter()
            .filter_map(|(t, s)| match s {
                Step::Swizzle { clog, .. } => Some((*t, *clog)),
                _ => None,
            })
            .collect();
        // Clogs one step apart from the start; restores in the last steps
        // before the end.
        assert_eq!(
            swizzles,
            [(1_000, true), (2_000, true), (9_000, false), (10_000, false)]
        );
        assert_eq!(tl.last(), Some(&(30_000, Step::Deadline)));
        assert!(tl.contains(&(20_000, Step::Heal)));
        assert!(tl.contains(&(20_000, Step::ConvergeRef)));
    }
}
