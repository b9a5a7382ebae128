//! The conversion trigger's work: the consolidated Zarr converted to the requested
//! format ([`crate::convert`]), and the record of what it wrote.

use crate::app::App;
use crate::clock::now_ms;
use crate::convert::source::MatrixSource;
use crate::error::Error;
use crate::state::{Converted, Keys, RequestView, put_json};

/// Converts the consolidated Zarr to the requested format and records what it wrote,
/// with the time and this process's peak memory while converting.
pub(super) async fn convert(app: &App, keys: &Keys) -> Result<(), Error> {
    let counting = std::sync::Arc::new(crate::store::counting::Counting::new(app.store.clone()));
    let store: &crate::store::DynStore = &(counting.clone() as crate::store::DynStore);
    let view = RequestView::read(store, keys).await?;
    let started = now_ms();
    crate::process::reset_peak_rss();
    let start_rss_bytes = crate::process::rss_bytes();
    let src = MatrixSource::open(
        store,
        &keys.zarr(view.format),
        view.stored.value_type,
        &view.columns,
    )
    .await?;
    let files = crate::convert::convert(
        &src,
        store,
        view.format,
        &keys.results(),
        &app.config.scratch_dir,
        app.config.dense_limits(),
    )
    .await?;
    let counts = counting.counts();
    let finished = now_ms();
    let record = Converted {
        format: view.format.name().to_string(),
        files,
        duration_ms: finished.saturating_sub(started),
        peak_rss_bytes: crate::process::peak_rss_bytes(),
        start_rss_bytes,
        started_ms: started,
        finished_ms: finished,
        // The record's own PUT, too.
        requests: crate::cost::Requests {
            put: counts.puts + 1,
            ..counts.requests()
        },
        bytes_read: counts.bytes_read,
        bytes_written: counts.bytes_written,
    };
    tracing::info!(
        request = %keys.id(),
        format = view.format.name(),
        ms = record.duration_ms,
        peak_rss = record.peak_rss_bytes,
        "converted"
    );
    crate::fault::kill_point(crate::fault::KillPoint::Conversion);
    put_json(store, &keys.converted(), &record).await?;
    crate::scratch::after_write(store, keys, app.config.keep_scratch).await
}
