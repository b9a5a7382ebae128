//! `cellmatrix query`: submits a matrix request to a server, follows it to the end with a
//! progress bar, summarises the result and optionally downloads it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ArgGroup;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use super::client::{Server, State, is_transient};

/// How often the status is polled.
const POLL: Duration = Duration::from_millis(250);
/// Failed polls in a row (busy store, dropped connection) before giving up.
const MAX_POLL_FAILURES: u32 = 20;

#[derive(Debug, clap::Args)]
#[command(group(
    ArgGroup::new("source").required(true).args(["body", "fqids", "fqids_url", "filter", "where_"])
))]
pub struct Args {
    #[command(flatten)]
    server: Server,
    /// A MatrixRequest JSON file, sent as it is ("-" reads standard input).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["format", "fields", "genes"])]
    body: Option<PathBuf>,
    /// The bundles, by fqid.
    #[arg(long, value_name = "FQID,...", value_delimiter = ',')]
    fqids: Option<Vec<String>>,
    /// An https URL, or a key in the server's store, of a list of fqids.
    #[arg(long, value_name = "URL")]
    fqids_url: Option<String>,
    /// A filter over bundle and cell fields, as JSON (see `GET /v1/fields`).
    #[arg(long, value_name = "JSON")]
    filter: Option<String>,
    /// A filter as text, e.g. "cell.cell_type == 'B cell' and cell.n_genes >= 200"
    /// (docs/QUERY.md).
    #[arg(long = "where", value_name = "TEXT")]
    where_: Option<String>,
    /// The output format: zarr (the default), h5ad, loom, mtx or csv (see `GET /v1/formats`).
    #[arg(long)]
    format: Option<String>,
    /// The obs columns, in order (default: all fields).
    #[arg(long, value_name = "FIELD,...", value_delimiter = ',')]
    fields: Option<Vec<String>>,
    /// A gene subset, by id or name, in order (default: every gene of the bundles).
    #[arg(long, value_name = "GENE,...", value_delimiter = ',')]
    genes: Option<Vec<String>>,
    /// Download the result into this directory.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Stop waiting after this many seconds (the request keeps running on the server).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Print the final status document as JSON on standard output (with --dry-run, the
    /// dry run's answer).
    #[arg(long)]
    json: bool,
    /// Only estimate: the matching bundles and cells, genes, nonzeros, sizes, tasks,
    /// seconds and cost; nothing runs.
    #[arg(long, conflicts_with_all = ["output", "timeout"])]
    dry_run: bool,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let client = a.server.client().await?;
    let body = request_body(&a)?;
    // With --json, standard output holds the JSON only.
    let say = |line: String| {
        if a.json {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    if a.dry_run {
        let mut body: Value =
            serde_json::from_slice(&body).context("the request body is not JSON")?;
        let Some(object) = body.as_object_mut() else {
            bail!("the request body is not a JSON object");
        };
        object.insert("dry_run".into(), Value::Bool(true));
        let answer = client.dry_run(serde_json::to_vec(&body)?).await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            print!("{}", super::dry_run::render(&answer));
        }
        return Ok(());
    }
    let mut status = client.submit(body).await?;
    let id = status.id.clone();
    say(format!("request {id}"));

    let deadline = a.timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let bar = ProgressBar::new_spinner();
    bar.set_style(spinner_style());
    bar.enable_steady_tick(Duration::from_millis(100));
    let mut counting = false;
    let mut failures = 0;
    while status.status == State::Running {
        let p = &status.progress;
        if let Some(total) = p.tasks_total
            && !counting
        {
            bar.set_style(bar_style());
            bar.set_length(total);
            counting = true;
        }
        bar.set_position(p.tasks_done);
        bar.set_message(if p.tasks_total.is_some_and(|t| t == p.tasks_done) {
            let then = match status.raw["format"].as_str() {
                Some("zarr") | None => String::new(),
                Some(f) => format!(" and converting to {f}"),
            };
            format!("{} cells written, consolidating{then}", p.cells_written)
        } else {
            format!("{} cells written", p.cells_written)
        });
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bar.abandon();
            bail!(
                "request {id} is still running after {} s; it goes on on the server: \
                 `cellmatrix status --url {} {id}` to check, `cellmatrix cancel` to stop it",
                a.timeout.unwrap_or_default(),
                client.base()
            );
        }
        tokio::time::sleep(POLL).await;
        match client.status(&id).await {
            Ok(s) => {
                status = s;
                failures = 0;
            }
            Err(e) if is_transient(&e) && failures < MAX_POLL_FAILURES => {
                failures += 1;
                bar.set_message(format!("retrying: {e:#}"));
                tokio::time::sleep(POLL * failures).await;
            }
            Err(e) => {
                bar.abandon();
                return Err(e.context(format!("polling request {id}")));
            }
        }
    }
    bar.finish_and_clear();

    if a.json {
        println!("{}", serde_json::to_string_pretty(&status.raw)?);
    }
    // The report's one line (time by phase, cost); the collector writes it just after
    // the request ends, so it may take a look or two.
    let summary = report_summary(&client, &id).await;
    let result = match (status.status, &status.result) {
        (State::Succeeded, Some(r)) => r,
        (State::Succeeded, None) => bail!("request {id} Succeeded but its status has no result"),
        (state, _) => {
            if let Some(line) = &summary {
                eprintln!("report: {line}");
            }
            bail!(
                "request {id} {state}: {}",
                status.message.as_deref().unwrap_or("(no message)")
            )
        }
    };
    say(format!(
        "Succeeded: {} cells x {} genes, {} nonzeros in {:.2} s",
        result.n_cells, result.n_genes, result.nnz, status.timings.elapsed_seconds
    ));
    if let Some(c) = &result.conversion {
        say(format!(
            "converted in {:.2} s; reducer peak RSS {} MiB (from {} MiB at its start)",
            c.seconds,
            c.peak_rss_bytes >> 20,
            c.start_rss_bytes >> 20
        ));
    }
    say(format!(
        "result: {} ({} file(s), {} bytes)",
        result.location, result.n_files, result.total_bytes
    ));

