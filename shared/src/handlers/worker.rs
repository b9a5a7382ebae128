//! The worker function.

use crate::error::{Error, Result};
use crate::handlers::Config;
use crate::messages::WorkerEvent;

/// Reads its bundle slices, filters and remaps them, and writes one part.
///
/// Not built yet: answers with a non-retryable [`Error::NotImplemented`].
pub async fn handle(_config: &Config, _event: WorkerEvent) -> Result<serde_json::Value> {
    Err(Error::NotImplemented("the worker handler"))
}
