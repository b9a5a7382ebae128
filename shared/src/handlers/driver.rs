//! The driver function: the HTTP API.
//!
//! [`handle`] is a function of the app and of method, path and body, so the Lambda
//! binary (through `lambda_http`) and `cellmatrix serve` (through its own HTTP server)
//! answer alike.

use std::net::IpAddr;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::app::App;
use crate::bundle::manifest::feature_set_key;
use crate::bundle::{Features, ValueType, read_manifest};
use crate::catalog::{self, CatalogEntry};
use crate::error::{Error, clip};
use crate::filter::{Field, FieldType, bundle_value};
use crate::fqid::Fqid;
use crate::genes::{GeneSpace, Remap};
use crate::invoke::Function;
use crate::messages::{MapperEvent, RequestId};
use crate::request::{self, BundleSource, MatrixRequest, Rejection};
use crate::state::{
    self, Failure, Keys, Progress, ResultRecord, RunInfo, StoredRequest, get_json, now_ms,
    put_json, put_json_if_absent,
};
use crate::store::{PutOutcome, validate_key};

/// The API's routes, as `(method, path pattern)`; the SAM template declares the same set.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/matrix"),
    ("GET", "/v1/matrix/{id}"),
    ("DELETE", "/v1/matrix/{id}"),
    ("GET", "/v1/formats"),
    ("GET", "/v1/fields"),
];

/// Where bundle lists named by key live in the store.
pub const LISTS_PREFIX: &str = "lists/";

/// An HTTP answer: status, JSON body, and the `Location` header when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The JSON body; errors are `{"message": ...}`.
    pub body: Value,
    /// The status URL of a request.
    pub location: Option<String>,
}

