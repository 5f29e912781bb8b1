//! The daemons' metrics (`--metrics-addr`): served as Prometheus text by
//! metrics-exporter-prometheus, beside the library's `shylock_config_*`.
//! Every name is in the README.

use std::net::SocketAddr;
use std::time::SystemTime;

use metrics::{counter, gauge};
use shylock::TreeEvent;

use crate::exit::{msg, Error};

/// The metrics option of every command.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Metrics")]
pub struct MetricsArgs {
    /// Serve metrics as Prometheus text on this address, such as
    /// 127.0.0.1:9464 (any path answers) [env: SHYLOCK_METRICS_ADDR]
    #[arg(long, global = true, env = "SHYLOCK_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Starts the listener, if asked for. Needs the runtime.
    pub fn serve(&self) -> Result<(), Error> {
        let Some(addr) = self.metrics_addr else {
            return Ok(());
        };
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| msg(format!("cannot serve metrics on {addr}: {e}")))?;
        Ok(())
    }
}

/// A watch event of a daemon: the revision it is at
/// (`shylock_watch_revision`), when etcd last answered
/// (`shylock_watch_last_event_timestamp_seconds`), and each broken stream
/// (`shylock_watch_reconnects_total`).
pub fn watched(event: &TreeEvent<'_>) {
    match event {
        TreeEvent::Changed { revision, .. } | TreeEvent::Replaced { revision, .. } => {
            gauge!("shylock_watch_revision").set(*revision as f64);
            answered(SystemTime::now());
        }
        TreeEvent::Alive(at) => answered(*at),
        TreeEvent::Connection(Some(_)) => counter!("shylock_watch_reconnects_total").increment(1),
        _ => {}
    }
}

/// etcd last answered on the daemon's watch stream at `at`: staleness is
/// `time() - shylock_watch_last_event_timestamp_seconds`.
fn answered(at: SystemTime) {
    let seconds = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    gauge!("shylock_watch_last_event_timestamp_seconds").set(seconds);
}

/// One render of a resource (`shylock_renders_total{resource,result}`).
pub fn rendered(resource: &str, ok: bool) {
    counter!("shylock_renders_total", "resource" => resource.to_owned(), "result" => result(ok))
        .increment(1);
}

/// One check, reload or exec command (`shylock_commands_total{kind,result}`).
pub fn command(kind: &str, ok: bool) {
    counter!("shylock_commands_total", "kind" => kind.to_owned(), "result" => result(ok))
        .increment(1);
}

/// One file written by export or sync (`shylock_writes_total{command,result}`).
pub fn written(command: &'static str, ok: bool) {
    counter!("shylock_writes_total", "command" => command, "result" => result(ok)).increment(1);
}

fn result(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "failed"
    }
}
