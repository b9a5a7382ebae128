//! The entry points of the four functions, free of any Lambda crate so that the Lambda
//! binaries, `cellmatrix serve` and the tests all call the same code.
//!
//! The pipeline behind them is built in issue #3; until then every handler answers with
//! [`Error::NotImplemented`] (the driver with HTTP 501), so a deployed stack says plainly
//! what it cannot do yet.

pub mod driver;
pub mod mapper;
pub mod reducer;
pub mod worker;

use crate::error::{Error, Result};

/// Settings every function reads from its environment once per cold start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where bundles, the catalog, requests and results live: a local path or
    /// `s3://bucket[/prefix]` (see [`crate::store::open`]). From `CELLMATRIX_STORE`.
    pub store: String,
    /// The name of the mapper function, from `CELLMATRIX_MAPPER_FUNCTION`, default `mapper`.
    /// The function-name defaults are the binary names, which is what `cargo lambda watch`
    /// calls the functions; the SAM template sets the deployed names.
    pub mapper_function: String,
    /// The name of the worker function, from `CELLMATRIX_WORKER_FUNCTION`, default `worker`.
    pub worker_function: String,
    /// The name of the reducer function, from `CELLMATRIX_REDUCER_FUNCTION`, default `reducer`.
    pub reducer_function: String,
}

impl Config {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup`, so tests need not mutate the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let store = get("CELLMATRIX_STORE").ok_or_else(|| {
            Error::input(
                "environment variable CELLMATRIX_STORE",
                "not set; set it to a directory or to s3://bucket[/prefix]",
            )
        })?;
        let function = |name: &str, default: &str| get(name).unwrap_or_else(|| default.into());
        Ok(Config {
            store,
            mapper_function: function("CELLMATRIX_MAPPER_FUNCTION", "mapper"),
            worker_function: function("CELLMATRIX_WORKER_FUNCTION", "worker"),
            reducer_function: function("CELLMATRIX_REDUCER_FUNCTION", "reducer"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_requires_a_store_and_defaults_function_names() {
        let err = Config::from_lookup(|_| None).unwrap_err();
        assert!(err.to_string().contains("CELLMATRIX_STORE"), "{err}");
        assert!(Config::from_lookup(|_| Some(" ".into())).is_err());

        let config = Config::from_lookup(|name| match name {
            "CELLMATRIX_STORE" => Some("s3://bucket".into()),
            "CELLMATRIX_WORKER_FUNCTION" => Some("stack-worker".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            config,
            Config {
                store: "s3://bucket".into(),
                mapper_function: "mapper".into(),
                worker_function: "stack-worker".into(),
                reducer_function: "reducer".into(),
            }
        );
    }
}
