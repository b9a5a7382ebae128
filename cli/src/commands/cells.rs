//! `cellmatrix cells`: prints a request's cell table (cell id, bundle, the requested
//! fields) as the server streams it: partial while the request runs, the matrix's obs
//! once it succeeded. What it covers goes to stderr.

use std::io::Write;

use super::client::Server;

/// How the table is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// CSV with a header line.
    Csv,
    /// JSON lines: one object per cell.
    Jsonl,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    server: Server,
    /// The request id (32 hex digits, as `cellmatrix query` prints it).
    id: String,
    /// CSV or JSON lines.
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let accept = match a.format {
        Format::Csv => "text/csv",
        Format::Jsonl => "application/x-ndjson",
    };
    // Written as it arrives: a table of millions of cells is never held.
    let mut out = std::io::stdout();
    let mut write = |piece: &[u8]| out.write_all(piece);
    let client = a.server.client().await?;
    let coverage = client.cells(&a.id, accept, &mut write).await?;
    std::io::stdout().flush()?;
    let total = coverage
        .tasks_total
        .map_or("?".to_string(), |t| t.to_string());
    eprintln!(
        "{} cells from {} of {total} tasks{}",
        coverage.cells,
        coverage.tasks_covered,
        if coverage.complete {
            ": complete"
        } else {
            ": partial, the request is still running"
        }
    );
    Ok(())
}
