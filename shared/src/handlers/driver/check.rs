//! What a real submit and a dry run share: the body parsed, the request resolved, its
//! genes found and its caps checked, with the same refusals for both, before anything is
//! written.

use crate::app::App;
use crate::genes::GeneSpace;
use crate::messages::RequestId;
use crate::request::MatrixRequest;

use super::error::ApiError;
use super::limits;
use super::resolve::{Resolved, gene_space, resolve};

/// A request parsed, resolved, its genes found and its caps checked: what a real submit
/// and a dry run share, up to the point of writing.
pub(super) struct Checked {
    pub(super) req: MatrixRequest,
    pub(super) resolved: Resolved,
    pub(super) genes: GeneSpace,
    pub(super) identity_sets: Vec<String>,
    pub(super) id: RequestId,
}

/// Parses, resolves and checks a body: the same refusals for a dry run and a real one.
pub(super) async fn check(app: &App, body: &[u8]) -> Result<Checked, ApiError> {
    let mut req = MatrixRequest::parse(body)?;
    let resolved = resolve(app, &mut req).await?;
    let (genes, identity_sets) = gene_space(app, &req, &resolved.entries).await?;
    limits::check(app, req.format, &resolved, genes.len() as u64)?;
    let id = req.id(&resolved.bundles);
    Ok(Checked {
        req,
        resolved,
        genes,
        identity_sets,
        id,
    })
}

/// 2 for a request that plans into at most `hedge_small` tasks, with `hedge` on, else 1
/// (`StoredRequest::copies`).
pub(super) fn worker_copies(app: &App, resolved: &Resolved) -> u32 {
    let c = &app.config;
    if !c.hedge || c.hedge_small == 0 {
        return 1;
    }
    let small = c.hedge_small as u64;
    if limits::count_tasks(app, resolved, small) > small {
        1
    } else {
        2
    }
}
