//! Shared by the functions' `tests/cold_start.rs`: a binary's cold start with a missing
//! setting fails, before it polls the Lambda Runtime API, with a message naming the
//! setting (Lambda reports it as an init error). Having an integration test also makes
//! `cargo test --workspace` build each binary, which `tests/tests/lambda_contract.rs`
//! runs as a Lambda function.

/// Runs the binary at `bin` without `CELLMATRIX_STORE` and checks how it fails.
pub fn a_missing_store_fails_naming_the_setting(bin: &str) {
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
