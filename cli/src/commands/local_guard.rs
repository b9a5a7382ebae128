//! What `cellmatrix serve` refuses so that a web page in the user's browser cannot use
//! it: the API has no authentication, and a page may send requests to 127.0.0.1.
//!
//! - A `Host` that does not name the address it listens on is 421: a page that rebinds
//!   its own DNS name to 127.0.0.1 sends its own name, so it can read no answer.
//! - A POST to `/v1/matrix` without `Content-Type: application/json` is 415: a page can
//!   send a form or `text/plain` POST without asking first (no CORS preflight), never a
//!   JSON one; and `serve` sends no CORS headers, so no preflight passes.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The `Host` values a server listening on `addr` answers to.
#[derive(Debug, Clone)]
pub struct Hosts {
    addr: SocketAddr,
}

impl Hosts {
    /// The hosts of a server listening on `addr`: its address with its port, and
    /// `localhost` with its port when it is loopback. A server on an unspecified address
    /// (`0.0.0.0`, `[::]`, with `--allow-remote`) takes any name with its port: its
    /// names are not known here, and it is open to its network anyway.
    pub fn new(addr: SocketAddr) -> Self {
        Hosts { addr }
    }

    /// Whether a request's `Host` value names this server.
    pub fn accepts(&self, host: &str) -> bool {
        let port = self.addr.port();
        let (name, given_port) = match host.rsplit_once(':') {
            // `[::1]:8080`, `127.0.0.1:8080`, `localhost:8080`; an IPv6 address without
            // a port (`[::1]`) has its colons inside the brackets.
            Some((name, p)) if !p.contains(']') => (name, p.parse::<u16>().ok()),
            _ => (host, Some(80)),
        };
        if given_port != Some(port) {
            return false;
        }
        let ip = self.addr.ip();
        if ip.is_unspecified() {
            return !name.is_empty();
        }
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<std::net::IpAddr>().is_ok_and(|a| a == ip)
            || (ip.is_loopback() && name.eq_ignore_ascii_case("localhost"))
    }
}

/// The middleware: 421 for a foreign `Host`, 415 for a POST to `/v1/matrix` that is not
/// JSON; everything else goes on.
pub async fn guard(hosts: Hosts, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !hosts.accepts(host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server answers to the host {}, not {:?}",
                hosts.addr,
                host.chars().take(100).collect::<String>()
            ),
        );
    }
    if request.method() == Method::POST && request.uri().path() == "/v1/matrix" {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "POST /v1/matrix takes a body of Content-Type application/json".into(),
            );
        }
    }
    next.run(request).await
}

/// Whether a `Content-Type` is `application/json`, with parameters or not.
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_the_listening_address() {
        let local = Hosts::new("127.0.0.1:8080".parse().unwrap());
        for ok in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080"] {
            assert!(local.accepts(ok), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:8081",
            "evil.example:8080",
            "127.0.0.2:8080",
            "[::1]:8080",
            "localhost",
        ] {
            assert!(!local.accepts(bad), "{bad}");
        }
        let six = Hosts::new("[::1]:9000".parse().unwrap());
        assert!(six.accepts("[::1]:9000") && six.accepts("localhost:9000"));
        assert!(!six.accepts("[::1]") && !six.accepts("127.0.0.1:9000"));
        let on_80 = Hosts::new("127.0.0.1:80".parse().unwrap());
        assert!(on_80.accepts("127.0.0.1") && !on_80.accepts("[::1]:80"));
        let any = Hosts::new("0.0.0.0:8080".parse().unwrap());
        assert!(any.accepts("box.lan:8080") && !any.accepts("box.lan:80"));
    }

    #[test]
    fn only_json_is_json() {
        for ok in ["application/json", "Application/JSON; charset=utf-8"] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
