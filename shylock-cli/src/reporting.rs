//! `--report`: a daemon publishes which revision it applied and which it
//! rejected (shylock::report), for `shylock status` and `shylock wait`.

use std::time::Duration;

use shylock::{ReportOptions, Reporter};

use crate::exit::{usage, Error};

/// The reporting options of the daemons.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Reporting")]
pub struct ReportArgs {
    /// Publish this instance's applied and rejected revisions under
    /// --report-root, bound to a lease (see `shylock status`).
    #[arg(long)]
    pub report: bool,

    /// The instance's name in reports [default: HOST-PID].
    #[arg(long, value_name = "NAME")]
    pub report_instance: Option<String>,

    /// A label in reports, as KEY=VALUE (repeatable).
    #[arg(long = "report-label", value_name = "KEY=VALUE")]
    pub report_labels: Vec<String>,

    /// Where reports are written.
    #[arg(long, default_value = shylock::report::DEFAULT_ROOT, value_name = "ROOT")]
    pub report_root: String,

    /// A dead instance's report disappears this long after it stopped.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub report_ttl: Duration,
}

impl ReportArgs {
    /// The reporter, when `--report` asks for one.
    pub fn start(
        &self,
        client: &shylock::Client,
        command: &str,
    ) -> Result<Option<Reporter>, Error> {
        if !self.report {
            return Ok(None);
        }
        let mut options = ReportOptions::new()
            .with_root(&self.report_root)
            .with_program(format!("shylock {command}"), env!("CARGO_PKG_VERSION"))
            .with_ttl(self.report_ttl);
        if let Some(instance) = &self.report_instance {
            options = options.with_instance(instance);
        }
        for label in &self.report_labels {
            let (key, value) = parse_label(label)?;
            options = options.with_label(key, value);
        }
        Ok(Some(Reporter::start(client, options)))
    }
}

/// A clean stop: the daemon's reports leave etcd now, not at the lease's
/// expiry.
pub async fn stop(reporter: Option<&Reporter>) {
    if let Some(reporter) = reporter {
        reporter.shutdown().await;
    }
}

/// The report of a daemon that follows one prefix (mount, export, sync).
pub fn prefix_report(reporter: Option<&Reporter>, prefix: &str) -> Option<shylock::Report> {
    let dependency = shylock::Dependency {
        key: format!("{}/", prefix.trim_end_matches('/')),
        kind: shylock::DependencyKind::Prefix,
        secret: false,
        required: false,
    };
    reporter.map(|r| r.report(prefix, &[dependency]))
}

/// A write of the keys at `revision` worked (applied) or failed (rejected,
/// with why).
pub fn outcome<T>(report: Option<&shylock::Report>, revision: i64, result: &Result<T, Error>) {
    match (report, result) {
        (Some(report), Ok(_)) => report.applied(revision),
        (Some(report), Err(error)) => report.rejected(revision, &error.to_string()),
        (None, _) => {}
    }
}

/// `KEY=VALUE`.
pub fn parse_label(label: &str) -> Result<(&str, &str), Error> {
    label
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| usage(format!("label {label:?}: expected KEY=VALUE")))
}
