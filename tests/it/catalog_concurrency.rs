//! Concurrent catalog updates lose no entries, on the filesystem and on moto S3.

use std::sync::Arc;

use cellmatrix::bundle::{Csr, Features, SourceMatrix, Values};
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;

/// A one-cell table whose content (and so bundle id) depends on `i`.
fn table(dir: &std::path::Path, i: usize) -> std::path::PathBuf {
    let p = dir.join(format!("cell{i}.tsv"));
    std::fs::write(&p, format!("gene\tcell{i}\nMT-CO1\t{i}\nACTB\t{}\n", i + 1)).unwrap();
    p
}

async fn concurrent_ingests(store: DynStore) {
    let inputs = tempfile::tempdir().unwrap();
    let paths: Vec<_> = (0..16).map(|i| table(inputs.path(), i)).collect();
    let tasks: Vec<_> = paths
        .into_iter()
        .map(|p| {
            let store = store.clone();
            tokio::spawn(async move {
                cellmatrix::ingest::ingest(
                    &store,
                    &p,
                    &cellmatrix::ingest::IngestOptions::default(),
                )
                .await
                .unwrap()
                .bundles[0]
                    .manifest()
                    .fqid
                    .clone()
            })
        })
        .collect();
    let mut fqids = Vec::new();
    for t in tasks {
        fqids.push(t.await.unwrap());
    }
    let catalog = cellmatrix::catalog::read(&store).await.unwrap();
    for f in &fqids {
        assert!(catalog.bundles.contains_key(f), "catalog lost {f}");
    }
    assert_eq!(catalog.bundles.len(), 16);
    assert!(
        catalog.generation >= 16,
        "one generation per ingest at least"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ingests_lose_no_catalog_entries_on_fs() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_ingests(Arc::new(FsStore::open(dir.path()).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ingests_lose_no_catalog_entries_on_s3() {
    let store = cellmatrix_tests::moto_store("catalog", "").await.unwrap();
    concurrent_ingests(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_bundle_written_to_fs_and_s3_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let fs: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    let s3: DynStore = Arc::new(
        cellmatrix_tests::moto_store("same-bytes", "data")
            .await
            .unwrap(),
    );
    let fqid: cellmatrix::Fqid = "11111111-2222-4333-8444-555555555555.2020-01-01T000000.000000Z"
        .parse()
        .unwrap();
    let src = SourceMatrix {
        obs: Vec::new(),
        cells: (0..5000).map(|i| format!("cell{i}")).collect(),
        features: Features {
            ids: (0..50).map(|i| format!("g{i}")).collect(),
            names: (0..50)
                .map(|i| {
                    if i < 3 {
                        format!("MT-{i}")
                    } else {
                        format!("G{i}")
                    }
                })
                .collect(),
        },
        matrix: Csr::from_dense_rows(
            5000,
            50,
            &Values::U32((0..250_000u32).map(|v| (v * 7919) % 13 / 9).collect()),
        ),
    };
    let layout = cellmatrix::bundle::Layout {
        rows_per_chunk: 512,
        nnz_per_chunk: 4096,
    };
    for store in [&fs, &s3] {
        let source = cellmatrix::bundle::SourceInfo {
            file: "synthetic".into(),
            format: "synthetic".into(),
        };
        let fs_id = cellmatrix::bundle::write_feature_set(store, &src.features)
            .await
            .unwrap();
        cellmatrix::bundle::write_bundle(
            store,
            &fqid,
            &src,
            &fs_id,
            &Default::default(),
            source,
            layout,
        )
        .await
        .unwrap();
    }
    let fs_objects = fs.list("bundles/").await.unwrap();
    let s3_objects = s3.list("bundles/").await.unwrap();
    // The same keys and sizes; when each was written is each store's own.
    let keys_and_sizes = |listed: &[cellmatrix::store::ObjectMeta]| -> Vec<(String, u64)> {
        listed.iter().map(|o| (o.key.clone(), o.size)).collect()
    };
    assert_eq!(keys_and_sizes(&fs_objects), keys_and_sizes(&s3_objects));
    assert!(
        fs_objects.len() > 20,
        "chunked into many objects: {}",
        fs_objects.len()
    );
    for o in &fs_objects {
        assert_eq!(
            fs.get(&o.key).await.unwrap(),
            s3.get(&o.key).await.unwrap(),
            "{}",
            o.key
        );
    }
}
