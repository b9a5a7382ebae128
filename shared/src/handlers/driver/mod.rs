//! The driver function: the HTTP API.
//!
//! [`router`] is the API as one axum `Router` on the [`App`]: the Lambda binary serves it
//! through `lambda_http`, `cellmatrix serve` through `axum::serve`, and [`handle`] sends
//! one request through it in this process (the demo, the bench, the tests), so all three
//! answer alike. A route's handler has a file of its own: `submit` (which `resolve`s the
//! bundles, through `list_fetch` for a list behind a URL, and checks the `limits`),
//! `status`, `files`, `cells`, `report`, `cancel` and `metadata`; `owners` says who may
//! see a request, `quota` how many runs a caller may have; `error` is what a route answers
//! when it does not succeed. Every route but the metadata ones needs the request's [`Caller`] (a
//! request extension: [`router_with_callers`] on Lambda, the local user in `serve` and
//! [`handle`]).

mod cancel;
mod cells;
mod check;
mod dry_run;
mod error;
mod files;
mod limits;
mod list_fetch;
mod metadata;
mod owners;
mod quota;
mod report;
mod resolve;
mod status;
mod submit;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::app::App;
use crate::caller::Caller;
use crate::error::clip;
use crate::request::MAX_BODY_BYTES;
use error::ApiError;

pub use cells::{CELLS, COMPLETE, TASKS_COVERED, TASKS_TOTAL};
pub use error::correlation_id;
pub use files::MAX_PAGE;
pub use status::status;

/// The API's routes, as `(method, path pattern)`; the SAM template declares the same set,
/// and [`router`] serves exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/matrix"),
    ("GET", "/v1/matrix/{id}"),
    ("DELETE", "/v1/matrix/{id}"),
    ("GET", "/v1/matrix/{id}/files"),
    ("GET", "/v1/matrix/{id}/cells"),
    ("GET", "/v1/matrix/{id}/report"),
    ("GET", "/v1/formats"),
    ("GET", "/v1/fields"),
    ("GET", "/v1/fields/{name}"),
];

/// An HTTP answer: status, JSON body, and the `Location` and `Retry-After` headers when
/// there are.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The JSON body; errors are `{"message": ...}`.
    pub body: Value,
    /// The status URL of a request.
    pub location: Option<String>,
    /// Seconds to wait before trying again (a 429).
    pub retry_after: Option<u64>,
}

impl HttpResponse {
    fn json(status: u16, body: Value) -> Self {
        HttpResponse {
            status,
            body,
            location: None,
            retry_after: None,
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(status, json!({ "message": message.into() }))
    }

    /// The answer `response` carries (a body that is not JSON reads as null).
    async fn read(response: Response) -> Self {
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|r| r.to_str().ok()?.parse().ok());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        HttpResponse {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            location,
            retry_after,
        }
    }
}

impl IntoResponse for HttpResponse {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.body)).into_response();
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The API on `app`. Every answer is JSON, errors included: a path it does not serve is
/// 404, a method a path does not take is 405 naming the ones it does, and a body over
/// [`MAX_BODY_BYTES`] is 413. Each request is logged with its status.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/matrix", post(submit::answer).fallback(not_allowed))
        .route(
            "/v1/matrix/{id}",
            get(status::answer)
                .delete(cancel::answer)
                .head(not_allowed)
                .fallback(not_allowed),
        )
        .route(
            "/v1/matrix/{id}/files",
            get(files::answer).head(not_allowed).fallback(not_allowed),
        )
        .route(
            "/v1/matrix/{id}/cells",
            get(cells::answer).head(not_allowed).fallback(not_allowed),
        )
        .route(
            "/v1/matrix/{id}/report",
            get(report::answer).head(not_allowed).fallback(not_allowed),
        )
        .route(
            "/v1/formats",
            get(metadata::formats)
                .head(not_allowed)
                .fallback(not_allowed),
        )
        .route(
            "/v1/fields",
            get(metadata::fields)
                .head(not_allowed)
                .fallback(not_allowed),
        )
        .route(
            "/v1/fields/{name}",
            get(metadata::field).head(not_allowed).fallback(not_allowed),
        )
        .fallback(not_found)
        // One byte over the limit is enough for the request parser to refuse the body
        // itself, naming its size; more than that is not read.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES + 1))
        .layer(middleware::from_fn(log_request))
        .with_state(app)
}

