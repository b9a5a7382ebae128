//! The bundle manifest: written last, so a bundle without one does not exist.

use std::collections::BTreeMap;

use crate::bundle::ValueType;
use crate::fqid::Fqid;

/// Identifies the manifest format.
pub const MANIFEST_FORMAT: &str = "cellmatrix-bundle/1";

/// Descriptive metadata of a bundle; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleMetadata {
    /// Project (study) name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Organ or tissue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organ: Option<String>,
    /// Species.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub species: Option<String>,
    /// Assay (`10x`, `smartseq2`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assay: Option<String>,
    /// Donor id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub donor: Option<String>,
}

impl BundleMetadata {
    /// The value of a named field (`project`, `organ`, `species`, `assay`, `donor`).
    pub fn get(&self, field: &str) -> Option<&str> {
        match field {
            "project" => self.project.as_deref(),
            "organ" => self.organ.as_deref(),
            "species" => self.species.as_deref(),
            "assay" => self.assay.as_deref(),
            "donor" => self.donor.as_deref(),
            _ => None,
        }
    }

    /// Fills fields of `self` that are unset from `other`.
    pub fn or(mut self, other: &BundleMetadata) -> BundleMetadata {
        for (mine, theirs) in [
            (&mut self.project, &other.project),
            (&mut self.organ, &other.organ),
            (&mut self.species, &other.species),
            (&mut self.assay, &other.assay),
            (&mut self.donor, &other.donor),
        ] {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        self
    }
}

/// Where a bundle came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceInfo {
    /// The input file or directory name (no directories above it).
    pub file: String,
    /// The input format (`10x-mtx`, `10x-h5`, `h5ad`, `table`, `synthetic`).
    pub format: String,
}

/// How a bundle's arrays are chunked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    /// Rows (cells) per chunk of `X/indptr` and of the obs columns; tasks split bundles
    /// on multiples of it.
    pub rows_per_chunk: u64,
    /// Stored values per chunk of `X/data` and `X/indices`.
    pub nnz_per_chunk: u64,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            rows_per_chunk: 1024,
            nnz_per_chunk: 1 << 18,
        }
    }
}

/// The manifest, `bundles/{fqid}/manifest.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// The bundle id.
    pub fqid: Fqid,
    /// Number of cells (rows).
    pub n_cells: u64,
    /// Number of features (columns).
    pub n_features: u64,
    /// Number of stored nonzero values.
    pub nnz: u64,
    /// Element type of `X/data`.
    pub value_type: ValueType,
    /// Chunking of the arrays.
    pub layout: Layout,
    /// `indptr` at every row-chunk boundary (`0, rows_per_chunk, 2·rows_per_chunk, …,
    /// n_cells`): the nonzeros of any chunk-aligned row range without reading `indptr`.
    pub chunk_offsets: Vec<u64>,
    /// Id of the feature set, stored at `featuresets/{id}.json`.
    pub feature_set: String,
    /// Descriptive metadata.
    pub metadata: BundleMetadata,
    /// Where it came from.
    pub source: SourceInfo,
    /// SHA-256 of the bundle's content (cells, features, counts, metadata).
    pub content_digest: String,
    /// Bytes stored for the Zarr group.
    pub stored_bytes: u64,
    /// Extra key-value pairs from a sidecar that are not among the named fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// Key of a bundle's manifest.
pub fn manifest_key(fqid: &Fqid) -> String {
    format!("bundles/{fqid}/manifest.json")
}

/// Key prefix of a bundle's Zarr group.
pub fn zarr_prefix(fqid: &Fqid) -> String {
    format!("bundles/{fqid}/matrix.zarr")
}

/// Key of a feature set.
pub fn feature_set_key(id: &str) -> String {
    format!("featuresets/{id}.json")
}
