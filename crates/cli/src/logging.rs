//! The binary's tracing subscriber: the library's `tracing` events (retries,
//! credential warnings, FROM auto-pulls, limits not applied) on stderr.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// `--log-level`.
#[derive(Clone, Copy, ValueEnum)]
pub enum Level {
    /// Only errors
    Error,
    /// Errors and warnings (the default)
    Warn,
    /// What the library does at each step
    Info,
    /// Details for bug reports
    Debug,
    /// Everything
    Trace,
}

impl Level {
    fn directive(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

/// Install the subscriber: `RUST_LOG` when set (the tracing habit), else
/// `--log-level`. Messages go to stderr, coloured only on a terminal.
pub fn install(level: Level) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).unwrap_or_else(|_| EnvFilter::new(level.directive()))
        }
        _ => EnvFilter::new(level.directive()),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A second install would fail only if one were installed already; the
    // binary installs exactly one, so the result carries nothing to act on.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .without_time()
        .try_init();
}
