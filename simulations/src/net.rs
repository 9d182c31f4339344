//! The network model: latency, loss, burst loss, duplication, reordering,
//! per-link overrides and the partitions currently in force.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::scenario::{BurstLoss, Latency, NetworkSpec};

impl Latency {
    /// One draw, in microseconds.
    pub fn sample_us(&self, rng: &mut ChaCha8Rng) -> u64 {
        let ms = match *self {
            Latency::Constant { ms } => ms,
            Latency::Uniform { min_ms, max_ms } => {
                if max_ms > min_ms {
                    rng.gen_range(min_ms..max_ms)
                } else {
                    min_ms
                }
            }
            Latency::Normal { mean_ms, std_ms } => mean_ms + std_ms * std_normal(rng),
            Latency::Lognormal { median_ms, sigma } => median_ms * (sigma * std_normal(rng)).exp(),
        };
        (ms.max(0.0) * 1000.0) as u64
    }

    /// The median, in milliseconds (for the analytic model).
    pub fn median_ms(&self) -> f64 {
        match *self {
            Latency::Constant { ms } => ms,
            Latency::Uniform { min_ms, max_ms } => (min_ms + max_ms) / 2.0,
            Latency::Normal { mean_ms, .. } => mean_ms,
            Latency::Lognormal { median_ms, .. } => median_ms,
        }
    }
}

/// Box–Muller.
fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A cut in force: which directed links it blocks.
#[derive(Clone, Debug)]
pub enum Cut {
    /// Nodes reach each other only within a common group; nodes listed in
    /// no group form one more group.
    Groups {
        /// For each node, the groups it is in (empty: the implicit group).
        member_of: Vec<Vec<u32>>,
    },
    /// Messages from `from` to `to` are dropped; the reverse direction works.
    OneWay {
        /// Senders.
        from: BTreeSet<usize>,
        /// Receivers.
        to: BTreeSet<usize>,
    },
    /// Every link of these nodes is cut (swizzle-clogging).
    Clog {
        /// The clogged nodes.
        nodes: BTreeSet<usize>,
    },
}

impl Cut {
    /// A group partition over `slots` nodes.
    pub fn groups(slots: usize, groups: &[Vec<usize>]) -> Cut {
        let mut member_of = vec![Vec::new(); slots];
        for (g, nodes) in groups.iter().enumerate() {
            for &n in nodes {
                member_of[n].push(g as u32);
            }
        }
        Cut::Groups { member_of }
    }

    fn blocks(&self, from: usize, to: usize) -> bool {
        match self {
            Cut::Groups { member_of } => {
                let (a, b) = (&member_of[from], &member_of[to]);
                if a.is_empty() || b.is_empty() {
                    return !(a.is_empty() && b.is_empty());
                }
                !a.iter().any(|g| b.contains(g))
            }
            Cut::OneWay { from: f, to: t } => f.contains(&from) && t.contains(&to),
            Cut::Clog { nodes } => nodes.contains(&from) || nodes.contains(&to),
        }
    }
}

/// What happened to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Delivered after these delays (µs); two entries when duplicated.
    Delivered([Option<u64>; 2]),
    /// Dropped by a partition.
    Cut,
    /// Dropped at random (loss or burst loss).
    Lost,
}

/// The network state of one run.
pub struct Network {
    spec: NetworkSpec,
    region: Vec<usize>,
    overrides: HashMap<(usize, usize), (Option<Latency>, Option<f64>)>,
    bad: HashMap<(usize, usize), bool>,
    cuts: BTreeMap<u64, Cut>,
    /// Background loss on (off after heal if the scenario says so).
    pub loss_on: bool,
    rng: ChaCha8Rng,
}

