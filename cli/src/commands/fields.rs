//! `cellmatrix fields [NAME]`: the fields a server's catalog holds, as a table: each
//! field's level, type, bundles and cells with a value, and the most common values; with
//! a name, that field's every value and its cell count.

use serde_json::Value;

use super::client::Server;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    server: Server,
    /// One field (`cell.cell_type`, or a bare name one level has): all its values.
    name: Option<String>,
    /// Print the document as JSON.
    #[arg(long)]
    json: bool,
}

/// Values shown per field in the table of all fields.
const SHOWN: usize = 5;

pub async fn run(a: Args) -> anyhow::Result<()> {
    let doc = a.server.client().await?.fields(a.name.as_deref()).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    match a.name {
        None => print!("{}", table(&doc)),
        Some(_) => print!("{}", values(&doc)),
    }
    Ok(())
}

fn type_of(field: &Value) -> String {
    match &field["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("|"),
        _ => String::new(),
    }
}

fn count(v: &Value) -> String {
    v.as_u64().map_or_else(String::new, |n| n.to_string())
}

/// The table of every field.
pub fn table(doc: &Value) -> String {
    let mut rows = vec![[
        "field".to_string(),
        "type".to_string(),
        "bundles".to_string(),
        "cells".to_string(),
        "values (cells)".to_string(),
    ]];
    for f in doc["fields"].as_array().into_iter().flatten() {
        let shown: Vec<String> = f["values"]
            .as_array()
            .into_iter()
            .flatten()
            .take(SHOWN)
            .map(|v| {
                format!(
                    "{} ({})",
                    v["value"].as_str().unwrap_or(""),
                    count(&v["cells"])
                )
            })
            .collect();
        let more = f["n_values"].as_u64().unwrap_or(0) as usize;
        let mut text = shown.join(", ");
        if more > shown.len() {
            text.push_str(&format!(", ... {} in all", more));
        }
        rows.push([
            f["name"].as_str().unwrap_or("").to_string(),
            type_of(f),
            count(&f["bundles"]),
            count(&f["cells"]),
            text,
        ]);
    }
    aligned(&rows)
}

/// One field's values, one per line.
pub fn values(doc: &Value) -> String {
    let mut out = format!(
        "{} ({}): {} bundles, {} cells with a value\n",
        doc["name"].as_str().unwrap_or(""),
        type_of(doc),
        count(&doc["bundles"]),
        count(&doc["cells"])
    );
    let mut rows = vec![["value".to_string(), "cells".to_string()]];
    for v in doc["values"].as_array().into_iter().flatten() {
        rows.push([
            v["value"].as_str().unwrap_or("").to_string(),
            count(&v["cells"]),
        ]);
    }
    if rows.len() > 1 {
        out.push_str(&aligned(&rows));
    }
    out
}

/// Rows as columns padded to their widest cell.
fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables() {
        let doc = json!({"fields": [
            {"name": "cell.cell_type", "type": "string", "bundles": 2, "cells": 5,
             "n_values": 7, "values": [{"value": "B", "cells": 3}, {"value": "T", "cells": 2}]},
            {"name": "bundle.age", "type": ["integer", "string"], "bundles": 1, "cells": 4}
        ]});
        let t = table(&doc);
        assert!(t.starts_with("field"), "{t}");
        assert!(t.contains("cell.cell_type  string"), "{t}");
        assert!(t.contains("B (3), T (2), ... 7 in all"), "{t}");
        assert!(t.contains("integer|string"), "{t}");
        let v = values(
            &json!({"name": "cell.phase", "type": "string", "bundles": 1, "cells": 3,
            "values": [{"value": "G1", "cells": 2}]}),
        );
        assert!(
            v.starts_with("cell.phase (string): 1 bundles, 3 cells"),
            "{v}"
        );
        assert!(v.contains("G1     2"), "{v}");
    }
}
