//! `cellmatrix bench e2e`: the whole service on the embedded stack against a peer
//! baseline in Python (anndata), on synthetic 10x + SmartSeq2 mixes of given sizes.
//! See `cellmatrix_lab::bench::e2e`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, bail};
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_lab::bench::e2e::{BASELINE_PY, Baseline, Figures, MIN_GENES, Mix, Ours, run_ours};
use cellmatrix_lab::synth::{SynthOptions, synth};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sizes to run, in cells.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    cells: Vec<u64>,
    /// The share of cells in one-cell SmartSeq2-like bundles: 1% makes a million cells
    /// about 10,000 bundles, the simulation's case (`cellmatrix simulate`).
    #[arg(long, default_value_t = 0.01)]
    smartseq2_share: f64,
    /// Cells per 10x-like bundle.
    #[arg(long, default_value_t = 5_000)]
    cells_per_bundle: u64,
    /// Where the synthetic stores live (one per size, kept and reused: generating a
    /// million cells takes minutes).
    #[arg(long, default_value = ".cache/bench/e2e")]
    dir: PathBuf,
    /// A Python with anndata for the baseline (`CELLMATRIX_BENCH_PYTHON`; the test
    /// command's venv by default).
    #[arg(
        long,
        env = "CELLMATRIX_BENCH_PYTHON",
        default_value = ".venv/bin/python"
    )]
    python: PathBuf,
    /// Run only the service, not the baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = ".cache/bench/e2e.json")]
    out: PathBuf,
}

/// The hidden child: the service's side of one size.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The size's store.
    #[arg(long)]
    dir: PathBuf,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&a.smartseq2_share) {
        bail!(
            "--smartseq2-share must be between 0 and 1, not {}",
            a.smartseq2_share
        );
    }
    if !a.no_baseline && !a.python.exists() {
        bail!(
            "no Python at {} for the baseline: run scripts/test once (it makes .venv), pass --python, or --no-baseline",
            a.python.display()
        );
    }
    let mut all = Vec::new();
    // Each size's store starts from the calibration the last size left: the estimate
    // of a size is then that of a service which has seen one request.
    let mut calibration: Option<cellmatrix::calibration::Calibration> = None;
    for &cells in &a.cells {
        let mix = Mix {
            cells,
            smartseq2_share: a.smartseq2_share,
            cells_per_bundle: a.cells_per_bundle,
        };
        let dir = a.dir.join(format!(
            "{cells}-{}-{}",
            a.smartseq2_share, a.cells_per_bundle
        ));
        all.push(one(&a, mix, &dir, &mut calibration).await?);
    }
    println!(
        "{:>9} {:>9} {:>7} {:>7} {:>9} {:>9} {:>5} {:>9} {:>11} {:>10} {:>8} {:>6}",
        "cells",
        "dry cells",
        "bundles",
        "tasks",
        "ours s",
        "est s",
        "runs",
        "ours RSS",
        "baseline s",
        "base RSS",
        "speedup",
        "same"
    );
    for f in &all {
        let (bs, brss, same) = match &f.baseline {
            Some(b) => (
                format!("{:.2}", b.seconds),
                format!("{:.0} MB", b.peak_rss_bytes as f64 / 1e6),
                match b.same_matrix {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                },
            ),
            None => ("-".into(), "-".into(), "-"),
        };
        println!(
            "{:>9} {:>9} {:>7} {:>7} {:>9.2} {:>9.2} {:>5} {:>9} {:>11} {:>10} {:>8} {:>6}",
            f.ours.n_cells,
            f.ours.dry_cells,
            f.bundles,
            f.ours.tasks,
            f.ours.seconds,
            f.ours.estimated_seconds,
            f.ours.calibrated_runs,
            format!("{:.0} MB", f.ours.peak_rss_bytes as f64 / 1e6),
            bs,
            brss,
            f.speedup().map_or("-".into(), |s| format!("{s:.1}x")),
            same
        );
    }
    super::write_json(&a.out, &all)?;
    if all.iter().any(|f| {
        f.baseline
            .as_ref()
            .is_some_and(|b| b.same_matrix == Some(false))
    }) {
        bail!("the service and the baseline disagree on the matrix");
    }
    Ok(())
}

