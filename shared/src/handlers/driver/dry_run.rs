//! `POST /v1/matrix` with `"dry_run": true`: what a request would make and cost, from a
//! request `submit` has checked as it checks a real one; nothing written, nothing
//! invoked. Also the counts of a real request's status `preview`.

use futures::{StreamExt, TryStreamExt};

use serde_json::{Value, json};

use crate::app::App;
use crate::bundle::reader::{BundleReader, BundleShape};
use crate::catalog::{CatalogEntry, Facts};
use crate::cost::{Deployment, Prices};
use crate::error::Error;
use crate::estimate::{self, Output, Setting, Tasks};
use crate::field::{Field, Level, Value as FieldValue};
use crate::filter::{BundleFacts, Filter};
use crate::fqid::Fqid;
use crate::state::Preview;

use super::HttpResponse;
use super::check::{Checked, worker_copies};
use super::limits;

/// Bundles whose obs a dry run reads at once.
const READS_IN_FLIGHT: usize = 16;

/// How a bundle the catalog does not decide is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Undecided {
    /// Its cells' fields read and the filter evaluated: exact.
    ReadObs,
    /// Every cell counted: an upper bound, and nothing read.
    UpperBound,
}

/// The cells and nonzeros a request takes.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Counts {
    pub(super) bundles: u64,
    pub(super) cells: u64,
    pub(super) nnz: u64,
    /// Whether `cells` is exact.
    pub(super) exact: bool,
    /// Whether `nnz` is exact.
    pub(super) nnz_exact: bool,
    /// Bundles whose obs were read.
    pub(super) read: u64,
}

impl Counts {
    fn counted_from(&self) -> &'static str {
        if self.read > 0 { "obs" } else { "catalog" }
    }
}

/// Counts the cells and nonzeros `checked` takes: a bundle the filter decides from the
/// catalog (or with no cell-level condition) whole or not at all, an undecided one as
/// `undecided` says.
pub(super) async fn count(
    app: &App,
    checked: &Checked,
    undecided: Undecided,
) -> Result<Counts, Error> {
    let filter = checked.req.filter();
    let resolved = &checked.resolved;
    let mut counts = Counts {
        bundles: resolved.bundles.len() as u64,
        cells: 0,
        nnz: 0,
        exact: true,
        // A gene subset drops the nonzeros of the genes it leaves out.
        nnz_exact: checked.req.genes.is_none(),
        read: 0,
    };
    let mut to_read = Vec::new();
    for (fqid, entry) in resolved.bundles.iter().zip(&resolved.entries) {
        let decided = filter.map_or(Some(true), |f| f.eval_bundle(&Facts { fqid, entry }));
        match (decided, undecided) {
            (Some(false), _) => {}
            (Some(true), _) | (None, Undecided::UpperBound) => {
                counts.cells += entry.n_cells;
                counts.nnz += entry.nnz;
                if decided.is_none() {
                    counts.exact = false;
                    counts.nnz_exact = false;
                }
            }
            (None, Undecided::ReadObs) => to_read.push((fqid, entry)),
        }
    }
    if let Some(filter) = filter {
        let names = open_cell_fields(filter);
        let names = &names;
        // Futures built eagerly for `Send`; `buffer_unordered` polls a few at once.
        let reads: Vec<futures::future::BoxFuture<'_, Result<(u64, u64), Error>>> = to_read
            .into_iter()
            .map(|(fqid, entry)| {
                Box::pin(count_bundle(app, fqid, entry, filter, names))
                    as futures::future::BoxFuture<'_, _>
            })
            .collect();
        let taken: Vec<(u64, u64)> = futures::stream::iter(reads)
            .buffer_unordered(READS_IN_FLIGHT)
            .try_collect()
            .await?;
        for (cells, nnz) in taken {
            counts.read += 1;
            counts.cells += cells;
            counts.nnz += nnz;
        }
    }
    Ok(counts)
}

/// The cell fields the filter tests that are not built in (the built-ins come with the
/// rows' head).
fn open_cell_fields(filter: &Filter) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in filter.fields() {
        if f.level() == Level::Cell
            && f.as_builtin().is_none()
            && !out.iter().any(|n| n == f.column())
        {
            out.push(f.column().to_string());
        }
    }
    out
}

