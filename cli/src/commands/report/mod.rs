//! `cellmatrix report`: the run report of a request that has ended, as a table, the
//! timeline as SVG (`svg`), or one HTML page with both (`html`).

mod html;
pub mod svg;

use std::path::PathBuf;

use anyhow::Context;
use cellmatrix::report::{Fate, Report};

use super::client::Server;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    server: Server,
    /// The request id (32 hex digits, as `cellmatrix query` prints it).
    id: String,
    /// Draw the timeline (one row per invocation, and a memory panel) into this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Write one self-contained HTML page with the timeline and the table.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let report = a.server.client().await?.report(&a.id).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
        println!("{}", report.summary());
    }
    if let Some(path) = &a.svg {
        std::fs::write(path, svg::timeline(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("timeline: {}", path.display());
    }
    if let Some(path) = &a.html {
        std::fs::write(
            path,
            html::page(&report, &svg::timeline(&report)?, &table(&report)),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("page: {}", path.display());
    }
    Ok(())
}

/// The report as a text table: one line per invocation, then the phases and the bill.
pub fn table(r: &Report) -> String {
    let mut out = format!(
        "{:<42} {:<8} {:>3} {:<8} {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}\n",
        "invocation",
        "function",
        "att",
        "copy",
        "fate",
        "launch s",
        "start s",
        "end s",
        "cells in",
        "cells out",
        "MB read",
        "RSS MiB",
        "S3 req"
    );
    let s = |ms: Option<u64>| ms.map_or("-".to_string(), |ms| format!("{:.3}", ms as f64 / 1e3));
    let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for i in &r.invocations {
        let requests = i.requests.map_or("-".to_string(), |q| {
            (q.get + q.put + q.list + q.delete).to_string()
        });
        out.push_str(&format!(
            "{:<42} {:<8} {:>3} {:<8} {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}{}\n",
            i.name,
            i.function.name(),
            i.attempt,
            format!("{:?}", i.copy).to_lowercase(),
            match i.fate {
                Fate::Done => "done",
                Fate::Superseded => "superseded",
                Fate::Failed => "failed",
                Fate::Lost => "lost",
            },
            s(i.launch_ms),
            s(i.start_ms),
            s(i.end_ms),
            n(i.cells_in),
            n(i.cells_out),
            i.bytes_read
                .map_or("-".to_string(), |b| format!("{:.1}", b as f64 / 1e6)),
            i.peak_rss_bytes
                .map_or("-".to_string(), |b| (b >> 20).to_string()),
            requests,
            i.error
                .as_ref()
                .map_or(String::new(), |e| format!("  error: {e}")),
        ));
    }
    let t = &r.totals;
    out.push('\n');
    for p in &t.phases {
        out.push_str(&format!(
            "phase {:<14} {:>9.3} s .. {:>9.3} s  ({:.3} s)\n",
            p.name,
            p.start_ms as f64 / 1e3,
            p.end_ms as f64 / 1e3,
            (p.end_ms - p.start_ms) as f64 / 1e3
        ));
    }
    out.push_str(&format!(
        "critical path: {}\n",
        t.critical_path.join(" -> ")
    ));
    out.push_str(&format!(
        "cells {} in, {} out; {} invocations, {:.3} GB-s; S3 GET {}, PUT {}, LIST {}, DELETE {}\n",
        t.cells_in,
        t.cells_out,
        t.invocations,
        t.gb_seconds,
        t.requests.get,
        t.requests.put,
        t.requests.list,
        t.requests.delete
    ));
    out.push_str(&format!(
        "cost: ${:.6} (compute ${:.6}, invocations ${:.6}, S3 ${:.6})\n",
        t.bill.total_usd, t.bill.compute_usd, t.bill.invocations_usd, t.bill.s3_usd
    ));
    for a in &t.assumptions {
        out.push_str(&format!("assumes: {a}\n"));
    }
    out
}
