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
