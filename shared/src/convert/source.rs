//! Reading the consolidated AnnData Zarr back in row blocks, for the conversions.

use std::ops::Range;

use crate::bundle::zarr_io::{ZArray, open_array, read_range};
use crate::bundle::{ValueType, Values};
use crate::error::Error;
use crate::obs::{ColumnKind, Elem, ObsColumn, ObsValues};
use crate::store::DynStore;
use crate::store::zarr::ZarrStore;

/// Rows `first..first + n` of the matrix: CSR with local row pointers, and the cell ids.
#[derive(Debug, Clone, PartialEq)]
pub struct RowBlock {
    /// Index of the first row.
    pub first: u64,
    /// Row pointers from 0, one more than the rows.
    pub indptr: Vec<u64>,
    /// Gene column of each value.
    pub indices: Vec<i32>,
    /// The values.
    pub data: Values,
    /// The cell ids.
    pub names: Vec<String>,
}

impl RowBlock {
    /// Rows in the block.
    pub fn rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// The value range of local row `r`.
    pub fn row(&self, r: usize) -> Range<usize> {
        self.indptr[r] as usize..self.indptr[r + 1] as usize
    }
}

/// The consolidated matrix of a request, open for reading.
pub struct MatrixSource {
    /// Cells (rows).
    pub n_cells: u64,
    /// Genes (columns).
    pub n_genes: u64,
    /// Stored values.
    pub nnz: u64,
    /// Type of the values.
    pub value_type: ValueType,
    /// The row pointers, whole: 8 bytes a cell.
    pub indptr: Vec<i64>,
    /// Gene ids (var index).
    pub gene_ids: Vec<String>,
    /// Gene names (var `feature_name`).
    pub gene_names: Vec<String>,
    /// The obs columns.
    pub columns: Vec<ObsColumn>,
    indices: ZArray,
    data: ZArray,
    obs: ObsArrays,
}

impl std::fmt::Debug for MatrixSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatrixSource")
            .field("n_cells", &self.n_cells)
            .field("n_genes", &self.n_genes)
            .field("nnz", &self.nnz)
            .field("value_type", &self.value_type)
            .finish_non_exhaustive()
    }
}

impl MatrixSource {
    /// Opens the AnnData Zarr under `prefix`, with the obs columns `columns`.
    pub async fn open(
        store: &DynStore,
        prefix: &str,
        value_type: ValueType,
        columns: &[ObsColumn],
    ) -> Result<Self, Error> {
        let storage = ZarrStore::new(store.clone(), prefix).into_storage();
        let indptr_array = open_array(&storage, "/X/indptr").await?;
        let n = indptr_array.shape()[0];
        let indptr: Vec<i64> = read_range(&indptr_array, 0..n).await?;
        let indices = open_array(&storage, "/X/indices").await?;
        let data = open_array(&storage, "/X/data").await?;
        let obs = ObsArrays::open(&storage, columns).await?;
        let ids_array = open_array(&storage, "/var/_index").await?;
        let names_array = open_array(&storage, "/var/feature_name").await?;
        let n_genes = ids_array.shape()[0];
        let gene_ids: Vec<String> = read_range(&ids_array, 0..n_genes).await?;
        let gene_names: Vec<String> = read_range(&names_array, 0..n_genes).await?;
        let columns = columns.to_vec();
        let n_cells = n.saturating_sub(1);
        let nnz = indptr.last().copied().unwrap_or(0).max(0) as u64;
        Ok(MatrixSource {
            n_cells,
            n_genes,
            nnz,
            value_type,
            indptr,
            gene_ids,
            gene_names,
            columns,
            indices,
            data,
            obs,
        })
    }

