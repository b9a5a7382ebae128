//! Metadata sidecars: a JSON object, or a TSV file.
//!
//! - JSON: `{"project": "...", "organ": "...", ...}` for the whole input; an optional
//!   `"cells": {"<cell id>": {...}}` gives per-cell values for one-bundle-per-cell ingests.
//! - TSV with a header whose first column is `cell`: one row of fields per cell.
//! - TSV of `key<TAB>value` lines: fields for the whole input.
//!
//! The named fields are project, organ, species, assay and donor; any other key is kept
//! in the manifest's `extra`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::bundle::BundleMetadata;
use crate::error::Error;

type Fields = BTreeMap<String, String>;

/// The largest sidecar read: it is read whole and parsed into a tree several times its
/// size, and a per-cell table of a million cells is a few hundred MB.
const MAX_SIDECAR_BYTES: u64 = 1 << 30;

/// A parsed sidecar.
#[derive(Debug, Clone, Default)]
pub struct Sidecar {
    all: Fields,
    cells: BTreeMap<String, Fields>,
}

impl Sidecar {
    /// Metadata and extras for a bundle made of the whole input.
    pub fn for_bundle(&self) -> (BundleMetadata, Fields) {
        split(&self.all)
    }

    /// Metadata and extras for the bundle of one cell: its own row over the input's fields.
    pub fn for_cell(&self, cell: &str) -> (BundleMetadata, Fields) {
        let mut fields = self.all.clone();
        if let Some(own) = self.cells.get(cell) {
            fields.extend(own.clone());
        }
        split(&fields)
    }
}

fn split(fields: &Fields) -> (BundleMetadata, Fields) {
    let mut meta = BundleMetadata::default();
    let mut extra = Fields::new();
    for (k, v) in fields {
        let slot = match k.as_str() {
            "project" => &mut meta.project,
            "organ" => &mut meta.organ,
            "species" => &mut meta.species,
            "assay" => &mut meta.assay,
            "donor" => &mut meta.donor,
            _ => {
                extra.insert(k.clone(), v.clone());
                meta.set(
                    &crate::field::stored_name(crate::field::Level::Bundle, k).0,
                    crate::field::Scalar::Str(v.clone()),
                );
                continue;
            }
        };
        *slot = Some(v.clone());
    }
    (meta, extra)
}

/// Reads a sidecar file (JSON by `.json` suffix, otherwise TSV).
pub fn read_sidecar(path: &Path) -> Result<Sidecar, Error> {
    let what = path.display().to_string();
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > MAX_SIDECAR_BYTES {
        return Err(Error::input(
            &what,
            format!("{len} bytes; a metadata sidecar may have at most {MAX_SIDECAR_BYTES}"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        parse_json(&what, &text)
    } else {
        parse_tsv(&what, &text)
    }
}

fn scalar(what: &str, key: &str, v: &serde_json::Value) -> Result<String, Error> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        _ => Err(Error::input(
            what,
            format!("field {key:?} must be a string, number or boolean"),
        )),
    }
}

fn parse_json(what: &str, text: &str) -> Result<Sidecar, Error> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::input(what, format!("invalid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::input(what, "expected a JSON object"))?;
    let mut sc = Sidecar::default();
    for (k, v) in obj {
        if k == "cells" {
            let cells = v
                .as_object()
                .ok_or_else(|| Error::input(what, "\"cells\" must be an object of objects"))?;
            for (cell, fields) in cells {
                let fields = fields
                    .as_object()
                    .ok_or_else(|| Error::input(what, format!("cells.{cell} must be an object")))?;
                let mut f = Fields::new();
                for (fk, fv) in fields {
                    f.insert(fk.clone(), scalar(what, fk, fv)?);
                }
                sc.cells.insert(cell.clone(), f);
            }
        } else {
            sc.all.insert(k.clone(), scalar(what, k, v)?);
        }
    }
    Ok(sc)
}

fn parse_tsv(what: &str, text: &str) -> Result<Sidecar, Error> {
    let mut lines = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty());
    let mut sc = Sidecar::default();
    let Some(first) = lines.next() else {
        return Ok(sc);
    };
    let header: Vec<&str> = first.split('\t').collect();
    if header[0].eq_ignore_ascii_case("cell") {
        for (i, line) in lines.enumerate() {
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() != header.len() {
                return Err(Error::input(
                    what,
                    format!(
                        "line {}: {} columns but the header has {}",
                        i + 2,
                        cols.len(),
                        header.len()
                    ),
                ));
            }
            let fields = header[1..]
                .iter()
                .zip(&cols[1..])
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            sc.cells.insert(cols[0].to_string(), fields);
        }
    } else {
        for (i, line) in std::iter::once(first).chain(lines).enumerate() {
            let Some((k, v)) = line.split_once('\t') else {
                return Err(Error::input(
                    what,
                    format!("line {}: expected key<TAB>value", i + 1),
                ));
            };
            sc.all.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    Ok(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_tsv() {
        let sc = parse_json(
            "x",
            r#"{"project":"P","lab":"L","cells":{"c1":{"donor":"D1"}}}"#,
        )
        .unwrap();
        let (m, extra) = sc.for_cell("c1");
        assert_eq!(m.project.as_deref(), Some("P"));
        assert_eq!(m.donor.as_deref(), Some("D1"));
        assert_eq!(extra.get("lab").map(String::as_str), Some("L"));
        assert_eq!(sc.for_cell("c2").0.donor, None);

        let sc = parse_tsv("x", "cell\tdonor\torgan\nc1\tD1\tblood\nc2\tD2\t\n").unwrap();
        assert_eq!(sc.for_cell("c2").0.donor.as_deref(), Some("D2"));
        assert_eq!(sc.for_cell("c2").0.organ, None);
        let sc = parse_tsv("x", "project\tP\nspecies\thuman\n").unwrap();
        assert_eq!(sc.for_bundle().0.species.as_deref(), Some("human"));
        assert!(parse_tsv("x", "cell\tdonor\nc1\n").is_err());
        assert!(parse_json("x", "[1]").is_err());
    }
}
