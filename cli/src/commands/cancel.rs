//! `cellmatrix cancel`: stops a request on a server.

use super::client::Server;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    server: Server,
    /// The request id (32 hex digits, as `cellmatrix query` prints it).
    id: String,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let status = a.server.client().await?.cancel(&a.id).await?;
    println!("cancel requested; {}", status.summary());
    Ok(())
}