/// The cells of one bundle the filter keeps, and their stored nonzeros: its rows' head
/// (cell ids, QC, row pointers; no nonzeros) and the filter's other fields read, and
/// each cell evaluated as a worker evaluates it.
async fn count_bundle(
    app: &App,
    fqid: &Fqid,
    entry: &CatalogEntry,
    filter: &Filter,
    names: &[String],
) -> Result<(u64, u64), Error> {
    let reader = BundleReader::with_shape(
        &app.store,
        BundleShape {
            fqid: fqid.clone(),
            n_cells: entry.n_cells,
            n_features: entry.n_features,
            nnz: entry.nnz,
            value_type: entry.value_type,
            layout: entry.layout(),
        },
    )
    .await?;
    let rows = 0..entry.n_cells;
    let (head, obs) = futures::try_join!(reader.read_head(rows.clone()), async {
        if names.is_empty() {
            Ok(Vec::new())
        } else {
            reader.read_obs(names, rows.clone()).await
        }
    })?;
    let facts = Facts { fqid, entry };
    let (mut cells, mut nnz) = (0u64, 0u64);
    for r in 0..head.cells.len() {
        let value = |f: &Field| -> FieldValue<'_> {
            match (f.level(), f.column()) {
                (Level::Bundle, _) => facts.value(f),
                (Level::Cell, "n_genes") => FieldValue::Num(f64::from(head.qc.n_genes[r])),
                (Level::Cell, "total_counts") => FieldValue::num(head.qc.total_counts[r]),
                (Level::Cell, "pct_mito") => FieldValue::num(head.qc.pct_mito[r]),
                (Level::Cell, "barcode") => FieldValue::Str(&head.cells[r]),
                (Level::Cell, name) => names
                    .iter()
                    .position(|n| n == name)
                    .and_then(|i| obs[i].as_ref())
                    .map_or(FieldValue::Null, |c| c.get(r)),
            }
        };
        if filter.eval_cell(&value) {
            cells += 1;
            nnz += head.indptr[r + 1] - head.indptr[r];
        }
    }
    Ok((cells, nnz))
}

/// The preview a real request's status carries: the counts without reading any obs (so
/// the submit is not slowed), and the tasks.
pub(super) async fn preview(app: &App, checked: &Checked) -> Result<Preview, Error> {
    let counts = count(app, checked, Undecided::UpperBound).await?;
    let tasks: u64 = limits::plan_groups(app, &checked.resolved)
        .map(|g| g.len() as u64)
        .sum();
    Ok(Preview {
        bundles: counts.bundles,
        cells: counts.cells,
        exact: counts.exact,
        genes: checked.genes.len() as u64,
        nnz: counts.nnz,
        tasks,
        counted_from: counts.counted_from().to_string(),
    })
}

