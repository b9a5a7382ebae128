//! Reads row ranges of a bundle: `X/indptr` for the range, then only the `X/data` and
//! `X/indices` chunks that overlap its nonzeros, and the cell ids and QC columns.

use std::ops::Range;

use zarrs::array::ElementOwned;

use crate::bundle::manifest::Layout;
use crate::bundle::manifest::zarr_prefix;
use crate::bundle::obs::ObsGroup;
use crate::bundle::qc::Qc;
use crate::bundle::zarr_io::{
    Column, ZArray, array_handle, cut_at_multiples, open_array, read_range, read_values,
};
use crate::bundle::{Csr, Manifest, ValueType, Values, read_manifest};
use crate::error::Error;
use crate::field::column::Column as FieldColumn;
use crate::fqid::Fqid;
use crate::store::DynStore;
use crate::store::zarr::ZarrStore;

/// Rows of a bundle: their cell ids, QC metrics and counts (columns are the bundle's
/// features).
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// Cell ids of the rows.
    pub cells: Vec<String>,
    /// The counts, rows re-based to 0.
    pub matrix: Csr,
    /// QC metrics stored at ingest, one per row.
    pub qc: Qc,
}

/// What reading needs to know of a bundle: in the manifest, and in the catalog, so a
/// worker opens a bundle without reading its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleShape {
    /// The bundle.
    pub fqid: Fqid,
    /// Rows.
    pub n_cells: u64,
    /// Columns.
    pub n_features: u64,
    /// Stored nonzeros.
    pub nnz: u64,
    /// Element type of `X/data`.
    pub value_type: ValueType,
    /// How its arrays are chunked, when known: then they are opened without reading
    /// their metadata, a round trip less per bundle (a one-cell SmartSeq2 bundle is a
    /// few round trips in all).
    pub layout: Option<Layout>,
}

impl From<&Manifest> for BundleShape {
    fn from(m: &Manifest) -> Self {
        BundleShape {
            fqid: m.fqid.clone(),
            n_cells: m.n_cells,
            n_features: m.n_features,
            nnz: m.nnz,
            value_type: m.value_type,
            layout: Some(m.layout),
        }
    }
}

/// An open bundle; array metadata is read once, at open.
pub struct BundleReader {
    shape: BundleShape,
    /// For arrays built from the layout, an object of the bundle that must exist: a
    /// missing chunk reads as the fill value, so a bundle whose data is gone would
    /// otherwise read as empty cells instead of failing. Looked up only when a read
    /// holds nothing but fill values (real data proves its chunks are there).
    present: Option<(DynStore, String)>,
    indptr: ZArray,
    indices: ZArray,
    data: ZArray,
    cell_ids: ZArray,
    n_genes: ZArray,
    total_counts: ZArray,
    pct_mito: ZArray,
    /// The input's cell fields.
    obs: ObsGroup,
}

impl std::fmt::Debug for BundleReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleReader")
            .field("fqid", &self.shape.fqid)
            .finish_non_exhaustive()
    }
}

