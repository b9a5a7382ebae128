//! A function's init duration: from its `main` to being ready for its first event
//! (settings read, clients built), the part of a cold start that is ours; Lambda reports
//! it as Init Duration. Logged once per process (`init_ms`), so the figure is in every
//! function's logs, on Lambda and under `cargo lambda watch` alike, where the time to
//! the first event would also count the wait for one.

use std::time::{Duration, Instant};

/// Started at the top of `main`.
#[derive(Debug)]
pub struct ColdStart {
    started: Instant,
}

impl ColdStart {
    /// Starts the clock.
    pub fn begin() -> Self {
        ColdStart {
            started: Instant::now(),
        }
    }

    /// Call once the function is ready to take events: logs and returns the time so far.
    pub fn ready(self, function: &str) -> Duration {
        let elapsed = self.started.elapsed();
        tracing::info!(function, init_ms = elapsed.as_secs_f64() * 1e3, "ready");
        elapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_counts_from_begin() {
        let cold = ColdStart::begin();
        std::thread::sleep(Duration::from_millis(5));
        assert!(cold.ready("test") >= Duration::from_millis(5));
    }
}
