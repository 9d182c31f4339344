//! The network model: latency, loss, burst loss, duplication, reordering,
//! per-link overrides and the partitions currently in force.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::{Rng, RngCore};
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

/// Standard normal draws come from a table of quantiles: the inverse CDF
/// at the midpoints of 2^14 equal-probability cells, indexed by one random
/// word. A flood over a 1,000-node mesh draws ~6,000 link latencies, and
/// Box–Muller's `ln`/`sqrt`/`cos` per draw was a visible share of the
/// simulator's time; the table's tails end at ±3.9σ.
const NORMAL_TABLE_BITS: u32 = 14;

fn normal_table() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let n = 1usize << NORMAL_TABLE_BITS;
        (0..n)
            .map(|i| inverse_normal_cdf((i as f64 + 0.5) / n as f64))
            .collect()
    })
}

fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    normal_table()[(rng.next_u32() >> (32 - NORMAL_TABLE_BITS)) as usize]
}

/// The standard normal quantile function (Acklam's rational approximation
/// refined by one Newton step on the error function; |error| < 1e-12 on
/// the cell midpoints used here).
fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let x = if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    // One Halley step against the normal CDF.
    let e = 0.5 * erfc(-x / std::f64::consts::SQRT_2) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// Complementary error function (Numerical Recipes' Chebyshev fit,
/// relative error < 1.2e-7, enough for one refinement step).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_normal_table_has_the_normal_moments() {
        let t = normal_table();
        let n = t.len() as f64;
        let mean = t.iter().sum::<f64>() / n;
        let var = t.iter().map(|x| x * x).sum::<f64>() / n;
        assert!(mean.abs() < 1e-9, "{mean}");
        assert!((var - 1.0).abs() < 2e-3, "{var}");
        assert!((inverse_normal_cdf(0.975) - 1.959_964).abs() < 1e-5);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let draws: Vec<f64> = (0..10_000).map(|_| std_normal(&mut rng)).collect();
        let m = draws.iter().sum::<f64>() / 1e4;
        assert!(m.abs() < 0.05, "{m}");
    }
}
