//! The mapper function.

use crate::error::{Error, Result};
use crate::handlers::Config;
use crate::messages::MapperEvent;

/// Plans the worker tasks for one group of bundles and invokes the workers.
///
/// Not built yet: answers with a non-retryable [`Error::NotImplemented`].
pub async fn handle(_config: &Config, _event: MapperEvent) -> Result<serde_json::Value> {
    Err(Error::NotImplemented("the mapper handler"))
}
