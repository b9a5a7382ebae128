//! The workspace's integration tests against real servers and real readers, in one
//! binary: linking the AWS SDK, zarrs and hdf5-pure once instead of once per file. Each
//! module is one former test file; the helpers they share are the `cellmatrix_tests`
//! library (`tests/src/lib.rs`). Cargo runs the tests of one binary side by side, so a
//! test keeps what it touches its own: a fresh temporary directory, a bucket named by
//! `unique_bucket_name`, a port bound to 0, and no changes to the process environment.

mod bounded_status;
mod bundle_obs;
mod cancel_and_corrupt;
mod catalog_concurrency;
mod cell_table;
mod chaos;
mod cold_start;
mod dry_run;
mod events;
mod formats;
mod ingest_formats;
mod ingest_real_data;
mod lambda_contract;
mod open_fields;
mod openapi;
mod owners;
mod pipeline;
mod pipeline_faults;
mod request_caps;
mod restart;
mod run_report;
mod store_conformance;
mod template_routes;
mod worker_memory;
mod zarr_adapter;
