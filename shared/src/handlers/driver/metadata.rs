//! `GET /v1/formats` and `GET /v1/fields`: what the service can produce and filter on.

use serde_json::{Value, json};

use super::HttpResponse;
use crate::filter::{Field, FieldType};

pub(super) async fn formats() -> HttpResponse {
    HttpResponse::json(200, crate::convert::format::formats_document())
}

pub(super) async fn fields() -> HttpResponse {
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
