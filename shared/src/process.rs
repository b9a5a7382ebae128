//! This process's memory, as the workers, the reducer and the benchmarks report it
//! (Linux's `/proc/self`; 0 elsewhere).

/// Resets this process's peak resident memory to its current size, so that a later
/// [`peak_rss_bytes`] measures one phase (Linux: `/proc/self/clear_refs`; best effort).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory of this process (VmHWM), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    proc_status_bytes("VmHWM:")
}

/// Resident memory of this process now (VmRSS), 0 where unknown.
pub fn rss_bytes() -> u64 {
    proc_status_bytes("VmRSS:")
}

fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