impl BundleReader {
    /// Opens bundle `fqid`; [`Error::NotFound`] if it has no manifest.
    pub async fn open(store: &DynStore, fqid: &Fqid) -> Result<Self, Error> {
        let manifest = read_manifest(store, fqid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("bundle {fqid}")))?;
        Self::with_shape(store, BundleShape::from(&manifest)).await
    }

    /// Opens a bundle whose shape the caller already knows (from the catalog).
    pub async fn with_shape(store: &DynStore, shape: BundleShape) -> Result<Self, Error> {
        let prefix = zarr_prefix(&shape.fqid);
        let storage = ZarrStore::new(store.clone(), &prefix).into_storage();
        let obs = ObsGroup::new(
            store.clone(),
            &prefix,
            storage.clone(),
            shape.n_cells,
            shape.layout.map(|l| l.rows_per_chunk),
        );
        if let Some(layout) = shape.layout {
            let fqid = shape.fqid.clone();
            let key = format!("{prefix}/X/indptr/zarr.json");
            let mut reader =
                Self::with_layout(&storage, shape, layout, obs).map_err(|e| corrupt(&fqid, e))?;
            reader.present = Some((store.clone(), key));
            return Ok(reader);
        }
        let what = |e: Error| corrupt(&shape.fqid, e);
        let (indptr, indices, data, cell_ids, n_genes, total_counts, pct_mito) =
            futures::try_join!(
                open_array(&storage, "/X/indptr"),
                open_array(&storage, "/X/indices"),
                open_array(&storage, "/X/data"),
                open_array(&storage, "/obs/_index"),
                open_array(&storage, "/obs/n_genes"),
                open_array(&storage, "/obs/total_counts"),
                open_array(&storage, "/obs/pct_mito"),
            )
            .map_err(what)?;
        Ok(BundleReader {
            shape,
            present: None,
            indptr,
            indices,
            data,
            cell_ids,
            n_genes,
            total_counts,
            pct_mito,
            obs,
        })
    }

    /// The arrays as ingest writes them (`bundle::writer`) for `layout`, built without
    /// reading their metadata. A chunk that does not decode as such is a checksum or
    /// size error naming the bundle, as a corrupt chunk is.
    fn with_layout(
        storage: &zarrs::storage::AsyncReadableWritableListableStorage,
        shape: BundleShape,
        layout: Layout,
        obs: ObsGroup,
    ) -> Result<Self, Error> {
        let rows = layout.rows_per_chunk;
        let nnz_chunk = layout.nnz_per_chunk.min(shape.nnz).max(1);
        let none = serde_json::Map::new;
        let (n, nnz) = (shape.n_cells, shape.nnz);
        let data = match shape.value_type {
            ValueType::Uint32 => array_handle::<u32>(storage, "/X/data", nnz, nnz_chunk, none()),
            ValueType::Float32 => array_handle::<f32>(storage, "/X/data", nnz, nnz_chunk, none()),
            ValueType::Float64 => array_handle::<f64>(storage, "/X/data", nnz, nnz_chunk, none()),
        }?;
        Ok(BundleReader {
            present: None,
            indptr: row_array::<i64>(storage, "/X/indptr", n + 1, rows)?,
            indices: array_handle::<i32>(storage, "/X/indices", nnz, nnz_chunk, none())?,
            data,
            cell_ids: row_array::<String>(storage, "/obs/_index", n, rows)?,
            n_genes: row_array::<u32>(storage, "/obs/n_genes", n, rows)?,
            total_counts: row_array::<f64>(storage, "/obs/total_counts", n, rows)?,
            pct_mito: row_array::<f64>(storage, "/obs/pct_mito", n, rows)?,
            obs,
            shape,
        })
    }

    /// What the reader knows of the bundle.
    pub fn shape(&self) -> &BundleShape {
        &self.shape
    }

    /// Rows `rows` (clamped to the bundle) of the input's cell fields `names` (stored
    /// obs column names, as in the manifest's `cell_fields`): one entry per name, in
    /// order, `None` where the bundle has no such column (its cells have no value). An
    /// integer or boolean column has `nulls` when stored with a mask (the bundle has a
    /// null in it), `None` otherwise.
    ///
    /// Each column's kind is read from its `obs/{name}/zarr.json`, all names at once:
    /// one round trip, then one more for its chunks (a categorical's `categories` take
    /// two, beside its codes). Only the chunks holding `rows` are read, but a
    /// categorical's categories whole. A name that is not a normalised field name is an
    /// error; a column that does not decode is [`Error::Corrupt`] naming the bundle.
    pub async fn read_obs(
        &self,
        names: &[String],
        rows: Range<u64>,
    ) -> Result<Vec<Option<FieldColumn>>, Error> {
        if let Some(bad) = names.iter().find(|n| !crate::field::is_normal(n)) {
            return Err(Error::InvalidId {
                kind: "cell field name",
                value: crate::error::clip(bad),
                reason: "not a normalised field name".into(),
            });
        }
        let reads = names.iter().map(|name| self.obs.read(name, rows.clone()));
        futures::future::try_join_all(reads)
            .await
            .map_err(|e| corrupt(&self.shape.fqid, e))
    }

    /// Reads rows `rows` (clamped to the bundle).
    pub async fn read_rows(&self, rows: Range<u64>) -> Result<Rows, Error> {
        let end = rows.end.min(self.shape.n_cells);
        // A whole bundle's nonzeros are `0..nnz` by the catalog, so they are read with
        // the row pointers, one round trip instead of two: a one-cell SmartSeq2 bundle
        // is a few tens of kB, bound by request latency. The row pointers still decide;
        // where they disagree, the nonzeros they name are read after them.
        let whole = (rows.start == 0 && end == self.shape.n_cells).then_some(0..self.shape.nnz);
        let (head, early) = futures::join!(self.read_head(rows), async {
            match &whole {
                Some(range) => Some(self.read_nonzeros(range.clone()).await),
                None => None,
            }
        });
        let head = head?;
        let nonzeros = match early {
            Some(read) if whole.as_ref() == Some(&head.nonzeros) => read,
            _ => self.read_nonzeros(head.nonzeros.clone()).await,
        }?;
        Ok(Rows {
            cells: head.cells,
            matrix: Csr {
                n_rows: head.indptr.len() - 1,
                n_cols: self.shape.n_features as usize,
                indptr: head.indptr,
                indices: nonzeros.indices,
                values: nonzeros.values,
            },
            qc: head.qc,
        })
    }

    /// Reads rows `rows` (clamped to the bundle) without their nonzeros: what a caller
    /// reading a large slice's nonzeros in pieces ([`Self::pieces`]) needs first.
    pub async fn read_head(&self, rows: Range<u64>) -> Result<Head, Error> {
        let fqid = &self.shape.fqid;
        let end = rows.end.min(self.shape.n_cells);
        let start = rows.start.min(end);
        let (indptr, cells, n_genes, total_counts, pct_mito) = futures::join!(
            retrieve::<i64>(&self.indptr, start..end + 1),
            retrieve::<String>(&self.cell_ids, start..end),
            retrieve::<u32>(&self.n_genes, start..end),
            retrieve::<f64>(&self.total_counts, start..end),
            retrieve::<f64>(&self.pct_mito, start..end),
        );
        let what = |e| corrupt(fqid, e);
        let indptr = indptr.map_err(what)?;
        let (p0, p1) = (indptr[0] as u64, indptr[indptr.len() - 1] as u64);
        if indptr.windows(2).any(|w| w[0] > w[1]) || indptr[0] < 0 || p1 > self.shape.nnz {
            return Err(corrupt(
                fqid,
                Error::zarr("X/indptr", "not a non-decreasing sequence within nnz"),
            ));
        }
        let (cells, n_genes, total_counts, pct_mito) = (
            cells.map_err(what)?,
            n_genes.map_err(what)?,
            total_counts.map_err(what)?,
            pct_mito.map_err(what)?,
        );
        if let Some((store, key)) = &self.present
            && p0 == p1
            && cells.iter().all(String::is_empty)
            && !store.exists(key).await.map_err(|e| what(e.into()))?
        {
            return Err(corrupt(
                fqid,
                Error::zarr("X/indptr", "the bundle's arrays are missing from the store"),
            ));
        }
        Ok(Head {
            cells,
            indptr: indptr.iter().map(|&p| p as u64 - p0).collect(),
            nonzeros: p0..p1,
            qc: Qc {
                n_genes,
                total_counts,
                pct_mito,
            },
        })
    }

    /// Nonzeros `range` split into pieces of about `target` each, cut on the stored
    /// chunks' boundaries so that no chunk is decoded for two pieces.
    pub fn pieces(&self, range: Range<u64>, target: u64) -> Vec<Range<u64>> {
        let chunk = self
            .indices
            .chunk_shape(&[0])
            .ok()
            .and_then(|s| s.first().map(|n| n.get()))
            .unwrap_or(1);
        cut_at_multiples(range, target.div_ceil(chunk).max(1) * chunk)
    }

    /// The column indices and values of nonzeros `range`, the indices checked against
    /// the bundle's features.
    pub async fn read_nonzeros(&self, range: Range<u64>) -> Result<Nonzeros, Error> {
        let fqid = &self.shape.fqid;
        let (indices, values) =
            futures::try_join!(read_values::<i32>(&self.indices, range.clone()), async {
                Ok(match self.shape.value_type {
                    ValueType::Uint32 => Values::U32(read_values(&self.data, range).await?),
                    ValueType::Float32 => Values::F32(read_values(&self.data, range).await?),
                    ValueType::Float64 => Values::F64(read_values(&self.data, range).await?),
                })
            })
            .map_err(|e| corrupt(fqid, e))?;
        // Checked in one read-only pass, then reinterpreted: the indices are the largest
        // array a worker reads, and a converted copy cost a pass and fresh pages.
        // A negative index is a large u32, out of range too.
        let limit = self.shape.n_features.min(i32::MAX as u64) as u32;
        if indices.iter().any(|&i| i as u32 >= limit) {
            return Err(corrupt(
                fqid,
                Error::zarr("X/indices", "column index out of range"),
            ));
        }
        Ok(Nonzeros {
            indices: bytemuck::allocation::cast_vec(indices),
            values,
        })
    }
}

