//! The bundle manifest: written last, so a bundle without one does not exist.

use std::collections::BTreeMap;

use crate::bundle::ValueType;
use crate::field::stats::FieldStats;
use crate::field::{Scalar, Value};
use crate::fqid::Fqid;

/// Identifies the manifest format.
pub const MANIFEST_FORMAT: &str = "cellmatrix-bundle/1";

/// Descriptive metadata of a bundle: its bundle fields. Every field is optional; the
/// five named ones are the built-ins a sidecar or a flag sets, `other` any more.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Every other bundle field, by normalised name. Serialized after the named ones,
    /// so a bundle without any keeps the digest it had before they existed.
    #[serde(flatten)]
    pub other: BTreeMap<String, Scalar>,
}

impl BundleMetadata {
    fn named(&self, field: &str) -> Option<&Option<String>> {
        match field {
            "project" => Some(&self.project),
            "organ" => Some(&self.organ),
            "species" => Some(&self.species),
            "assay" => Some(&self.assay),
            "donor" => Some(&self.donor),
            _ => None,
        }
    }

    /// The value of a bundle field (`project`, `organ`, ..., or any other name).
    pub fn get(&self, field: &str) -> Value<'_> {
        match self.named(field) {
            Some(v) => v.as_deref().map_or(Value::Null, Value::Str),
            None => self.other.get(field).map_or(Value::Null, Scalar::as_value),
        }
    }

    /// The value of a bundle field, owned; `None` when missing.
    pub fn scalar(&self, field: &str) -> Option<Scalar> {
        match self.named(field) {
            Some(v) => v.clone().map(Scalar::Str),
            None => self.other.get(field).cloned(),
        }
    }

    /// Sets a field by its normalised name; a named field takes the value as text.
    pub fn set(&mut self, field: &str, value: Scalar) {
        let slot = match field {
            "project" => &mut self.project,
            "organ" => &mut self.organ,
            "species" => &mut self.species,
            "assay" => &mut self.assay,
            "donor" => &mut self.donor,
            _ => {
                self.other.insert(field.to_string(), value);
                return;
            }
        };
        *slot = Some(value.to_text());
    }

    /// Every field set, by name, the named ones first.
    pub fn fields(&self) -> Vec<(String, Scalar)> {
        ["project", "organ", "species", "assay", "donor"]
            .into_iter()
            .filter_map(|n| self.scalar(n).map(|v| (n.to_string(), v)))
            .chain(self.other.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }

    /// Fills fields of `self` that are unset from `other`.
    pub fn or(mut self, other: &BundleMetadata) -> BundleMetadata {
        for (name, value) in other.fields() {
            if self.scalar(&name).is_none() {
                self.set(&name, value);
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
    /// Each cell field's summary, by name: the built-ins' and the input's obs columns
    /// (stored under `obs/{name}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cell_fields: BTreeMap<String, FieldStats>,
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
