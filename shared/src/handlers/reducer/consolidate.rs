//! Consolidation: the plan the collector stores once every task is done, and a shard's
//! work. A shard writes one disjoint, chunk-aligned range of every output array, copied
//! from the parts the plan places there, then its marker; shard 0 also writes the
//! output's metadata, and the shard that finds every marker in commits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use super::ledger::Ledger;
use super::names::shard_of;
use crate::app::App;
use crate::bundle::ValueType;
use crate::bundle::zarr_io::{
    ChunkCodec, Column, ZArray, array_handle, array_handle_with, encoding, read_range,
    store_chunks, write_array, write_group,
};
use crate::clock::now_ms;
use crate::convert::Format;
use crate::error::Error;
use crate::genes::GeneSpace;
use crate::layout::{OUT_ROWS_PER_CHUNK, PART_READS_IN_FLIGHT, shard_chunks, shard_layout};
use crate::messages::TaskId;
use crate::obs::Elem;
use crate::part::part_row_chunk;
use crate::state::{
    Consolidation, Converted, DoneMarker, Keys, PartPlace, Plan, RequestView, ResultRecord,
    ShardRecord, get_json, put_json, put_json_if_absent,
};
use crate::store::DynStore;
use crate::store::zarr::ZarrStore;

/// The consolidation plan, once every task is done: every non-empty part's place in
/// the output (groups in order, each group's tasks in order), and the output's layout
/// for `shard_nnz`; with the run's start (`started`) and, from the `ledger`, when every
/// group was seen planned and every task done.
pub(super) fn consolidation_plan(
    plans: &BTreeMap<u32, Plan>,
    done: &HashMap<TaskId, DoneMarker>,
    shard_nnz: u64,
    started: u64,
    ledger: &Ledger,
) -> Consolidation {
    let mut parts = Vec::new();
    let (mut row, mut nz) = (0, 0);
    for plan in plans.values() {
        for t in &plan.tasks {
            let m = &done[&t.id];
            if m.cells_out > 0 {
                parts.push(PartPlace {
                    task: t.id.clone(),
                    row,
                    cells: m.cells_out,
                    nz,
                    nnz: m.nnz,
                    nnz_per_chunk: m.nnz_per_chunk,
                });
            }
            row += m.cells_out;
            nz += m.nnz;
        }
    }
    let (nnz_per_chunk, shards) = shard_layout(nz, shard_nnz);
    let after = |at: Option<u64>| at.unwrap_or(started).saturating_sub(started);
    Consolidation {
        parts,
        n_cells: row,
        nnz: nz,
        rows_per_chunk: OUT_ROWS_PER_CHUNK,
        nnz_per_chunk,
        shards,
        started_ms: started,
        planned_after_ms: after(ledger.planned_at),
        collected_after_ms: after(ledger.collected_at),
    }
}

/// The output arrays: path, length and chunk of each, in a fixed order.
fn output_arrays(view: &RequestView, plan: &Consolidation) -> Vec<(String, Kind, u64, u64)> {
    let (n, r, z) = (plan.n_cells, plan.rows_per_chunk, plan.nnz_per_chunk);
    let mut arrays = vec![
        ("/X/indptr".to_string(), Kind::Indptr, n + 1, r),
        ("/X/indices".to_string(), Kind::Indices, plan.nnz, z),
        ("/X/data".to_string(), Kind::Data, plan.nnz, z),
        (
            "/obs/_index".to_string(),
            Kind::Obs("_index".into(), Elem::Str),
            n,
            r,
        ),
    ];
    for c in &view.columns {
        for (suffix, elem) in c.kind.arrays() {
            let rel = format!("{}{suffix}", c.name);
            arrays.push((format!("/obs/{rel}"), Kind::Obs(rel, *elem), n, r));
        }
    }
    arrays
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Indptr,
    Indices,
    Data,
    /// An obs array: its path below `/obs`, and its element type.
    Obs(String, Elem),
}

fn attrs() -> serde_json::Map<String, serde_json::Value> {
    encoding("array", "0.2.0")
}

fn string_attrs() -> serde_json::Map<String, serde_json::Value> {
    encoding("string-array", "0.2.0")
}

