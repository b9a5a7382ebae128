//! Ingest: real input formats in, bundles out, catalog updated.
//!
//! Every reader parses and validates its whole input before anything is written, so a
//! bad file leaves nothing behind; the bundle writer writes the manifest last.

pub mod h5ad;
pub mod limits;
pub mod mtx;
pub mod names;
pub mod sidecar;
pub mod table;
pub mod tenx_h5;
mod text;

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};

use crate::bundle::{BundleMetadata, Layout, SourceInfo, SourceMatrix, WriteOutcome, write_bundle};
use crate::catalog::{self, CatalogEntry};
use crate::error::Error;
use crate::fqid::Fqid;
use crate::store::DynStore;

pub use table::Orientation;

/// Bundles written at once when one input makes many (one bundle per cell).
const BUNDLE_CONCURRENCY: usize = 8;

/// The input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// A 10x matrix directory (matrix.mtx + barcodes + features/genes).
    TenxMtx,
    /// A Cell Ranger HDF5 file.
    TenxH5,
    /// An AnnData `.h5ad` file.
    H5ad,
    /// A dense CSV/TSV count table.
    Table,
}

impl InputFormat {
    /// The name stored in manifests.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::TenxMtx => "10x-mtx",
            InputFormat::TenxH5 => "10x-h5",
            InputFormat::H5ad => "h5ad",
            InputFormat::Table => "table",
        }
    }

    /// Guesses the format from the path.
    pub fn detect(path: &Path) -> Result<InputFormat, Error> {
        if path.is_dir() {
            return Ok(InputFormat::TenxMtx);
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".h5ad") {
            Ok(InputFormat::H5ad)
        } else if name.ends_with(".h5") || name.ends_with(".hdf5") {
            Ok(InputFormat::TenxH5)
        } else if name.ends_with(".csv") || name.ends_with(".tsv") || name.ends_with(".txt") {
            Ok(InputFormat::Table)
        } else if !path.exists() {
            Err(Error::input(
                path.display().to_string(),
                "no such file or directory",
            ))
        } else {
            Err(Error::input(
                path.display().to_string(),
                "unknown input format; expected a 10x matrix directory, .h5, .h5ad, .csv or .tsv",
            ))
        }
    }
}

/// How to ingest one input.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// The format; detected from the path when `None`.
    pub format: Option<InputFormat>,
    /// The bundle id; generated when `None`. Not allowed with `one_bundle_per_cell`.
    pub fqid: Option<Fqid>,
    /// Metadata from flags; it overrides the sidecar.
    pub metadata: BundleMetadata,
    /// A JSON or TSV sidecar with metadata.
    pub sidecar: Option<PathBuf>,
    /// Refuse a sidecar whose per-cell rows and the input's cells do not match one to
    /// one (a row naming no cell, a cell without a row).
    pub strict_metadata: bool,
    /// Split a table into one bundle per cell (SmartSeq2 style).
    pub one_bundle_per_cell: bool,
    /// Orientation of a table.
    pub orientation: Orientation,
    /// Chunking of the written arrays.
    pub layout: Layout,
    /// Show progress bars.
    pub progress: bool,
}

/// What an ingest did.
#[derive(Debug, Clone)]
pub struct IngestReport {
    /// Each bundle, and whether it was written or already there.
    pub bundles: Vec<WriteOutcome>,
    /// Cells in the input.
    pub cells: u64,
    /// Seconds spent reading and parsing the input.
    pub read_seconds: f64,
    /// Seconds spent in total.
    pub total_seconds: f64,
    /// How the sidecar's per-cell rows met the cells, when it has any.
    pub sidecar_rows: Option<sidecar::RowMatch>,
    /// What the user should know: renamed or left-out columns, unmatched sidecar rows.
    pub notes: Vec<String>,
}

impl IngestReport {
    /// The bundles' ids, in input order.
    pub fn fqids(&self) -> Vec<Fqid> {
        self.bundles
            .iter()
            .map(|b| b.manifest().fqid.clone())
            .collect()
    }
}

/// An input read into memory.
#[derive(Debug, Clone)]
pub struct Input {
    /// Its format.
    pub format: InputFormat,
    /// Its cells, features, counts and cell fields.
    pub matrix: SourceMatrix,
    /// What the user should know about how it was read (renamed columns, say).
    pub notes: Vec<String>,
}

