//! The request's settings as the worker and the reducer read them from `request.json`.

use super::{Keys, StoredRequest, get_json};
use crate::convert::Format;
use crate::error::Error;
use crate::field::Field;
use crate::filter::Filter;
use crate::store::DynStore;

/// The request's settings a worker and the reducer need.
#[derive(Debug)]
pub struct RequestView {
    /// The stored request.
    pub stored: StoredRequest,
    /// The cell filter, if any.
    pub filter: Option<Filter>,
    /// The requested fields.
    pub fields: Vec<Field>,
    /// The obs columns they become.
    pub columns: Vec<crate::obs::ObsColumn>,
    /// The output format.
    pub format: Format,
}

impl RequestView {
    /// Reads `request.json`.
    pub async fn read(store: &DynStore, keys: &Keys) -> Result<Self, Error> {
        let stored: StoredRequest = get_json(store, &keys.request())
            .await?
            .ok_or_else(|| Error::NotFound(format!("request {}", keys.id())))?;
        let corrupt = |m: String| Error::Corrupt {
            what: keys.request(),
            message: m,
        };
        let filter = match &stored.canonical["filter"] {
            serde_json::Value::Null => None,
            v => Some(Filter::parse(v).map_err(corrupt)?),
        };
        let columns = if stored.columns.is_empty() {
            let fields: Vec<Field> = stored.canonical["fields"]
                .as_array()
                .ok_or_else(|| corrupt("no fields".into()))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .and_then(Field::parse)
                        .ok_or_else(|| corrupt(format!("bad field {v}")))
                })
                .collect::<Result<_, _>>()?;
            crate::obs::builtin_columns(&fields)
        } else {
            stored.columns.clone()
        };
        let fields = columns
            .iter()
            .map(|c| {
                c.field()
                    .ok_or_else(|| corrupt(format!("bad field {}", c.field)))
            })
            .collect::<Result<_, _>>()?;
        let format = stored.canonical["format"]
            .as_str()
            .and_then(Format::parse)
            .ok_or_else(|| corrupt("no format".into()))?;
        Ok(RequestView {
            stored,
            filter,
            fields,
            columns,
            format,
        })
    }
}
