//! The per-request caps, checked before `request.json` is written: cells, nonzeros,
//! tasks and the output's size for its format. Each is counted over the selected bundles
//! from their catalog entries, before any cell filter or gene subset (a filter only
//! removes cells), so a request that could pass a cap is refused (422) with a message
//! naming the cap, the setting and by how much the request passes it.

use crate::app::App;
use crate::bundle::ValueType;
use crate::catalog::CatalogEntry;
use crate::convert::Format;
use crate::estimate::{dense_bytes, sparse_bytes};
use crate::request::Rejection;

use super::resolve::Resolved;

/// Refuses `resolved` in `format` with `n_genes` output genes when it could pass a cap.
pub(super) fn check(
    app: &App,
    format: Format,
    resolved: &Resolved,
    n_genes: u64,
) -> Result<(), Rejection> {
    let c = &app.config;
    let entries = &resolved.entries;
    let cells: u64 = entries.iter().map(|e| e.n_cells).sum();
    let nnz: u64 = entries.iter().map(|e| e.nnz).sum();
    over("cells", cells, c.max_cells, "CELLMATRIX_MAX_CELLS")?;
    over("stored nonzeros", nnz, c.max_nnz, "CELLMATRIX_MAX_NNZ")?;
    if let Some(r) = dense_refusal(app, format, entries, n_genes) {
        return Err(r);
    }
    if let Some((limit, setting)) = sparse_limit(app, format) {
        let bytes = sparse_bytes(cells, nnz, output_type(entries));
        over(
            &format!("bytes of a {} result", format.name()),
            bytes,
            limit,
            setting,
        )?;
    }
    // Last: the planner runs over every bundle, and stops once past the cap.
    let tasks = count_tasks(app, resolved, c.max_tasks);
    over("worker tasks", tasks, c.max_tasks, "CELLMATRIX_MAX_TASKS")
}

/// A 422 when `count` passes `limit`: which cap, the setting, and by how much.
fn over(what: &str, count: u64, limit: u64, setting: &str) -> Result<(), Rejection> {
    if count <= limit {
        return Ok(());
    }
    Err(Rejection {
        status: 422,
        message: format!(
            "the selected bundles hold up to {count} {what}, {} over this service's limit \
             of {limit} ({setting}); select fewer bundles or split the request",
            count - limit
        ),
    })
}

/// The cap on a sparse format's size, and its setting.
fn sparse_limit(app: &App, format: Format) -> Option<(u64, &'static str)> {
    let c = &app.config;
    match format {
        Format::Zarr => Some((c.zarr_max_bytes, "CELLMATRIX_ZARR_MAX_BYTES")),
        Format::H5ad => Some((c.h5ad_max_bytes, "CELLMATRIX_H5AD_MAX_BYTES")),
        Format::Mtx => Some((c.mtx_max_bytes, "CELLMATRIX_MTX_MAX_BYTES")),
        Format::Csv | Format::Loom => None,
    }
}

/// Refuses a dense format whose result could pass its limit: the bound is every cell of
/// the selected bundles × the output genes.
fn dense_refusal(
    app: &App,
    format: Format,
    entries: &[CatalogEntry],
    n_genes: u64,
) -> Option<Rejection> {
    let limit = app.config.dense_limits().of(format)?;
    let cells: u64 = entries.iter().map(|e| e.n_cells).sum();
    let bytes = dense_bytes(cells, n_genes, output_type(entries));
    (bytes > limit).then(|| Rejection {
        status: 422,
        message: format!(
            "format {:?} stores every value, zeros included: up to {cells} cells x {n_genes} \
             genes is {bytes} bytes of values, {} over this service's limit of {limit} bytes. \
             Ask for format \"h5ad\" or \"mtx\", which store only the nonzero values, or \
             select fewer bundles or genes",
            format.name(),
            bytes - limit
        ),
    })
}

/// The tasks `resolved` plans into, group by group as the mappers will plan it; counting
/// stops once past `stop_past`. The planner is pure and cheap (microseconds a bundle).
pub(super) fn count_tasks(app: &App, resolved: &Resolved, stop_past: u64) -> u64 {
    let mut tasks = 0u64;
    for group in plan_groups(app, resolved) {
        tasks += group.len() as u64;
        if tasks > stop_past {
            break;
        }
    }
    tasks
}

/// Each group's tasks, lazily, planned as its mapper (or the driver) will plan it.
pub(super) fn plan_groups<'a>(
    app: &App,
    resolved: &'a Resolved,
) -> impl Iterator<Item = Vec<crate::plan::Task>> + 'a {
    let c = &app.config;
    let budget = c.budget();
    let per = c.bundles_per_mapper.max(1);
    resolved
        .bundles
        .chunks(per)
        .zip(resolved.entries.chunks(per))
        .map(move |(fqids, entries)| {
            let bundles: Vec<_> = fqids
                .iter()
                .zip(entries)
                .map(|(f, e)| e.plan_bundle(f))
                .collect();
            crate::plan::plan(&bundles, budget)
        })
}

/// The output's value type: integers stay integers when every input is integer.
pub(super) fn output_type(entries: &[CatalogEntry]) -> ValueType {
    entries
        .iter()
        .map(|e| e.value_type)
        .max_by_key(|t| match t {
            ValueType::Uint32 => 0,
            ValueType::Float32 => 1,
            ValueType::Float64 => 2,
        })
        .unwrap_or(ValueType::Uint32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_names_itself_its_setting_and_the_excess() {
        assert!(over("cells", 10, 10, "X").is_ok());
        let r = over("cells", 12, 10, "CELLMATRIX_MAX_CELLS").unwrap_err();
        assert_eq!(r.status, 422);
        assert!(
            r.message.contains("up to 12 cells, 2 over")
                && r.message.contains("(CELLMATRIX_MAX_CELLS)"),
            "{}",
            r.message
        );
    }

    #[test]
    fn the_sparse_size_counts_values_indices_and_row_pointers() {
        assert_eq!(sparse_bytes(2, 10, ValueType::Uint32), 10 * 8 + 3 * 8);
        assert_eq!(sparse_bytes(0, 1, ValueType::Float64), 12 + 8);
        assert_eq!(
            sparse_bytes(u64::MAX, u64::MAX, ValueType::Float64),
            u64::MAX
        );
    }
}
