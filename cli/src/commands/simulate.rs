//! `cellmatrix simulate`: the Lambda-scale simulation (`cellmatrix_lab::simulate`), its
//! cases with and without hedging over many seeds, printed as a table.

use std::path::PathBuf;
use std::time::Instant;

use cellmatrix_lab::simulate::model::DEFAULT_CALIBRATION;
use cellmatrix_lab::simulate::{Calibration, Model, Prepared, cases, report, run_seeds, summarize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CaseArg {
    /// 10,000 bundles, 1,000,000 cells (10x + SmartSeq2).
    Million,
    /// 4,500 one-cell SmartSeq2 bundles.
    Smartseq2,
    /// Both.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HedgeArg {
    On,
    Off,
    Both,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which request to simulate.
    #[arg(long, value_enum, default_value = "all")]
    case: CaseArg,
    /// Runs per case and setting (seeds 0..N).
    #[arg(long, default_value_t = 200)]
    seeds: u64,
    /// `cellmatrix bench worker`'s figures; built-in defaults when missing.
    #[arg(long, default_value = DEFAULT_CALIBRATION)]
    calibration: PathBuf,
    /// Whether the collector hedges stragglers.
    #[arg(long, value_enum, default_value = "both")]
    hedge: HedgeArg,
    /// Inject no faults (by default those of the chaos test: crash 10%, duplicate 20%,
    /// drop 5%, store 503 5%, stragglers 5% at 10×).
    #[arg(long)]
    no_faults: bool,
    /// Override the planner's per-slice charge (`CELLMATRIX_SLICE_BYTES`), e.g. 0 to
    /// see the planner without it.
    #[arg(long)]
    slice_bytes: Option<u64>,
    /// Override the nonzeros per consolidation shard (`CELLMATRIX_SHARD_NNZ`).
    #[arg(long)]
    shard_nnz: Option<u64>,
    /// Override how long a launch may go without starting before it is taken for lost
    /// (`CELLMATRIX_LOST_AFTER_MS`).
    #[arg(long)]
    lost_after_ms: Option<u64>,
    /// Override how long a launch passed by a later one may go without starting
    /// (`CELLMATRIX_LOST_PASSED_AFTER_MS`).
    #[arg(long)]
    lost_passed_after_ms: Option<u64>,
    /// Override how often the collector looks at the markers (`CELLMATRIX_POLL_MS`).
    #[arg(long)]
    poll_ms: Option<u64>,
    /// Override how long a request's first collector may go unheard of before a status
    /// request starts another (`CELLMATRIX_COLLECTOR_FIRST_BEAT_MS`).
    #[arg(long)]
    collector_first_beat_ms: Option<u64>,
    /// Override how many bundle groups the driver plans itself (`CELLMATRIX_DRIVER_GROUPS`;
    /// 0: a mapper for every group).
    #[arg(long)]
    driver_groups: Option<usize>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.seeds > 0, "--seeds must be at least 1");
    let mut model = Model {
        calibration: Calibration::load_or_default(&a.calibration),
        ..Model::default()
    };
    if let Some(b) = a.slice_bytes {
        model.service.budget.slice_bytes = b;
    }
    if let Some(n) = a.shard_nnz {
        model.service.shard_nnz = n.max(1);
    }
    if let Some(ms) = a.lost_after_ms {
        model.service.lost_after_s = ms as f64 / 1e3;
    }
    if let Some(ms) = a.lost_passed_after_ms {
        model.service.lost_passed_after_s = ms as f64 / 1e3;
    }
    if let Some(ms) = a.poll_ms {
        model.service.poll_s = ms.max(1) as f64 / 1e3;
    }
    if let Some(ms) = a.collector_first_beat_ms {
        model.service.collector_first_beat_s = ms as f64 / 1e3;
    }
    if let Some(n) = a.driver_groups {
        model.service.driver_groups = n;
    }
    let c = &model.calibration;
    println!("calibration: {}", c.source);
    for k in [&c.tenx, &c.smartseq2] {
        println!(
            "  {:<9} {:>6.0} nonzeros/cell, {:>6.0} stored bytes/cell, {:>6.1} MB/s per core",
            k.kind,
            k.nnz_per_cell(),
            k.stored_per_cell(),
            k.bytes_per_s / 1e6
        );
    }
    let b = model.service.budget;
    println!(
        "planner budget: {} cells, {} MiB, {} KiB charged per slice; faults {}",
        b.cells,
        b.bytes >> 20,
        b.slice_bytes >> 10,
        if a.no_faults { "off" } else { "on" }
    );
    let cases = match a.case {
        CaseArg::Million => vec![cases::million(c)],
        CaseArg::Smartseq2 => vec![cases::smartseq2(c)],
        CaseArg::All => vec![cases::million(c), cases::smartseq2(c)],
    };
    let hedges: &[bool] = match a.hedge {
        HedgeArg::On => &[true],
        HedgeArg::Off => &[false],
        HedgeArg::Both => &[false, true],
    };
    let started = Instant::now();
    let mut summaries = Vec::new();
    for case in &cases {
        let p = Prepared::new(case, &model);
        let slices: usize = p.tasks.iter().map(|t| t.slices.len()).max().unwrap_or(0);
        println!(
            "{}: {}; {} mapper groups, {} worker tasks (at most {} slices), {} shards",
            case.name,
            case.description,
            p.groups.len(),
            p.tasks.len(),
            slices,
            p.shards
        );
        for &hedge in hedges {
            let outcomes = run_seeds(&model, &p, hedge, !a.no_faults, 0..a.seeds);
            summaries.push(summarize(case.name, hedge, !a.no_faults, &outcomes));
        }
    }
    println!();
    print!("{}", report::table(&summaries));
    println!("\nphases (medians, seconds from the POST):");
    print!("{}", report::phases(&summaries));
    println!(
        "\ntimes: POST → the client's status poll that sees the result (p50/p99 by nearest rank);\n\
         cost: Lambda arm64 GB-s + invocations + S3 requests, us-east-1 prices of 2025, per request;\n\
         invocs: mapper, worker, reducer and the POST's driver (status polls not counted). \
         {} runs in {:.1}s.",
        summaries.iter().map(|s| s.runs).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