impl Network {
    /// A network for `slots` nodes in `regions` regions (round-robin).
    pub fn new(spec: &NetworkSpec, slots: usize, regions: usize, rng: ChaCha8Rng) -> Network {
        let mut overrides = HashMap::new();
        for l in &spec.links {
            overrides.insert((l.from, l.to), (l.latency.clone(), l.loss));
            if l.both {
                overrides.insert((l.to, l.from), (l.latency.clone(), l.loss));
            }
        }
        Network {
            spec: spec.clone(),
            region: (0..slots).map(|i| i % regions.max(1)).collect(),
            overrides,
            bad: HashMap::new(),
            cuts: BTreeMap::new(),
            loss_on: true,
            rng,
        }
    }

    /// Region of a node.
    pub fn region(&self, node: usize) -> usize {
        self.region[node]
    }

    /// Put a cut in force under `id`.
    pub fn add_cut(&mut self, id: u64, cut: Cut) {
        self.cuts.insert(id, cut);
    }

    /// Lift a cut.
    pub fn remove_cut(&mut self, id: u64) {
        self.cuts.remove(&id);
    }

    /// Change a clog cut's node set.
    pub fn cut_mut(&mut self, id: u64) -> Option<&mut Cut> {
        self.cuts.get_mut(&id)
    }

    /// Lift every cut.
    pub fn heal(&mut self) {
        self.cuts.clear();
    }

    /// Whether any cut is in force.
    pub fn any_cut(&self) -> bool {
        !self.cuts.is_empty()
    }

    /// Whether a partition blocks `from → to` now.
    pub fn blocked(&self, from: usize, to: usize) -> bool {
        self.cuts.values().any(|c| c.blocks(from, to))
    }

    /// One latency draw for the link, in µs, without loss.
    pub fn latency_us(&mut self, from: usize, to: usize) -> u64 {
        let lat = match self.overrides.get(&(from, to)) {
            Some((Some(l), _)) => l.clone(),
            _ if self.region[from] != self.region[to] => self
                .spec
                .inter_region_latency
                .clone()
                .unwrap_or_else(|| self.spec.latency.clone()),
            _ => self.spec.latency.clone(),
        };
        let mut us = lat.sample_us(&mut self.rng);
        if self.spec.reorder > 0.0 && self.rng.gen_bool(self.spec.reorder) {
            us += (self.spec.reorder_delay_ms * 1000.0) as u64;
        }
        us.max(1)
    }

    /// Whether a message on the link is lost at random (steps the burst
    /// chain of the link).
    pub fn lost(&mut self, from: usize, to: usize) -> bool {
        if !self.loss_on {
            return false;
        }
        let loss = match self.overrides.get(&(from, to)) {
            Some((_, Some(p))) => *p,
            _ => self.spec.loss,
        };
        if loss > 0.0 && self.rng.gen_bool(loss.min(1.0)) {
            return true;
        }
        if let Some(BurstLoss {
            p_enter,
            p_exit,
            loss_bad,
        }) = self.spec.burst
        {
            let bad = self.bad.entry((from, to)).or_insert(false);
            *bad = if *bad {
                !self.rng.gen_bool(p_exit.clamp(0.0, 1.0))
            } else {
                self.rng.gen_bool(p_enter.clamp(0.0, 1.0))
            };
            if *bad && self.rng.gen_bool(loss_bad.clamp(0.0, 1.0)) {
                return true;
            }
        }
        false
    }

    /// The fate of one point-to-point message.
    pub fn send(&mut self, from: usize, to: usize) -> Fate {
        if self.blocked(from, to) {
            return Fate::Cut;
        }
        if self.lost(from, to) {
            return Fate::Lost;
        }
        let first = self.latency_us(from, to);
        let dup = if self.spec.duplicate > 0.0 && self.rng.gen_bool(self.spec.duplicate) {
            Some(self.latency_us(from, to))
        } else {
            None
        };
        Fate::Delivered([Some(first), dup])
    }

    /// The request timeout in µs.
    pub fn request_timeout_us(&self) -> u64 {
        self.spec.request_timeout_ms * 1000
    }

    /// The random stream of the network (mesh choices use it too).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}
