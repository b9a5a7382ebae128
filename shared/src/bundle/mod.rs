//! Bundles: the in-memory matrix, the manifest, QC metrics, and the AnnData-Zarr layout
//! they are written in (see `docs/FORMAT.md`).

pub mod matrix;

pub use matrix::{Csr, Features, SourceMatrix, ValueType, Values};
pub mod manifest;
pub mod obs;
pub mod qc;
pub mod reader;
pub mod zarr_io;

pub use manifest::{BundleMetadata, Layout, Manifest, SourceInfo};
pub mod writer;

pub use writer::{WriteOutcome, read_manifest, write_bundle, write_feature_set};
