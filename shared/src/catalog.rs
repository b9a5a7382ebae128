//! The catalog: every bundle with its metadata and cell count, in one object, so that
//! resolving a filter and planning cost one LIST and one GET, never one call per bundle.
//!
//! Updates are lock-free: the catalog is a sequence of immutable generations
//! `catalog/gen/{n:012}.json`. A writer reads the newest generation `n`, merges its
//! entries and writes `n + 1` with put-if-absent; if another writer got there first it
//! re-reads and tries again. No entry is lost, and there is no lock to fight over. Old
//! generations are pruned, keeping a few for readers that listed just before a prune.
//! A writer slow enough that `n + 1` was written and pruned meanwhile creates `n + 1`
//! again, below the newest: so a writer counts as done only once it has read its entries
//! back from the newest generation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use crate::bundle::manifest::feature_set_key;
use crate::bundle::{BundleMetadata, Manifest, ValueType, read_manifest};
use crate::error::Error;
use crate::field::stats::FieldStats;
use crate::field::{Field, Value};
use crate::filter::{BundleFacts, CellFacts};
use crate::fqid::Fqid;
use crate::state::get_json;
use crate::store::{DynStore, PutOutcome};

const PREFIX: &str = "catalog/gen/";
const KEEP_GENERATIONS: u64 = 3;
const MAX_ATTEMPTS: u32 = 200;

/// One bundle in the catalog.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CatalogEntry {
    /// Number of cells.
    pub n_cells: u64,
    /// Number of features.
    pub n_features: u64,
    /// Stored nonzeros.
    pub nnz: u64,
    /// Element type of the counts.
    pub value_type: ValueType,
    /// Rows per chunk (tasks split on multiples of it).
    pub rows_per_chunk: u64,
    /// Stored values per chunk of `X/data` and `X/indices` (the manifest's layout), so
    /// a worker opens the bundle's arrays without reading their metadata. Absent from
    /// entries written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nnz_per_chunk: Option<u64>,
    /// Nonzeros at each row-chunk boundary (the manifest's `chunk_offsets`), so the
    /// planner needs no manifest.
    pub chunk_offsets: Vec<u64>,
    /// Feature set id.
    pub feature_set: String,
    /// Stored bytes of the Zarr group.
    pub stored_bytes: u64,
    /// Content digest (recognises a re-ingest of the same data).
    pub content_digest: String,
    /// Descriptive metadata: the bundle fields.
    pub metadata: BundleMetadata,
    /// Each cell field's summary (the manifest's), by name. Absent from entries of
    /// bundles ingested before fields were summarised: those are never pruned on cells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_fields: Option<BTreeMap<String, FieldStats>>,
}

impl From<&Manifest> for CatalogEntry {
    fn from(m: &Manifest) -> Self {
        CatalogEntry {
            n_cells: m.n_cells,
            n_features: m.n_features,
            nnz: m.nnz,
            value_type: m.value_type,
            rows_per_chunk: m.layout.rows_per_chunk,
            nnz_per_chunk: Some(m.layout.nnz_per_chunk),
            chunk_offsets: m.chunk_offsets.clone(),
            feature_set: m.feature_set.clone(),
            stored_bytes: m.stored_bytes,
            content_digest: m.content_digest.clone(),
            metadata: m.metadata.clone(),
            cell_fields: Some(m.cell_fields.clone()),
        }
    }
}

/// A catalogued bundle as a filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The bundle's id.
    pub fqid: &'a Fqid,
    /// Its entry.
    pub entry: &'a CatalogEntry,
}

impl BundleFacts for Facts<'_> {
    fn value(&self, field: &Field) -> Value<'_> {
        bundle_field(self.fqid, &self.entry.metadata, field)
    }

    fn n_cells(&self) -> u64 {
        self.entry.n_cells
    }

    fn cell(&self, field: &Field) -> CellFacts<'_> {
        match &self.entry.cell_fields {
            None => CellFacts::Unknown,
            Some(fields) => fields
                .get(field.column())
                .map_or(CellFacts::Absent, CellFacts::Stats),
        }
    }
}

/// A bundle field's value: the id for `bundle.fqid`, else the metadata's.
pub fn bundle_field<'a>(fqid: &'a Fqid, metadata: &'a BundleMetadata, field: &Field) -> Value<'a> {
    match field.column() {
        "fqid" => Value::Str(fqid.as_str()),
        name => metadata.get(name),
    }
}

