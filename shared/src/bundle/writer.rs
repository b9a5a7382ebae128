//! Writes a bundle: feature set, the AnnData-Zarr group, and the manifest last.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::bundle::manifest::{feature_set_key, manifest_key, zarr_prefix};
use crate::bundle::obs::write_column;
use crate::bundle::zarr_io::{ChunkCodec, encoding, write_array, write_group};
use crate::bundle::{
    BundleMetadata, Features, Layout, Manifest, SourceInfo, SourceMatrix, Values, qc,
};
use crate::error::Error;
use crate::field::column::Column;
use crate::field::stats::FieldStats;
use crate::fqid::Fqid;
use crate::store::zarr::ZarrStore;
use crate::store::{DynStore, PutOutcome};

/// What [`write_bundle`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// The bundle was written.
    Written(Manifest),
    /// A bundle with this id and the same content was already there; nothing was written.
    AlreadyPresent(Manifest),
}

impl WriteOutcome {
    /// The manifest either way.
    pub fn manifest(&self) -> &Manifest {
        match self {
            WriteOutcome::Written(m) | WriteOutcome::AlreadyPresent(m) => m,
        }
    }
}

/// Id of a feature set: a digest of its ids and names.
pub fn feature_set_id(features: &Features) -> String {
    let mut h = Sha256::new();
    for (id, name) in features.ids.iter().zip(&features.names) {
        h.update((id.len() as u64).to_le_bytes());
        h.update(id.as_bytes());
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// A digest of everything that makes a bundle what it is: cells, features, counts and
/// metadata. Two ingests of the same input give the same digest.
pub fn content_digest(src: &SourceMatrix, meta: &BundleMetadata) -> String {
    let mut h = Sha256::new();
    h.update(b"cellmatrix-bundle/1\0");
    let mut strs = |v: &[String]| {
        h.update((v.len() as u64).to_le_bytes());
        for s in v {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
    };
    strs(&src.cells);
    strs(&src.features.ids);
    strs(&src.features.names);
    let m = &src.matrix;
    h.update((m.n_rows as u64).to_le_bytes());
    h.update((m.n_cols as u64).to_le_bytes());
    for p in &m.indptr {
        h.update(p.to_le_bytes());
    }
    for i in &m.indices {
        h.update(i.to_le_bytes());
    }
    h.update(m.values.value_type().zarr_name().as_bytes());
    match &m.values {
        Values::U32(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
        Values::F32(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
        Values::F64(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
    }
    h.update(serde_json::to_vec(meta).unwrap_or_default());
    // Only inputs with annotations hash them, so bundles without keep their digest.
    for (name, column) in &src.obs {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{column:?}").as_bytes());
    }
    hex::encode(h.finalize())
}

/// Stores a feature set (content-addressed, put-if-absent) and returns its id. Called
/// once per input or run, not once per bundle: bundles of one input share their features,
/// and a thousand one-cell bundles should not upload the same gene list a thousand times.
pub async fn write_feature_set(store: &DynStore, features: &Features) -> Result<String, Error> {
    let id = feature_set_id(features);
    let body = serde_json::to_vec(features).map_err(|e| Error::zarr("feature set", e))?;
    store
        .put_if_absent(&feature_set_key(&id), Bytes::from(body))
        .await?;
    Ok(id)
}

/// Reads a bundle's manifest, `None` if the bundle does not exist.
pub async fn read_manifest(store: &DynStore, fqid: &Fqid) -> Result<Option<Manifest>, Error> {
    let key = manifest_key(fqid);
    match store.get(&key).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                what: key,
                message: e.to_string(),
            }),
    }
}

/// Writes `src` (checked with [`SourceMatrix::validate`]) as bundle `fqid`, whose
/// features were stored by [`write_feature_set`] as `feature_set`. Refuses ([`Error::Conflict`]) when a bundle with this
/// id and different content exists; returns [`WriteOutcome::AlreadyPresent`] when the
/// content is the same. The manifest is written last with put-if-absent.
pub async fn write_bundle(
    store: &DynStore,
    fqid: &Fqid,
    src: &SourceMatrix,
    feature_set: &str,
    meta: &BundleMetadata,
    source: SourceInfo,
    layout: Layout,
) -> Result<WriteOutcome, Error> {
    // Uniqueness of ids was checked when the input was read (all of it, before any
    // bundle of it is written); here only what this function relies on.
    src.check_shapes(&source.file)?;
    let digest = content_digest(src, meta);
    if let Some(existing) = read_manifest(store, fqid).await? {
        return same_or_conflict(existing, &digest);
    }

    debug_assert_eq!(feature_set, feature_set_id(&src.features));

    let qc = qc::compute(&src.matrix, &src.features);
    let stored_bytes = write_anndata(store, &zarr_prefix(fqid), src, &qc, layout).await?;

    let m = &src.matrix;
    let rpc = layout.rows_per_chunk as usize;
    let mut chunk_offsets: Vec<u64> = (0..m.n_rows).step_by(rpc).map(|r| m.indptr[r]).collect();
    chunk_offsets.push(m.nnz() as u64);
    let manifest = Manifest {
        format: crate::bundle::manifest::MANIFEST_FORMAT.to_string(),
        fqid: fqid.clone(),
        n_cells: m.n_rows as u64,
        n_features: m.n_cols as u64,
        nnz: m.nnz() as u64,
        value_type: m.values.value_type(),
        layout,
        chunk_offsets,
        feature_set: feature_set.to_string(),
        metadata: meta.clone(),
        source,
        content_digest: digest.clone(),
        stored_bytes,
        cell_fields: cell_field_stats(src, &qc),
    };
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::zarr("manifest", e))?;
    match store
        .put_if_absent(&manifest_key(fqid), Bytes::from(body))
        .await?
    {
        PutOutcome::Created => Ok(WriteOutcome::Written(manifest)),
        PutOutcome::AlreadyExists => {
            // Lost a race with another ingest of the same id.
            let existing = read_manifest(store, fqid)
                .await?
                .ok_or_else(|| Error::NotFound(manifest_key(fqid)))?;
            same_or_conflict(existing, &digest)
        }
    }
}

fn same_or_conflict(existing: Manifest, digest: &str) -> Result<WriteOutcome, Error> {
    if existing.content_digest == digest {
        Ok(WriteOutcome::AlreadyPresent(existing))
    } else {
        Err(Error::Conflict(format!(
            "bundle {} already exists with different content",
            existing.fqid
        )))
    }
}

/// The catalog's summary of every cell field: the built-ins', then the input's.
fn cell_field_stats(src: &SourceMatrix, qc: &qc::Qc) -> BTreeMap<String, FieldStats> {
    let n_genes: Vec<Option<i64>> = qc.n_genes.iter().map(|&n| Some(i64::from(n))).collect();
    let mut out = BTreeMap::from([
        (
            "n_genes".to_string(),
            FieldStats::of(&Column::ints(&n_genes)),
        ),
        (
            "total_counts".to_string(),
            FieldStats::of(&Column::Num(qc.total_counts.clone())),
        ),
        (
            "pct_mito".to_string(),
            FieldStats::of(&Column::Num(qc.pct_mito.clone())),
        ),
        // Every barcode is distinct: listing them would only grow the catalog.
        (
            "barcode".to_string(),
            FieldStats {
                field_type: crate::field::FieldType::String,
                nulls: 0,
                min: None,
                max: None,
                values: None,
            },
        ),
    ]);
    for (name, column) in &src.obs {
        out.insert(name.clone(), FieldStats::of(column));
    }
    out
}

/// Writes the AnnData-Zarr group under `prefix`; returns the bytes written.
async fn write_anndata(
    store: &DynStore,
    prefix: &str,
    src: &SourceMatrix,
    qc: &qc::Qc,
    layout: Layout,
) -> Result<u64, Error> {
    let adapter = ZarrStore::new(store.clone(), prefix);
    let storage = adapter.clone().into_storage();
    let m = &src.matrix;
    let rows = layout.rows_per_chunk;
    let nnz_chunk = layout.nnz_per_chunk.min(m.nnz() as u64).max(1);
    let array_attrs = || encoding("array", "0.2.0");
    let string_attrs = || encoding("string-array", "0.2.0");

    // X: CSR. indptr as int64 and indices as int32, the index types scipy uses.
    let mut x_attrs = encoding("csr_matrix", "0.1.0");
    x_attrs.insert("shape".into(), json!([m.n_rows, m.n_cols]));
    write_group(&storage, "/X", x_attrs).await?;
    let indptr: Vec<i64> = m.indptr.iter().map(|&p| p as i64).collect();
    write_array(&storage, "/X/indptr", &indptr, rows, array_attrs()).await?;
    let indices: Vec<i32> = m.indices.iter().map(|&i| i as i32).collect();
    write_array(&storage, "/X/indices", &indices, nnz_chunk, array_attrs()).await?;
    match &m.values {
        Values::U32(v) => write_array(&storage, "/X/data", v, nnz_chunk, array_attrs()).await?,
        Values::F32(v) => write_array(&storage, "/X/data", v, nnz_chunk, array_attrs()).await?,
        Values::F64(v) => write_array(&storage, "/X/data", v, nnz_chunk, array_attrs()).await?,
    }

    // obs: the cell id index, the QC metrics, and the input's cell fields.
    let mut obs_attrs = encoding("dataframe", "0.2.0");
    obs_attrs.insert("_index".into(), json!("_index"));
    let column_order: Vec<&str> = ["n_genes", "total_counts", "pct_mito"]
        .into_iter()
        .chain(src.obs.iter().map(|(name, _)| name.as_str()))
        .collect();
    obs_attrs.insert("column-order".into(), json!(column_order));
    write_group(&storage, "/obs", obs_attrs).await?;
    write_array(&storage, "/obs/_index", &src.cells, rows, string_attrs()).await?;
    write_array(&storage, "/obs/n_genes", &qc.n_genes, rows, array_attrs()).await?;
    write_array(
        &storage,
        "/obs/total_counts",
        &qc.total_counts,
        rows,
        array_attrs(),
    )
    .await?;
    write_array(&storage, "/obs/pct_mito", &qc.pct_mito, rows, array_attrs()).await?;
    write_fields(&storage, src, rows).await?;

    // var: feature ids as the index, names as a column; one chunk, read once per bundle.
    let var_chunk = (m.n_cols as u64).max(1);
    let mut var_attrs = encoding("dataframe", "0.2.0");
    var_attrs.insert("_index".into(), json!("_index"));
    var_attrs.insert("column-order".into(), json!(["feature_name"]));
    write_group(&storage, "/var", var_attrs).await?;
    write_array(
        &storage,
        "/var/_index",
        &src.features.ids,
        var_chunk,
        string_attrs(),
    )
    .await?;
    write_array(
        &storage,
        "/var/feature_name",
        &src.features.names,
        var_chunk,
        string_attrs(),
    )
    .await?;

    for empty in ["/layers", "/obsm", "/obsp", "/varm", "/varp", "/uns"] {
        write_group(&storage, empty, encoding("dict", "0.1.0")).await?;
    }
    // The root group last: until it exists, readers do not see an AnnData object.
    write_group(&storage, "/", encoding("anndata", "0.1.0")).await?;
    Ok(adapter.bytes_written())
}

/// Columns of the input's cell fields written at once (each writes its arrays' chunks
/// several at a time): a bundle of one cell is a few objects per field, and written one
/// after another twenty fields cost a hundred round trips.
const FIELDS_AT_ONCE: usize = 8;

/// Writes each of the input's cell fields as `obs/{name}` (see `bundle::obs`). Every
/// write settles before an error returns.
async fn write_fields(
    storage: &zarrs::storage::AsyncReadableWritableListableStorage,
    src: &SourceMatrix,
    rows: u64,
) -> Result<(), Error> {
    for batch in src.obs.chunks(FIELDS_AT_ONCE) {
        let writes = batch.iter().map(|(name, column)| async move {
            write_column(
                storage,
                &format!("/obs/{name}"),
                column,
                rows,
                ChunkCodec::Zstd,
            )
            .await
        });
        for outcome in futures::future::join_all(writes).await {
            outcome?;
        }
    }
    Ok(())
}

/// Removes what a failed [`write_bundle`] left behind, unless a manifest says the bundle
/// exists (then it is someone else's complete bundle). Best effort: leftovers without a
/// manifest are invisible anyway.
pub async fn remove_partial(store: &DynStore, fqid: &Fqid) {
    if matches!(read_manifest(store, fqid).await, Ok(Some(_))) {
        return;
    }
    if let Ok(objects) = store.list(&format!("{}/", zarr_prefix(fqid))).await {
        for o in objects {
            let _ = store.delete(&o.key).await;
        }
    }
}