/// The dry run's answer: 200 with the counts, sizes, plan, time and cost.
pub(super) async fn answer(app: &App, checked: &Checked) -> Result<HttpResponse, Error> {
    let (counts, calibration) = futures::join!(
        count(app, checked, Undecided::ReadObs),
        crate::calibration::load(&app.store)
    );
    let counts = counts?;
    let c = &app.config;
    let resolved = &checked.resolved;
    let format = checked.req.format;
    let genes = checked.genes.len() as u64;
    let output = Output {
        cells: counts.cells,
        genes,
        nnz: counts.nnz,
        value_type: limits::output_type(&resolved.entries),
    };
    let sizes = estimate::sizes(&output);
    let format_bytes = sizes
        .iter()
        .find(|s| s.format == format.name())
        .map_or(0, |s| s.bytes);
    let all: Vec<_> = limits::plan_groups(app, resolved).flatten().collect();
    let tasks = Tasks::of(&all);
    let groups = resolved.bundles.len().div_ceil(c.bundles_per_mapper.max(1)) as u64;
    let copies = worker_copies(app, resolved);
    let setting = Setting {
        format,
        format_bytes,
        groups,
        driver_groups: c.driver_groups as u64,
        copies,
        shard_nnz: c.shard_nnz,
        poll_seconds: c.poll_interval.as_secs_f64(),
        columns: resolved.columns.len() as u64,
    };
    let deployment = Deployment::default();
    let prices = Prices::default();
    let e = estimate::estimate(
        &output,
        &tasks,
        &setting,
        &calibration,
        &deployment,
        &prices,
    );
    let worker_memory = u64::from(deployment.memory(crate::cost::Lambda::Worker)) << 20;
    let calibrated = if calibration.runs == 0 {
        "no run calibrated this service yet: the documented defaults (100 MB/s a task, 200 MB/s \
         for the workers with 2 tasks at once, \
         50 M nonzeros/s consolidated, 50 MB/s converted, 1 s fixed)"
            .to_string()
    } else {
        format!(
            "rates of this service's last {} successful run(s), weighted towards the newest",
            calibration.runs
        )
    };
    let cells_assume = match (counts.exact, counts.read) {
        (true, 0) => "every selected bundle is decided by the catalog: taken whole (or not at all)"
            .to_string(),
        (true, n) => format!(
            "{n} bundle(s) the catalog does not decide had the filter's fields read and every \
             cell evaluated; the others are decided by the catalog"
        ),
        (false, _) => {
            "an upper bound: every cell of a bundle the catalog does not decide is counted".into()
        }
    };
    let nnz_assume = if counts.nnz_exact {
        "the stored nonzeros of the cells taken, each kept under the union gene space"
    } else {
        "an upper bound: the stored nonzeros of the cells taken; the gene subset keeps only its genes'"
    };
    let body = json!({
        "dry_run": true,
        "id": checked.id,
        "format": format.name(),
        "matching": {
            "bundles": counts.bundles,
            "cells": counts.cells,
            "exact": counts.exact,
            "counted_from": counts.counted_from(),
            "assumes": cells_assume,
        },
        "genes": {
            "count": genes,
            "assumes": "the union of the selected bundles' genes, or the requested subset",
        },
        "nonzeros": {
            "count": counts.nnz,
            "exact": counts.nnz_exact && counts.exact,
            "assumes": nnz_assume,
        },
        "sizes": sizes,
        "plan": {
            "groups": groups,
            "tasks": tasks.tasks,
            "slices": tasks.slices,
            "shards": e.shards,
            "copies": copies,
            "bytes_read": tasks.bytes,
            "largest_task": {
                "cells": tasks.largest_task_cells,
                "memory_bytes": tasks.largest_task_bytes,
            },
            "worker_memory_bytes": worker_memory,
            "fits": tasks.largest_task_bytes <= worker_memory,
            "assumes": "the planner as the mappers run it, over every group, before the cell \
                        filter; a task's memory is its planned bytes (nonzeros × (value + \
                        index) + 8 per row), the most it holds if it read everything at once; \
                        the worker's memory is the template's WorkerMemory",
        },
        "seconds": {
            "total": round3(e.seconds.total),
            "fixed": round3(e.seconds.fixed),
            "workers": round3(e.seconds.workers),
            "consolidation": round3(e.seconds.consolidation),
            "conversion": round3(e.seconds.conversion),
            "calibrated_runs": calibration.runs,
            "assumes": format!(
                "on the stack that answers, from {calibrated}; the tasks' planned bytes shared \
                 among the workers at once, never less than the largest task; no retries, \
                 hedges or cold starts beyond those measured"
            ),
        },
        "cost": {
            "usd": e.bill.total_usd,
            "compute_usd": e.bill.compute_usd,
            "invocations_usd": e.bill.invocations_usd,
            "s3_usd": e.bill.s3_usd,
            "gb_seconds": e.usage.total_gb_seconds(),
            "invocations": e.usage.total_invocations(),
            "s3_requests": e.usage.requests,
            "prices": prices,
            "memory_mb": deployment.memory_mb,
            "architecture": deployment.architecture,
            "assumes": format!(
                "AWS us-east-1 list prices, free tiers ignored; Lambda at the template's \
                 memory sizes on {}: the driver and each mapper {} s, each task (and its \
                 copy) its bytes at the calibrated rate, the collector the whole request, \
                 the shards the consolidation; S3: {} GETs a slice, a dozen PUTs a task, \
                 {} LISTs a collector's look",
                deployment.architecture,
                estimate::PLANNING_SECONDS,
                estimate::GETS_PER_SLICE,
                estimate::LISTS_PER_LOOK
            ),
        },
    });
    Ok(HttpResponse::json(200, body))
}

fn round3(x: f64) -> Value {
    json!((x * 1e3).round() / 1e3)
}
