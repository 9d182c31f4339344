//! `starling-sim`: a deterministic simulator of many real Starling engines
//! under partitions, loss, crashes and clock skew.
//!
//! A run is fully determined by a scenario file and a seed:
//! [`Scenario::resolve`] makes every random choice explicit, [`sim::Sim`]
//! runs the engines in virtual time, the [`oracle`] checks safety as the run
//! goes and liveness at the deadline, and [`report`] writes the results.
//!
//! Both modes share the [`plan`] (the typed faults, their ends and the
//! timeline), the [`workload`] (every client choice drawn from the seed)
//! and the [`summary`] (what a run reports, and the verdict rule).
//!
//! [`hunt`] runs many random seeds in parallel and groups what fails;
//! [`shrink`] reduces a failing run to a small scenario that fails the
//! same way.
//!
//! With the `real` feature (on by default), `real` runs the same scenario
//! files on real libp2p nodes in this process (`starling-sim swarm-real`).
#![forbid(unsafe_code)]

pub mod hunt;
pub mod model;
pub mod net;
pub mod oracle;
pub mod plan;
#[cfg(feature = "real")]
pub mod real;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod shrink;
pub mod sim;
pub mod summary;
pub mod swarm;
pub mod workload;

pub use scenario::Scenario;
pub use sim::{RunOptions, RunResult, Sim};
pub use summary::{RunSummary, Verdict};

/// Run `scenario` (resolved here) with `seed`.
pub fn run(scenario: &Scenario, seed: u64, opts: RunOptions) -> RunResult {
    let resolved = scenario.resolve(seed);
    Sim::new(resolved, seed, opts).run()
}
