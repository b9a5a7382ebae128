//! `cellmatrix bench catalog`: reading a catalog of many bundles with many fields and
//! resolving a `where` request over it, against reading and parsing the same bytes as
//! untyped JSON (see `cellmatrix_lab::bench::catalog`).

use std::path::PathBuf;
use std::sync::Arc;

use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_lab::bench::catalog::{measure, prepare};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bundles in the catalog.
    #[arg(long, default_value_t = 10_000)]
    bundles: usize,
    /// Fields per bundle (half bundle fields, half cell fields).
    #[arg(long, default_value_t = 20)]
    fields: usize,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The request's `where` text (1% of the bundles hold `rare`).
    #[arg(
        long,
        default_value = "cell_field_0 == 'rare' and organ in ['lung', 'blood']"
    )]
    r#where: String,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = ".cache/bench/catalog.json")]
    out: PathBuf,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let store: DynStore = Arc::new(FsStore::open(temp.path())?);
    prepare(&store, a.bundles, a.fields).await?;
    let figures = measure(&store, &a.r#where, a.runs, a.fields).await?;
    print!("{figures}");
    super::write_json(&a.out, &figures)
}
