//! The reducer Lambda function, invoked asynchronously with a [`ReducerEvent`]: the
//! collector of a request, or one consolidation shard.

use cellmatrix::app::App;
use cellmatrix::config::Config;
use cellmatrix::handlers::reducer;
use cellmatrix::messages::ReducerEvent;
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn, tracing};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    // A missing setting fails the cold start, where Lambda reports it as an init error,
    // rather than every invocation. Clients are built here, once.
    let config = Config::from_env().inspect_err(|e| tracing::error!("cannot start: {e}"))?;
    let app = App::lambda(config).await?;
    let app = &app;
    lambda_runtime::run(service_fn(|event: LambdaEvent<ReducerEvent>| async move {
        // The collector hands over to a new invocation before this one's time is up.
        let deadline = event.context.deadline;
        reducer::handle_until(app, event.payload, Some(deadline))
            .await
            .map_err(diagnostic)
    }))
    .await
}

fn diagnostic(e: cellmatrix::Error) -> Diagnostic {
    Diagnostic {
        error_type: e.error_type().into(),
        error_message: e.to_string(),
    }
}
