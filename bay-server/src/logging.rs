//! Structured logging with tracing: `LOG_LEVEL` (or `DEBUG`) and `LOG_FORMAT=text|json`.

use bay_core::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber at `LOG_LEVEL` (HTTP client internals stay at `warn`).
pub fn init(config: &Config) {
    let filter = EnvFilter::new(format!("{},hyper=warn,h2=warn", config.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
