//! The `cellmatrix` command's integration tests, in one binary. They run the real
//! command (`CARGO_BIN_EXE_cellmatrix`, which only this package's integration tests
//! get), so they live here rather than in the tests crate. Each module is one former
//! test file; `support` holds what several share.

mod api;
mod api_fuzz;
mod bad_input;
mod bench_e2e_requests;
mod bench_worker;
mod ingest_fuzz;
mod output_hashes;
mod query_download;
mod query_dry_run;
mod report;
mod simulate;

mod support {
    pub mod cli;
    pub mod files;
    pub mod serve;
}
