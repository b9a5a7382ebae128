//! A running invocation's heartbeat: its start marker written again every
//! `beat_interval`, so that the collector, listing `started/`, tells one that is still
//! at work from one that died with its process and relaunches only the latter
//! ([`crate::handlers::reducer::ledger::Ledger::silent`]).

use std::future::Future;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::error::Error;
use crate::state::Keys;

/// Runs `work`, the body of invocation `name` (whose start marker is written), while
/// beating. The beat stops before the outcome is returned, and so before the caller
/// reports a failure; the work's own last marker (done, plan, shard, conversion) may
/// land while a beat is in flight, so an invocation that beat cleans up after itself
/// if the request ended meanwhile, as any late writer does.
pub(crate) async fn beating<T>(
    app: &App,
    keys: &Keys,
    name: &str,
    attempt: u32,
    at_ms: u64,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let beat = Beat::start(app, keys, name, attempt, at_ms);
    let outcome = work.await;
    beat.stop(app, keys).await;
    outcome
}

/// The beating task; dropped, it stops at once (an in-process crash drops the
/// invocation's future, and a crashed invocation must go silent).
struct Beat {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<u32>>,
}

impl Beat {
    fn start(app: &App, keys: &Keys, name: &str, attempt: u32, at_ms: u64) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let (store, keys, name) = (app.store.clone(), keys.clone(), name.to_string());
        let interval = app.config.beat_interval;
        let task = tokio::spawn(async move {
            let mut beats = 0;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return beats,
                    _ = tokio::time::sleep(interval) => {}
                }
                beats += 1;
                // A beat lost to a store error only makes the invocation look slower;
                // the next one may land.
                if let Err(e) =
                    crate::state::beat(&store, &keys, &name, attempt, at_ms, beats).await
                {
                    tracing::warn!(request = %keys.id(), name, error = %e, "heartbeat not written");
                }
                if *stopped.borrow() {
                    return beats;
                }
            }
        });
        Beat {
            stop,
            task: Some(task),
        }
    }

    /// Stops beating once any beat in flight has landed; then, if one was written, the
    /// invocation is a late writer like any other.
    async fn stop(mut self, app: &App, keys: &Keys) {
        let _ = self.stop.send(true);
        let beats = match self.task.take() {
            Some(task) => task.await.unwrap_or(0),
            None => 0,
        };
        if beats > 0
            && let Err(e) =
                crate::scratch::after_write(&app.store, keys, app.config.keep_scratch).await
        {
            tracing::warn!(request = %keys.id(), error = %e, "cannot clean up after a heartbeat");
        }
    }
}

impl Drop for Beat {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::messages::RequestId;
    use crate::state::StartMarker;
    use crate::store::memory::MemoryStore;

    fn app(beat_ms: u64) -> Arc<App> {
        let mut config = Config::new("memory://");
        config.beat_interval = Duration::from_millis(beat_ms);
        App::in_process(config, Arc::new(MemoryStore::new()), |_| 4)
    }

    async fn marker(app: &App, keys: &Keys) -> Option<StartMarker> {
        crate::state::get_json(&app.store, &keys.started("task-t", 0))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_long_invocation_beats_and_a_stopped_or_dropped_one_goes_silent() {
        let app = app(20);
        let keys = Keys::new(&RequestId::parse("0123456789abcdef0123456789abcdef").unwrap());
        let out = beating(&app, &keys, "task-t", 0, 1_234, async {
            tokio::time::sleep(Duration::from_millis(130)).await;
            Ok::<_, Error>(7)
        })
        .await
        .unwrap();
        assert_eq!(out, 7);
        let beaten = marker(&app, &keys).await.expect("beats were written");
        assert_eq!(
            beaten.at_ms, 1_234,
            "a beat repeats the start time, not its own"
        );
        let beats = beaten.beat;
        assert!(
            beats >= 3,
            "about six beats in 130 ms at 20 ms, got {beats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            marker(&app, &keys).await.unwrap().beat,
            beats,
            "no beat after stop"
        );

        // Dropped mid-work, as an in-process crash drops an invocation: silent at once.
        let work = beating(&app, &keys, "task-t", 0, 1_234, async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Error>(())
        });
        let _ = tokio::time::timeout(Duration::from_millis(70), work).await;
        let seen = marker(&app, &keys).await.unwrap().beat;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            marker(&app, &keys).await.unwrap().beat,
            seen,
            "a dropped beat stops"
        );
    }

    #[tokio::test]
    async fn a_short_invocation_writes_no_beat() {
        let app = app(1_000);
        let keys = Keys::new(&RequestId::parse("0123456789abcdef0123456789abcdef").unwrap());
        beating(&app, &keys, "task-t", 0, 1_234, async {
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
        assert!(marker(&app, &keys).await.is_none());
    }
}
