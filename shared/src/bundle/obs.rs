//! A cell field's column in an AnnData-Zarr `obs` group: each kind of
//! [`Column`] written as the element anndata writes for it, and a row range of one read
//! back.
//!
//! | column | element |
//! |---|---|
//! | strings | `categorical` group: `categories` (string array), `codes` (int32, -1 null) |
//! | integers without nulls | int64 array |
//! | integers with nulls | `nullable-integer` group: `values` (int64), `mask` (bool, true = null) |
//! | numbers | float64 array, NaN null |
//! | booleans without nulls | bool array |
//! | booleans with nulls | `nullable-boolean` group: `values`, `mask` (bool) |
//!
//! A column's row arrays are chunked as the caller says (a bundle's `rows_per_chunk`);
//! a categorical's categories, small and read whole, are one chunk.

use std::ops::Range;

use serde_json::{Map, Value, json};
use zarrs::array::data_type::{
    BoolDataType, Float32DataType, Float64DataType, Int8DataType, Int16DataType, Int32DataType,
    Int64DataType, UInt8DataType, UInt16DataType, UInt32DataType,
};
use zarrs::array::{Array, ArrayMetadata, ArrayMetadataV3};
use zarrs::storage::AsyncReadableWritableListableStorage;

use crate::bundle::zarr_io::{
    ChunkCodec, ZArray, array_handle, encoding, open_array, read_range, read_values,
    write_array_with, write_group, zarr_err,
};
use crate::error::Error;
use crate::field::column::Column;
use crate::store::DynStore;

/// `encoding-type` of a categorical group.
const CATEGORICAL: &str = "categorical";
/// `encoding-type` of a nullable integer group.
const NULLABLE_INTEGER: &str = "nullable-integer";
/// `encoding-type` of a nullable boolean group.
const NULLABLE_BOOLEAN: &str = "nullable-boolean";

fn array_attrs() -> Map<String, Value> {
    encoding("array", "0.2.0")
}

/// Writes `column` at `path` (`/obs/{name}`), row arrays in chunks of `chunk` rows
/// stored as `codec` says. A mask with no null is not written: the column is a plain
/// array, as the manifest's `nulls: 0` says (a one-cell bundle's slice of a nullable
/// column is). Every write settles before an error returns.
pub async fn write_column(
    storage: &AsyncReadableWritableListableStorage,
    path: &str,
    column: &Column,
    chunk: u64,
    codec: ChunkCodec,
) -> Result<(), Error> {
    let sub = |name: &str| format!("{path}/{name}");
    let some_null = |nulls: &Option<Vec<bool>>| nulls.as_ref().is_some_and(|n| n.contains(&true));
    match column {
        Column::Categorical { categories, codes } => {
            let mut attrs = encoding(CATEGORICAL, "0.2.0");
            attrs.insert("ordered".into(), json!(false));
            let (categories_path, codes_path) = (sub("categories"), sub("codes"));
            let (group, cats, codes) = futures::join!(
                write_group(storage, path, attrs),
                write_array_with(
                    storage,
                    &categories_path,
                    categories,
                    (categories.len() as u64).max(1),
                    encoding("string-array", "0.2.0"),
                    codec,
                ),
                write_array_with(storage, &codes_path, codes, chunk, array_attrs(), codec),
            );
            group.and(cats).and(codes)
        }
        Column::Int { values, nulls } => match nulls {
            Some(mask) if some_null(nulls) => {
                write_masked(storage, path, NULLABLE_INTEGER, values, mask, chunk, codec).await
            }
            _ => write_array_with(storage, path, values, chunk, array_attrs(), codec).await,
        },
        Column::Num(values) => {
            write_array_with(storage, path, values, chunk, array_attrs(), codec).await
        }
        Column::Bool { values, nulls } => match nulls {
            Some(mask) if some_null(nulls) => {
                write_masked(storage, path, NULLABLE_BOOLEAN, values, mask, chunk, codec).await
            }
            _ => write_array_with(storage, path, values, chunk, array_attrs(), codec).await,
        },
    }
}

