//! Choosing a request's bundles and columns from the catalog, purely: its `where` text
//! parsed against the catalog's fields, its filter checked against their types and
//! evaluated per bundle (three-valued, on the catalog's summaries), its fields expanded
//! into the output's columns. The driver runs this on the catalog it read; the catalog
//! benchmark runs the same code.

use crate::catalog::{Catalog, CatalogEntry, Facts};
use crate::facets::Facets;
use crate::field::Field;
use crate::filter::{Filter, Known};
use crate::fqid::Fqid;
use crate::obs::ObsColumn;
use crate::query::parse_where;
use crate::request::{BundleSource, FieldSel, MatrixRequest, Rejection, without_repeated_values};

/// Parses a `where` text into the request's filter, and checks the filter's and the
/// fields' names and types against the catalog. The catalog's fields are summed only
/// when the request names a field that is not built in.
pub fn prepare(catalog: &Catalog, req: &mut MatrixRequest) -> Result<(), Rejection> {
    let open = req.fields.iter().any(|f| match f {
        FieldSel::One(f) => f.as_builtin().is_none(),
        FieldSel::All(_) => true,
    }) || match &req.source {
        BundleSource::Where(_) => true,
        BundleSource::Filter(f) => f.fields().iter().any(|f| f.as_builtin().is_none()),
        _ => false,
    };
    if !open {
        return Ok(());
    }
    let facets = Facets::of(catalog.bundles.iter());
    if let BundleSource::Where(text) = &req.source {
        let tree = parse_where(text, &|name| facets.resolve(name))
            .map_err(|e| Rejection::bad(e.to_string()))?;
        let filter = Filter::parse(&tree).map_err(Rejection::bad)?;
        req.source = BundleSource::Filter(without_repeated_values(filter));
    }
    if let BundleSource::Filter(filter) = &req.source {
        filter
            .check(&|f| facets.known(f))
            .map_err(|e| Rejection::bad(format!("filter: {e}")))?;
    }
    for sel in &req.fields {
        if let FieldSel::One(f) = sel
            && facets.known(f) == Known::Absent
        {
            return Err(Rejection::bad(format!(
                "fields: unknown field {f}: no bundle in the catalog has it (GET /v1/fields lists them)"
            )));
        }
    }
    Ok(())
}

/// Every catalogued bundle the filter may match: those whose `eval_bundle` is not false.
pub fn by_filter(catalog: &Catalog, filter: &Filter) -> (Vec<Fqid>, Vec<CatalogEntry>) {
    catalog
        .bundles
        .iter()
        .filter(|(fqid, entry)| filter.eval_bundle(&Facts { fqid, entry }) != Some(false))
        .map(|(f, e)| (f.clone(), e.clone()))
        .unzip()
}

/// The output's columns: the request's fields over the selected bundles, `cell.*` and
/// `bundle.*` expanded to every field those bundles have, repeats dropped.
pub fn columns(fields: &[FieldSel], bundles: &[Fqid], entries: &[CatalogEntry]) -> Vec<ObsColumn> {
    let selected: Vec<(&Fqid, &CatalogEntry)> = bundles.iter().zip(entries).collect();
    // Summed once, and only for a wildcard.
    let facets = fields
        .iter()
        .any(|f| matches!(f, FieldSel::All(_)))
        .then(|| Facets::of(selected.iter().copied()));
    let mut out: Vec<Field> = Vec::new();
    for sel in fields {
        let more = match sel {
            FieldSel::One(f) => vec![f.clone()],
            FieldSel::All(level) => facets
                .as_ref()
                .map_or_else(Vec::new, |f| f.at_level(*level)),
        };
        for f in more {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    crate::obs::columns(&out, &selected)
}
