//! Ingest of the real datasets, checked by anndata against the sources.

use std::sync::Arc;

use cellmatrix::ingest::{IngestOptions, Orientation, ingest};
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_tests::{Check, check_bundles, repo_root, test_data};

fn fqids(report: &cellmatrix::ingest::IngestReport) -> Vec<String> {
    report
        .bundles
        .iter()
        .map(|b| b.manifest().fqid.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn full_pbmc3k_h5ad_is_exactly_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    let source = test_data().join("pbmc.h5ad");
    let report = ingest(&store, &source, &IngestOptions::default())
        .await
        .unwrap();
    assert_eq!(report.cells, 2700);
    let m = report.bundles[0].manifest();
    assert_eq!((m.n_cells, m.n_features, m.nnz), (2700, 32738, 2_286_884));
    let out = check_bundles(
        dir.path(),
        &[Check {
            source,
            format: "h5ad".into(),
            orientation: None,
            fqids: fqids(&report),
            split: false,
        }],
    );
    assert!(out.contains("ok h5ad"), "{out}");

    // The catalog tells the planner each row chunk's nonzeros, and they are the data's.
    let catalog = cellmatrix::catalog::read(&store).await.unwrap();
    let (fqid, entry) = catalog.bundles.iter().next().unwrap();
    let planned = entry.plan_bundle(fqid);
    assert_eq!(planned.chunk_offsets.len(), 2700usize.div_ceil(1024) + 1);
    let reader = cellmatrix::bundle::reader::BundleReader::open(&store, fqid)
        .await
        .unwrap();
    for (c, w) in planned.chunk_offsets.windows(2).enumerate() {
        let rows = reader
            .read_rows(c as u64 * 1024..(c as u64 + 1) * 1024)
            .await
            .unwrap();
        assert_eq!(rows.matrix.nnz() as u64, w[1] - w[0], "chunk {c}");
    }
    let tasks = cellmatrix::plan::plan(
        &[planned],
        cellmatrix::plan::Budget {
            cells: 2048,
            bytes: u64::MAX,
            slice_bytes: 0,
        },
    );
    assert_eq!(
        tasks.iter().map(|t| t.cells).collect::<Vec<_>>(),
        vec![2048, 652]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn full_chung_table_as_563_one_cell_bundles_is_exactly_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    let source = test_data().join("chung_counts.tsv");
    let opts = IngestOptions {
        one_bundle_per_cell: true,
        orientation: Orientation::GenesByCells,
        ..IngestOptions::default()
    };
    let report = ingest(&store, &source, &opts).await.unwrap();
    assert_eq!(report.bundles.len(), 563);
    let catalog = cellmatrix::catalog::read(&store).await.unwrap();
    assert_eq!(catalog.bundles.len(), 563);
    assert!(
        catalog
            .bundles
            .values()
            .all(|e| e.n_cells == 1 && e.n_features == 23438)
    );
    let out = check_bundles(
        dir.path(),
        &[Check {
            source,
            format: "table".into(),
            orientation: Some("genes-by-cells".into()),
            fqids: fqids(&report),
            split: true,
        }],
    );
    assert!(out.contains("563 bundle(s)"), "{out}");

    // Ingesting the same input again recognises every bundle and writes nothing.
    let again = ingest(&store, &test_data().join("chung_counts.tsv"), &opts)
        .await
        .unwrap();
    assert!(
        again
            .bundles
            .iter()
            .all(|b| matches!(b, cellmatrix::bundle::WriteOutcome::AlreadyPresent(_)))
    );
    assert_eq!(fqids(&again), fqids(&report));
    assert_eq!(
        cellmatrix::catalog::read(&store)
            .await
            .unwrap()
            .bundles
            .len(),
        563
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shipped_samples_are_exactly_their_sources() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    let samples = repo_root().join("samples");
    let pbmc = ingest(
        &store,
        &samples.join("pbmc3k_300"),
        &IngestOptions {
            sidecar: Some(samples.join("pbmc3k_300.json")),
            ..IngestOptions::default()
        },
    )
    .await
    .unwrap();
    let chung = ingest(
        &store,
        &samples.join("chung_smartseq2_40.tsv.gz"),
        &IngestOptions {
            sidecar: Some(samples.join("chung_smartseq2_40.json")),
            one_bundle_per_cell: true,
            ..IngestOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        pbmc.bundles[0].manifest().metadata.project.as_deref(),
        Some("pbmc3k")
    );
    assert_eq!(chung.bundles.len(), 40);
    assert!(
        chung
            .bundles
            .iter()
            .all(|b| b.manifest().metadata.assay.as_deref() == Some("smartseq2"))
    );
    check_bundles(
        dir.path(),
        &[
            Check {
                source: samples.join("pbmc3k_300"),
                format: "10x-mtx".into(),
                orientation: None,
                fqids: fqids(&pbmc),
                split: false,
            },
            Check {
                source: samples.join("chung_smartseq2_40.tsv.gz"),
                format: "table".into(),
                orientation: Some("genes-by-cells".into()),
                fqids: fqids(&chung),
                split: true,
            },
        ],
    );
}

/// Each value of `column` with its cell count, as pandas' `value_counts` gives them.
fn value_counts(
    column: &cellmatrix::field::column::Column,
) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for i in 0..column.len() {
        if let Some(v) = column.scalar(i) {
            *out.entry(v.to_text()).or_insert(0) += 1;
        }
    }
    out
}

/// Ingests the h5ad `source` names (a path, or `scanpy-pbmc68k`), and checks every obs
/// column against pandas: in the reader's cell fields, and in the manifest's summaries.
async fn obs_equal_pandas(source: &std::ffi::OsStr) -> cellmatrix::ingest::IngestReport {
    use cellmatrix::field::{Level, stored_name};
    let reference: serde_json::Value =
        serde_json::from_str(&cellmatrix_tests::run_python("obs_reference.py", &[source])).unwrap();
    let path = std::path::PathBuf::from(reference["path"].as_str().unwrap());
    let input = cellmatrix::ingest::read_input(&path, &IngestOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    let report = ingest(&store, &path, &IngestOptions::default())
        .await
        .unwrap();
    let manifest = report.bundles[0].manifest();
    let columns = reference["columns"].as_object().unwrap();
    assert_eq!(input.matrix.obs.len(), columns.len(), "{:?}", input.notes);
    for (name, want) in columns {
        let stored = stored_name(Level::Cell, name).0;
        let column = &input
            .matrix
            .obs
            .iter()
            .find(|(n, _)| *n == stored)
            .unwrap_or_else(|| panic!("no cell.{stored} for obs column {name}"))
            .1;
        let stats = &manifest.cell_fields[&stored];
        assert_eq!(
            column.null_count(),
            want["nulls"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(stats.nulls, want["nulls"].as_u64().unwrap(), "{name}");
        if let Some(values) = want.get("values") {
            let values: std::collections::BTreeMap<String, u64> =
                serde_json::from_value(values.clone()).unwrap();
            assert_eq!(value_counts(column), values, "{name}");
            if values.len() <= cellmatrix::field::stats::MAX_VALUES {
                assert_eq!(stats.values.as_ref(), Some(&values), "{name}");
            }
        } else {
            let (min, max) = (want["min"].as_f64(), want["max"].as_f64());
            assert_eq!((stats.min, stats.max), (min, max), "{name}");
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn scanpy_pbmc68k_reduced_obs_are_pandas_value_counts() {
    let report = obs_equal_pandas("scanpy-pbmc68k".as_ref()).await;
    let m = report.bundles[0].manifest();
    assert_eq!(m.n_cells, 700);
    for categorical in ["bulk_labels", "phase", "louvain"] {
        assert_eq!(
            m.cell_fields[categorical].field_type,
            cellmatrix::field::FieldType::String
        );
    }
    assert_eq!(
        m.cell_fields["input_n_genes"].field_type,
        cellmatrix::field::FieldType::Integer
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("\"n_genes\" is kept as cell.input_n_genes")),
        "{:?}",
        report.notes
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pbmc3k_h5ad_keeps_its_barcode_column_as_input_barcode() {
    let source = test_data().join("pbmc.h5ad");
    let report = obs_equal_pandas(source.as_os_str()).await;
    let m = report.bundles[0].manifest();
    assert_eq!(m.cell_fields["input_barcode"].nulls, 0);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("\"barcode\" is kept as cell.input_barcode")),
        "{:?}",
        report.notes
    );
}