/// A `nullable-integer` or `nullable-boolean` group.
async fn write_masked<T: crate::bundle::zarr_io::Column>(
    storage: &AsyncReadableWritableListableStorage,
    path: &str,
    kind: &str,
    values: &[T],
    mask: &[bool],
    chunk: u64,
    codec: ChunkCodec,
) -> Result<(), Error> {
    let (values_path, mask_path) = (format!("{path}/values"), format!("{path}/mask"));
    let (group, values, mask) = futures::join!(
        write_group(storage, path, encoding(kind, "0.1.0")),
        write_array_with(storage, &values_path, values, chunk, array_attrs(), codec),
        write_array_with(storage, &mask_path, mask, chunk, array_attrs(), codec),
    );
    group.and(values).and(mask)
}

/// A bundle's `obs` group, for reading its field columns.
#[derive(Clone)]
pub struct ObsGroup {
    store: DynStore,
    /// Store key of the AnnData group (`bundles/{fqid}/matrix.zarr`).
    prefix: String,
    storage: AsyncReadableWritableListableStorage,
    /// Rows of the bundle.
    len: u64,
    /// Rows per chunk when known: then a group's arrays are built as the writer builds
    /// them, without reading their metadata.
    rows_per_chunk: Option<u64>,
}

impl std::fmt::Debug for ObsGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObsGroup")
            .field("prefix", &self.prefix)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl ObsGroup {
    /// The `obs` group of the AnnData group at store key `prefix` (on `storage`, the
    /// same group through zarrs), of `len` rows.
    pub fn new(
        store: DynStore,
        prefix: &str,
        storage: AsyncReadableWritableListableStorage,
        len: u64,
        rows_per_chunk: Option<u64>,
    ) -> Self {
        ObsGroup {
            store,
            prefix: prefix.to_string(),
            storage,
            len,
            rows_per_chunk,
        }
    }

    /// Rows `rows` (clamped to the group) of column `name`; `None` when there is no such
    /// column. Its kind is read from its `zarr.json` (one round trip); a group's arrays
    /// follow, a categorical's categories whole.
    pub async fn read(&self, name: &str, rows: Range<u64>) -> Result<Option<Column>, Error> {
        let end = rows.end.min(self.len);
        let rows = rows.start.min(end)..end;
        let path = format!("/obs/{name}");
        let key = format!("{}{path}/zarr.json", self.prefix);
        let Some(bytes) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let node: Value = serde_json::from_slice(&bytes).map_err(|e| Error::zarr(&path, e))?;
        let column = match node.get("node_type").and_then(Value::as_str) {
            Some("array") => {
                let metadata: ArrayMetadataV3 =
                    serde_json::from_value(node).map_err(|e| Error::zarr(&path, e))?;
                let array = Array::new_with_metadata(
                    self.storage.clone(),
                    &path,
                    ArrayMetadata::V3(metadata),
                )
                .map_err(|e| zarr_err(&path, e))?;
                self.check_rows(&array)?;
                self.read_plain(&array, rows).await?
            }
            Some("group") => {
                let kind = node
                    .pointer("/attributes/encoding-type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.read_group(&path, kind, rows).await?
            }
            other => {
                return Err(Error::zarr(&path, format!("node type {other:?}")));
            }
        };
        Ok(Some(column))
    }

    /// A column stored as one array: integers, numbers or booleans.
    async fn read_plain(&self, array: &ZArray, rows: Range<u64>) -> Result<Column, Error> {
        let dt = array.data_type();
        Ok(if dt.is::<BoolDataType>() {
            Column::Bool {
                values: read_range(array, rows).await?,
                nulls: None,
            }
        } else if dt.is::<Float64DataType>() || dt.is::<Float32DataType>() {
            Column::Num(read_floats(array, rows).await?)
        } else {
            Column::Int {
                values: read_ints(array, rows).await?,
                nulls: None,
            }
        })
    }

    /// A column stored as an AnnData group of `kind`.
    async fn read_group(&self, path: &str, kind: &str, rows: Range<u64>) -> Result<Column, Error> {
        match kind {
            CATEGORICAL => {
                let (categories, codes) = futures::try_join!(
                    async {
                        let array =
                            open_array(&self.storage, &format!("{path}/categories")).await?;
                        let n = array.shape().first().copied().unwrap_or(0);
                        read_range::<String>(&array, 0..n).await
                    },
                    async {
                        let array = self.row_array::<i32>(&format!("{path}/codes")).await?;
                        read_ints(&array, rows).await
                    },
                )?;
                let n = categories.len() as i64;
                if let Some(bad) = codes.iter().find(|&&c| c < -1 || c >= n) {
                    return Err(Error::zarr(
                        path,
                        format!("code {bad} is not one of {n} categories"),
                    ));
                }
                Ok(Column::Categorical {
                    categories,
                    codes: codes.into_iter().map(|c| c as i32).collect(),
                })
            }
            NULLABLE_INTEGER => {
                let (values, mask) = futures::try_join!(
                    async {
                        let array = self.row_array::<i64>(&format!("{path}/values")).await?;
                        read_ints(&array, rows.clone()).await
                    },
                    self.read_mask(path, rows.clone()),
                )?;
                Ok(Column::Int {
                    values,
                    nulls: Some(mask),
                })
            }
            NULLABLE_BOOLEAN => {
                let (values, mask) = futures::try_join!(
                    async {
                        let array = self.row_array::<bool>(&format!("{path}/values")).await?;
                        read_range::<bool>(&array, rows.clone()).await
                    },
                    self.read_mask(path, rows.clone()),
                )?;
                Ok(Column::Bool {
                    values,
                    nulls: Some(mask),
                })
            }
            other => Err(Error::zarr(
                path,
                format!("encoding-type {other:?} is not a cell field's"),
            )),
        }
    }

    async fn read_mask(&self, path: &str, rows: Range<u64>) -> Result<Vec<bool>, Error> {
        let array = self.row_array::<bool>(&format!("{path}/mask")).await?;
        read_range(&array, rows).await
    }

    /// A row array of a group: built as the writer builds it when the chunking is known,
    /// else opened from its metadata.
    async fn row_array<T: crate::bundle::zarr_io::Column>(
        &self,
        path: &str,
    ) -> Result<ZArray, Error> {
        match self.rows_per_chunk {
            Some(rows) => array_handle::<T>(&self.storage, path, self.len, rows, Map::new()),
            None => {
                let array = open_array(&self.storage, path).await?;
                self.check_rows(&array)?;
                Ok(array)
            }
        }
    }

    fn check_rows(&self, array: &ZArray) -> Result<(), Error> {
        if array.shape() != [self.len] {
            return Err(Error::zarr(
                array.path().as_str(),
                format!("shape {:?}, not [{}] rows", array.shape(), self.len),
            ));
        }
        Ok(())
    }
}

/// Elements `rows` of an integer array of any width, as i64.
async fn read_ints(array: &ZArray, rows: Range<u64>) -> Result<Vec<i64>, Error> {
    let dt = array.data_type();
    macro_rules! widen {
        ($($dt:ty => $t:ty),*) => {
            $(if dt.is::<$dt>() {
                let v: Vec<$t> = read_values(array, rows).await?;
                return Ok(v.into_iter().map(i64::from).collect());
            })*
        };
    }
    widen!(
        Int64DataType => i64, Int32DataType => i32, Int16DataType => i16, Int8DataType => i8,
        UInt32DataType => u32, UInt16DataType => u16, UInt8DataType => u8
    );
    Err(Error::zarr(
        array.path().as_str(),
        "data type is not a cell field's",
    ))
}

/// Elements `rows` of a float array, as f64.
async fn read_floats(array: &ZArray, rows: Range<u64>) -> Result<Vec<f64>, Error> {
    if array.data_type().is::<Float32DataType>() {
        let v: Vec<f32> = read_values(array, rows).await?;
        return Ok(v.into_iter().map(f64::from).collect());
    }
    read_values(array, rows).await
}
