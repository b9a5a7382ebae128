//! A tiny task counter: `idle()` resolves when every entered guard is dropped. Written
//! here because tokio-util's TaskTracker would be a dependency for twenty lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct TaskCounter(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    running: AtomicUsize,
    notify: Notify,
}

#[derive(Debug)]
pub(crate) struct Guard(Arc<Inner>);

impl TaskCounter {
    pub(crate) fn enter(&self) -> Guard {
        self.0.running.fetch_add(1, Ordering::SeqCst);
        Guard(self.0.clone())
    }

    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.0.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.notify.notify_waiters();
        }
    }
}
