//! Resolving a request: its bundles, with their catalog entries, and its genes.

use crate::app::App;
use crate::bundle::Features;
use crate::catalog::{self, CatalogEntry, feature_set, lookup};
use crate::error::clip;
use crate::fqid::Fqid;
use crate::genes::{GeneSpace, Remap};
use crate::obs::ObsColumn;
use crate::request::{BundleSource, MatrixRequest, Rejection};
use crate::select;

use super::error::ApiError;
use super::list_fetch::fetch_list;

/// What resolving a request found out about its bundles.
pub(super) struct Resolved {
    pub(super) bundles: Vec<Fqid>,
    pub(super) entries: Vec<CatalogEntry>,
    /// The output's obs columns.
    pub(super) columns: Vec<ObsColumn>,
}

/// Resolves the request's bundles and their catalog entries (a manifest is read only for
/// a bundle the catalog lacks), its `where` text into a filter tree, and its fields into
/// columns. The catalog's fields are summed only when the request names a field that is
/// not built in.
pub(super) async fn resolve(app: &App, req: &mut MatrixRequest) -> Result<Resolved, ApiError> {
    let catalog = catalog::read(&app.store).await?;
    select::prepare(&catalog, req)?;
    let (bundles, entries) = match &req.source {
        BundleSource::List(list) => {
            let list = list.clone();
            listed(app, &catalog, list).await?
        }
        BundleSource::Url(url) => {
            let list = fetch_list(app, url).await?;
            listed(app, &catalog, list).await?
        }
        BundleSource::Where(_) => {
            return Err(crate::error::Error::Internal("a where text left unparsed".into()).into());
        }
        BundleSource::Filter(filter) => {
            let (bundles, entries) = select::by_filter(&catalog, filter);
            if bundles.is_empty() {
                return Err(ApiError::refuse(
                    422,
                    format!(
                        "the filter matches none of the {} bundles in the catalog",
                        catalog.bundles.len()
                    ),
                ));
            }
            (bundles, entries)
        }
    };
    let columns = select::columns(&req.fields, &bundles, &entries);
    Ok(Resolved {
        bundles,
        entries,
        columns,
    })
}

/// The entries of a list of bundles, in its order; 404 naming those the catalog and the
/// store lack.
async fn listed(
    app: &App,
    catalog: &catalog::Catalog,
    listed: Vec<Fqid>,
) -> Result<(Vec<Fqid>, Vec<CatalogEntry>), ApiError> {
    let mut entries = Vec::with_capacity(listed.len());
    let mut unknown = Vec::new();
    for fqid in &listed {
        match lookup(&app.store, &app.learnt, &catalog.bundles, fqid).await? {
            Some(e) => entries.push(e),
            None => unknown.push(fqid.to_string()),
        }
    }
    if !unknown.is_empty() {
        let shown: Vec<&str> = unknown.iter().take(10).map(String::as_str).collect();
        return Err(ApiError::refuse(
            404,
            format!(
                "{} unknown bundle(s): {}{}",
                unknown.len(),
                shown.join(", "),
                if unknown.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
        ));
    }
    Ok((listed, entries))
}

/// The output genes, and the feature sets that map onto them unchanged (see
/// `StoredRequest::identity_sets`).
pub(super) async fn gene_space(
    app: &App,
    req: &MatrixRequest,
    entries: &[CatalogEntry],
) -> Result<(GeneSpace, Vec<String>), ApiError> {
    let mut ids: Vec<&str> = Vec::new();
    for e in entries {
        if !ids.contains(&e.feature_set.as_str()) {
            ids.push(&e.feature_set);
        }
    }
    let sets =
        futures::future::try_join_all(ids.iter().map(|id| feature_set::<Features>(&app.store, id)))
            .await?;
    let union = GeneSpace::union(&sets);
    let space = match &req.genes {
        None => union,
        Some(wanted) => match union.subset(wanted) {
            Ok(space) => space,
            Err(missing) => {
                let shown: Vec<String> = missing.iter().take(10).map(|g| clip(g)).collect();
                return Err(Rejection::bad(format!(
                    "genes: {} not in the selected bundles: {}",
                    missing.len(),
                    shown.join(", ")
                ))
                .into());
            }
        },
    };
    let identity = ids
        .iter()
        .zip(&sets)
        .filter(|(_, set)| Remap::keeps_columns(&space.ids, &set.ids))
        .map(|(id, _)| id.to_string())
        .collect();
    Ok((space, identity))
}
