//! `cellmatrix status`: one look at a request on a server.

use super::client::Server;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    server: Server,
    /// The request id (32 hex digits, as `cellmatrix query` prints it).
    id: String,
    /// Print the status document as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let status = a.server.client().await?.status(&a.id).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&status.raw)?);
    } else {
        println!("{}", status.summary());
    }
    Ok(())
}
