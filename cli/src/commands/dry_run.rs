//! The dry run's answer (`cellmatrix query --dry-run`) as lines a person reads.

use serde_json::Value;

/// `bytes` as B, kB, MB, GB or TB (powers of 1000).
fn bytes(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut x = n as f64;
    let mut unit = 0;
    while x >= 1000.0 && unit + 1 < units.len() {
        x /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", units[unit])
    }
}

/// The answer, one figure a line, each followed by what it assumes.
pub fn render(a: &Value) -> String {
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let m = &a["matching"];
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "dry run of request {} ({})",
        s(&a["id"]),
        s(&a["format"])
    ));
    line(format!(
        "matching:  {} bundles, {} cells ({}, counted from the {})",
        u(&m["bundles"]),
        u(&m["cells"]),
        if m["exact"] == true {
            "exact"
        } else {
            "estimate"
        },
        s(&m["counted_from"])
    ));
    line(format!("           assumes {}", s(&m["assumes"])));
    line(format!("genes:     {}", u(&a["genes"]["count"])));
    let nz = &a["nonzeros"];
    line(format!(
        "nonzeros:  {} ({})",
        u(&nz["count"]),
        if nz["exact"] == true {
            "exact"
        } else {
            "estimate"
        }
    ));
    line(format!("           assumes {}", s(&nz["assumes"])));
    for size in a["sizes"].as_array().into_iter().flatten() {
        let marker = if size["format"] == a["format"] {
            "*"
        } else {
            " "
        };
        line(format!(
            "size{marker}     {:<5} {}",
            s(&size["format"]),
            bytes(u(&size["bytes"]))
        ));
    }
    let p = &a["plan"];
    line(format!(
        "plan:      {} tasks ({} slices) in {} group(s), {} consolidation shard(s); largest task {} of the worker's {}{}",
        u(&p["tasks"]),
        u(&p["slices"]),
        u(&p["groups"]),
        u(&p["shards"]),
        bytes(u(&p["largest_task"]["memory_bytes"])),
        bytes(u(&p["worker_memory_bytes"])),
        if p["fits"] == true { "" } else { " (OVER)" }
    ));
    let t = &a["seconds"];
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    line(format!(
        "time:      {:.1} s (workers {:.1}, consolidation {:.1}, conversion {:.1}, fixed {:.1})",
        f(&t["total"]),
        f(&t["workers"]),
        f(&t["consolidation"]),
        f(&t["conversion"]),
        f(&t["fixed"])
    ));
    line(format!("           assumes {}", s(&t["assumes"])));
    let c = &a["cost"];
    line(format!(
        "cost:      ${:.6} ({:.1} GB-s, {} invocations, {} S3 requests)",
        f(&c["usd"]),
        f(&c["gb_seconds"]),
        u(&c["invocations"]),
        u(&c["s3_requests"]["get"]) + u(&c["s3_requests"]["put"]) + u(&c["s3_requests"]["list"])
    ));
    line(format!("           assumes {}", s(&c["assumes"])));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_powers_of_a_thousand() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500), "1.5 kB");
        assert_eq!(bytes(2_000_000_000), "2.0 GB");
    }

    #[test]
    fn every_figure_gets_its_line() {
        let a = serde_json::json!({"id": "x", "format": "zarr",
            "matching": {"bundles": 2, "cells": 30, "exact": true, "counted_from": "obs", "assumes": "a"},
            "sizes": [{"format": "zarr", "bytes": 10}]});
        let text = render(&a);
        assert!(
            text.contains("2 bundles, 30 cells (exact, counted from the obs)"),
            "{text}"
        );
        assert!(text.contains("size*     zarr  10 B"), "{text}");
    }
}