/// [`router`] with the caller of each request found by `identify` in the request's
/// extensions (the Lambda function's request context). A request it finds no caller for
/// reaches the routes without one: those of `/v1/matrix` answer 403, the metadata ones
/// answer as ever.
pub fn router_with_callers(
    app: Arc<App>,
    identify: fn(&axum::http::Extensions) -> Option<Caller>,
) -> Router {
    router(app).layer(middleware::from_fn(
        move |mut request: Request, next: Next| async move {
            if let Some(caller) = identify(request.extensions()) {
                request.extensions_mut().insert(caller);
            }
            next.run(request).await
        },
    ))
}

/// The caller a route answers: the [`Caller`] extension of the request. Without one
/// (an unsigned request reaching the Lambda function) the answer is 403.
pub(super) struct Who(pub(super) Caller);

impl<S: Send + Sync> FromRequestParts<S> for Who {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(Who)
            .ok_or_else(|| {
                ApiError::refuse(
                    403,
                    "the request names no caller: the API answers only IAM-signed requests",
                )
                .into_response()
            })
    }
}

/// Answers one HTTP request of the local user, sent through [`router`] in this task.
pub async fn handle(app: &App, method: &str, path: &str, body: &[u8]) -> HttpResponse {
    handle_as(app, &Caller::local(), method, path, body).await
}

/// Answers one HTTP request of `caller`, sent through [`router`] in this task.
pub async fn handle_as(
    app: &App,
    caller: &Caller,
    method: &str,
    path: &str,
    body: &[u8],
) -> HttpResponse {
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .extension(caller.clone())
        .body(Body::from(body.to_vec()));
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            return HttpResponse::error(
                400,
                format!("not a request: {} {}: {e}", clip(method), clip(path)),
            );
        }
    };
    HttpResponse::read(send(app, request).await).await
}

/// Sends `request` through [`router`] in this task and returns the answer as it is,
/// its body unread (a streamed one, such as the cell table's, included). The caller is
/// the request's [`Caller`] extension.
pub async fn send(app: &App, request: axum::http::Request<Body>) -> Response {
    router(app.arc())
        .oneshot(request)
        .await
        .unwrap_or_else(|never: Infallible| match never {})
}

/// The pattern of [`ROUTES`] that `method` and `path` match, if any.
pub fn matched_route(method: &str, path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    ROUTES.iter().find_map(|&(m, pattern)| {
        let parts: Vec<&str> = pattern[1..].split('/').collect();
        let matches = m == method
            && parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(p, s)| {
                // A parameter matches any one non-empty segment; the handler validates it.
                if p.starts_with('{') {
                    !s.is_empty()
                } else {
                    p == s
                }
            });
        matches.then_some(pattern)
    })
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::refuse(
        404,
        format!("no route {} {}", clip(method.as_str()), clip(uri.path())),
    )
}

