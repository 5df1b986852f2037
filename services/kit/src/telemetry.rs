//! Logging set-up, once per process: readable text by default, one JSON object per line when
//! `SWARM_LOG_FORMAT=json`, filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;

/// Installs the process-wide log subscriber. Calling it again is harmless (the first wins), so
/// `swarm up` and tests may call it for every service they start.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SWARM_LOG_FORMAT").is_ok_and(|format| format == "json");
    let installed = if json {
        fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .try_init()
    } else {
        fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init()
    };
    // An error here only means a subscriber is already installed, which is what we want.
    drop(installed);
}
