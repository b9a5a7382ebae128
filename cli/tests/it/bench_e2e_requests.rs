//! `cellmatrix bench e2e` and `bench requests` at tiny sizes. No timing is asserted:
//! the e2e run must agree with the Python baseline cell by cell and gene by gene, and a
//! fault-free request must make exactly the invocations its plans need and read each
//! bundle object about once.

use std::process::Command;

fn run(args: &[&str], dir: &std::path::Path) -> serde_json::Value {
    let out = dir.join("figures.json");
    let output = Command::new(env!("CARGO_BIN_EXE_cellmatrix"))
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

#[test]
fn bench_e2e_agrees_with_the_python_baseline() {
    let Ok(python) = std::env::var("CELLMATRIX_TEST_PYTHON") else {
        eprintln!("skipped: CELLMATRIX_TEST_PYTHON is not set (scripts/test sets it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let stores = dir.path().join("stores");
    let figures = run(
        &[
            "bench",
            "e2e",
            "--cells",
            "2500",
            "--smartseq2-share",
            "0.004",
            "--cells-per-bundle",
            "1000",
            "--python",
            &python,
            "--dir",
            stores.to_str().unwrap(),
        ],
        dir.path(),
    );
    let f = &figures[0];
    // 10 SmartSeq2 bundles and 3 10x bundles of 1,000 cells.
    assert_eq!(f["bundles"], 13, "{f}");
    let (ours, base) = (&f["ours"], &f["baseline"]);
    assert!(ours["n_cells"].as_u64().unwrap() > 0, "{f}");
    assert_eq!(ours["n_cells"], base["n_cells"], "{f}");
    assert_eq!(ours["nnz"], base["nnz"], "{f}");
    assert_eq!(base["same_matrix"], true, "{f}");
    assert_eq!(base["bundles"], 13, "{f}");
    for side in [ours, base] {
        assert!(side["seconds"].as_f64().unwrap() > 0.0, "{f}");
        assert!(side["peak_rss_bytes"].as_u64().unwrap() > 0, "{f}");
    }
}

#[test]
fn bench_requests_meets_the_planners_optimum_without_faults() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        &[
            "bench",
            "requests",
            "--tenx-bundles",
            "2",
            "--cells-per-bundle",
            "1500",
            "--smartseq2-bundles",
            "30",
            "--cells-per-worker",
            "1500",
        ],
        dir.path(),
    );
    for (name, i) in r["invocations"].as_object().unwrap() {
        assert_eq!(i["made"], i["optimum"], "{name}: {r}");
        // The driver plans a request of one group itself: no mapper is invoked.
        let least = u64::from(name != "mapper");
        assert!(i["made"].as_u64().unwrap() >= least, "{name}: {r}");
    }
    assert_eq!(r["invocations"]["mapper"]["made"], 0, "{r}");
    // 3,000 10x cells in tasks of 1,000, and the SmartSeq2 cells.
    assert!(
        r["invocations"]["worker"]["made"].as_u64().unwrap() >= 4,
        "{r}"
    );
    let bundle = &r["categories"]["bundle data"];
    let (gets, distinct) = (
        bundle["gets"].as_u64().unwrap(),
        bundle["distinct_reads"].as_u64().unwrap(),
    );
    assert!(distinct > 32 * 3, "{bundle}");
    // Every bundle object about once: a size lookup before each read, or a second read
    // of the obs arrays, would double this.
    assert!(
        gets * 100 <= distinct * 105,
        "{gets} GETs of {distinct} objects"
    );
    // Nothing is written twice but the markers a collector rewrites.
    let parts = &r["categories"]["parts"];
    assert_eq!(parts["puts"], parts["distinct_writes"], "{parts}");
    let output = &r["categories"]["output"];
    assert_eq!(output["puts"], output["distinct_writes"], "{output}");
    assert!(r["planned_bytes"].as_u64().unwrap() > 0, "{r}");
}
