//! The worker Lambda function, invoked asynchronously with a [`WorkerEvent`].

use cellmatrix::app::App;
use cellmatrix::coldstart::ColdStart;
use cellmatrix::config::Config;
use cellmatrix::handlers::worker;
use cellmatrix::messages::WorkerEvent;
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn, tracing};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cold = ColdStart::begin();
    tracing::init_default_subscriber();
    // A missing setting fails the cold start, where Lambda reports it as an init error,
    // rather than every invocation. Clients are built here, once.
    let config = Config::from_env().inspect_err(|e| tracing::error!("cannot start: {e}"))?;
    let app = App::lambda(config).await?;
    let app = &app;
    cold.ready("worker");
    lambda_runtime::run(service_fn(|event: LambdaEvent<WorkerEvent>| async move {
        worker::handle(app, event.payload).await.map_err(diagnostic)
    }))
    .await
}

fn diagnostic(e: cellmatrix::Error) -> Diagnostic {
    Diagnostic {
        error_type: e.error_type().into(),
        error_message: e.to_string(),
    }
}
