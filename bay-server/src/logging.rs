//! Structured logging with tracing: `LOG_LEVEL` (or `DEBUG`) and `LOG_FORMAT=text|json`.

use bay_core::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber at `LOG_LEVEL`. HTTP internals stay at `warn` and bollard at
/// `info` (its debug output contains request bodies, with the ships' tokens).
pub fn init(config: &Config) {
    let filter = EnvFilter::new(format!(
        "{},hyper=warn,h2=warn,bollard=info",
        config.log_level
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
