//! The driver Lambda function: the HTTP API behind API Gateway.

use cellmatrix::app::App;
use cellmatrix::coldstart::ColdStart;
use cellmatrix::config::Config;
use cellmatrix::handlers::driver;
use lambda_http::{Body, Error, Request, Response, service_fn, tracing};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cold = ColdStart::begin();
    tracing::init_default_subscriber();
    // A missing setting fails the cold start, where Lambda reports it as an init error,
    // rather than every request. Clients are built here, once.
    let config = Config::from_env().inspect_err(|e| tracing::error!("cannot start: {e}"))?;
    tracing::info!(store = %config.store, "driver starting");
    let app = App::lambda(config).await?;
    let app = &app;
    cold.ready("driver");
    lambda_http::run(service_fn(|req: Request| async move {
        let answer = driver::handle(app, req.method().as_str(), req.uri().path(), req.body()).await;
        tracing::info!(method = %req.method(), path = req.uri().path(), status = answer.status, "request");
        let mut response = Response::builder()
            .status(answer.status)
            .header("content-type", "application/json");
        if let Some(location) = &answer.location {
            response = response.header("location", location);
        }
        response
            .body(Body::from(answer.body.to_string()))
            .map_err(Error::from)
    }))
    .await
}
