//! `cellmatrix simulate` end to end, with few seeds so it stays quick in debug.

use std::process::Command;

#[test]
fn simulate_prints_its_table_and_says_which_calibration_it_used() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("worker.json");
    let out = Command::new(env!("CARGO_BIN_EXE_cellmatrix"))
        .args([
            "simulate",
            "--case",
            "smartseq2",
            "--seeds",
            "3",
            "--hedge",
            "both",
        ])
        .arg("--calibration")
        .arg(&missing)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("built-in defaults"), "{text}");
    assert!(text.contains("p50 s"), "{text}");
    let table = text.split("phases").next().unwrap();
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("smartseq2 "))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");

    // A bench file is used when present, extra fields and all.
    std::fs::write(
        &missing,
        r#"{"kinds": [{"kind": "smartseq2", "cells": 100, "nnz": 600000,
            "stored_bytes": 3000000, "seconds": 1.0, "cells_per_s": 100.0,
            "bytes_per_s": 3000000.0, "peak_rss_bytes": 1}]}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cellmatrix"))
        .args([
            "simulate",
            "--case",
            "smartseq2",
            "--seeds",
            "2",
            "--hedge",
            "on",
            "--no-faults",
        ])
        .arg("--calibration")
        .arg(&missing)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("worker.json (smartseq2)"), "{text}");
    assert!(text.contains("off    on"), "{text}");
}
