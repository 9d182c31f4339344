//! The analytic epidemic baseline: push gossip over a mesh of degree D.
//!
//! In round `r` every node that has the message forwards it to its D mesh
//! peers, each copy lost with probability `p`. With `I_r` informed nodes out
//! of `N`, the expected fraction informed next round is
//! `1 - (1 - i_r) * (1 - (1-p)/N)^(D * I_r)` (the classic mean-field
//! recurrence, Demers et al. 1987; Serf/memberlist document the same curve).
//! One round takes one hop latency. The simulator plots this curve behind
//! the measured convergence CDF: the gap is what the mesh structure, lazy
//! repair, partitions and anti-entropy add or cost.

/// Expected fraction of nodes informed after each round, until ≥ 99.99 %
/// or `max_rounds`.
pub fn epidemic_curve(nodes: usize, fanout: usize, loss: f64, max_rounds: usize) -> Vec<f64> {
    let n = nodes.max(1) as f64;
    let mut informed = 1.0 / n;
    let mut out = vec![informed];
    for _ in 0..max_rounds {
        let senders = informed * n;
        let miss_one = 1.0 - (1.0 - loss) / n;
        let p_still_missing = miss_one.powf(fanout as f64 * senders);
        informed = 1.0 - (1.0 - informed) * p_still_missing;
        out.push(informed.min(1.0));
        if informed >= 0.9999 {
            break;
        }
    }
    out
}

/// Rounds until the expected informed fraction reaches `target`.
pub fn rounds_to(nodes: usize, fanout: usize, loss: f64, target: f64) -> Option<usize> {
    epidemic_curve(nodes, fanout, loss, 10_000)
        .iter()
        .position(|f| *f >= target)
}
