//! Every blob store implementation passes the shared conformance suite.

use std::sync::Arc;
use std::time::Instant;

use cellmatrix::store::conformance;
use cellmatrix::store::fs::FsStore;
use cellmatrix::store::memory::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStore::open(dir.path()).expect("open FsStore");
    conformance::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    conformance::run_all(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms() {
    // A store prefix, so that prefixing and un-prefixing of keys is exercised too.
    let store = cellmatrix_tests::moto_store("conformance", "root/nested")
        .await
        .expect("S3 store on moto");
    let started = Instant::now();
    conformance::run_all(Arc::new(store)).await;
    eprintln!("S3 conformance suite took {:?}", started.elapsed());
}