async fn one(
    a: &Args,
    mix: Mix,
    dir: &Path,
    calibration: &mut Option<cellmatrix::calibration::Calibration>,
) -> anyhow::Result<Figures> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let store: DynStore = Arc::new(FsStore::open(dir)?);
    let spec = mix.spec();
    eprintln!(
        "{} cells: {} 10x bundles of {} cells and {} SmartSeq2 bundles in {}",
        mix.cells,
        spec.tenx_bundles,
        spec.cells_per_tenx_bundle,
        spec.smartseq2_bundles,
        dir.display()
    );
    let opts = SynthOptions {
        progress: std::io::stderr().is_terminal(),
        ..SynthOptions::default()
    };
    synth(&store, &spec, &opts).await?;
    if let Some(c) = calibration.as_ref() {
        cellmatrix::state::put_json(&store, cellmatrix::calibration::KEY, c).await?;
    }
    let ours: Ours = child_json(
        Command::new(std::env::current_exe()?)
            .args(["bench", "e2e-run", "--dir"])
            .arg(dir),
        "the service",
    )?;
    eprintln!(
        "service: {} cells in {:.2} s, peak RSS {:.0} MB; the dry run said {} cells, {:.2} s \
         (calibrated on {} run(s))",
        ours.n_cells,
        ours.seconds,
        ours.peak_rss_bytes as f64 / 1e6,
        ours.dry_cells,
        ours.estimated_seconds,
        ours.calibrated_runs
    );
    let secs = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.2} s"));
    eprintln!(
        "cell table: first ({} cells) after {}, complete after {}; the matrix after {:.2} s",
        ours.cell_table.first_cells,
        secs(ours.cell_table.first_seconds),
        secs(ours.cell_table.complete_seconds),
        ours.seconds
    );
    if ours.dry_cells != ours.n_cells {
        bail!(
            "the dry run counted {} cells, the run made {}",
            ours.dry_cells,
            ours.n_cells
        );
    }
    *calibration = Some(cellmatrix::calibration::load(&store).await);
    let baseline = if a.no_baseline {
        None
    } else {
        let script = dir.join("baseline.py");
        std::fs::write(&script, BASELINE_PY)?;
        let out = dir.join("baseline.zarr");
        if out.exists() {
            std::fs::remove_dir_all(&out)?;
        }
        eprintln!("baseline: anndata reads, filters, concatenates and writes ...");
        let b: Baseline = child_json(
            Command::new(&a.python)
                .arg(&script)
                .arg(dir)
                .arg(MIN_GENES.to_string())
                .arg(&out)
                .arg(dir.join(&ours.output)),
            "the baseline",
        )?;
        std::fs::remove_dir_all(&out)?;
        eprintln!(
            "baseline: {} cells in {:.2} s, peak RSS {:.0} MB",
            b.n_cells,
            b.seconds,
            b.peak_rss_bytes as f64 / 1e6
        );
        if b.n_cells != ours.n_cells || b.nnz != ours.nnz {
            bail!(
                "the baseline made {} cells and {} nonzeros, the service {} and {}",
                b.n_cells,
                b.nnz,
                ours.n_cells,
                ours.nnz
            );
        }
        Some(b)
    };
    Ok(Figures {
        mix,
        bundles: spec.total_bundles() as u64,
        ours,
        baseline,
    })
}

/// Runs `command` and parses the JSON object on its last line of output.
fn child_json<T: serde::de::DeserializeOwned>(
    command: &mut Command,
    what: &str,
) -> anyhow::Result<T> {
    let out = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("{what} printed {line:?}"))
}

/// The child: runs the service's side and prints its figures as one JSON line.
pub async fn run_child(a: RunArgs) -> anyhow::Result<()> {
    let store: DynStore = Arc::new(FsStore::open(&a.dir)?);
    let ours = run_ours(store, std::io::stderr().is_terminal()).await?;
    println!("{}", serde_json::to_string(&ours)?);
    Ok(())
}
