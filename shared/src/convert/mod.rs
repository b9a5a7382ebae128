//! The formats users open directly, converted from the consolidated AnnData Zarr by the
//! reducer: h5ad, loom, a 10x-style mtx directory, dense csv. Each streams the matrix a
//! block of rows at a time (loom, which is dense, excepted; its size is bounded before a
//! request starts) and writes objects in parts, so no output needs the whole matrix in
//! memory, and nothing is visible under a result key until its object is complete.
//!
//! Every byte written depends only on the matrix: block boundaries come from the row
//! pointers, gzip headers carry no time, tar entries have fixed owners and times, so the
//! same request gives the same files however often it is converted.

pub mod csv;
pub mod encode;
pub mod format;
pub mod h5ad;
pub mod loom;
pub mod mtx;
pub mod source;
pub mod tables;

use std::path::Path;

pub use format::{FORMATS, Format, FormatInfo};

use crate::error::Error;
use crate::store::DynStore;
use source::MatrixSource;

/// Limits of the dense formats, checked before a request starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenseLimits {
    /// Most bytes of values (cells × genes × value width) of a csv result.
    pub csv_max_bytes: u64,
    /// Most bytes of values of a loom result (held in memory while it is written).
    pub loom_max_bytes: u64,
}

impl DenseLimits {
    /// The limit of `format`, if it is dense.
    pub fn of(&self, format: Format) -> Option<u64> {
        match format {
            Format::Csv => Some(self.csv_max_bytes),
            Format::Loom => Some(self.loom_max_bytes),
            _ => None,
        }
    }
}

/// Converts the matrix to `format` under `prefix` (`results/{id}`); returns the keys
/// and sizes written. Zarr needs no conversion: the consolidation wrote it there.
pub async fn convert(
    src: &MatrixSource,
    store: &DynStore,
    format: Format,
    prefix: &str,
    scratch: &Path,
    limits: DenseLimits,
) -> Result<Vec<(String, u64)>, Error> {
    let key = |name: &str| format!("{prefix}/{name}");
    Ok(match format {
        Format::Zarr => Vec::new(),
        Format::H5ad => {
            let k = key("matrix.h5ad");
            let size = h5ad::write(src, store, &k, scratch).await?;
            vec![(k, size)]
        }
        Format::Loom => {
            let k = key("matrix.loom");
            let size = loom::write(src, store, &k, scratch, limits.loom_max_bytes).await?;
            vec![(k, size)]
        }
        Format::Mtx => {
            let k = key(&format!("{}.tar.gz", mtx::DIR));
            let size = mtx::write(src, store, &k, scratch).await?;
            vec![(k, size)]
        }
        Format::Csv => csv::write(src, store, prefix).await?,
    })
}