    /// Row ranges covering every row in order, each with about `values` stored values
    /// (at least one row, at most `max_rows`): a function of the matrix alone, so the
    /// output does not depend on the machine.
    pub fn blocks(&self, values: u64, max_rows: u64) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut start = 0u64;
        while start < self.n_cells {
            let base = self.indptr[start as usize];
            let limit = base.saturating_add(values.clamp(1, i64::MAX as u64) as i64);
            // First row whose end passes the limit, searching only up to max_rows ahead.
            let hi = (start + max_rows.max(1)).min(self.n_cells);
            let window = &self.indptr[start as usize + 1..=hi as usize];
            let k = window.partition_point(|&p| p <= limit) as u64;
            let end = (start + k.max(1)).min(hi);
            out.push(start..end);
            start = end;
        }
        out
    }

    /// Rows `rows` of X and their cell ids.
    pub async fn rows(&self, rows: Range<u64>) -> Result<RowBlock, Error> {
        let a = self.indptr[rows.start as usize];
        let b = self.indptr[rows.end as usize];
        let nz = a as u64..b as u64;
        let indptr = self.indptr[rows.start as usize..=rows.end as usize]
            .iter()
            .map(|&p| (p - a) as u64)
            .collect();
        let (indices, data, names) = futures::try_join!(
            read_range::<i32>(&self.indices, nz.clone()),
            self.values(nz.clone()),
            self.obs.names(rows.clone()),
        )?;
        Ok(RowBlock {
            first: rows.start,
            indptr,
            indices,
            data,
            names,
        })
    }

    async fn values(&self, nz: Range<u64>) -> Result<Values, Error> {
        Ok(match self.value_type {
            ValueType::Uint32 => Values::U32(read_range(&self.data, nz).await?),
            ValueType::Float32 => Values::F32(read_range(&self.data, nz).await?),
            ValueType::Float64 => Values::F64(read_range(&self.data, nz).await?),
        })
    }

    /// Rows `rows` of obs column `i`.
    pub async fn column(&self, i: usize, rows: Range<u64>) -> Result<ObsValues, Error> {
        self.obs.column(i, rows).await
    }

    /// Rows `rows` of every obs column.
    pub async fn obs(&self, rows: Range<u64>) -> Result<Vec<ObsValues>, Error> {
        self.obs.obs(rows).await
    }

    /// Every cell id.
    pub async fn all_names(&self) -> Result<Vec<String>, Error> {
        self.obs.names(0..self.n_cells).await
    }
}

/// The arrays of an obs group as the output stores it: the cell ids (`_index`) and each
/// column's arrays ([`ColumnKind::arrays`]). A worker's part holds the same arrays
/// under the same paths (the consolidation copies them one to one), only without the
/// AnnData group nodes: a categorical's categories are the request's, not stored.
pub struct ObsArrays {
    columns: Vec<ObsColumn>,
    index: ZArray,
    /// Each column's arrays, in [`ColumnKind::arrays`]' order.
    arrays: Vec<Vec<ZArray>>,
}

impl std::fmt::Debug for ObsArrays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObsArrays")
            .field("index", &self.index.path().as_str())
            .field("columns", &self.columns.len())
            .finish_non_exhaustive()
    }
}

impl ObsArrays {
    /// Opens the obs arrays of the group on `storage` (the consolidated Zarr, or a
    /// part), with the columns `columns`.
    pub async fn open(
        storage: &zarrs::storage::AsyncReadableWritableListableStorage,
        columns: &[ObsColumn],
    ) -> Result<Self, Error> {
        let index = open_array(storage, "/obs/_index").await?;
        let mut arrays = Vec::with_capacity(columns.len());
        for c in columns {
            let mut one = Vec::new();
            for (suffix, _) in c.kind.arrays() {
                one.push(open_array(storage, &format!("/obs/{}{suffix}", c.name)).await?);
            }
            arrays.push(one);
        }
        Ok(ObsArrays {
            columns: columns.to_vec(),
            index,
            arrays,
        })
    }

    /// Rows, as the cell ids' array says.
    pub fn len(&self) -> u64 {
        self.index.shape().first().copied().unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cell ids of rows `rows`.
    pub async fn names(&self, rows: Range<u64>) -> Result<Vec<String>, Error> {
        read_range(&self.index, rows).await
    }

    /// Rows `rows` of obs column `i`.
    pub async fn column(&self, i: usize, rows: Range<u64>) -> Result<ObsValues, Error> {
        let arrays = &self.arrays[i];
        let kind = &self.columns[i].kind;
        let mask = || async {
            match arrays.get(1) {
                Some(a) => read_range::<bool>(a, rows.clone()).await.map(Some),
                None => Ok(None),
            }
        };
        Ok(match (kind, kind.arrays()[0].1) {
            (_, Elem::Str) => ObsValues::Str(read_range(&arrays[0], rows).await?),
            (_, Elem::U32) => ObsValues::U32(read_range(&arrays[0], rows).await?),
            (_, Elem::F64) => ObsValues::F64(read_range(&arrays[0], rows).await?),
            (_, Elem::I32) => ObsValues::Codes(read_range(&arrays[0], rows).await?),
            (ColumnKind::Bool { .. }, _) => ObsValues::Bool {
                values: read_range(&arrays[0], rows.clone()).await?,
                mask: mask().await?,
            },
            (_, _) => ObsValues::I64 {
                values: read_range(&arrays[0], rows.clone()).await?,
                mask: mask().await?,
            },
        })
    }

    /// Rows `rows` of every obs column.
    pub async fn obs(&self, rows: Range<u64>) -> Result<Vec<ObsValues>, Error> {
        let reads = (0..self.columns.len()).map(|i| self.column(i, rows.clone()));
        futures::future::try_join_all(reads).await
    }
}
