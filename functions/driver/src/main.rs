//! The driver Lambda function: the HTTP API behind API Gateway.

use cellmatrix::app::App;
use cellmatrix::coldstart::ColdStart;
use cellmatrix::config::Config;
use cellmatrix::handlers::driver;
use lambda_http::{Error, tracing};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cold = ColdStart::begin();
    tracing::init_default_subscriber();
    // A missing setting fails the cold start, where Lambda reports it as an init error,
    // rather than every request. Clients are built here, once.
    let config = Config::from_env().inspect_err(|e| tracing::error!("cannot start: {e}"))?;
    tracing::info!(store = %config.store, "driver starting");
    let app = App::lambda(config).await?;
    cold.ready("driver");
    // The router logs each request's method, path and status.
    lambda_http::run(driver::router(app)).await
}