impl HttpResponse {
    fn json(status: u16, body: Value) -> Self {
        HttpResponse {
            status,
            body,
            location: None,
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(status, json!({ "message": message.into() }))
    }
}

impl From<Rejection> for HttpResponse {
    fn from(r: Rejection) -> Self {
        HttpResponse::error(r.status, r.message)
    }
}

/// Answers one HTTP request. Failures of the store are 503 (retry later), never a
/// request left half-started: the request exists only once `request.json` is written,
/// after everything the functions need.
pub async fn handle(app: &App, method: &str, path: &str, body: &[u8]) -> HttpResponse {
    let Some(pattern) = matched_route(method, path) else {
        let allowed: Vec<&str> = ROUTES
            .iter()
            .map(|&(m, _)| m)
            .filter(|&m| matched_route(m, path).is_some())
            .collect();
        if !allowed.is_empty() {
            return HttpResponse::error(
                405,
                format!(
                    "{} is not allowed on {}; use {}",
                    clip(method),
                    clip(path),
                    allowed.join(" or ")
                ),
            );
        }
        return HttpResponse::error(404, format!("no route {} {}", clip(method), clip(path)));
    };
    let id = || path.rsplit('/').next().unwrap_or("");
    let outcome = match pattern {
        "/v1/matrix" => submit(app, body).await,
        "/v1/matrix/{id}" if method == "GET" => status_of(app, id()).await,
        "/v1/matrix/{id}" => cancel(app, id()).await,
        "/v1/formats" => Ok(formats()),
        _ => Ok(fields()),
    };
    outcome.unwrap_or_else(|e| {
        tracing::error!(error = %e, "request failed");
        if e.is_retryable() {
            HttpResponse::error(503, format!("the store is busy, try again: {e}"))
        } else {
            HttpResponse::error(500, format!("internal error: {e}"))
        }
    })
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

fn formats() -> HttpResponse {
    HttpResponse::json(200, crate::convert::format::formats_document())
}

/// Refuses a dense format whose result could pass its limit, before anything is written:
/// the bound is every cell of the selected bundles (a cell filter only removes cells).
fn dense_refusal(
    app: &App,
    format: crate::convert::Format,
    entries: &[CatalogEntry],
    n_genes: u64,
) -> Option<Rejection> {
    let limit = app.config.dense_limits().of(format)?;
    let cells: u64 = entries.iter().map(|e| e.n_cells).sum();
    let width = output_type(entries).size() as u64;
    let bytes = cells.saturating_mul(n_genes).saturating_mul(width);
    (bytes > limit).then(|| Rejection {
        status: 422,
        message: format!(
            "format {:?} stores every value, zeros included: up to {cells} cells x {n_genes} \
             genes is {bytes} bytes of values, over this service's limit of {limit} bytes. \
             Ask for format \"h5ad\" or \"mtx\", which store only the nonzero values, or \
             select fewer bundles or genes",
            format.name()
        ),
    })
}

fn fields() -> HttpResponse {
    let fields: Vec<Value> = Field::ALL
        .iter()
        .map(|f| {
            json!({
                "name": f.name(),
                "type": match f.field_type() {
                    FieldType::String => "string",
                    FieldType::Integer => "integer",
                    FieldType::Number => "number",
                },
                "level": if matches!(f, Field::Bundle(_)) { "bundle" } else { "cell" },
                "column": f.column(),
                "description": f.description(),
            })
        })
        .collect();
    HttpResponse::json(200, json!({ "fields": fields }))
}

type Outcome = Result<HttpResponse, Error>;

/// What resolving a request found out about its bundles.
struct Resolved {
    bundles: Vec<Fqid>,
    entries: Vec<CatalogEntry>,
}

async fn submit(app: &App, body: &[u8]) -> Outcome {
    let req = match MatrixRequest::parse(body) {
        Ok(r) => r,
        Err(r) => return Ok(r.into()),
    };
    let resolved = match resolve(app, &req).await? {
        Ok(r) => r,
        Err(r) => return Ok(r.into()),
    };
    let (genes, identity_sets) = match gene_space(app, &req, &resolved.entries).await? {
        Ok(g) => g,
        Err(r) => return Ok(r.into()),
    };
    if let Some(r) = dense_refusal(app, req.format, &resolved.entries, genes.len() as u64) {
        return Ok(r.into());
    }
    let id = req.id(&resolved.bundles);
    let keys = Keys::new(&id);
    let store = &app.store;

    if let Some(existing) = get_json::<StoredRequest>(store, &keys.request()).await? {
        if state::exists(store, &keys.result()).await? {
            return status_response(app, &existing, 200).await;
        }
        let failed = state::exists(store, &keys.failed()).await?;
        let cancelled = state::exists(store, &keys.cancel()).await?;
        if !failed && !cancelled {
            return status_response(app, &existing, 202).await;
        }
        // Ran before and ended badly: run again. Parts and markers of tasks that were
        // done are the same bytes a new run would write, so they stay. The new deadline
        // goes first, so the request never looks overdue in between.
        put_json(store, &keys.run(), &new_run(app)).await?;
        for key in [keys.failed(), keys.cancel(), keys.checkpoint()] {
            store.delete(&key).await?;
        }
        for o in store.list(&keys.errors()).await? {
            store.delete(&o.key).await?;
        }
        start_or_fail(app, &existing).await?;
        return status_response(app, &existing, 202).await;
    }

    let copies = worker_copies(app, &resolved);
    let stored = StoredRequest {
        id: id.clone(),
        canonical: req.canonical(&resolved.bundles),
        groups: resolved
            .bundles
            .len()
            .div_ceil(app.config.bundles_per_mapper) as u32,
        bundles_per_mapper: app.config.bundles_per_mapper,
        bundles: resolved.bundles,
        value_type: output_type(&resolved.entries),
        n_genes: genes.len() as u64,
        submitted_at: state::rfc3339(now_ms()),
        identity_sets,
        copies,
    };
    // Everything the functions read comes first (at once: they are independent);
    // request.json commits the request.
    let (run, genes_key, run_key) = (new_run(app), keys.genes(), keys.run());
    futures::try_join!(
        put_json(store, &genes_key, &genes),
        put_json(store, &run_key, &run)
    )?;
    if put_json_if_absent(store, &keys.request(), &stored).await? == PutOutcome::Created {
        start_or_fail(app, &stored).await?;
    }
    status_response(app, &stored, 202).await
}

/// 2 for a request that plans into at most `hedge_small` tasks, with `hedge` on, else 1
/// (`StoredRequest::copies`). The planner is pure and cheap (microseconds a bundle), so
/// the driver plans the groups once more to count their tasks, and stops past the bound.
fn worker_copies(app: &App, resolved: &Resolved) -> u32 {
    let c = &app.config;
    if !c.hedge || c.hedge_small == 0 {
        return 1;
    }
    let budget = c.budget();
    let per = c.bundles_per_mapper.max(1);
    let mut tasks = 0;
    for (fqids, entries) in resolved
        .bundles
        .chunks(per)
        .zip(resolved.entries.chunks(per))
    {
        let bundles: Vec<_> = fqids
            .iter()
            .zip(entries)
            .map(|(f, e)| e.plan_bundle(f))
            .collect();
        tasks += crate::plan::plan(&bundles, budget).len();
        if tasks > c.hedge_small {
            return 1;
        }
    }
    2
}

fn new_run(app: &App) -> RunInfo {
    let now = now_ms();
    RunInfo {
        started_ms: now,
        deadline_ms: now + app.config.request_timeout.as_millis() as u64,
    }
}

/// Starts the request; if it cannot be started, records it Failed, so that the same
/// request submitted again runs again instead of waiting for its deadline.
async fn start_or_fail(app: &App, stored: &StoredRequest) -> Result<(), Error> {
    let outcome = start(app, stored).await;
    if let Err(e) = &outcome {
        let keys = Keys::new(&stored.id);
        let failure = Failure::now(format!("the request could not be started: {e}"));
        if let Err(write) = put_json_if_absent(&app.store, &keys.failed(), &failure).await {
            tracing::error!(request = %stored.id, error = %write, "cannot record the failure");
        }
    }
    outcome
}

/// Invokes the collector, plans the first `driver_groups` groups here (as their mappers
/// would, with the same code) and invokes a mapper for each other group,
/// `invoke_concurrency` at a time (the caller has written `run.json`, whose deadline
/// counts from just before).
async fn start(app: &App, stored: &StoredRequest) -> Result<(), Error> {
    let events: Vec<MapperEvent> = stored
        .bundles
        .chunks(stored.bundles_per_mapper)
        .enumerate()
        .map(|(group, bundles)| MapperEvent {
            request_id: stored.id.clone(),
            group: group as u32,
            bundles: bundles.to_vec(),
            attempt: 0,
            copies: stored.copies,
        })
        .collect();
    // Futures built eagerly for `Send`; `buffer_unordered` polls at most
    // `invoke_concurrency`.
    let mut calls: Vec<futures::future::BoxFuture<'_, Result<(), Error>>> =
        vec![Box::pin(crate::handlers::invoke_collector(app, &stored.id))];
    for (n, event) in events.into_iter().enumerate() {
        if n < app.config.driver_groups {
            calls.push(Box::pin(map_here(app, event)));
        } else {
            calls.push(Box::pin(async move {
                app.invoker
                    .invoke(Function::Mapper, to_value(&event)?)
                    .await
            }));
        }
    }
    futures::stream::iter(calls)
        .buffer_unordered(app.config.invoke_concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Plans one group in this invocation (`mapper::handle_in_driver`). A failure is
/// recorded as a mapper's is (its error marker, which the collector retries), and the
/// group goes to a mapper invocation, as Lambda retries a mapper that failed: the
/// request does not wait for the lost rule if even that marker could not be written.
/// Planning twice writes the same keys.
async fn map_here(app: &App, event: MapperEvent) -> Result<(), Error> {
    let retry = event.clone();
    match super::mapper::handle_in_driver(app, event).await {
        Ok(()) | Err(Error::Cancelled(_)) => Ok(()),
        Err(e) => {
            tracing::warn!(request = %retry.request_id, group = retry.group, error = %e,
                "planning in the driver failed; invoking a mapper");
            app.invoker
                .invoke(Function::Mapper, to_value(&retry)?)
                .await
        }
    }
}

fn to_value<T: serde::Serialize>(event: &T) -> Result<Value, Error> {
    serde_json::to_value(event).map_err(|e| Error::input("event", e.to_string()))
}

/// Integers stay integers when every input is integer.
fn output_type(entries: &[CatalogEntry]) -> ValueType {
    entries
        .iter()
        .map(|e| e.value_type)
        .max_by_key(|t| match t {
            ValueType::Uint32 => 0,
            ValueType::Float32 => 1,
            ValueType::Float64 => 2,
        })
        .unwrap_or(ValueType::Uint32)
}

/// Resolves the request's bundles and their catalog entries (a manifest is read only for
/// a bundle the catalog lacks).
async fn resolve(app: &App, req: &MatrixRequest) -> Result<Result<Resolved, Rejection>, Error> {
    let catalog = catalog::read(&app.store).await?;
    let listed = match &req.source {
        BundleSource::List(list) => list.clone(),
        BundleSource::Url(url) => match fetch_list(app, url).await? {
            Ok(list) => list,
            Err(r) => return Ok(Err(r)),
        },
        BundleSource::Filter(filter) => {
            let (bundles, entries): (Vec<Fqid>, Vec<CatalogEntry>) = catalog
                .bundles
                .iter()
                .filter(|(fqid, entry)| {
                    filter.eval_bundle(&|f| bundle_value(fqid, &entry.metadata, f)) != Some(false)
                })
                .map(|(f, e)| (f.clone(), e.clone()))
                .unzip();
            if bundles.is_empty() {
                return Ok(Err(Rejection {
                    status: 422,
                    message: format!(
                        "the filter matches none of the {} bundles in the catalog",
                        catalog.bundles.len()
                    ),
                }));
            }
            return Ok(Ok(Resolved { bundles, entries }));
        }
    };
    let mut entries = Vec::with_capacity(listed.len());
    let mut unknown = Vec::new();
    for fqid in &listed {
        match lookup(app, &catalog.bundles, fqid).await? {
            Some(e) => entries.push(e),
            None => unknown.push(fqid.to_string()),
        }
    }
    if !unknown.is_empty() {
        let shown: Vec<&str> = unknown.iter().take(10).map(String::as_str).collect();
        return Ok(Err(Rejection {
            status: 404,
            message: format!(
                "{} unknown bundle(s): {}{}",
                unknown.len(),
                shown.join(", "),
                if unknown.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
        }));
    }
    Ok(Ok(Resolved {
        bundles: listed,
        entries,
    }))
}

/// A bundle's entry: the catalog, else what this process learnt, else its manifest
/// (remembered for next time).
pub async fn lookup(
    app: &App,
    catalog: &std::collections::BTreeMap<Fqid, CatalogEntry>,
    fqid: &Fqid,
) -> Result<Option<CatalogEntry>, Error> {
    if let Some(e) = catalog.get(fqid) {
        return Ok(Some(e.clone()));
    }
    if let Some(e) = app.learnt.lock().expect("learnt lock").get(fqid) {
        return Ok(Some(e.clone()));
    }
    let Some(manifest) = read_manifest(&app.store, fqid).await? else {
        return Ok(None);
    };
    let entry = CatalogEntry::from(&manifest);
    app.learnt
        .lock()
        .expect("learnt lock")
        .insert(fqid.clone(), entry.clone());
    Ok(Some(entry))
}

/// Reads a feature set: whole (`Features`), or only its ids (`genes::GeneIds`).
pub async fn feature_set<T: serde::de::DeserializeOwned>(app: &App, id: &str) -> Result<T, Error> {
    let key = feature_set_key(id);
    get_json(&app.store, &key)
        .await?
        .ok_or_else(|| Error::Corrupt {
            what: key,
            message: "the feature set of a catalogued bundle is missing".into(),
        })
}

/// The output genes, and the feature sets that map onto them unchanged (see
/// `StoredRequest::identity_sets`).
async fn gene_space(
    app: &App,
    req: &MatrixRequest,
    entries: &[CatalogEntry],
) -> Result<Result<(GeneSpace, Vec<String>), Rejection>, Error> {
    let mut ids: Vec<&str> = Vec::new();
    for e in entries {
        if !ids.contains(&e.feature_set.as_str()) {
            ids.push(&e.feature_set);
        }
    }
    let sets = futures::future::try_join_all(ids.iter().map(|id| feature_set::<Features>(app, id)))
        .await?;
    let union = GeneSpace::union(&sets);
    let space = match &req.genes {
        None => union,
        Some(wanted) => match union.subset(wanted) {
            Ok(space) => space,
            Err(missing) => {
                let shown: Vec<String> = missing.iter().take(10).map(|g| clip(g)).collect();
                return Ok(Err(Rejection::bad(format!(
                    "genes: {} not in the selected bundles: {}",
                    missing.len(),
                    shown.join(", ")
                ))));
            }
        },
    };
    let identity = ids
        .iter()
        .zip(&sets)
        .filter(|(_, set)| Remap::keeps_columns(&space.ids, &set.ids))
        .map(|(id, _)| id.to_string())
        .collect();
    Ok(Ok((space, identity)))
}

/// Reads the bundle list behind `bundle_fqids_url`.
async fn fetch_list(app: &App, url: &str) -> Result<Result<Vec<Fqid>, Rejection>, Error> {
    let text = if url.contains("://") {
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) => u,
            Err(e) => return Ok(Err(Rejection::bad(format!("bundle_fqids_url: {e}")))),
        };
        let allowed_scheme = parsed.scheme() == "https"
            || (app.config.allow_private_urls && parsed.scheme() == "http");
        if !allowed_scheme {
            return Ok(Err(Rejection::bad(format!(
                "bundle_fqids_url: the scheme {:?} is not allowed; use https, or a key in the store",
                parsed.scheme()
            ))));
        }
        match fetch(app, parsed).await {
            Ok(text) => text,
            Err(r) => return Ok(Err(r)),
        }
    } else {
        if let Err(e) = validate_key(url) {
            return Ok(Err(Rejection::bad(format!("bundle_fqids_url: {e}"))));
        }
        // Only lists: any other key (the catalog, a manifest) would be echoed back in
        // the parse errors of a user who may not read it.
        if !url.starts_with(LISTS_PREFIX) {
            return Ok(Err(Rejection::bad(format!(
                "bundle_fqids_url: a key in the store must be under {LISTS_PREFIX}"
            ))));
        }
        match app.store.get(url).await? {
            Some(body) => String::from_utf8_lossy(&body).into_owned(),
            None => {
                return Ok(Err(Rejection {
                    status: 404,
                    message: format!("bundle_fqids_url: no object {url:?} in the store"),
                }));
            }
        }
    };
    Ok(request::parse_fqid_list(&text))
}

/// Fetches a public URL: its host must resolve to public addresses only (unless allowed),
/// and the connection goes to the address checked, so DNS cannot swap it afterwards.
async fn fetch(app: &App, url: reqwest::Url) -> Result<String, Rejection> {
    const MAX_LIST_BYTES: usize = 16 << 20;
    let bad_gateway = |m: String| Rejection {
        status: 502,
        message: m,
    };
    let host = url
        .host_str()
        .ok_or_else(|| Rejection::bad("bundle_fqids_url: no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| bad_gateway(format!("bundle_fqids_url: cannot resolve {host}: {e}")))?
        .collect();
    let Some(&addr) = addrs.first() else {
        return Err(bad_gateway(format!(
            "bundle_fqids_url: {host} has no address"
        )));
    };
    if !app.config.allow_private_urls && addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(Rejection::bad(format!(
            "bundle_fqids_url: {host} is a private or loopback address"
        )));
    }
    let client = reqwest::Client::builder()
        .resolve(&host, addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| bad_gateway(format!("bundle_fqids_url: {e}")))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| bad_gateway(format!("bundle_fqids_url: {e}")))?;
    if !response.status().is_success() {
        return Err(bad_gateway(format!(
            "bundle_fqids_url: the server answered {}",
            response.status()
        )));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| bad_gateway(format!("bundle_fqids_url: {e}")))?;
    if body.len() > MAX_LIST_BYTES {
        return Err(Rejection::bad(format!(
            "bundle_fqids_url: the list is over {MAX_LIST_BYTES} bytes"
        )));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.octets()[0] == 0
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

fn parse_id(id: &str) -> Result<RequestId, HttpResponse> {
    if id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(RequestId::parse(id).expect("hex is a valid id"))
    } else {
        Err(HttpResponse::error(
            400,
            format!("{:?} is not a request id (32 hex digits)", clip(id)),
        ))
    }
}

async fn status_of(app: &App, id: &str) -> Outcome {
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(r) => return Ok(r),
    };
    match get_json::<StoredRequest>(&app.store, &Keys::new(&id).request()).await? {
        Some(stored) => status_response(app, &stored, 200).await,
        None => Ok(HttpResponse::error(404, format!("no request {id}"))),
    }
}

async fn cancel(app: &App, id: &str) -> Outcome {
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(r) => return Ok(r),
    };
    let keys = Keys::new(&id);
    let Some(stored) = get_json::<StoredRequest>(&app.store, &keys.request()).await? else {
        return Ok(HttpResponse::error(404, format!("no request {id}")));
    };
    if state::exists(&app.store, &keys.result()).await? {
        return Ok(HttpResponse::error(
            409,
            format!("request {id} has already succeeded; there is nothing to cancel"),
        ));
    }
    if let Some(f) = get_json::<Failure>(&app.store, &keys.failed()).await? {
        return Ok(HttpResponse::error(
            409,
            format!(
                "request {id} has already failed ({}); there is nothing to cancel",
                f.message
            ),
        ));
    }
    put_json_if_absent(
        &app.store,
        &keys.cancel(),
        &Failure::now("cancelled by the user"),
    )
    .await?;
    status_response(app, &stored, 202).await
}

/// The status document of a request, from the stored state.
pub async fn status(app: &App, stored: &StoredRequest) -> Result<Value, Error> {
    let keys = Keys::new(&stored.id);
    let store = &app.store;
    let (k_result, k_failed, k_cancel, k_run, k_progress) = (
        keys.result(),
        keys.failed(),
        keys.cancel(),
        keys.run(),
        keys.progress(),
    );
    let (result, failed, cancelled, run, progress) = futures::try_join!(
        get_json::<ResultRecord>(store, &k_result),
        get_json::<Failure>(store, &k_failed),
        get_json::<Failure>(store, &k_cancel),
        get_json::<RunInfo>(store, &k_run),
        get_json::<Progress>(store, &k_progress),
    )?;
    let now = now_ms();
    let started = run.as_ref().map_or(now, |r| r.started_ms);
    let deadline = run.as_ref().map_or(u64::MAX, |r| r.deadline_ms);
    let progress = progress.unwrap_or_default();
    // A collector that died cannot say so; past the deadline, and a grace period for it
    // to write failed.json, the request is Failed whatever the store holds.
    let overdue = now > deadline.saturating_add(60_000);
    let (status, message) = if result.is_some() {
        ("Succeeded", None)
    } else if let Some(f) = &failed {
        ("Failed", Some(f.message.clone()))
    } else if let Some(c) = &cancelled {
        ("Cancelled", Some(c.message.clone()))
    } else if overdue {
        (
            "Failed",
            Some("the request passed its deadline before the collector finished it".into()),
        )
    } else {
        revive_if_silent(app, stored, run.as_ref(), &progress, now).await;
        ("Running", None)
    };
    let finished_ms = match (&result, &failed, &cancelled) {
        (Some(r), _, _) => Some(r.finished_ms),
        (None, Some(f), _) | (None, None, Some(f)) => Some(f.at_ms),
        _ => None,
    };
    let result_doc = match &result {
        Some(r) => Some(result_document(app, r).await?),
        None => None,
    };
    let tasks_total = (progress.groups_planned == stored.groups).then_some(progress.tasks_total);
    Ok(json!({
        "id": stored.id,
        "status": status,
        "format": stored.canonical["format"],
        "progress": {
            "bundles": stored.bundles.len(),
            "tasks_total": tasks_total,
            "tasks_done": progress.tasks_done,
            "cells_written": result.as_ref().map_or(progress.cells_written, |r| r.n_cells),
        },
        "timings": {
            "submitted_at": stored.submitted_at,
            "started_at": state::rfc3339(started),
            "elapsed_seconds": (finished_ms.unwrap_or(now).saturating_sub(started)) as f64 / 1000.0,
            "planned_seconds": result.as_ref().map(|r| r.planned_after_ms as f64 / 1000.0),
            "collected_seconds": result.as_ref().map(|r| r.collected_after_ms as f64 / 1000.0),
            "finished_at": finished_ms.map(state::rfc3339),
        },
        "result": result_doc,
        "message": message,
    }))
}

/// Starts a new collector for a Running request whose collector has gone silent
/// ([`collector_silent`]): its invocation was lost, or it died without a record. Two
/// collectors at once are harmless (what must happen once is a put-if-absent), and the
/// new one writes its heartbeat at once. Best effort: the status is answered anyway.
async fn revive_if_silent(
    app: &App,
    stored: &StoredRequest,
    run: Option<&RunInfo>,
    progress: &Progress,
    now: u64,
) {
    let Some(run) = run else { return };
    let c = &app.config;
    if !collector_silent(
        now,
        progress.heartbeat_ms,
        run.started_ms,
        c.collector_first_beat,
        c.collector_stale,
    ) {
        return;
    }
    let heard = progress.heartbeat_ms.max(run.started_ms);
    tracing::warn!(request = %stored.id, silent_ms = now - heard, "collector silent; starting a new one");
    if let Err(e) = crate::handlers::invoke_collector(app, &stored.id).await {
        tracing::error!(request = %stored.id, error = %e, "cannot start a new collector");
    }
}

/// Whether a run's collector has gone silent: never heard of (no heartbeat) for
/// `first_beat` since the run started, or not heard of for `stale` since its last
/// heartbeat. A collector writes its first heartbeat on its first look, a delivery and
/// a cold start after the run starts, so silence from the start shows much sooner than
/// silence after a heartbeat, which comes every quarter of `stale`.
fn collector_silent(
    now: u64,
    heartbeat_ms: u64,
    started_ms: u64,
    first_beat: std::time::Duration,
    stale: std::time::Duration,
) -> bool {
    let (heard, wait) = if heartbeat_ms == 0 {
        (started_ms, first_beat.min(stale))
    } else {
        (heartbeat_ms.max(started_ms), stale)
    };
    now.saturating_sub(heard) > wait.as_millis() as u64
}

async fn result_document(app: &App, r: &ResultRecord) -> Result<Value, Error> {
    let base = app.store.describe();
    let location = format!(
        "{}/{}",
        base.strip_prefix("file://").unwrap_or(&base),
        r.key
    );
    let objects = app.store.list(&format!("{}/", r.key)).await?;
    let on_s3 = base.starts_with("s3://");
    let mut files = Vec::with_capacity(objects.len());
    for o in &objects {
        let url = if on_s3 {
            Some(app.store.presign_get(&o.key, app.config.url_expiry).await?)
        } else {
            None
        };
        files.push(json!({
            "path": o.key.strip_prefix(&format!("{}/", r.key)).unwrap_or(&o.key),
            "size": o.size,
            "url": url,
        }));
    }
    Ok(json!({
        "location": location,
        "n_cells": r.n_cells,
        "n_genes": r.n_genes,
        "nnz": r.nnz,
        "files": files,
        "conversion": r.conversion.as_ref().map(|c| json!({
            "seconds": c.duration_ms as f64 / 1000.0,
            "peak_rss_bytes": c.peak_rss_bytes,
            "start_rss_bytes": c.start_rss_bytes,
        })),
    }))
}

async fn status_response(app: &App, stored: &StoredRequest, code: u16) -> Outcome {
    let body = status(app, stored).await?;
    Ok(HttpResponse {
        status: code,
        location: Some(format!("/v1/matrix/{}", stored.id)),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collector_never_heard_of_is_silent_sooner_than_one_that_stopped() {
        use std::time::Duration;
        let (first, stale) = (Duration::from_secs(2), Duration::from_secs(10));
        let start = 1_000_000;
        // No heartbeat yet: silent once `first_beat` has passed since the run started.
        assert!(!collector_silent(start + 2_000, 0, start, first, stale));
        assert!(collector_silent(start + 2_001, 0, start, first, stale));
        // A heartbeat: silent only `stale` after it.
        let beat = start + 500;
        assert!(!collector_silent(beat + 10_000, beat, start, first, stale));
        assert!(collector_silent(beat + 10_001, beat, start, first, stale));
        // `first_beat` never waits longer than `stale`.
        let long = Duration::from_secs(60);
        assert!(collector_silent(start + 10_001, 0, start, long, stale));
    }

    #[test]
    fn routes_match_their_patterns_only() {
        for (method, path, want) in [
            ("POST", "/v1/matrix", Some("/v1/matrix")),
            ("GET", "/v1/matrix/abc", Some("/v1/matrix/{id}")),
            ("DELETE", "/v1/matrix/abc", Some("/v1/matrix/{id}")),
            ("GET", "/v1/formats", Some("/v1/formats")),
            ("GET", "/v1/fields", Some("/v1/fields")),
            ("GET", "/v1/matrix", None),
            ("PUT", "/v1/matrix/abc", None),
            ("GET", "/v1/matrix/", None),
            ("GET", "/v1/matrix/a/b", None),
            ("GET", "v1/formats", None),
            ("get", "/v1/formats", None),
        ] {
            assert_eq!(matched_route(method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn request_ids_are_32_hex_digits() {
        assert!(parse_id(&"a".repeat(32)).is_ok());
        for bad in [
            "",
            "abc",
            &"g".repeat(32),
            &"A".repeat(32),
            "..%2F",
            &"a".repeat(33),
        ] {
            assert_eq!(parse_id(bad).unwrap_err().status, 400, "{bad}");
        }
    }
}
