//! zarrs' own async store tests, run against the adapter over both blob stores.

use std::sync::Arc;

use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix::store::zarr::ZarrStore;
use zarrs_storage::store_test;

async fn zarrs_store_tests(store: DynStore) {
    let zarr = ZarrStore::new(store, "some/array.zarr");
    store_test::async_store_write(&zarr).await.unwrap();
    store_test::async_store_read(&zarr).await.unwrap();
    store_test::async_store_list(&zarr).await.unwrap();
    store_test::async_store_list_size(&zarr).await.unwrap();
}

#[tokio::test]
async fn zarrs_store_tests_pass_over_the_fs_store() {
    let dir = tempfile::tempdir().unwrap();
    zarrs_store_tests(Arc::new(FsStore::open(dir.path()).unwrap())).await;
}

#[tokio::test]
async fn zarrs_store_tests_pass_over_the_s3_store() {
    let store = cellmatrix_tests::moto_store("zarrs-tests", "")
        .await
        .unwrap();
    zarrs_store_tests(Arc::new(store)).await;
}