/// Reads an input into memory without writing anything.
pub fn read_input(path: &Path, opts: &IngestOptions) -> Result<Input, Error> {
    let format = match opts.format {
        Some(f) => f,
        None => InputFormat::detect(path)?,
    };
    let mut notes = Vec::new();
    let matrix = match format {
        InputFormat::TenxMtx => mtx::read_10x_mtx(path, opts.progress)?,
        InputFormat::TenxH5 => tenx_h5::read_10x_h5(path)?,
        InputFormat::H5ad => {
            let (m, n) = h5ad::read_h5ad(path)?;
            notes = n;
            m
        }
        InputFormat::Table => table::read_table(path, opts.orientation, opts.progress)?,
    };
    matrix.validate(&path.display().to_string())?;
    Ok(Input {
        format,
        matrix,
        notes,
    })
}

/// Adds the sidecar's per-cell columns to `src`'s cell fields; refuses rows and cells
/// that do not match under `strict`, and a column the input already has.
fn add_sidecar_cells(
    src: &mut SourceMatrix,
    sidecar: &sidecar::Sidecar,
    strict: bool,
    notes: &mut Vec<String>,
) -> Result<Option<sidecar::RowMatch>, Error> {
    if !sidecar.has_cell_rows() {
        return Ok(None);
    }
    let (columns, matched) = sidecar.cell_fields(&src.cells);
    if strict && !matched.is_complete() {
        return Err(Error::input(
            sidecar.what(),
            format!(
                "{}; --strict-metadata refuses a sidecar whose rows and cells differ",
                matched.summary()
            ),
        ));
    }
    notes.extend(matched.notes());
    for (name, column) in columns {
        if src.obs.iter().any(|(n, _)| *n == name) {
            return Err(Error::input(
                sidecar.what(),
                format!(
                    "cell.{name} comes both from the input's own cell fields and from this sidecar; rename one"
                ),
            ));
        }
        src.obs.push((name, column));
    }
    Ok(Some(matched))
}

/// Namespace of content-derived bundle uuids.
const UUID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6365_6c6c_6d61_7472_6978_2d62_756e_646c);

/// Ingests `path` into `store` and records the bundles in the catalog.
pub async fn ingest(
    store: &DynStore,
    path: &Path,
    opts: &IngestOptions,
) -> Result<IngestReport, Error> {
    let started = Instant::now();
    let what = path.display().to_string();
    if opts.one_bundle_per_cell && opts.fqid.is_some() {
        return Err(Error::input(
            &what,
            "--fqid names one bundle; it cannot be used with --one-bundle-per-cell",
        ));
    }
    let sidecar = match &opts.sidecar {
        Some(p) => sidecar::read_sidecar(p)?,
        None => sidecar::Sidecar::default(),
    };
    // Parsing is CPU-bound: keep it off the async worker threads.
    let (owned_path, owned_opts) = (path.to_path_buf(), opts.clone());
    let Input {
        format,
        matrix: mut src,
        mut notes,
    } = tokio::task::spawn_blocking(move || read_input(&owned_path, &owned_opts))
        .await
        .map_err(|e| Error::input(&what, format!("reader failed: {e}")))??;
    notes.extend(sidecar.notes.iter().cloned());
    let sidecar_rows = add_sidecar_cells(&mut src, &sidecar, opts.strict_metadata, &mut notes)?;
    let read_seconds = started.elapsed().as_secs_f64();
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| what.clone());
    let source = SourceInfo {
        file,
        format: format.name().to_string(),
    };

    // Each planned bundle: its matrix and metadata (flags over the sidecar).
    let mut planned: Vec<(SourceMatrix, BundleMetadata)> = Vec::new();
    if opts.one_bundle_per_cell {
        for r in 0..src.cells.len() {
            let meta = sidecar.for_cell(&src.cells[r]);
            planned.push((src.slice_rows(r..r + 1), opts.metadata.clone().or(&meta)));
        }
    } else {
        let meta = sidecar.for_bundle();
        planned.push((src.clone(), opts.metadata.clone().or(&meta)));
    }
    let cells = src.cells.len() as u64;
    let feature_set = crate::bundle::write_feature_set(store, &src.features).await?;
    drop(src);

    let existing = catalog::read(store).await?;
    let now = ingest_time();
    let bar = crate::progress::bar(
        opts.progress && planned.len() > 1,
        planned.len() as u64,
        "bundles",
    );
    let outcomes: Vec<WriteOutcome> = futures::stream::iter(planned.into_iter().enumerate())
        .map(|(i, (m, meta))| {
            let (store, source, existing, bar) =
                (store.clone(), source.clone(), &existing, bar.clone());
            let layout = opts.layout;
            let given = opts.fqid.clone();
            let feature_set = feature_set.as_str();
            async move {
                let digest = crate::bundle::writer::content_digest(&m, &meta);
                let fqid = match given {
                    Some(f) => f,
                    None => {
                        let uuid = uuid::Uuid::new_v5(&UUID_NAMESPACE, digest.as_bytes());
                        // The same content ingested before keeps its id.
                        let known = existing.bundles.iter().find(|(f, e)| {
                            f.uuid() == uuid.hyphenated().to_string() && e.content_digest == digest
                        });
                        match known {
                            Some((f, _)) => f.clone(),
                            // Distinct microseconds keep ids of one run distinct and ordered.
                            None => Fqid::new(uuid, now + time::Duration::microseconds(i as i64)),
                        }
                    }
                };
                let out = write_bundle(&store, &fqid, &m, feature_set, &meta, source, layout).await;
                if out.is_err() {
                    crate::bundle::writer::remove_partial(&store, &fqid).await;
                }
                bar.inc(1);
                out
            }
        })
        .buffered(BUNDLE_CONCURRENCY)
        .try_collect()
        .await?;
    bar.finish_and_clear();

    let entries: Vec<(Fqid, CatalogEntry)> = outcomes
        .iter()
        .map(|o| (o.manifest().fqid.clone(), CatalogEntry::from(o.manifest())))
        .collect();
    catalog::upsert(store, entries).await?;
    Ok(IngestReport {
        bundles: outcomes,
        cells,
        read_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        sidecar_rows,
        notes,
    })
}