/// Writes shard `shard`'s chunks of every output array, then its marker.
pub(super) async fn write_shard(
    app: &App,
    keys: &Keys,
    shard: u32,
    (attempt, started_ms): (u32, u64),
    plan: Result<Option<Consolidation>, Error>,
    view: Result<RequestView, Error>,
) -> Result<(), Error> {
    // Counted for the shard's record, which the run report reads.
    let counting = std::sync::Arc::new(crate::store::counting::Counting::new(app.store.clone()));
    let store: &DynStore = &(counting.clone() as DynStore);
    // No plan: the request ended and its scratch data went; nothing to do.
    let plan = plan?
        .ok_or_else(|| Error::Cancelled(format!("{}: consolidation plan removed", keys.id())))?;
    let view = view?;
    if shard >= plan.shards {
        return Err(Error::input(
            "consolidate event",
            format!("no shard {shard}"),
        ));
    }
    let out = ZarrStore::new(store.clone(), &keys.zarr(view.format)).into_storage();
    // The arrays' ranges are independent: copied at once, a shard is as slow as its
    // largest range, not the sum of every array's round trips.
    let arrays = output_arrays(&view, &plan);
    let copies: Vec<_> = arrays
        .iter()
        .filter_map(|(path, kind, len, chunk)| {
            let chunks = shard_chunks(len.div_ceil(*chunk), shard, plan.shards);
            if chunks.is_empty() {
                return None;
            }
            let w = ShardRange {
                store,
                plan_key: keys.consolidate(),
                out: &out,
                path,
                len: *len,
                chunk: *chunk,
                first_chunk: chunks.start,
                range: chunks.start * chunk..(chunks.end * chunk).min(*len),
            };
            Some(w.write(kind, &plan, view.stored.value_type, keys))
        })
        .collect();
    // Shard 0 also writes the output's metadata, with its chunks rather than after every
    // shard: its marker then says the metadata is in, and the commit is the root group.
    let metadata = async {
        if shard == METADATA_SHARD {
            write_metadata(store, keys, &view, &plan).await
        } else {
            Ok(())
        }
    };
    futures::future::try_join(futures::future::try_join_all(copies), metadata).await?;
    crate::fault::kill_point(crate::fault::KillPoint::Consolidation);
    let counts = counting.counts();
    let record = ShardRecord {
        shard,
        attempt,
        started_ms,
        finished_ms: now_ms(),
        // The record's own PUT, too.
        requests: crate::cost::Requests {
            put: counts.puts + 1,
            ..counts.requests()
        },
        bytes_read: counts.bytes_read,
        bytes_written: counts.bytes_written,
        peak_rss_bytes: crate::process::peak_rss_bytes(),
    };
    put_json(store, &keys.shard(shard), &record).await?;
    commit_if_last(store, keys, &view, &plan).await?;
    crate::scratch::after_write(store, keys, app.config.keep_scratch).await
}

/// The shard that writes the output's metadata (every array's, the groups', `var`'s)
/// beside its chunks. Shard 0 exists whatever the shard count.
const METADATA_SHARD: u32 = 0;

/// After a shard's marker: if every shard's marker is there, this shard finished last
/// (or with the last), so it writes the root group and, for Zarr, the result, instead
/// of waiting for the collector's next look. Each shard writes its marker before it
/// lists, so at least one sees them all; the root group is the same bytes whoever
/// writes it, and the result is put if absent.
async fn commit_if_last(
    store: &DynStore,
    keys: &Keys,
    view: &RequestView,
    plan: &Consolidation,
) -> Result<(), Error> {
    let (listed, ended) = futures::try_join!(
        async { Ok::<_, Error>(store.list(&keys.shards()).await?) },
        crate::state::ended(store, keys)
    )?;
    let done = listed
        .iter()
        .filter_map(|o| shard_of(&o.key))
        .filter(|&n| n < plan.shards)
        .collect::<HashSet<u32>>()
        .len();
    if (done as u32) < plan.shards || ended {
        return Ok(());
    }
    finish(store, keys, view.format).await?;
    if view.format == Format::Zarr {
        let record = result_record(keys, view, plan, None);
        put_json_if_absent(store, &keys.result(), &record).await?;
    }
    Ok(())
}

/// The result record of a consolidated request.
pub(super) fn result_record(
    keys: &Keys,
    view: &RequestView,
    plan: &Consolidation,
    conversion: Option<Converted>,
) -> ResultRecord {
    ResultRecord {
        format: view.format.name().to_string(),
        key: match view.format {
            Format::Zarr => keys.output(),
            _ => keys.results(),
        },
        n_cells: plan.n_cells,
        n_genes: view.stored.n_genes,
        nnz: plan.nnz,
        started_ms: plan.started_ms,
        finished_ms: now_ms(),
        planned_after_ms: plan.planned_after_ms,
        collected_after_ms: plan.collected_after_ms,
        conversion,
    }
}

/// The output rows a part holds.
fn rows(p: &PartPlace) -> Range<u64> {
    p.row..p.row + p.cells
}