/// A path of [`ROUTES`] with a method it does not take. `get` alone would answer HEAD
/// too; the API has no HEAD (API Gateway routes none), so HEAD comes here as well.
async fn not_allowed(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    // Each method once, in the order of `ROUTES`.
    let mut allow: Vec<&str> = Vec::new();
    for &(m, _) in ROUTES {
        if matched_route(m, path).is_some() && !allow.contains(&m) {
            allow.push(m);
        }
    }
    let message = format!(
        "{} is not allowed on {}; use {}",
        clip(method.as_str()),
        clip(path),
        allow.join(" or ")
    );
    let mut response = ApiError::refuse(405, message).into_response();
    if let Ok(allow) = HeaderValue::from_str(&allow.join(", ")) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

async fn log_request(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    tracing::info!(%method, path = path.as_str(), status = response.status().as_u16(), "request");
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    async fn app() -> (tempfile::TempDir, Arc<App>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        let store = crate::store::open(path).await.unwrap();
        let app = App::in_process(Config::new(path), store, crate::app::default_limit);
        (dir, app)
    }

    #[test]
    fn routes_match_their_patterns_only() {
        for (method, path, want) in [
            ("POST", "/v1/matrix", Some("/v1/matrix")),
            ("GET", "/v1/matrix/abc", Some("/v1/matrix/{id}")),
            ("DELETE", "/v1/matrix/abc", Some("/v1/matrix/{id}")),
            ("GET", "/v1/matrix/abc/files", Some("/v1/matrix/{id}/files")),
            ("GET", "/v1/matrix/abc/cells", Some("/v1/matrix/{id}/cells")),
            ("DELETE", "/v1/matrix/abc/files", None),
            ("GET", "/v1/formats", Some("/v1/formats")),
            ("GET", "/v1/fields", Some("/v1/fields")),
            ("GET", "/v1/fields/cell.x", Some("/v1/fields/{name}")),
            ("GET", "/v1/matrix", None),
            ("PUT", "/v1/matrix/abc", None),
            ("GET", "/v1/matrix/", None),
            ("GET", "/v1/matrix/a/b", None),
            ("GET", "/v1/matrix/a/files/c", None),
            ("GET", "v1/formats", None),
            ("get", "/v1/formats", None),
        ] {
            assert_eq!(matched_route(method, path), want, "{method} {path}");
        }
    }

    /// The router serves what [`ROUTES`] (and so the sample events, the template and the
    /// API document) say: every route reaches its handler, and nothing else does.
    #[tokio::test]
    async fn the_router_serves_the_routes_and_nothing_else() {
        let (_dir, app) = app().await;
        let id = "0".repeat(32);
        for &(method, pattern) in ROUTES {
            let path = pattern
                .replace("{id}", &id)
                .replace("{name}", "cell.n_genes");
            let answer = handle(&app, method, &path, b"{}").await;
            let unknown_id = json!({ "message": format!("no request {id}") });
            assert!(
                ![404, 405].contains(&answer.status) || answer.body == unknown_id,
                "{method} {path}: {answer:?}"
            );
        }
        for (method, path, status) in [
            ("GET", "/v1/matrix/", 404),
            ("GET", "/v1/matrix/a/b", 404),
            ("GET", "/v1/matrix/a/files/x", 404),
            ("GET", "/v1/formats/", 404),
            ("GET", "//v1/formats", 404),
            ("GET", "/", 404),
            ("GET", "/v1/matrix", 405),
            ("PUT", "/v1/matrix/abc", 405),
            ("get", "/v1/formats", 405),
            ("HEAD", "/v1/formats", 405),
            ("OPTIONS", "/v1/fields", 405),
        ] {
            let answer = handle(&app, method, path, b"").await;
            assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
            assert!(matched_route(method, path).is_none(), "{method} {path}");
        }
    }

    #[tokio::test]
    async fn a_method_a_path_does_not_take_is_405_naming_the_ones_it_does() {
        let (_dir, app) = app().await;
        let request = axum::http::Request::builder()
            .method("PUT")
            .uri("/v1/matrix/abc")
            .body(Body::empty())
            .unwrap();
        let response = router(app.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "GET, DELETE");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let answer = HttpResponse::read(response).await;
        assert_eq!(
            answer.body,
            json!({"message": "PUT is not allowed on /v1/matrix/abc; use GET or DELETE"})
        );
        let answer = handle(&app, "DELETE", "/nowhere", b"").await;
        assert_eq!(answer.status, 404);
        assert_eq!(answer.body, json!({"message": "no route DELETE /nowhere"}));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413_and_not_read() {
        let (_dir, app) = app().await;
        // One byte over: the request parser refuses it, naming its size.
        let over = MAX_BODY_BYTES + 1;
        let answer = handle(&app, "POST", "/v1/matrix", &vec![b' '; over]).await;
        assert_eq!(answer.status, 413);
        assert_eq!(
            answer.body["message"],
            format!("the request body is {over} bytes; the limit is {MAX_BODY_BYTES}")
        );
        // More: the body limit stops reading.
        let answer = handle(&app, "POST", "/v1/matrix", &vec![b' '; over + 1]).await;
        assert_eq!(answer.status, 413);
        assert_eq!(
            answer.body["message"],
            format!(
                "the request body is over {MAX_BODY_BYTES} bytes; the limit is {MAX_BODY_BYTES}"
            )
        );
        assert!(answer.location.is_none());
    }
}
