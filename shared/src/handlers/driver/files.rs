//! `GET /v1/matrix/{id}/files`: the files of a Succeeded request's result, a page of at
//! most [`MAX_PAGE`] at a time in key order, each with a presigned URL on S3. The cursor
//! is the path of the last file of the page before, so a page never depends on state
//! kept between calls; the status only counts the files, so it stays small whatever
//! their number.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::Uri;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, clip};
use crate::state::{Keys, ResultRecord, get_json};

use super::error::ApiError;
use super::status::{id_segment, parse_id};
use super::{HttpResponse, Who, owners};

/// Most files in one page.
pub const MAX_PAGE: usize = 1000;
/// Longest cursor taken (a result's paths are short).
const MAX_CURSOR: usize = 1024;

/// The query: where to start, and how many.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Page {
    cursor: Option<String>,
    limit: Option<usize>,
}

/// One page of the files; 409 while the request has no result.
pub(super) async fn answer(
    State(app): State<Arc<App>>,
    Who(caller): Who,
    uri: Uri,
    query: Result<Query<Page>, QueryRejection>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(id_segment(&uri))?;
    let Query(page) = query.map_err(|e| ApiError::refuse(400, e.body_text()))?;
    let limit = page.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::refuse(
            400,
            format!("limit must be 1 to {MAX_PAGE}, not {limit}"),
        ));
    }
    if page
        .cursor
        .as_ref()
        .is_some_and(|c| c.is_empty() || c.len() > MAX_CURSOR)
    {
        return Err(ApiError::refuse(
            400,
            format!(
                "cursor {:?} is not one this API gave",
                clip(page.cursor.as_deref().unwrap_or(""))
            ),
        ));
    }
    let stored = owners::owned(&app, &id, &caller).await?;
    let Some(result) = get_json::<ResultRecord>(&app.store, &Keys::new(&id).result()).await? else {
        return Err(ApiError::refuse(
            409,
            format!("request {id} has not succeeded (yet): it has no files"),
        ));
    };
    let body = files_page(&app, &result, page.cursor.as_deref(), limit).await?;
    Ok(HttpResponse {
        status: 200,
        body: json!({ "id": stored.id, "files": body.0, "next_cursor": body.1 }),
        location: None,
        retry_after: None,
    })
}

/// The files after `cursor` (paths relative to the result), at most `limit`, and the
/// cursor of the next page when there is one.
async fn files_page(
    app: &App,
    result: &ResultRecord,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<Value>, Option<String>), Error> {
    let prefix = format!("{}/", result.key);
    let mut objects = app.store.list(&prefix).await?;
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let after: Vec<_> = objects
        .into_iter()
        .map(|o| (o.key[prefix.len()..].to_string(), o))
        .filter(|(path, _)| cursor.is_none_or(|c| path.as_str() > c))
        .collect();
    let more = after.len() > limit;
    let page = &after[..after.len().min(limit)];
    let on_s3 = app.store.describe().starts_with("s3://");
    let expiry = app.config.url_expiry;
    // Futures built eagerly, each owning its file, for `Send`.
    let presigns: Vec<futures::future::BoxFuture<'_, Result<Value, Error>>> = page
        .iter()
        .map(|(path, o)| {
            let (path, key, size) = (path.clone(), o.key.clone(), o.size);
            Box::pin(async move {
                let url = if on_s3 {
                    Some(app.store.presign_get(&key, expiry).await?)
                } else {
                    None
                };
                Ok(json!({ "path": path, "size": size, "url": url }))
            }) as futures::future::BoxFuture<'_, _>
        })
        .collect();
    let files: Vec<Value> = futures::stream::iter(presigns)
        .buffered(16)
        .try_collect()
        .await?;
    let next = more.then(|| page.last().map(|(p, _)| p.clone())).flatten();
    Ok((files, next))
}
