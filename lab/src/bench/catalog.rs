//! The catalog at scale: reading a catalog of many bundles, each with many fields, and
//! resolving a request over it (its `where` text parsed against the catalog's fields,
//! checked, evaluated per bundle on the fields' summaries, its columns decided), against
//! the baseline of reading the same generation's bytes and parsing them as untyped JSON.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::json;

use cellmatrix::catalog::{self, CatalogEntry};
use cellmatrix::error::Error;
use cellmatrix::field::stats::FieldStats;
use cellmatrix::field::{FieldType, Scalar};
use cellmatrix::fqid::Fqid;
use cellmatrix::request::{BundleSource, MatrixRequest};
use cellmatrix::select;
use cellmatrix::store::DynStore;

/// What one run measured, medians of `runs`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CatalogFigures {
    /// Bundles in the catalog.
    pub bundles: usize,
    /// Fields per bundle (bundle and cell fields together).
    pub fields: usize,
    /// Bytes of the catalog generation.
    pub catalog_bytes: u64,
    /// Seconds to read and parse the catalog and resolve the request.
    pub resolve_seconds: f64,
    /// Seconds to read the generation's bytes and parse them as untyped JSON.
    pub baseline_seconds: f64,
    /// Bundles the request selects.
    pub selected: usize,
}

/// A bundle's entry with `fields` fields: half of them bundle fields, half cell fields
/// with few-valued strings (listed with counts) and numbers.
fn entry(i: usize, fields: usize) -> CatalogEntry {
    let mut e: CatalogEntry = serde_json::from_value(json!({
        "n_cells": 1000, "n_features": 33538, "nnz": 2_000_000, "value_type": "uint32",
        "rows_per_chunk": 1024, "nnz_per_chunk": 262144, "chunk_offsets": [0, 2_000_000],
        "feature_set": "0123456789abcdef0123456789abcdef", "stored_bytes": 9_000_000,
        "content_digest": format!("{i:064x}"), "metadata": {}
    }))
    .expect("a valid entry");
    e.metadata.set(
        "organ",
        Scalar::Str(["lung", "blood", "liver", "brain"][i % 4].into()),
    );
    e.metadata
        .set("donor", Scalar::Str(format!("donor-{}", i % 300)));
    let mut cells = BTreeMap::new();
    for f in 0..fields / 2 {
        e.metadata
            .set(&format!("meta_{f}"), Scalar::Int((i * 7 + f) as i64 % 50));
        let stats = if f % 2 == 0 {
            // 1% of bundles hold the rare value.
            let mut values: BTreeMap<String, u64> =
                (0..20).map(|v| (format!("type {v}"), 50)).collect();
            if i.is_multiple_of(100) {
                values.insert("rare".into(), 1);
            }
            FieldStats {
                field_type: FieldType::String,
                nulls: 0,
                min: None,
                max: None,
                values: Some(values),
            }
        } else {
            FieldStats {
                field_type: FieldType::Number,
                nulls: 3,
                min: Some(0.0),
                max: Some(100.0 + (i % 10) as f64),
                values: None,
            }
        };
        cells.insert(format!("cell_field_{f}"), stats);
    }
    e.cell_fields = Some(cells);
    e
}

/// Writes a catalog of `bundles` entries with `fields` fields each to `store`.
pub async fn prepare(store: &DynStore, bundles: usize, fields: usize) -> Result<(), Error> {
    let entries: Vec<(Fqid, CatalogEntry)> = (0..bundles)
        .map(|i| {
            let fqid = Fqid::parse(&format!(
                "{:08x}-0000-4000-8000-{:012x}.2020-01-01T000000.000000Z",
                i, i
            ))
            .expect("a valid fqid");
            (fqid, entry(i, fields))
        })
        .collect();
    catalog::upsert(store, entries).await?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Reads the catalog in `store` and resolves `where_text` over it, `runs` times.
pub async fn measure(
    store: &DynStore,
    where_text: &str,
    runs: usize,
    fields: usize,
) -> Result<CatalogFigures, Error> {
    let body = serde_json::to_vec(&json!({"where": where_text, "fields": ["cell.*"]}))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let newest = store
        .list("catalog/gen/")
        .await?
        .into_iter()
        .max_by(|a, b| a.key.cmp(&b.key))
        .ok_or_else(|| Error::NotFound("a catalog generation".into()))?;
    let (mut resolve, mut baseline) = (Vec::new(), Vec::new());
    let (mut selected, mut bundles) = (0, 0);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let bytes = store
            .get(&newest.key)
            .await?
            .ok_or_else(|| Error::NotFound(newest.key.clone()))?;
        let _: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::Internal(e.to_string()))?;
        baseline.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let catalog = catalog::read(store).await?;
        let mut req = MatrixRequest::parse(&body).map_err(|r| Error::Internal(r.message))?;
        select::prepare(&catalog, &mut req).map_err(|r| Error::Internal(r.message))?;
        let BundleSource::Filter(filter) = &req.source else {
            return Err(Error::Internal("the where text was not parsed".into()));
        };
        let (chosen, entries) = select::by_filter(&catalog, filter);
        let columns = select::columns(&req.fields, &chosen, &entries);
        resolve.push(t.elapsed().as_secs_f64());
        selected = chosen.len();
        bundles = catalog.bundles.len();
        std::hint::black_box(columns);
    }
    Ok(CatalogFigures {
        bundles,
        fields,
        catalog_bytes: newest.size,
        resolve_seconds: median(resolve),
        baseline_seconds: median(baseline),
        selected,
    })
}

impl std::fmt::Display for CatalogFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "catalog: {} bundles x {} fields, {:.1} MB",
            self.bundles,
            self.fields,
            self.catalog_bytes as f64 / 1e6
        )?;
        writeln!(
            f,
            "read + resolve: {:.3} s (median); read + untyped JSON parse: {:.3} s; ratio {:.2}x; {} bundles selected",
            self.resolve_seconds,
            self.baseline_seconds,
            self.resolve_seconds / self.baseline_seconds.max(1e-9),
            self.selected
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rare_value_selects_one_bundle_in_a_hundred() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore =
            std::sync::Arc::new(cellmatrix::store::fs::FsStore::open(dir.path()).unwrap());
        prepare(&store, 300, 8).await.unwrap();
        let f = measure(&store, "cell_field_0 == 'rare' and organ == 'lung'", 1, 8)
            .await
            .unwrap();
        assert_eq!((f.bundles, f.selected), (300, 3));
    }
}
