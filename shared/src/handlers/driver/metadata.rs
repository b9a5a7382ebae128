//! `GET /v1/formats`, `GET /v1/fields` and `GET /v1/fields/{name}`: what the service can
//! produce, and the fields of its catalog with their values and cell counts.

use serde_json::{Value, json};

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};

use super::HttpResponse;
use super::error::ApiError;
use crate::app::App;
use crate::error::clip;
use crate::facets::{Facet, Facets};
use crate::field::{Field, Level};

pub(super) async fn formats() -> HttpResponse {
    HttpResponse::json(200, crate::convert::format::formats_document())
}

/// Values shown per field in the list of all fields; `GET /v1/fields/{name}` pages
/// through the rest.
pub const TOP_VALUES: usize = 100;

/// Longest cursor taken: a position in the values, in decimal.
const MAX_CURSOR: usize = 20;

/// Values in one page of `GET /v1/fields/{name}`.
pub const MAX_VALUES_PAGE: usize = 1000;

/// A field as the API lists it, with its first `limit` values from `from`, most cells
/// first (ties by value).
fn describe(field: &Field, facet: &Facet, from: usize, limit: usize) -> (Value, Option<usize>) {
    let description = field
        .as_builtin()
        .map_or("a field of the ingested inputs", |b| b.description);
    let types: Vec<&str> = facet.types.iter().map(|t| t.name()).collect();
    let mut out = json!({
        "name": field.name(),
        "level": field.level().name(),
        "type": if types.len() == 1 { json!(types[0]) } else { json!(types) },
        "column": field.column(),
        "description": description,
        "bundles": facet.bundles,
        "cells": facet.cells,
    });
    let mut next = None;
    if let Some(values) = &facet.values {
        let mut sorted: Vec<(&String, &u64)> = values.iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let page: Vec<Value> = sorted
            .iter()
            .skip(from)
            .take(limit)
            .map(|(v, n)| json!({"value": v, "cells": n}))
            .collect();
        if from + page.len() < sorted.len() {
            next = Some(from + page.len());
        }
        out["n_values"] = json!(sorted.len());
        out["values"] = Value::Array(page);
    }
    (out, next)
}

pub(super) async fn fields(State(app): State<Arc<App>>) -> Result<HttpResponse, ApiError> {
    let catalog = crate::catalog::read(&app.store).await?;
    let facets = Facets::of(catalog.bundles.iter());
    let mut ordered: Vec<Field> = facets.at_level(Level::Bundle);
    ordered.extend(facets.at_level(Level::Cell));
    let fields: Vec<Value> = ordered
        .iter()
        .filter_map(|f| {
            facets
                .fields
                .get(f)
                .map(|facet| describe(f, facet, 0, TOP_VALUES).0)
        })
        .collect();
    Ok(HttpResponse::json(
        200,
        json!({ "fields": fields, "bundles": catalog.bundles.len() }),
    ))
}

/// The query of `GET /v1/fields/{name}`: where to start in the values, and how many.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ValuesPage {
    cursor: Option<String>,
    limit: Option<usize>,
}

/// One field with a page of its values.
pub(super) async fn field(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    query: Result<Query<ValuesPage>, QueryRejection>,
) -> Result<HttpResponse, ApiError> {
    let Query(page) = query.map_err(|e| ApiError::refuse(400, e.body_text()))?;
    let limit = page.limit.unwrap_or(MAX_VALUES_PAGE);
    if !(1..=MAX_VALUES_PAGE).contains(&limit) {
        return Err(ApiError::refuse(
            400,
            format!("limit must be 1 to {MAX_VALUES_PAGE}, not {limit}"),
        ));
    }
    let from = match page.cursor.as_deref() {
        None => 0,
        Some(c) => c
            .parse::<usize>()
            .ok()
            .filter(|_| c.len() <= MAX_CURSOR)
            .ok_or_else(|| {
                ApiError::refuse(
                    400,
                    format!("cursor {:?} is not one this API gave", clip(c)),
                )
            })?,
    };
    let catalog = crate::catalog::read(&app.store).await?;
    let facets = Facets::of(catalog.bundles.iter());
    let found = Field::parse(&name)
        .map(Ok)
        .unwrap_or_else(|| {
            facets
                .resolve(&name)
                .map(|q| Field::parse(&q).expect("resolved"))
        })
        .ok()
        .and_then(|f| facets.fields.get(&f).map(|facet| (f, facet)));
    let Some((field, facet)) = found else {
        return Err(ApiError::refuse(
            404,
            format!(
                "no field {:?} in the catalog (GET /v1/fields lists them)",
                clip(&name)
            ),
        ));
    };
    let (mut body, next) = describe(&field, facet, from, limit);
    body["next_cursor"] = next.map_or(Value::Null, |n| json!(n.to_string()));
    Ok(HttpResponse::json(200, body))
}
