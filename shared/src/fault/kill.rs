//! The whole process killed at a chosen point of a request's life (`CELLMATRIX_KILL_AT`),
//! by SIGKILL, so that nothing runs after it: no destructor, no flush, no last write.
//! The restart tests kill `cellmatrix serve` this way and start it again on the same
//! store, to show that a request survives the death of every invocation in flight.

use std::sync::OnceLock;

/// The environment variable naming the point ([`KillPoint::name`]); unset, nothing dies.
pub const KILL_AT_VAR: &str = "CELLMATRIX_KILL_AT";

/// Where in a request's life the process dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillPoint {
    /// The driver committed `request.json` and has started nothing yet.
    Planning,
    /// A worker wrote its done marker: the others are running or queued.
    Workers,
    /// A consolidation shard wrote its range of the output, not its marker.
    Consolidation,
    /// The conversion wrote the converted files, not `converted.json`.
    Conversion,
}

impl KillPoint {
    /// Every point, in a request's order.
    pub const ALL: [KillPoint; 4] = [
        KillPoint::Planning,
        KillPoint::Workers,
        KillPoint::Consolidation,
        KillPoint::Conversion,
    ];

    /// Its name in [`KILL_AT_VAR`].
    pub fn name(self) -> &'static str {
        match self {
            KillPoint::Planning => "planning",
            KillPoint::Workers => "workers",
            KillPoint::Consolidation => "consolidation",
            KillPoint::Conversion => "conversion",
        }
    }
}

/// Kills this process with SIGKILL if [`KILL_AT_VAR`] names `point`; returns otherwise.
pub fn kill_point(point: KillPoint) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(KILL_AT_VAR).ok());
    if at.as_deref() != Some(point.name()) {
        return;
    }
    eprintln!("{KILL_AT_VAR}={}: killing this process", point.name());
    #[cfg(unix)]
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    // Not reached on Unix: SIGKILL cannot be caught.
    std::process::abort();
}
