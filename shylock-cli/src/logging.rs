//! The log: plain text on stderr (colour only at a terminal), filtered by
//! `SHYLOCK_LOG` (`shylock=info,warn` by default). confd's `-log-level`
//! (and `log-level` in confd.toml) sets the level later, after the
//! command line and config file are read, unless `SHYLOCK_LOG` is set.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

const ENV: &str = "SHYLOCK_LOG";

pub fn init() {
    let filter =
        EnvFilter::try_from_env(ENV).unwrap_or_else(|_| EnvFilter::new("shylock=info,warn"));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour for a person at a terminal; plain text for files and journald.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    let _ = FILTER.set(handle);
}

/// confd's log levels: debug, info, warn(ing), error, fatal, panic.
pub fn set_confd_level(level: &str) -> Result<(), String> {
    let ours = match level.to_ascii_lowercase().as_str() {
        "debug" | "trace" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => {
            return Err(format!(
                "log level {level:?}: the levels are debug, info, warn, error, fatal and panic"
            ))
        }
    };
    if std::env::var_os(ENV).is_some() {
        return Ok(());
    }
    if let Some(handle) = FILTER.get() {
        let others = if ours == "error" { "error" } else { "warn" };
        let filter = EnvFilter::new(format!("shylock={ours},{others}"));
        handle
            .reload(filter)
            .map_err(|e| format!("cannot set the log level: {e}"))?;
    }
    Ok(())
}
