//! Phase timings for profiling, printed to stderr when the environment has
//! `CAIRN_TRACE_TIMINGS=1`; otherwise a span costs one cached flag check.
//!
//! Each finished span prints one line: `cairn-timing: <pid> <name> <ms> ms`.
//! The pid tells apart the caller and its user-namespace helpers, whose
//! stderr reaches the same terminal. `docs/performance.md` explains how
//! the lines add up to the phases of a commit, a push and a pull.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Is `CAIRN_TRACE_TIMINGS` set to something other than `0` or empty?
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var_os("CAIRN_TRACE_TIMINGS").is_some_and(|v| !v.is_empty() && v != "0")
    })
}

/// A running phase; prints its wall time when dropped (if tracing is on).
pub struct Span {
    name: &'static str,
    start: Option<Instant>,
}

/// Start timing phase `name`.
pub fn span(name: &'static str) -> Span {
    Span {
        name,
        start: enabled().then(Instant::now),
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            report(self.name, start.elapsed());
        }
    }
}

/// Print one measured duration (for time summed over many calls).
pub fn report(name: &str, took: Duration) {
    if enabled() {
        eprintln!(
            "cairn-timing: {} {name} {:.1} ms",
            std::process::id(),
            took.as_secs_f64() * 1000.0
        );
    }
}
