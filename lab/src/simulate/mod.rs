//! A deterministic discrete-event simulation of a request at Lambda scale: the real
//! planner ([`cellmatrix::plan::plan`]) cuts the simulated bundles into tasks, and every
//! collector decides on the real [`cellmatrix::handlers::reducer::ledger::Ledger`] which
//! invocations were lost and which tasks to hedge, while Lambda (cold and warm starts,
//! concurrency, the scaling rate, asynchronous retries) and S3 (heavy-tailed latency,
//! throughput, 503s) are modelled. Pure: no tokio, no AWS, no store; one seed gives one
//! run.
//!
//! - `model`: every parameter, where its default comes from, and the calibration by
//!   `cellmatrix bench worker`;
//! - `engine`: the clock and the event queue;
//! - `lambda`: the functions' environments, concurrency, scaling and billing;
//! - `s3`: request latency, retries, throughput and billing;
//! - `work`: what each handler does, as time;
//! - `cases`: the requests simulated;
//! - `run`: one request end to end, the collector's loop on the real ledger;
//! - `report`: percentiles, cost, the table.
//!
//! `docs/SIMULATION.md` describes the model and its limits.

pub mod cases;
pub mod engine;
pub mod lambda;
pub mod model;
pub mod report;
pub mod run;
pub mod s3;
pub mod work;

pub use cases::Case;
pub use model::{Calibration, Model};
pub use report::{Summary, summarize};
pub use run::{Outcome, Prepared, run};

/// Runs `case` once per seed in `seeds` and summarises.
pub fn simulate(
    model: &Model,
    case: &Case,
    hedge: bool,
    faults: bool,
    seeds: std::ops::Range<u64>,
) -> Summary {
    let prepared = Prepared::new(case, model);
    let outcomes = run_seeds(model, &prepared, hedge, faults, seeds);
    summarize(case.name, hedge, faults, &outcomes)
}

/// Runs `prepared` once per seed, on every core; the outcomes in seed order, so the
/// figures do not depend on the thread count.
pub fn run_seeds(
    model: &Model,
    prepared: &Prepared,
    hedge: bool,
    faults: bool,
    seeds: std::ops::Range<u64>,
) -> Vec<Outcome> {
    let seeds: Vec<u64> = seeds.collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(seeds.len().max(1));
    let per = seeds.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = seeds
            .chunks(per)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&seed| run(model, prepared, seed, hedge, faults))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a simulation thread panicked"))
            .collect()
    })
}

#[cfg(test)]
mod tests;