/// The output nonzeros a part holds.
fn nonzeros(p: &PartPlace) -> Range<u64> {
    p.nz..p.nz + p.nnz
}

/// One shard's chunk-aligned range of one output array.
struct ShardRange<'a> {
    store: &'a DynStore,
    plan_key: String,
    out: &'a zarrs::storage::AsyncReadableWritableListableStorage,
    path: &'a str,
    len: u64,
    chunk: u64,
    first_chunk: u64,
    range: Range<u64>,
}

impl ShardRange<'_> {
    /// Copies this range of an output array of `kind` from the parts.
    async fn write(
        self,
        kind: &Kind,
        plan: &Consolidation,
        value_type: ValueType,
        keys: &Keys,
    ) -> Result<(), Error> {
        let mut parts = PartReaders::new(self.store.clone(), keys.clone());
        let parts = &mut parts;
        match kind {
            Kind::Indptr => {
                let values = parts.indptr(plan, self.range.clone()).await?;
                self.store::<i64>(&values, attrs()).await
            }
            Kind::Indices => {
                self.copy::<i32>(parts, plan, "/indices", nonzeros, attrs())
                    .await
            }
            Kind::Data => match value_type {
                ValueType::Uint32 => {
                    self.copy::<u32>(parts, plan, "/data", nonzeros, attrs())
                        .await
                }
                ValueType::Float32 => {
                    self.copy::<f32>(parts, plan, "/data", nonzeros, attrs())
                        .await
                }
                ValueType::Float64 => {
                    self.copy::<f64>(parts, plan, "/data", nonzeros, attrs())
                        .await
                }
            },
            Kind::Obs(name, ty) => {
                let from = format!("/obs/{name}");
                match ty {
                    Elem::Str => {
                        self.copy::<String>(parts, plan, &from, rows, string_attrs())
                            .await
                    }
                    Elem::U32 => self.copy::<u32>(parts, plan, &from, rows, attrs()).await,
                    Elem::F64 => self.copy::<f64>(parts, plan, &from, rows, attrs()).await,
                    Elem::I32 => self.copy::<i32>(parts, plan, &from, rows, attrs()).await,
                    Elem::I64 => self.copy::<i64>(parts, plan, &from, rows, attrs()).await,
                    Elem::Bool => self.copy::<bool>(parts, plan, &from, rows, attrs()).await,
                }
            }
        }
    }

    async fn store<T: Column>(
        &self,
        values: &[T],
        attrs: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Error> {
        // The plan goes first when scratch data is removed: if it is still there, every
        // part read before this point was whole (a late duplicate of this shard, after the
        // result was committed and the parts removed, stops here).
        if !self.store.exists(&self.plan_key).await? {
            return Err(Error::Cancelled(format!(
                "{}: consolidation plan removed",
                self.path
            )));
        }
        let array = array_handle::<T>(self.out, self.path, self.len, self.chunk, attrs)?;
        store_chunks(&array, self.chunk, self.first_chunk, values).await
    }

    /// Copies the range from the parts' array `from`, located by `span`.
    async fn copy<T: Column + zarrs::array::ElementOwned>(
        &self,
        parts: &mut PartReaders,
        plan: &Consolidation,
        from: &str,
        span: fn(&PartPlace) -> Range<u64>,
        attrs: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Error> {
        let values: Vec<T> = parts.gather(plan, from, self.range.clone(), span).await?;
        self.store(&values, attrs).await
    }
}

/// Opens the parts' arrays on demand, each once.
struct PartReaders {
    store: DynStore,
    keys: Keys,
    open: HashMap<(TaskId, String), ZArray>,
}

impl PartReaders {
    fn new(store: DynStore, keys: Keys) -> Self {
        PartReaders {
            store,
            keys,
            open: HashMap::new(),
        }
    }

    /// Opens array `path` of every part in `parts` not yet open. The worker wrote it
    /// (`part::PartBuilder`) with a length the plan gives and a chunk set by it, so
    /// its handle is built rather than its metadata read: a round trip less per part.
    /// A chunk that does not decode as such fails its checksum or its size.
    fn open_all<T: Column>(&mut self, parts: &[&PartPlace], path: &str) -> Result<(), Error> {
        for p in parts {
            let key = (p.task.clone(), path.to_string());
            if self.open.contains_key(&key) {
                continue;
            }
            let (len, chunk) = match path {
                "/indptr" => (p.cells + 1, part_row_chunk(p.cells + 1)),
                "/indices" | "/data" => (p.nnz, p.nnz_per_chunk),
                _ => (p.cells, part_row_chunk(p.cells)),
            };
            let storage =
                ZarrStore::new(self.store.clone(), &self.keys.part(&p.task)).into_storage();
            let array = array_handle_with::<T>(
                &storage,
                path,
                len,
                chunk,
                serde_json::Map::new(),
                ChunkCodec::Checked,
            )?;
            self.open.insert(key, array);
        }
        Ok(())
    }

    /// Reads `(part, local range)` pieces of array `path` concurrently, in order.
    async fn read_pieces<T: Column + zarrs::array::ElementOwned + Send + Sync>(
        &mut self,
        path: &str,
        pieces: Vec<(&PartPlace, Range<u64>)>,
    ) -> Result<Vec<Vec<T>>, Error> {
        let parts: Vec<&PartPlace> = pieces.iter().map(|(p, _)| *p).collect();
        self.open_all::<T>(&parts, path)?;
        let open = &self.open;
        let reads: Vec<_> = pieces
            .into_iter()
            .map(|(p, range)| read_range::<T>(&open[&(p.task.clone(), path.to_string())], range))
            .collect();
        futures::stream::iter(reads)
            .buffered(PART_READS_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Output elements `range` of the parts' array `path`, from the parts whose `span`
    /// (their rows, or their nonzeros) overlaps it.
    async fn gather<T: Column + zarrs::array::ElementOwned + Send + Sync>(
        &mut self,
        plan: &Consolidation,
        path: &str,
        range: Range<u64>,
        span: fn(&PartPlace) -> Range<u64>,
    ) -> Result<Vec<T>, Error> {
        let pieces = overlapping(&plan.parts, &range, span)
            .into_iter()
            .map(|p| {
                let own = span(p);
                let (a, b) = (range.start.max(own.start), range.end.min(own.end));
                (p, a - own.start..b - own.start)
            })
            .collect();
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for piece in self.read_pieces::<T>(path, pieces).await? {
            out.extend(piece);
        }
        Ok(out)
    }

    /// Elements `range` of the output indptr (`n_cells + 1` long): each part's local
    /// row pointers shifted by the nonzeros before it.
    async fn indptr(&mut self, plan: &Consolidation, range: Range<u64>) -> Result<Vec<i64>, Error> {
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let rows = range.start..range.end.min(plan.n_cells);
        let parts = overlapping(&plan.parts, &rows, self::rows);
        let pieces = parts
            .iter()
            .map(|&p| {
                let (a, b) = (rows.start.max(p.row), rows.end.min(p.row + p.cells));
                (p, a - p.row..b - p.row)
            })
            .collect();
        let read = self.read_pieces::<i64>("/indptr", pieces).await?;
        for (p, local) in parts.iter().zip(read) {
            out.extend(local.into_iter().map(|x| x + p.nz as i64));
        }
        if range.end > plan.n_cells {
            out.push(plan.nnz as i64);
        }
        Ok(out)
    }
}

/// The parts whose span (by `span`) overlaps `range`, in order.
fn overlapping<'p>(
    parts: &'p [PartPlace],
    range: &Range<u64>,
    span: fn(&PartPlace) -> Range<u64>,
) -> Vec<&'p PartPlace> {
    let first = parts.partition_point(|p| span(p).end <= range.start);
    parts[first..]
        .iter()
        .take_while(|p| span(p).start < range.end)
        .filter(|p| !span(p).is_empty())
        .collect()
}

/// Writes the metadata of every output array, `var` with its arrays, and the groups,
/// all but the root group ([`finish`]), which is written once every shard is in. The
/// documents are independent of each other, so written at once after one round of
/// reads: the gene space, and the plan, which goes first when scratch data is removed
/// (a late duplicate of shard 0 stops there, as [`ShardRange::store`] does).
async fn write_metadata(
    store: &DynStore,
    keys: &Keys,
    view: &RequestView,
    plan: &Consolidation,
) -> Result<(), Error> {
    let out = ZarrStore::new(store.clone(), &keys.zarr(view.format)).into_storage();
    let out = &out;
    let genes_key = keys.genes();
    let plan_key = keys.consolidate();
    let (genes, planned) = futures::try_join!(get_json::<GeneSpace>(store, &genes_key), async {
        Ok(store.exists(&plan_key).await?)
    },)?;
    if !planned {
        return Err(Error::Cancelled(format!(
            "{}: consolidation plan removed",
            keys.id()
        )));
    }
    let genes = genes.ok_or_else(|| Error::NotFound(format!("genes of request {}", keys.id())))?;
    type Write<'a> = futures::future::BoxFuture<'a, Result<(), Error>>;
    let mut writes: Vec<Write<'_>> = output_arrays(view, plan)
        .into_iter()
        .map(|(path, kind, len, chunk)| -> Write<'_> {
            Box::pin(async move {
                let array = match (&kind, view.stored.value_type) {
                    (Kind::Indptr, _) => array_handle::<i64>(out, &path, len, chunk, attrs())?,
                    (Kind::Indices, _) => array_handle::<i32>(out, &path, len, chunk, attrs())?,
                    (Kind::Data, ValueType::Uint32) => {
                        array_handle::<u32>(out, &path, len, chunk, attrs())?
                    }
                    (Kind::Data, ValueType::Float32) => {
                        array_handle::<f32>(out, &path, len, chunk, attrs())?
                    }
                    (Kind::Data, ValueType::Float64) => {
                        array_handle::<f64>(out, &path, len, chunk, attrs())?
                    }
                    (Kind::Obs(_, Elem::Str), _) => {
                        array_handle::<String>(out, &path, len, chunk, string_attrs())?
                    }
                    (Kind::Obs(_, Elem::U32), _) => {
                        array_handle::<u32>(out, &path, len, chunk, attrs())?
                    }
                    (Kind::Obs(_, Elem::F64), _) => {
                        array_handle::<f64>(out, &path, len, chunk, attrs())?
                    }
                    (Kind::Obs(_, Elem::I32), _) => {
                        array_handle::<i32>(out, &path, len, chunk, attrs())?
                    }
                    (Kind::Obs(_, Elem::I64), _) => {
                        array_handle::<i64>(out, &path, len, chunk, attrs())?
                    }
                    (Kind::Obs(_, Elem::Bool), _) => {
                        array_handle::<bool>(out, &path, len, chunk, attrs())?
                    }
                };
                array
                    .async_store_metadata()
                    .await
                    .map_err(|e| crate::bundle::zarr_io::zarr_err(&path, e))
            })
        })
        .collect();
    let mut x_attrs = encoding("csr_matrix", "0.1.0");
    x_attrs.insert("shape".into(), json!([plan.n_cells, genes.len()]));
    let mut obs_attrs = encoding("dataframe", "0.2.0");
    obs_attrs.insert("_index".into(), json!("_index"));
    obs_attrs.insert(
        "column-order".into(),
        json!(view.columns.iter().map(|c| &c.name).collect::<Vec<_>>()),
    );
    // A categorical's or nullable column's group, and a categorical's categories (whole:
    // the catalog bounds them).
    for c in &view.columns {
        if let Some(group_attrs) = c.kind.group_attrs() {
            let path = format!("/obs/{}", c.name);
            writes.push(Box::pin(async move {
                write_group(out, &path, group_attrs).await
            }));
        }
        if let crate::obs::ColumnKind::Categorical { categories } = &c.kind {
            let path = format!("/obs/{}/categories", c.name);
            let chunk = (categories.len() as u64).max(1);
            writes.push(Box::pin(async move {
                write_array(out, &path, categories, chunk, string_attrs()).await
            }));
        }
    }
    let var_chunk = (genes.len() as u64).clamp(1, OUT_ROWS_PER_CHUNK * 4);
    let mut var_attrs = encoding("dataframe", "0.2.0");
    var_attrs.insert("_index".into(), json!("_index"));
    var_attrs.insert("column-order".into(), json!(["feature_name"]));
    writes.extend([
        Box::pin(write_group(out, "/X", x_attrs)),
        Box::pin(write_group(out, "/obs", obs_attrs)),
        Box::pin(write_group(out, "/var", var_attrs)),
        Box::pin(write_array(
            out,
            "/var/_index",
            &genes.ids,
            var_chunk,
            string_attrs(),
        )),
        Box::pin(write_array(
            out,
            "/var/feature_name",
            &genes.names,
            var_chunk,
            string_attrs(),
        )),
    ] as [Write<'_>; 5]);
    for empty in ["/layers", "/obsm", "/obsp", "/varm", "/varp", "/uns"] {
        writes.push(Box::pin(write_group(out, empty, encoding("dict", "0.1.0"))));
    }
    futures::future::try_join_all(writes).await?;
    Ok(())
}

/// The root group, written once every shard is in (so after [`write_metadata`]): the
/// output is an AnnData object only once complete. The same bytes whoever writes it.
pub(super) async fn finish(store: &DynStore, keys: &Keys, format: Format) -> Result<(), Error> {
    let out = ZarrStore::new(store.clone(), &keys.zarr(format)).into_storage();
    write_group(&out, "/", encoding("anndata", "0.1.0")).await
}
