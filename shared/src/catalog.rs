//! The catalog: every bundle with its metadata and cell count, in one object, so that
//! resolving a filter and planning cost one LIST and one GET, never one call per bundle.
//!
//! Updates are lock-free: the catalog is a sequence of immutable generations
//! `catalog/gen/{n:012}.json`. A writer reads the newest generation `n`, merges its
//! entries and writes `n + 1` with put-if-absent; if another writer got there first it
//! re-reads and tries again. No entry is lost, and there is no lock to fight over. Old
//! generations are pruned, keeping a few for readers that listed just before a prune.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::bundle::{BundleMetadata, Manifest, ValueType};
use crate::error::Error;
use crate::fqid::Fqid;
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
    /// Descriptive metadata.
    pub metadata: BundleMetadata,
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
        }
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

/// Adds or replaces `entries`, retrying on concurrent updates. Returns the generation written.
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
                prune(store, catalog.generation).await;
                return Ok(catalog);
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
