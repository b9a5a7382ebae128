//! Bundles: the in-memory matrix, the manifest, QC metrics, and the AnnData-Zarr layout
//! they are written in (see `docs/FORMAT.md`).

pub mod matrix;

pub use matrix::{Csr, Features, SourceMatrix, ValueType, Values};
