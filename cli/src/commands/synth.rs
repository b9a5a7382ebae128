//! `cellmatrix synth`.

use cellmatrix::store::DynStore;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_store: &DynStore, _a: Args) -> anyhow::Result<()> {
    anyhow::bail!("synth is not implemented yet")
}