/// Rows of a bundle without their nonzeros.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// Cell ids of the rows.
    pub cells: Vec<String>,
    /// Row pointers, `rows + 1` of them, rebased to 0.
    pub indptr: Vec<u64>,
    /// Where the rows' nonzeros lie in the bundle.
    pub nonzeros: Range<u64>,
    /// QC metrics stored at ingest, one per row.
    pub qc: Qc,
}

/// Nonzeros of a bundle: column indices (the bundle's features) and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Nonzeros {
    /// Column of each value.
    pub indices: Vec<u32>,
    /// The values.
    pub values: Values,
}

/// A bundle's row array `path` of `len` rows in chunks of `rows`, as
/// [`array_handle`] builds it. Built once per path and chunk size on each thread and
/// then given each bundle's storage and length: building one parses its codecs and
/// data type, and a task of one-cell SmartSeq2 bundles opened five per bundle. (The
/// nonzero arrays' chunks follow each bundle's count, so they are built each time.)
fn row_array<T: Column>(
    storage: &zarrs::storage::AsyncReadableWritableListableStorage,
    path: &'static str,
    len: u64,
    rows: u64,
) -> Result<ZArray, Error> {
    thread_local! {
        static BUILT: std::cell::RefCell<std::collections::HashMap<(&'static str, u64), ZArray>> =
            std::cell::RefCell::default();
    }
    BUILT.with(|built| {
        let mut built = built.borrow_mut();
        let template = match built.entry((path, rows)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(array_handle::<T>(
                storage,
                path,
                len,
                rows,
                serde_json::Map::new(),
            )?),
        };
        let mut array = template.with_storage(storage.clone());
        array
            .set_shape(vec![len])
            .map_err(|e| crate::bundle::zarr_io::zarr_err(path, e))?;
        Ok(array)
    })
}

async fn retrieve<T: ElementOwned + Send + Sync>(
    array: &ZArray,
    range: Range<u64>,
) -> Result<Vec<T>, Error> {
    read_range(array, range).await
}

/// Store errors pass through (they may be retryable); anything else means the bundle's
/// data does not decode, which names the bundle.
fn corrupt(fqid: &Fqid, e: Error) -> Error {
    match e {
        Error::Store(_) => e,
        other => Error::Corrupt {
            what: format!("bundle {fqid}"),
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bundle::{
        Features, Layout, SourceInfo, SourceMatrix, write_bundle, write_feature_set,
    };
    use crate::field::column::Column;
    use crate::store::fs::FsStore;

    fn sample() -> SourceMatrix {
        let n = 300;
        let dense: Vec<u32> = (0..n * 7).map(|i| ((i * 31) % 11) as u32 / 6).collect();
        SourceMatrix {
            obs: Vec::new(),
            cells: (0..n).map(|i| format!("c{i}")).collect(),
            features: Features {
                ids: (0..7).map(|i| format!("g{i}")).collect(),
                names: (0..7).map(|i| format!("G{i}")).collect(),
            },
            matrix: Csr::from_dense_rows(n, 7, &Values::U32(dense)),
        }
    }

    #[tokio::test]
    async fn reads_back_any_row_range() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
        let fqid =
            Fqid::parse("0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z").unwrap();
        let src = sample();
        let layout = Layout {
            rows_per_chunk: 64,
            nnz_per_chunk: 100,
        };
        let source = SourceInfo {
            file: "t".into(),
            format: "t".into(),
        };
        let fs_id = write_feature_set(&store, &src.features).await.unwrap();
        write_bundle(
            &store,
            &fqid,
            &src,
            &fs_id,
            &Default::default(),
            source,
            layout,
        )
        .await
        .unwrap();
        // From the manifest, the arrays are built from its layout; without a layout,
        // their metadata is read. Both read the same, and the built arrays are the
        // stored ones (their attributes aside).
        let known = BundleReader::open(&store, &fqid).await.unwrap();
        assert!(known.shape().layout.is_some());
        let mut shape = known.shape().clone();
        shape.layout = None;
        let opened = BundleReader::with_shape(&store, shape).await.unwrap();
        for (built, stored) in arrays(&known).into_iter().zip(arrays(&opened)) {
            // Attributes aside, and a codec named by a bare string (zarr v3's short
            // form, as stored) taken as the object it stands for.
            let meta = |a: &ZArray| {
                let mut v = serde_json::to_value(a.metadata()).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("attributes");
                for c in o["codecs"].as_array_mut().unwrap() {
                    if let Some(name) = c.as_str() {
                        *c = serde_json::json!({ "name": name });
                    }
                }
                v
            };
            assert_eq!(meta(built), meta(stored), "{}", stored.path());
        }
        let qc = crate::bundle::qc::compute(&src.matrix, &src.features);
        // The manifest's size is what is stored (counted while writing, not listed).
        let manifest = read_manifest(&store, &fqid).await.unwrap().unwrap();
        let listed: u64 = store
            .list(&format!("{}/", zarr_prefix(&fqid)))
            .await
            .unwrap()
            .iter()
            .map(|o| o.size)
            .sum();
        assert!(listed > 0);
        assert_eq!(manifest.stored_bytes, listed);
        for (a, b) in [
            (0, 300),
            (0, 64),
            (64, 128),
            (10, 11),
            (299, 300),
            (100, 100),
            (250, 400),
        ] {
            for reader in [&known, &opened] {
                let got = reader.read_rows(a..b).await.unwrap();
                let b = b.min(300);
                let want = src.slice_rows(a as usize..b as usize);
                assert_eq!(got.cells, want.cells, "{a}..{b}");
                assert_eq!(got.matrix, want.matrix, "{a}..{b}");
                let (a, b) = (a as usize, b as usize);
                assert_eq!(got.qc.n_genes, qc.n_genes[a.min(b)..b], "{a}..{b}");
                assert_eq!(got.qc.pct_mito, qc.pct_mito[a.min(b)..b], "{a}..{b}");
            }
        }
    }

    fn arrays(r: &BundleReader) -> [&ZArray; 7] {
        [
            &r.indptr,
            &r.indices,
            &r.data,
            &r.cell_ids,
            &r.n_genes,
            &r.total_counts,
            &r.pct_mito,
        ]
    }

    /// The sample written as a bundle with the default layout.
    async fn sample_bundle(store: &DynStore) -> Fqid {
        let fqid =
            Fqid::parse("0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z").unwrap();
        let source = SourceInfo {
            file: "t".into(),
            format: "t".into(),
        };
        let fs_id = write_feature_set(store, &sample().features).await.unwrap();
        write_bundle(
            store,
            &fqid,
            &sample(),
            &fs_id,
            &Default::default(),
            source,
            Layout::default(),
        )
        .await
        .unwrap();
        fqid
    }

    /// Arrays built from the layout read a missing chunk as the fill value: a bundle
    /// whose data is gone must still fail, naming it, not read as empty cells.
    #[tokio::test]
    async fn a_bundle_whose_data_is_gone_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
        let fqid = sample_bundle(&store).await;
        let shape = BundleReader::open(&store, &fqid)
            .await
            .unwrap()
            .shape()
            .clone();
        for o in store
            .list(&format!("{}/", zarr_prefix(&fqid)))
            .await
            .unwrap()
        {
            store.delete(&o.key).await.unwrap();
        }
        let reader = BundleReader::with_shape(&store, shape).await.unwrap();
        let err = reader.read_rows(0..300).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(fqid.as_str()), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    /// The sample with a cell field of every kind the bundle stores.
    fn sample_with_fields() -> SourceMatrix {
        let mut src = sample();
        let n = src.cells.len();
        let kinds = ["T cell", "B cell", "NK cell"];
        let cell_type: Vec<Option<&str>> =
            (0..n).map(|i| (i % 7 != 3).then(|| kinds[i % 3])).collect();
        let Column::Categorical {
            mut categories,
            codes,
        } = Column::from_strings(&cell_type)
        else {
            unreachable!()
        };
        // A category no cell has is kept, as a source's categorical keeps it.
        categories.push("unused".into());
        src.obs = vec![
            (
                "cell_type".into(),
                Column::Categorical { categories, codes },
            ),
            (
                "nothing".into(),
                Column::from_strings(&vec![None::<&str>; n]),
            ),
            (
                "count".into(),
                Column::ints(
                    &(0..n)
                        .map(|i| Some(i as i64 * 37 - 5000))
                        .collect::<Vec<_>>(),
                ),
            ),
            (
                "maybe_count".into(),
                Column::ints(
                    &(0..n)
                        .map(|i| (i % 5 != 0).then_some(i as i64))
                        .collect::<Vec<_>>(),
                ),
            ),
            (
                "score".into(),
                Column::Num(
                    (0..n)
                        .map(|i| {
                            if i % 11 == 0 {
                                f64::NAN
                            } else {
                                i as f64 / 3.0
                            }
                        })
                        .collect(),
                ),
            ),
            (
                "is_doublet".into(),
                Column::bools(&(0..n).map(|i| Some(i % 4 == 0)).collect::<Vec<_>>()),
            ),
            (
                "passed".into(),
                Column::bools(
                    &(0..n)
                        .map(|i| (i % 6 != 1).then_some(i % 2 == 0))
                        .collect::<Vec<_>>(),
                ),
            ),
        ];
        src
    }

    fn field_names(src: &SourceMatrix) -> Vec<String> {
        src.obs.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Columns compared by their debug form: NaN is not equal to itself.
    fn same(a: &Column, b: &Column) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    async fn write_fields_bundle(store: &DynStore, src: &SourceMatrix, layout: Layout) -> Fqid {
        let fqid =
            Fqid::parse("0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z").unwrap();
        let source = SourceInfo {
            file: "t".into(),
            format: "t".into(),
        };
        let fs_id = write_feature_set(store, &src.features).await.unwrap();
        write_bundle(
            store,
            &fqid,
            src,
            &fs_id,
            &Default::default(),
            source,
            layout,
        )
        .await
        .unwrap();
        fqid
    }

    #[tokio::test]
    async fn reads_back_cell_fields_of_every_kind_for_any_row_range() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
        let src = sample_with_fields();
        let layout = Layout {
            rows_per_chunk: 64,
            nnz_per_chunk: 100,
        };
        let fqid = write_fields_bundle(&store, &src, layout).await;
        let known = BundleReader::open(&store, &fqid).await.unwrap();
        let mut shape = known.shape().clone();
        shape.layout = None;
        let opened = BundleReader::with_shape(&store, shape).await.unwrap();
        let mut names = field_names(&src);
        names.insert(2, "absent".into());
        for (a, b) in [
            (0, 300),
            (0, 64),
            (63, 65),
            (64, 128),
            (10, 11),
            (299, 300),
            (100, 100),
            (250, 400),
            (301, 310),
        ] {
            let end = b.min(300);
            let picked: Vec<usize> = (a.min(end)..end).map(|r| r as usize).collect();
            for reader in [&known, &opened] {
                let got = reader.read_obs(&names, a..b).await.unwrap();
                assert_eq!(got.len(), names.len());
                assert!(got[2].is_none(), "{a}..{b}");
                let got: Vec<Column> = got.into_iter().flatten().collect();
                for ((name, column), got) in src.obs.iter().zip(&got) {
                    let want = column.select(&picked);
                    assert!(same(got, &want), "{name} {a}..{b}: {got:?} != {want:?}");
                }
            }
        }
        // The fields' summaries are recorded beside the built-ins'.
        let manifest = read_manifest(&store, &fqid).await.unwrap().unwrap();
        for (name, column) in &src.obs {
            assert_eq!(
                manifest.cell_fields[name],
                crate::field::stats::FieldStats::of(column),
                "{name}"
            );
        }
        // A name that could be a key's path is refused before any read.
        let err = known
            .read_obs(&["../X".to_string()], 0..1)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidId { .. }), "{err}");
        // Nothing asked, nothing read.
        assert!(known.read_obs(&[], 0..300).await.unwrap().is_empty());
    }

    /// A nullable column with no null (a one-cell slice of one, say) is a plain array,
    /// as its `nulls: 0` in the manifest says.
    #[tokio::test]
    async fn a_mask_without_nulls_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
        let mut src = sample();
        let n = src.cells.len();
        src.obs = vec![
            (
                "count".into(),
                Column::Int {
                    values: (0..n as i64).collect(),
                    nulls: Some(vec![false; n]),
                },
            ),
            (
                "flag".into(),
                Column::Bool {
                    values: vec![true; n],
                    nulls: Some(vec![false; n]),
                },
            ),
        ];
        let fqid = write_fields_bundle(&store, &src, Layout::default()).await;
        for name in ["count", "flag"] {
            let key = format!("{}/obs/{name}/zarr.json", zarr_prefix(&fqid));
            let node: serde_json::Value =
                serde_json::from_slice(&store.get(&key).await.unwrap().unwrap()).unwrap();
            assert_eq!(node["node_type"], "array", "{name}");
        }
        let reader = BundleReader::open(&store, &fqid).await.unwrap();
        let got = reader.read_obs(&field_names(&src), 5..8).await.unwrap();
        assert_eq!(
            got,
            [
                Some(Column::Int {
                    values: vec![5, 6, 7],
                    nulls: None
                }),
                Some(Column::Bool {
                    values: vec![true; 3],
                    nulls: None
                })
            ]
        );
    }

    #[tokio::test]
    async fn the_obs_group_lists_the_fields_after_the_builtins() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
        let src = sample_with_fields();
        let fqid = write_fields_bundle(&store, &src, Layout::default()).await;
        let key = format!("{}/obs/zarr.json", zarr_prefix(&fqid));
        let group: serde_json::Value =
            serde_json::from_slice(&store.get(&key).await.unwrap().unwrap()).unwrap();
        let mut want = vec!["n_genes", "total_counts", "pct_mito"];
        want.extend(src.obs.iter().map(|(n, _)| n.as_str()));
        assert_eq!(group["attributes"]["column-order"], serde_json::json!(want));
    }

    #[tokio::test]
    async fn a_corrupt_field_chunk_names_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
        let src = sample_with_fields();
        let fqid = write_fields_bundle(&store, &src, Layout::default()).await;
        let names = field_names(&src);
        for path in [
            "cell_type/codes/c/0",
            "cell_type/categories/c/0",
            "maybe_count/mask/c/0",
            "passed/values/c/0",
            "score/c/0",
            "is_doublet/c/0",
        ] {
            let key = format!("{}/obs/{path}", zarr_prefix(&fqid));
            let good = store.get(&key).await.unwrap().unwrap();
            let mut bytes = good.to_vec();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            store.put(&key, bytes.into()).await.unwrap();
            let reader = BundleReader::open(&store, &fqid).await.unwrap();
            let err = reader.read_obs(&names, 0..300).await.unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{path}: {err}");
            assert!(err.to_string().contains(fqid.as_str()), "{path}: {err}");
            assert!(!err.is_retryable(), "{path}");
            store.put(&key, good).await.unwrap();
        }
        // A code past the categories does not decode either.
        let reader = BundleReader::open(&store, &fqid).await.unwrap();
        reader.read_obs(&names, 0..300).await.unwrap();
        let storage = ZarrStore::new(store.clone(), &zarr_prefix(&fqid)).into_storage();
        crate::bundle::zarr_io::write_array(
            &storage,
            "/obs/cell_type/categories",
            &["only".to_string()],
            1,
            serde_json::Map::new(),
        )
        .await
        .unwrap();
        let err = reader
            .read_obs(&["cell_type".to_string()], 0..300)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("categories"), "{err}");
    }

    /// The worker runs on a runtime that needs `Send` futures.
    #[allow(dead_code)]
    fn read_obs_is_send(reader: &BundleReader, names: &[String]) {
        fn send<T: Send>(_: T) {}
        send(reader.read_obs(names, 0..1));
    }

    #[tokio::test]
    async fn a_corrupt_chunk_names_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
        let fqid = sample_bundle(&store).await;
        let key = format!("{}/X/data/c/0", zarr_prefix(&fqid));
        let mut bytes = store.get(&key).await.unwrap().unwrap().to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        store.put(&key, bytes.into()).await.unwrap();
        let reader = BundleReader::open(&store, &fqid).await.unwrap();
        let err = reader.read_rows(0..300).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(fqid.as_str()), "{err}");
        assert!(!err.is_retryable());
    }
}
