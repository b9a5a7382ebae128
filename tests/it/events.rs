//! Keeps the sample events in `events/` valid: `sam local invoke`, `cargo lambda invoke`
//! and the docs use them, and a sample that no longer matches the message types would
//! only fail there, far from the change that broke it.

use std::path::{Path, PathBuf};

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use cellmatrix::handlers::driver;
use cellmatrix::handlers::reducer::failures;
use cellmatrix::messages::{MapperEvent, ReducerInput, WorkerEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn samples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
}

/// Parses `value` as `T` and checks that serializing it back gives the same JSON, so no
/// field of the sample is silently ignored or defaulted away.
fn round_trip<T: DeserializeOwned + Serialize>(name: &str, value: &Value) {
    let parsed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{name}: not a {}: {e}", std::any::type_name::<T>()));
    assert_eq!(&serde_json::to_value(&parsed).unwrap(), value, "{name}");
}

/// Checks an HTTP API sample; returns its route key.
fn check_api(name: &str, value: &Value) -> String {
    let event: ApiGatewayV2httpRequest = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{name}: not an HTTP API v2 event: {e}"));
    // lambda_http tries the REST (v1) shape first; a sample that also parses as v1 would
    // reach the handler as a v1 request.
    assert!(
        serde_json::from_value::<ApiGatewayProxyRequest>(value.clone()).is_err(),
        "{name}: also parses as a REST API (v1) event"
    );
    assert_eq!(event.version.as_deref(), Some("2.0"), "{name}");
    let method = event.request_context.http.method.as_str();
    let path = event.raw_path.as_deref().expect("rawPath");
    let route_key = event.route_key.as_deref().expect("routeKey");
    assert!(
        driver::ROUTES
            .iter()
            .any(|(m, p)| format!("{m} {p}") == route_key),
        "{name}: routeKey {route_key:?} is not one of the API's routes"
    );
    assert!(
        route_key.starts_with(&format!("{method} ")),
        "{name}: routeKey {route_key:?} does not match method {method}"
    );
    let body = event.body.as_deref().unwrap_or("");
    if !body.is_empty() {
        assert!(
            !event.is_base64_encoded,
            "{name}: keep sample bodies readable"
        );
        serde_json::from_str::<Value>(body)
            .unwrap_or_else(|e| panic!("{name}: body is not JSON: {e}"));
    }
    let pattern = driver::matched_route(method, path);
    assert!(
        pattern.is_some(),
        "{name}: {method} {path} reaches no route"
    );
    if pattern == Some("/v1/matrix")
        && let Err(e) = cellmatrix::request::MatrixRequest::parse(body.as_bytes())
    {
        panic!("{name}: the request body is refused: {}", e.message);
    }
    route_key.to_string()
}

#[test]
fn every_sample_event_parses() {
    let paths = samples();
    assert!(!paths.is_empty(), "no sample events found");
    let mut seen = Vec::new();
    let mut routes = Vec::new();
    let mut failure_records = 0;
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).unwrap();
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        let kind = name.split(['-', '.']).next().unwrap();
        match kind {
            "api" => routes.push(check_api(&name, &value)),
            "mapper" => round_trip::<MapperEvent>(&name, &value),
            "worker" => round_trip::<WorkerEvent>(&name, &value),
            "reducer" => {
                round_trip::<ReducerInput>(&name, &value);
                if let Ok(ReducerInput::Failure(record)) = serde_json::from_value(value.clone()) {
                    assert!(
                        failures::lost(&record).is_some(),
                        "{name}: a failure record of nothing the reducer knows"
                    );
                    failure_records += 1;
                }
            }
            _ => panic!(
                "{name}: unknown kind of sample; name it api-*, mapper*, worker* or reducer*"
            ),
        }
        seen.push(kind.to_string());
    }
    for (method, path) in driver::ROUTES {
        let route = format!("{method} {path}");
        assert!(routes.contains(&route), "no sample event for {route}");
    }
    assert!(
        failure_records > 0,
        "no sample of Lambda's on-failure record"
    );
    for kind in ["api", "mapper", "worker", "reducer"] {
        assert!(
            seen.iter().any(|k| k == kind),
            "no {kind} sample in events/"
        );
    }
}
