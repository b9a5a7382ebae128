//! The driver function: the HTTP API.
//!
//! Routing is a pure function of method, path and body, so the Lambda binary (through
//! `lambda_http`) and `cellmatrix serve` (through its own HTTP server) answer alike.

use serde_json::{Value, json};

use crate::error::clip;

/// The API's routes, as `(method, path pattern)`; the SAM template declares the same set.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/matrix"),
    ("GET", "/v1/matrix/{id}"),
    ("DELETE", "/v1/matrix/{id}"),
    ("GET", "/v1/formats"),
    ("GET", "/v1/fields"),
];

/// Answers one HTTP request with a status code and a JSON body.
///
/// Every route of [`ROUTES`] answers 501 until issue #3 builds the pipeline; anything
/// else is 404. Both bodies are `{"message": "..."}`.
pub fn route(method: &str, path: &str, _body: &[u8]) -> (u16, Value) {
    match matched_route(method, path) {
        Some(pattern) => (
            501,
            json!({
                "message": format!("{method} {pattern} is not implemented yet (issue #3)")
            }),
        ),
        None => (
            404,
            json!({ "message": format!("no route {} {}", clip(method), clip(path)) }),
        ),
    }
}

/// The pattern of [`ROUTES`] that `method` and `path` match, if any.
fn matched_route(method: &str, path: &str) -> Option<&'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_501_with_a_message() {
        for (method, path) in [
            ("POST", "/v1/matrix"),
            ("GET", "/v1/matrix/abc-123"),
            ("DELETE", "/v1/matrix/abc-123"),
            ("GET", "/v1/formats"),
            ("GET", "/v1/fields"),
        ] {
            let (status, body) = route(method, path, b"{}");
            assert_eq!(status, 501, "{method} {path}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains("not implemented"), "{message}");
        }
    }

    #[test]
    fn anything_else_is_404() {
        for (method, path) in [
            ("GET", "/v1/matrix"),
            ("PUT", "/v1/matrix/abc"),
            ("GET", "/v1/matrix/"),
            ("GET", "/v1/matrix/a/b"),
            ("POST", "/v1/matrix/"),
            ("GET", "/"),
            ("GET", ""),
            ("GET", "v1/formats"),
            ("get", "/v1/formats"),
        ] {
            let (status, body) = route(method, path, b"");
            assert_eq!(status, 404, "{method} {path}");
            assert!(body["message"].as_str().unwrap().starts_with("no route"));
        }
    }
}
