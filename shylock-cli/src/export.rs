//! `shylock export`: one key's raw value, or a prefix as a document, in a
//! file that is replaced atomically; with `--watch`, kept current.

use std::path::PathBuf;
use std::time::Duration;

use crate::atomic::Target;
use crate::command::{self, parse_mode};
use crate::connect::ConnectArgs;
use crate::document::{self, Format};
use crate::exit::{msg, Error};
use crate::live_keys::{relative, Keys, LiveKeys, Retry, Wake};

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The key to export (raw), or the prefix to export as a document.
    #[arg(value_name = "KEY")]
    pub source: String,

    /// The file to write. It is replaced atomically, and only when its
    /// content or mode would change.
    #[arg(long)]
    pub dest: PathBuf,

    /// Output format [default: raw for a key, json for a prefix].
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Keep running and rewrite the file whenever the keys change.
    #[arg(long)]
    pub watch: bool,

    /// A command (run with sh -c) after each write, such as a reload.
    #[arg(long)]
    pub exec: Option<String>,

    /// Time limit for --exec; the command is killed after it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub exec_timeout: Duration,

    /// Mode of the written file, in octal [default: an existing file's own
    /// mode, 0644 for a new file].
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<u32>,

    #[command(flatten)]
    pub retry: RetryArgs,

    #[command(flatten)]
    pub report: crate::reporting::ReportArgs,
}

/// How `--watch` retries a write that failed (a full disk, a permission).
#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    /// With --watch, first delay before retrying a failed write (doubling
    /// each time, until it succeeds or the keys change).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_min: Duration,

    /// With --watch, longest delay between retries.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub retry_max: Duration,
}

impl RetryArgs {
    pub fn retry(&self) -> Retry {
        Retry::new(self.retry_min, self.retry_max)
    }
}

/// The file's content for the keys as they are now.
fn content(keys: &Keys, base: &str, format: Option<Format>) -> Result<Vec<u8>, Error> {
    let children = relative(keys, base);
    let format = format.unwrap_or(if children.is_empty() {
        Format::Raw
    } else {
        Format::Json
    });
    match format {
        Format::Raw => keys
            .get(base)
            .cloned()
            .ok_or_else(|| msg(format!("key {base} does not exist; nothing was written"))),
        _ if children.is_empty() => Err(msg(format!("no keys under {base}/; nothing was written"))),
        format => document::render(&children, format),
    }
}

pub async fn run(connect: &ConnectArgs, args: ExportArgs) -> Result<(), Error> {
    let client = shylock::Client::connect(connect.options()?).await?;
    let base = args.source.trim_end_matches('/').to_owned();
    let mut live = LiveKeys::follow(&client, &base, true).await?;
    let target = Target {
        mode: args.mode,
        ..Target::new(&args.dest)
    };
    let write =
        |keys: &Keys| -> Result<bool, Error> { target.write(&content(keys, &base, args.format)?) };
    if !args.watch {
        if write(&live.snapshot())? {
            tracing::info!(dest = %args.dest.display(), "written");
            exec(&args).await?;
        }
        return Ok(());
    }
    let reporter = args.report.start(&client, "export")?;
    let report = crate::reporting::prefix_report(reporter.as_ref(), &args.source);
    let mut stop = crate::signals::Stop::new()?;
    let mut retry = args.retry.retry();
    let mut wake = Wake::Changed;
    while wake != Wake::Stop {
        if wake == Wake::Changed {
            // New keys: written now, with a fresh backoff.
            retry.succeeded();
        }
        let (keys, revision) = live.snapshot_at();
        let written = write(&keys);
        drop(keys);
        crate::telemetry::written("export", written.is_ok());
        crate::reporting::outcome(report.as_ref(), revision, &written);
        match written {
            Ok(changed) => {
                retry.succeeded();
                if changed {
                    tracing::info!(dest = %args.dest.display(), "written");
                    if let Err(error) = exec(&args).await {
                        tracing::error!(%error, "--exec failed");
                    }
                }
            }
            // Keep the last good file: never write an empty or broken one.
            Err(error) => {
                let retry_in = retry.failed();
                tracing::error!(%error, ?retry_in, "not written; the file keeps its last content");
            }
        }
        crate::notify::ready(&format!("keeping {} current", args.dest.display()));
        wake = live.next_wake(&mut stop, &retry).await?;
    }
    crate::reporting::stop(reporter.as_ref()).await;
    Ok(())
}

async fn exec(args: &ExportArgs) -> Result<(), Error> {
    match &args.exec {
        Some(script) => command::run("exec", script, args.exec_timeout).await,
        None => Ok(()),
    }
}
