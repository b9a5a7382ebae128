//! `cellmatrix query --dry-run` against the real `cellmatrix serve`: the counts it prints
//! are those of the run that follows, for a bundle-level and a cell-level filter, and
//! the readable form names each figure.

use serde_json::Value;

use crate::support::cli::{cellmatrix, samples};
use crate::support::serve;

#[tokio::test(flavor = "multi_thread")]
async fn the_dry_run_prints_the_counts_of_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = samples();
    for (input, sidecar, extra) in [
        ("pbmc3k_300", "pbmc3k_300.json", None),
        (
            "chung_smartseq2_40.tsv.gz",
            "chung_smartseq2_40.json",
            Some("--one-bundle-per-cell"),
        ),
    ] {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--store".into(),
            store.clone().into(),
            "ingest".into(),
            s.join(input).into(),
            "--metadata".into(),
            s.join(sidecar).into(),
        ];
        args.extend(extra.map(Into::into));
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        cellmatrix(&args);
    }
    let (_server, base) = serve::serve(&store, &[("CELLMATRIX_LOG", "error")]).await;
    for (filter, counted_from) in [
        (
            r#"{"op": "=", "field": "bundle.assay", "value": "smartseq2"}"#,
            "catalog",
        ),
        (
            r#"{"op": ">=", "field": "cell.n_genes", "value": 900}"#,
            "obs",
        ),
    ] {
        let query = |more: &[&str]| -> String {
            let mut args = vec!["query", "--url", &base, "--filter", filter];
            args.extend_from_slice(more);
            let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
            cellmatrix(&args)
        };
        let dry: Value = serde_json::from_str(&query(&["--dry-run", "--json"])).unwrap();
        assert_eq!(dry["matching"]["counted_from"], counted_from, "{dry}");
        let text = query(&["--dry-run"]);
        for needle in [
            format!("{} cells (exact", dry["matching"]["cells"]),
            "nonzeros:".into(),
            "size*     zarr".into(),
            "tasks".into(),
            "time:".into(),
            "cost:      $".into(),
            "assumes".into(),
        ] {
            assert!(text.contains(&needle), "{needle:?} in:\n{text}");
        }
        let status: Value = serde_json::from_str(&query(&["--json"])).unwrap();
        let r = &status["result"];
        assert_eq!(dry["id"], status["id"], "{dry}\n{status}");
        assert_eq!(dry["matching"]["cells"], r["n_cells"], "{dry}\n{status}");
        assert_eq!(dry["nonzeros"]["count"], r["nnz"], "{dry}\n{status}");
        assert_eq!(dry["genes"]["count"], r["n_genes"], "{dry}\n{status}");
    }
}
