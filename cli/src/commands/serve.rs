//! `cellmatrix serve`: the embedded stack. The driver's API over HTTP, with the mappers,
//! workers and reducer run in this process on the configured store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Extension;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use cellmatrix::app::{App, default_limit};
use cellmatrix::caller::Caller;
use cellmatrix::config::Config;
use cellmatrix::handlers::driver;
use cellmatrix::invoke::Function;
use serde_json::json;
use tokio::net::TcpListener;

use super::local_guard::{self, Hosts};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The address to listen on (port 0 picks a free port); loopback only unless
    /// --allow-remote, as the API has no authentication.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: String,
    /// Allow a listen address that is not loopback. Anyone who can reach it can read
    /// the store's data and start work.
    #[arg(long)]
    allow_remote: bool,
    /// Most cells in one worker task (default: CELLMATRIX_CELLS_PER_WORKER, else 50000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    cells_per_worker: Option<u64>,
    /// Worker tasks run at once in this process.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096)
    )]
    workers: Option<usize>,
}

pub async fn run(store: &str, a: Args) -> anyhow::Result<()> {
    let addrs = listen_addrs(&a.listen, a.allow_remote).await?;
    // The store is the --store option (itself defaulting to CELLMATRIX_STORE); flags win.
    let mut config = Config::embedded(store)?;
    if let Some(n) = a.cells_per_worker {
        config.cells_per_worker = n;
    }
    let workers = a.workers;
    let opened = cellmatrix::store::open(&config.store).await?;
    let app = App::in_process(config, opened, move |f| match (f, workers) {
        (Function::Worker, Some(n)) => n,
        _ => default_limit(f),
    });
    let listener = TcpListener::bind(&addrs[..])
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    eprintln!("serving store {}", app.store.describe());
    // Whatever the last process on this store left running died with it: its
    // invocations are relaunched now, not when they would have gone silent.
    let resumed = cellmatrix::handlers::resume_all(&app)
        .await
        .context("cannot resume the requests left running")?;
    if !resumed.is_empty() {
        eprintln!("resumed {} request(s) left running", resumed.len());
    }
    println!("listening on http://{addr}");
    serve(app, listener, shutdown_signal()).await?;
    eprintln!("stopped");
    Ok(())
}

/// Serves the API of `app` on `listener` until `shutdown` completes, then waits for the
/// HTTP requests in flight (not for the work they started). Every request is the local
/// user's ([`Caller::local`]), once [`local_guard`] has let it through.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let hosts = Hosts::new(listener.local_addr()?);
    let router = driver::router(app)
        .layer(Extension(Caller::local()))
        .layer(middleware::from_fn(own_task))
        .layer(middleware::from_fn(move |request, next| {
            local_guard::guard(hosts.clone(), request, next)
        }));
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Answers each request in a task of its own, as a Lambda invocation runs to its end: a
/// client that hangs up must not stop a submit between writing `request.json` and
/// starting the request, and a panic must still get an answer (axum would drop the
/// connection unanswered).
async fn own_task(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        Err(e) => {
            // The panic's text goes to the log only, found by the id the answer gives.
            let id = driver::correlation_id();
            tracing::error!(%method, %path, correlation_id = %id, error = %e, "the driver failed");
            let body = json!({ "message": format!("internal error (correlation id {id})") });
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
        }
    }
}

/// Resolves `listen`; refuses an address that is not loopback unless `allow_remote`.
async fn listen_addrs(listen: &str, allow_remote: bool) -> anyhow::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("--listen {listen:?} is not an address (HOST:PORT)"))?
        .collect();
    if addrs.is_empty() {
        bail!("--listen {listen:?} resolves to no address");
    }
    if !allow_remote && let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "refusing to listen on {a}: it is not a loopback address and the API has no \
             authentication; use 127.0.0.1, or pass --allow-remote if you mean it"
        );
    }
    Ok(addrs)
}

/// Completes on Ctrl-C (and on SIGTERM on Unix).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;
    use serde_json::Value;

    #[tokio::test]
    async fn only_loopback_without_allow_remote() {
        assert!(listen_addrs("127.0.0.1:0", false).await.is_ok());
        assert!(listen_addrs("[::1]:0", false).await.is_ok());
        let err = listen_addrs("0.0.0.0:8080", false).await.unwrap_err();
        assert!(err.to_string().contains("--allow-remote"), "{err}");
        assert!(listen_addrs("0.0.0.0:8080", true).await.is_ok());
        assert!(listen_addrs("no port", false).await.is_err());
    }

    #[tokio::test]
    async fn serves_the_driver_in_process() {
        let dir = tempfile::tempdir().unwrap();
        let store = cellmatrix::store::open(dir.path().to_str().unwrap())
            .await
            .unwrap();
        let app = App::in_process(
            Config::new(dir.path().to_str().unwrap()),
            store,
            default_limit,
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(app, listener, async {
            let _ = stopped.await;
        }));
        let r = reqwest::get(format!("http://{addr}/v1/formats"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["formats"][0]["name"], "zarr");

        // What a web page could send: another Host (DNS rebinding), a POST that is not
        // JSON (a form), a preflight. None gets through, and nothing says CORS.
        let http = reqwest::Client::new();
        let foreign = http
            .get(format!("http://{addr}/v1/formats"))
            .header(header::HOST, format!("evil.example:{}", addr.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(foreign.status(), 421);
        let form = http
            .post(format!("http://{addr}/v1/matrix"))
            .header(header::CONTENT_TYPE, "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(form.status(), 415);
        let message: Value = form.json().await.unwrap();
        assert!(
            message["message"]
                .as_str()
                .unwrap()
                .contains("application/json")
        );
        let json = http
            .post(format!("http://{addr}/v1/matrix"))
            .header(header::CONTENT_TYPE, "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(json.status(), 400, "JSON goes through to the API");
        let preflight = http
            .request(reqwest::Method::OPTIONS, format!("http://{addr}/v1/matrix"))
            .header(header::ORIGIN, "https://evil.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status(), 405);
        for r in [&preflight, &json] {
            assert!(
                !r.headers()
                    .keys()
                    .any(|h| h.as_str().starts_with("access-control-")),
                "{:?}",
                r.headers()
            );
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
