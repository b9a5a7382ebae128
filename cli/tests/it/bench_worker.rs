//! `cellmatrix bench worker` at tiny sizes: it runs, and writes the figures the
//! simulator reads. No timing is asserted.

use std::process::Command;

#[test]
fn bench_worker_writes_figures_for_both_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("worker.json");
    let output = Command::new(env!("CARGO_BIN_EXE_cellmatrix"))
        .args([
            "bench",
            "worker",
            "--tenx-cells",
            "300",
            "--smartseq2-cells",
            "5",
            "--genes",
            "500",
            "--reps",
            "1",
            "--budget-bytes",
            "1000000",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let kinds = report["kinds"].as_array().unwrap();
    let names: Vec<&str> = kinds.iter().map(|k| k["kind"].as_str().unwrap()).collect();
    assert_eq!(names, ["10x", "smartseq2"]);
    for k in kinds {
        for field in [
            "seconds",
            "cells_per_s",
            "bytes_per_s",
            "bound_bytes_per_s",
            "ratio",
        ] {
            let v = k[field].as_f64().unwrap();
            assert!(v.is_finite() && v > 0.0, "{field} = {v} in {k}");
        }
        for field in ["cells", "nnz", "stored_bytes", "peak_rss_bytes"] {
            assert!(k[field].as_u64().unwrap() > 0, "{field} in {k}");
        }
    }
    assert_eq!(kinds[0]["cells"], 300);
    assert_eq!(kinds[1]["cells"], 5);
    let budget = &report["budget"];
    assert!(budget["cells"].as_u64().unwrap() > 0, "{budget}");
    assert!(
        budget["planned_bytes"].as_u64().unwrap() <= 1_000_000,
        "{budget}"
    );
    assert!(budget["peak_rss_bytes"].as_u64().unwrap() > 0, "{budget}");
}