impl CatalogEntry {
    /// How the bundle's arrays are chunked, if the entry says.
    pub fn layout(&self) -> Option<crate::bundle::manifest::Layout> {
        self.nnz_per_chunk
            .map(|nnz_per_chunk| crate::bundle::manifest::Layout {
                rows_per_chunk: self.rows_per_chunk,
                nnz_per_chunk,
            })
    }

    /// What the planner needs of this bundle.
    pub fn plan_bundle(&self, fqid: &Fqid) -> crate::plan::PlanBundle {
        crate::plan::PlanBundle {
            fqid: fqid.clone(),
            n_cells: self.n_cells,
            rows_per_chunk: self.rows_per_chunk,
            chunk_offsets: self.chunk_offsets.clone(),
            // An int32 column index and the value.
            bytes_per_nnz: 4 + self.value_type.size() as u64,
        }
    }
}

/// A generation of the catalog.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Catalog {
    /// Generation number; 0 is the empty catalog that is never written.
    pub generation: u64,
    /// Every bundle, by id.
    pub bundles: BTreeMap<Fqid, CatalogEntry>,
}

fn gen_key(generation: u64) -> String {
    format!("{PREFIX}{generation:012}.json")
}

fn parse_gen(key: &str) -> Option<u64> {
    key.strip_prefix(PREFIX)?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

async fn generations(store: &DynStore) -> Result<Vec<u64>, Error> {
    let mut gens: Vec<u64> = store
        .list(PREFIX)
        .await?
        .iter()
        .filter_map(|o| parse_gen(&o.key))
        .collect();
    gens.sort_unstable();
    Ok(gens)
}

/// Reads the newest generation (the empty catalog if none was written).
pub async fn read(store: &DynStore) -> Result<Catalog, Error> {
    for _ in 0..MAX_ATTEMPTS {
        let Some(&newest) = generations(store).await?.last() else {
            return Ok(Catalog::default());
        };
        let key = gen_key(newest);
        // A writer may prune it between the LIST and the GET: list again.
        if let Some(body) = store.get(&key).await? {
            return serde_json::from_slice(&body).map_err(|e| Error::Corrupt {
                what: key,
                message: e.to_string(),
            });
        }
    }
    Err(Error::Conflict(
        "the catalog kept changing while being read".into(),
    ))
}

/// Adds or replaces `entries`, retrying on concurrent updates. Returns the newest
/// generation, which holds them.
pub async fn upsert(
    store: &DynStore,
    entries: Vec<(Fqid, CatalogEntry)>,
) -> Result<Catalog, Error> {
    for attempt in 0..MAX_ATTEMPTS {
        let mut catalog = read(store).await?;
        if entries
            .iter()
            .all(|(f, e)| catalog.bundles.get(f) == Some(e))
        {
            // Nothing new (a re-ingest): no generation to write.
            return Ok(catalog);
        }
        catalog.generation += 1;
        catalog.bundles.extend(entries.iter().cloned());
        let body = serde_json::to_vec(&catalog).map_err(|e| Error::zarr("catalog", e))?;
        match store
            .put_if_absent(&gen_key(catalog.generation), Bytes::from(body))
            .await?
        {
            PutOutcome::Created => {
                // Read back by the next attempt: a generation created after it was
                // pruned is not the newest, and the entries must go in again.
                prune(store, catalog.generation).await;
            }
            PutOutcome::AlreadyExists => {
                // Another writer won this generation; back off a little, with jitter.
                let ms = rand::random_range(1..=5u64 * u64::from(attempt.min(20) + 1));
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }
    Err(Error::Conflict(format!(
        "could not update the catalog after {MAX_ATTEMPTS} attempts (too many concurrent writers)"
    )))
}

/// A bundle's entry: the catalog, else what this process learnt (`learnt`, the app's
/// cache), else its manifest (remembered for next time).
pub async fn lookup(
    store: &DynStore,
    learnt: &Mutex<HashMap<Fqid, CatalogEntry>>,
    catalog: &BTreeMap<Fqid, CatalogEntry>,
    fqid: &Fqid,
) -> Result<Option<CatalogEntry>, Error> {
    if let Some(e) = catalog.get(fqid) {
        return Ok(Some(e.clone()));
    }
    if let Some(e) = learnt.lock().expect("learnt lock").get(fqid) {
        return Ok(Some(e.clone()));
    }
    let Some(manifest) = read_manifest(store, fqid).await? else {
        return Ok(None);
    };
    let entry = CatalogEntry::from(&manifest);
    learnt
        .lock()
        .expect("learnt lock")
        .insert(fqid.clone(), entry.clone());
    Ok(Some(entry))
}

/// Reads a feature set: whole (`Features`), or only its ids (`genes::GeneIds`).
pub async fn feature_set<T: serde::de::DeserializeOwned>(
    store: &DynStore,
    id: &str,
) -> Result<T, Error> {
    let key = feature_set_key(id);
    get_json(store, &key).await?.ok_or_else(|| Error::Corrupt {
        what: key,
        message: "the feature set of a catalogued bundle is missing".into(),
    })
}

async fn prune(store: &DynStore, newest: u64) {
    let Ok(gens) = generations(store).await else {
        return;
    };
    for g in gens.into_iter().filter(|&g| g + KEEP_GENERATIONS <= newest) {
        if let Err(e) = store.delete(&gen_key(g)).await {
            tracing::warn!("could not prune catalog generation {g}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::store::{BlobStore, ObjectMeta, StoreResult, Upload};

    fn entry(n_cells: u64) -> CatalogEntry {
        CatalogEntry {
            n_cells,
            n_features: 10,
            nnz: n_cells,
            value_type: ValueType::Uint32,
            rows_per_chunk: 1024,
            nnz_per_chunk: Some(1024),
            chunk_offsets: vec![0, n_cells],
            feature_set: "fs".into(),
            stored_bytes: 100,
            content_digest: format!("d{n_cells}"),
            metadata: BundleMetadata::default(),
            cell_fields: None,
        }
    }

    fn fqid(n: u32) -> Fqid {
        Fqid::parse(&format!(
            "00000000-0000-4000-8000-{n:012}.2026-01-01T000000.000000Z"
        ))
        .unwrap()
    }

    /// A store whose first catalog listing and read are a snapshot taken earlier: a
    /// writer that read the catalog, then stalled while others wrote and pruned.
    #[derive(Debug)]
    struct Stale {
        inner: DynStore,
        listing: Mutex<Option<Vec<ObjectMeta>>>,
        body: Mutex<Option<(String, Bytes)>>,
    }

    #[async_trait::async_trait]
    impl BlobStore for Stale {
        async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
            let stale = {
                let mut body = self.body.lock().unwrap();
                match body.as_ref() {
                    Some((k, _)) if k == key => body.take().map(|(_, b)| b),
                    _ => None,
                }
            };
            match stale {
                Some(b) => Ok(Some(b)),
                None => self.inner.get(key).await,
            }
        }
        async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Option<Bytes>> {
            self.inner.get_range(key, range).await
        }
        async fn size(&self, key: &str) -> StoreResult<Option<u64>> {
            self.inner.size(key).await
        }
        async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
            self.inner.put(key, body).await
        }
        async fn put_if_absent(&self, key: &str, body: Bytes) -> StoreResult<PutOutcome> {
            self.inner.put_if_absent(key, body).await
        }
        async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
            if let Some(listing) = self.listing.lock().unwrap().take() {
                return Ok(listing);
            }
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> StoreResult<()> {
            self.inner.delete(key).await
        }
        async fn presign_get(&self, key: &str, expires: Duration) -> StoreResult<String> {
            self.inner.presign_get(key, expires).await
        }
        async fn start_upload(&self, key: &str) -> StoreResult<Arc<dyn Upload>> {
            self.inner.start_upload(key).await
        }
        fn describe(&self) -> String {
            self.inner.describe()
        }
    }

    #[tokio::test]
    async fn a_writer_that_read_a_pruned_generation_still_lands_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(crate::store::fs::FsStore::open(dir.path()).unwrap());
        upsert(&store, vec![(fqid(0), entry(1))]).await.unwrap();
        // The slow writer's view: generation 1.
        let listing = store.list(PREFIX).await.unwrap();
        let body = store.get(&gen_key(1)).await.unwrap().unwrap();
        // Meanwhile others write generations 2 to 5, which prunes 1 and 2.
        for n in 1..=4 {
            upsert(&store, vec![(fqid(n), entry(u64::from(n) + 1))])
                .await
                .unwrap();
        }
        assert_eq!(generations(&store).await.unwrap(), [3, 4, 5]);
        let slow: DynStore = Arc::new(Stale {
            inner: store.clone(),
            listing: Mutex::new(Some(listing)),
            body: Mutex::new(Some((gen_key(1), body))),
        });
        // It creates generation 2 again, below the newest; then it must try again.
        let written = upsert(&slow, vec![(fqid(9), entry(10))]).await.unwrap();
        let newest = read(&store).await.unwrap();
        assert_eq!(written, newest);
        assert_eq!(newest.generation, 6);
        for n in [0, 1, 2, 3, 4, 9] {
            assert!(newest.bundles.contains_key(&fqid(n)), "lost bundle {n}");
        }
    }
}
