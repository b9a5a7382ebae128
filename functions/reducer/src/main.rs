//! The reducer Lambda function, invoked asynchronously with a [`ReducerInput`]: the
//! collector of a request, a consolidation shard, a conversion, or (as the on-failure
//! destination of the asynchronous functions) Lambda's record of an invocation it gave
//! up on.

use cellmatrix::app::App;
use cellmatrix::coldstart::ColdStart;
use cellmatrix::config::Config;
use cellmatrix::handlers::reducer;
use cellmatrix::messages::ReducerInput;
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
    cold.ready("reducer");
    lambda_runtime::run(service_fn(|event: LambdaEvent<ReducerInput>| async move {
        // The collector hands over to a new invocation before this one's time is up.
        let deadline = event.context.deadline;
        reducer::handle_input(app, event.payload, Some(deadline))
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
