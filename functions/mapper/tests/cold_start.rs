//! The mapper binary's cold start (see `functions/cold_start.rs`).

#[path = "../../cold_start.rs"]
mod cold_start;

#[test]
fn a_missing_store_fails_the_cold_start_naming_the_setting() {
    cold_start::a_missing_store_fails_naming_the_setting(env!("CARGO_BIN_EXE_mapper"));
}
