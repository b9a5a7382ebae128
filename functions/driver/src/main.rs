//! The driver Lambda function: the HTTP API behind API Gateway.

use cellmatrix::handlers::{Config, driver};
use lambda_http::{Body, Error, Request, Response, service_fn, tracing};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    // A missing setting fails the cold start, where Lambda reports it as an init error,
    // rather than every request.
    let config = Config::from_env().inspect_err(|e| tracing::error!("cannot start: {e}"))?;
    tracing::info!(store = %config.store, "driver starting");
    lambda_http::run(service_fn(|req: Request| async move {
        let (status, body) = driver::route(req.method().as_str(), req.uri().path(), req.body());
        tracing::info!(method = %req.method(), path = req.uri().path(), status, "request");
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .map_err(Error::from)
    }))
    .await
}