    if let Some(line) = summary {
        say(format!("report: {line}"));
    }
    if let Some(dir) = &a.output {
        let files = client
            .files(&id)
            .await
            .with_context(|| format!("listing the files of request {id}"))?;
        let total: u64 = files.iter().map(|f| f.size).sum();
        let bar = ProgressBar::new(total);
        bar.set_style(bytes_style());
        let started = Instant::now();
        let written = client
            .download(result, &files, dir, &|n| bar.inc(n))
            .await
            .with_context(|| format!("downloading the result into {}", dir.display()));
        bar.finish_and_clear();
        let written = written?;
        say(format!(
            "downloaded {} file(s), {written} bytes, into {} in {:.2} s",
            files.len(),
            dir.display(),
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

/// The body of `POST /v1/matrix`: the --body file as it is, or built from the options.
fn request_body(a: &Args) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = &a.body {
        return if path.as_os_str() == "-" {
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                .context("reading the request body from standard input")?;
            Ok(body)
        } else {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
    }
    let mut body = Map::new();
    if let Some(fqids) = &a.fqids {
        body.insert("bundle_fqids".into(), strings(fqids));
    }
    if let Some(url) = &a.fqids_url {
        body.insert("bundle_fqids_url".into(), Value::String(url.clone()));
    }
    if let Some(filter) = &a.filter {
        let filter: Value = serde_json::from_str(filter).context("--filter is not valid JSON")?;
        body.insert("filter".into(), filter);
    }
    if let Some(text) = &a.where_ {
        body.insert("where".into(), Value::String(text.clone()));
    }
    if let Some(format) = &a.format {
        body.insert("format".into(), Value::String(format.clone()));
    }
    if let Some(fields) = &a.fields {
        body.insert("fields".into(), strings(fields));
    }
    if let Some(genes) = &a.genes {
        body.insert("genes".into(), strings(genes));
    }
    Ok(serde_json::to_vec(&Value::Object(body))?)
}

fn strings(items: &[String]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|s| Value::String(s.trim().to_string()))
            .collect(),
    )
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} planning... {msg} [{elapsed}]")
        .expect("a valid template")
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{bar:40} {pos}/{len} tasks, {msg} [{elapsed}]")
        .expect("a valid template")
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
        .expect("a valid template")
}

/// The run report's one-line summary of request `id`, which has ended; `None` if it
/// does not come within a few seconds (the request ended without one).
async fn report_summary(client: &super::client::Client, id: &str) -> Option<String> {
    for _ in 0..REPORT_LOOKS {
        match client.report(id).await {
            Ok(report) => return Some(report.summary()),
            Err(e)
                if e.downcast_ref::<super::client::ApiError>()
                    .is_some_and(|e| e.status == 404 || e.status == 409) =>
            {
                tokio::time::sleep(POLL).await
            }
            Err(_) => return None,
        }
    }
    None
}

/// Looks for the run report after the request ended, [`POLL`] apart.
const REPORT_LOOKS: u32 = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        a: Args,
    }

    fn body(args: &[&str]) -> Value {
        let cli =
            Cli::try_parse_from(std::iter::once("query").chain(args.iter().copied())).unwrap();
        serde_json::from_slice(&request_body(&cli.a).unwrap()).unwrap()
    }

    #[test]
    fn bodies_from_options() {
        assert_eq!(
            body(&[
                "--fqids",
                "a,b",
                "--fields",
                "cell.n_genes",
                "--genes",
                "CD3E, CD4"
            ]),
            serde_json::json!({"bundle_fqids": ["a", "b"], "fields": ["cell.n_genes"], "genes": ["CD3E", "CD4"]})
        );
        assert_eq!(
            body(&[
                "--filter",
                r#"{"op":"=","field":"bundle.organ","value":"blood"}"#,
                "--format",
                "zarr"
            ]),
            serde_json::json!({"filter": {"op": "=", "field": "bundle.organ", "value": "blood"}, "format": "zarr"})
        );
        assert_eq!(
            body(&["--where", "cell.phase == 'G1'"]),
            serde_json::json!({"where": "cell.phase == 'G1'"})
        );
        assert_eq!(
            body(&["--fqids-url", "lists/x.tsv"]),
            serde_json::json!({"bundle_fqids_url": "lists/x.tsv"})
        );
    }

    #[test]
    fn exactly_one_source() {
        assert!(Cli::try_parse_from(["query"]).is_err());
        assert!(Cli::try_parse_from(["query", "--fqids", "a", "--filter", "{}"]).is_err());
        assert!(Cli::try_parse_from(["query", "--where", "x", "--filter", "{}"]).is_err());
        assert!(Cli::try_parse_from(["query", "--body", "f.json", "--genes", "x"]).is_err());
        let cli = Cli::try_parse_from(["query", "--filter", "{"]).unwrap();
        assert!(request_body(&cli.a).is_err());
    }
}
