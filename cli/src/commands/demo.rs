//! `cellmatrix demo`.

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_a: Args) -> anyhow::Result<()> {
    anyhow::bail!("demo is not implemented yet")
}
