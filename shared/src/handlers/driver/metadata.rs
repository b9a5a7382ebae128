//! `GET /v1/formats` and `GET /v1/fields`: what the service can produce and filter on.

use serde_json::{Value, json};

use super::HttpResponse;
use crate::field::{BUILTINS, Field, Level};

pub(super) async fn formats() -> HttpResponse {
    HttpResponse::json(200, crate::convert::format::formats_document())
}

pub(super) async fn fields() -> HttpResponse {
    let fields: Vec<Value> = BUILTINS
        .iter()
        .map(|b| {
            let f = Field::builtin(b);
            json!({
                "name": f.name(),
                "type": b.field_type.name(),
                "level": if b.level == Level::Bundle { "bundle" } else { "cell" },
                "column": f.column(),
                "description": b.description,
            })
        })
        .collect();
    HttpResponse::json(200, json!({ "fields": fields }))
}
