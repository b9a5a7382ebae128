//! Each function binary's cold start with a missing setting fails, before it polls the
//! Lambda Runtime API, with a message naming the setting (Lambda reports it as an init
//! error).

use cellmatrix_tests::function_bin_dir;

/// Runs the binary at `bin` without `CELLMATRIX_STORE` and checks how it fails.
fn a_missing_store_fails_naming_the_setting(bin: &std::path::Path) {
    let out = std::process::Command::new(bin)
        .env_remove("CELLMATRIX_STORE")
        // No runtime to poll: reaching the poll would fail with another message.
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .output()
        .expect("the binary runs");
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("CELLMATRIX_STORE"), "{said}");
}

#[test]
fn a_missing_store_fails_the_driver_cold_start_naming_the_setting() {
    a_missing_store_fails_naming_the_setting(&function_bin_dir().join("driver"));
}

#[test]
fn a_missing_store_fails_the_mapper_cold_start_naming_the_setting() {
    a_missing_store_fails_naming_the_setting(&function_bin_dir().join("mapper"));
}

#[test]
fn a_missing_store_fails_the_worker_cold_start_naming_the_setting() {
    a_missing_store_fails_naming_the_setting(&function_bin_dir().join("worker"));
}

#[test]
fn a_missing_store_fails_the_reducer_cold_start_naming_the_setting() {
    a_missing_store_fails_naming_the_setting(&function_bin_dir().join("reducer"));
}
