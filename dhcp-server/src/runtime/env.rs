//! What a server gets from the process that runs it, instead of process globals: its
//! clock, its stop token, the configuration file a reload reads, and how a log level is
//! applied. A test gives each in-process server its own.

use std::path::PathBuf;
use std::sync::Arc;

use super::clock::Clock;
use super::stop::Stop;

/// Applies a `log-level` value (none: the default), or says why it is not one.
pub type LogLevel = Arc<dyn Fn(Option<&str>) -> Result<(), String> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Env {
    pub clock: Clock,
    pub stop: Stop,
    /// The file a reload (control socket, SIGHUP) reads; none for a server started
    /// from the command line.
    pub config_file: Option<PathBuf>,
    /// Applies the file's `log-level` at each reload; none when `RUST_LOG` decides.
    pub log_level: Option<LogLevel>,
}
