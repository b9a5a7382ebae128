//! Helpers shared by the integration tests.

use cellmatrix::store::s3::{S3Config, S3Store};

/// The environment variable naming the moto endpoint the S3 tests run against.
pub const S3_ENDPOINT_VAR: &str = "CELLMATRIX_TEST_S3_ENDPOINT";

/// The moto endpoint. Panics when it is not configured: an S3 test that silently passed
/// without a server would hide every S3 regression.
pub fn moto_endpoint() -> String {
    match std::env::var(S3_ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.trim().is_empty() => endpoint.trim().to_string(),
        _ => panic!(
            "{S3_ENDPOINT_VAR} is not set, so there is no S3 server to test against. \
             Run the tests with scripts/test, which starts moto and sets it; or start \
             `moto_server -H 127.0.0.1 -p 5123` and export \
             {S3_ENDPOINT_VAR}=http://127.0.0.1:5123"
        ),
    }
}

/// A bucket name no other test uses (S3 rules: 3-63 chars of a-z 0-9 -).
pub fn unique_bucket_name(tag: &str) -> String {
    let tag: String = tag
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(20)
        .collect();
    format!("cmtest-{tag}-{}", uuid::Uuid::new_v4().simple())
}

/// Settings for `bucket` on moto: fake credentials, a fixed region, and no SDK retries,
/// so a flaky behaviour shows up as a failure instead of being retried away.
pub fn moto_config(bucket: &str, prefix: &str) -> S3Config {
    S3Config::new(bucket, prefix)
        .with_endpoint(moto_endpoint())
        .with_region("us-east-1")
        .with_credentials("test", "test")
        .with_max_attempts(1)
}

/// A store on a fresh, empty moto bucket named after `tag`, keys under `prefix`.
pub async fn moto_store(tag: &str, prefix: &str) -> anyhow::Result<S3Store> {
    let config = moto_config(&unique_bucket_name(tag), prefix);
    let store = S3Store::connect(config).await?;
    store.create_bucket_if_missing().await?;
    Ok(store)
}
