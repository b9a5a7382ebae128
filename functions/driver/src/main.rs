//! The driver Lambda function: the HTTP API behind API Gateway.

use cellmatrix::app::App;
use cellmatrix::caller::Caller;
use cellmatrix::coldstart::ColdStart;
use cellmatrix::config::Config;
use cellmatrix::handlers::driver;
use lambda_http::http::Extensions;
use lambda_http::request::RequestContext;
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
    // The router logs each request's method, path and status. A stack whose API has no
    // authentication (the template's `ApiAuth=NONE`, for a private test stack) has no
    // principal to tell callers apart: every request is its one anonymous user's.
    let unauthenticated = std::env::var("CELLMATRIX_API_AUTH").is_ok_and(|a| a == "NONE");
    let identify = if unauthenticated {
        anonymous_caller
    } else {
        iam_caller
    };
    lambda_http::run(driver::router_with_callers(app, identify)).await
}

/// The one user of an API without authentication.
fn anonymous_caller(_: &Extensions) -> Option<Caller> {
    Some(Caller::local())
}

/// The caller of an HTTP API (v2) request, as its IAM authorizer names it: the
/// principal's ARN (for a role session `arn:aws:sts::{account}:assumed-role/{role}/{session}`,
/// so each session of a shared role is a caller of its own), else its caller id. None
/// without an IAM authorizer (a route with auth off): the matrix routes then answer 403.
fn iam_caller(extensions: &Extensions) -> Option<Caller> {
    let RequestContext::ApiGatewayV2(context) = extensions.get::<RequestContext>()? else {
        return None;
    };
    let iam = context.authorizer.as_ref()?.iam.as_ref()?;
    let identity = iam
        .user_arn
        .as_deref()
        .filter(|a| !a.is_empty())
        .or(iam.caller_id.as_deref())?;
    Caller::new(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::request::LambdaRequest;

    /// The caller of a sample event, as lambda_http hands the request to the router.
    fn caller_of(event: serde_json::Value) -> Option<Caller> {
        let event: LambdaRequest = serde_json::from_value(event).unwrap();
        let request: lambda_http::Request = event.into();
        iam_caller(request.extensions())
    }

    #[test]
    fn the_caller_is_the_iam_principal_of_the_request_context() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/api-get-matrix.json"
        );
        let mut event: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let arn = event["requestContext"]["authorizer"]["iam"]["userArn"]
            .as_str()
            .expect("the sample is signed")
            .to_string();
        assert_eq!(caller_of(event.clone()).unwrap().identity(), arn);
        event["requestContext"]["authorizer"]["iam"]
            .as_object_mut()
            .unwrap()
            .remove("userArn");
        let id = event["requestContext"]["authorizer"]["iam"]["callerId"].clone();
        assert_eq!(caller_of(event.clone()).unwrap().identity(), id);
        event["requestContext"]
            .as_object_mut()
            .unwrap()
            .remove("authorizer");
        assert_eq!(caller_of(event), None);
    }
}
