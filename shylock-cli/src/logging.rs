//! The log, on stderr: plain text (colour only at a terminal) or one JSON
//! object per line. The level comes from `--log-level`, else `SHYLOCK_LOG`
//! (both RUST_LOG syntax, or one of confd's level names), else confd's
//! `log-level` in confd.toml (read later, by `render`), else
//! `shylock=info,warn`.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Whether the level was given on the command line or in the environment
/// (then confd.toml's `log-level` does not change it).
static CHOSEN: OnceLock<bool> = OnceLock::new();

const ENV: &str = "SHYLOCK_LOG";
const FORMAT_ENV: &str = "SHYLOCK_LOG_FORMAT";
const DEFAULT: &str = "shylock=info,warn";

/// The log options every command takes.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// What to log: debug, info, warn or error (confd's names; fatal and
    /// panic mean error), or RUST_LOG directives such as
    /// `shylock=debug,fuser=info` [env: SHYLOCK_LOG] [default: info]
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Log lines as plain text, or as one JSON object per line (fields
    /// timestamp, level, target, fields.message and the event's fields)
    /// [env: SHYLOCK_LOG_FORMAT] [default: text]
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the log. An unknown level or format is an error, before
/// anything else runs.
pub fn init(args: &LogArgs) -> Result<(), String> {
    let from_env = std::env::var(ENV).ok().filter(|v| !v.is_empty());
    let chosen = args.log_level.clone().or(from_env);
    let filter = match &chosen {
        Some(level) => filter(level)?,
        None => EnvFilter::new(DEFAULT),
    };
    let format = match args.log_format {
        Some(format) => format,
        None => match std::env::var(FORMAT_ENV).ok().as_deref() {
            None | Some("") | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(format!(
                    "{FORMAT_ENV}={other:?}: the log formats are text and json"
                ))
            }
        },
    };
    let (filter, handle) = reload::Layer::new(filter);
    // Colour for a person at a terminal; plain text for files and journald.
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .init();
    let _ = FILTER.set(handle);
    let _ = CHOSEN.set(chosen.is_some());
    Ok(())
}

/// A level name (confd's, or RUST_LOG's) or RUST_LOG directives.
fn filter(level: &str) -> Result<EnvFilter, String> {
    if let Some(ours) = confd_level(level) {
        let others = if ours == "error" { "error" } else { "warn" };
        return Ok(EnvFilter::new(format!("shylock={ours},{others}")));
    }
    // A bare word is a target in RUST_LOG's syntax: `debgu` would log
    // everything of a crate named debgu and nothing of ours.
    if !level.contains(['=', ',', ':', '[']) {
        return Err(format!(
            "log level {level:?}: the levels are trace, debug, info, warn and error, \
             or RUST_LOG directives such as shylock=debug"
        ));
    }
    EnvFilter::try_new(level).map_err(|e| {
        format!(
            "log level {level:?}: {e} (the levels are debug, info, warn and error, \
             or RUST_LOG directives such as shylock=debug)"
        )
    })
}

/// confd's log levels: debug, info, warn(ing), error, fatal, panic (and
/// trace, as RUST_LOG spells the most detailed).
fn confd_level(level: &str) -> Option<&'static str> {
    Some(match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => return None,
    })
}

/// confd.toml's `log-level`: applies unless `--log-level` or `SHYLOCK_LOG`
/// chose one.
pub fn set_confd_level(level: &str) -> Result<(), String> {
    if confd_level(level).is_none() {
        return Err(format!(
            "log level {level:?}: the levels are debug, info, warn, error, fatal and panic"
        ));
    }
    if CHOSEN.get().copied().unwrap_or(false) {
        return Ok(());
    }
    if let Some(handle) = FILTER.get() {
        handle
            .reload(filter(level)?)
            .map_err(|e| format!("cannot set the log level: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_confds_names_or_rust_log_directives() {
        assert_eq!(filter("warning").unwrap().to_string(), "shylock=warn,warn");
        assert_eq!(filter("FATAL").unwrap().to_string(), "shylock=error,error");
        assert!(filter("shylock=debug,fuser=info").is_ok());
        let error = filter("shylock=loud").unwrap_err();
        assert!(error.contains("shylock=loud"), "{error}");
        let error = filter("debgu").unwrap_err();
        assert!(error.contains("debgu"), "{error}");
    }
}
