//! The reducer function.

use crate::error::{Error, Result};
use crate::handlers::Config;
use crate::messages::ReducerEvent;

/// Collects the parts of a request, or consolidates one shard of the result.
///
/// Not built yet: answers with a non-retryable [`Error::NotImplemented`].
pub async fn handle(_config: &Config, _event: ReducerEvent) -> Result<serde_json::Value> {
    Err(Error::NotImplemented("the reducer handler"))
}