/// The clock of new bundle versions: `SOURCE_DATE_EPOCH` (seconds since the epoch) when
/// it is set, as reproducible builds use it, so that the same inputs ingested into an
/// empty store get the same ids and a request over them the same bytes; else now.
fn ingest_time() -> time::OffsetDateTime {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or_else(time::OffsetDateTime::now_utc)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::field::{FieldType, Scalar, Value};
    use crate::store::fs::FsStore;

    #[tokio::test]
    async fn sidecar_rows_become_cell_fields_and_strict_refuses_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let counts = dir.path().join("counts.tsv");
        std::fs::write(&counts, "gene\tc1\tc2\tc3\nG1\t1\t0\t2\nG2\t0\t3\t1\n").unwrap();
        let sidecar = dir.path().join("cells.tsv");
        std::fs::write(
            &sidecar,
            "cell\tcell_type\tscore\nc1\tT\t0.5\nc2\tB\t1\nzz\tT\t2\n",
        )
        .unwrap();
        let root = dir.path().join("store");
        let store: DynStore = Arc::new(FsStore::open(&root).unwrap());
        let mut opts = IngestOptions {
            sidecar: Some(sidecar),
            orientation: Orientation::GenesByCells,
            strict_metadata: true,
            ..IngestOptions::default()
        };
        let err = ingest(&store, &counts, &opts)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 of 3 sidecar rows match no cell (e.g. \"zz\")")
                && err.contains("1 cells have no sidecar row")
                && err.contains("--strict-metadata")
                && !err.contains('\n'),
            "{err}"
        );
        // Nothing written.
        assert!(catalog::read(&store).await.unwrap().bundles.is_empty());
        for kept in ["bundles", "featuresets", "catalog"] {
            assert!(!root.join(kept).exists(), "{kept} written");
        }

        opts.strict_metadata = false;
        let report = ingest(&store, &counts, &opts).await.unwrap();
        let m = report.bundles[0].manifest();
        let types = &m.cell_fields["cell_type"];
        assert_eq!(types.nulls, 1);
        assert_eq!(
            types.values.as_ref().unwrap(),
            &[("B".to_string(), 1), ("T".to_string(), 1)].into()
        );
        assert_eq!(m.cell_fields["score"].field_type, FieldType::Number);
        assert_eq!(m.cell_fields["score"].max, Some(1.0));
        let rows = report.sidecar_rows.unwrap();
        assert_eq!((rows.unmatched_rows, rows.cells_without_row), (1, 1));
        assert_eq!(rows.cells_without_row_examples, ["c3"]);
        assert_eq!(report.notes.len(), 2, "{:?}", report.notes);

        // One bundle per cell: a row gives its bundle's fields and its cell's.
        opts.one_bundle_per_cell = true;
        opts.metadata.set("score", Scalar::Int(9));
        let report = ingest(&store, &counts, &opts).await.unwrap();
        assert_eq!(report.bundles.len(), 3);
        let c1 = report.bundles[0].manifest();
        assert_eq!(c1.metadata.get("cell_type"), Value::Str("T"));
        // A flag wins over the sidecar.
        assert_eq!(c1.metadata.scalar("score"), Some(Scalar::Int(9)));
        assert_eq!(
            c1.cell_fields["cell_type"].values.as_ref().unwrap(),
            &[("T".to_string(), 1)].into()
        );
        let c3 = report.bundles[2].manifest();
        assert_eq!(c3.metadata.get("cell_type"), Value::Null);
        assert_eq!(c3.cell_fields["cell_type"].nulls, 1);
    }
}
