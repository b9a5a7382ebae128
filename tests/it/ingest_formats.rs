//! Every input format, written by the tools users have (h5py, anndata, scipy, pandas),
//! ingested and checked by anndata against the source.

use std::sync::Arc;

use cellmatrix::ingest::{IngestOptions, Orientation, ingest};
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_tests::{Check, check_bundles, run_python, test_data};

#[derive(Debug, serde::Deserialize)]
struct Fixture {
    path: std::path::PathBuf,
    format: String,
    orientation: Option<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn every_format_is_exactly_its_source() {
    let fixtures_dir = tempfile::tempdir().unwrap();
    let out = run_python(
        "make_fixtures.py",
        &[
            test_data().join("pbmc.h5ad").as_os_str(),
            fixtures_dir.path().as_os_str(),
            std::ffi::OsStr::new("257"),
        ],
    );
    let fixtures: Vec<Fixture> = serde_json::from_str(&out).unwrap();
    assert_eq!(fixtures.len(), 8, "{out}");

    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    let mut checks = Vec::new();
    for f in &fixtures {
        let orientation = match f.orientation.as_deref() {
            Some(o) => o.parse::<Orientation>().unwrap(),
            None => Orientation::Auto,
        };
        let opts = IngestOptions {
            orientation,
            ..IngestOptions::default()
        };
        let report = ingest(&store, &f.path, &opts)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", f.path.display()));
        assert_eq!(report.cells, 257, "{}", f.path.display());
        checks.push(Check {
            source: f.path.clone(),
            format: f.format.clone(),
            orientation: f.orientation.clone(),
            fqids: report
                .bundles
                .iter()
                .map(|b| b.manifest().fqid.to_string())
                .collect(),
            split: false,
        });
    }
    let out = check_bundles(dir.path(), &checks);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        8,
        "{out}"
    );

    // The same cells through every integer-count format are the same content, so
    // ingest recognises them as one bundle; the h5ad files also carry an obs column
    // (`batch`), a cell field the 10x files lack, so theirs is one other bundle.
    let ids = |h5ad: bool| -> std::collections::BTreeSet<&String> {
        checks
            .iter()
            .filter(|c| c.format != "table" && (c.format == "h5ad") == h5ad)
            .flat_map(|c| &c.fqids)
            .collect()
    };
    assert_eq!(ids(false).len(), 1, "{:?}", ids(false));
    assert_eq!(ids(true).len(), 1, "{:?}", ids(true));
    let fqid: cellmatrix::Fqid = ids(true).into_iter().next().unwrap().parse().unwrap();
    let manifest = cellmatrix::bundle::writer::read_manifest(&store, &fqid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        manifest.cell_fields["batch"]
            .values
            .as_ref()
            .map(|v| v.values().sum::<u64>()),
        Some(257)
    );
}
