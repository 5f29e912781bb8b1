//! `shylock wait PREFIX`: blocks until the instances following a prefix run
//! a revision (or a later one); fails at once naming every instance that
//! rejected it, or at the timeout naming those not there yet.

use std::time::Duration;

use crate::connect::ConnectArgs;
use crate::exit::{msg, Error};
use crate::fleet::FleetArgs;

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,

    /// The revision to wait for [default: the prefix's newest change].
    #[arg(long)]
    pub revision: Option<i64>,

    /// Wait until at least this many instances report it.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub instances: usize,

    /// Give up after this long.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// How often the reports are read again.
const POLL: Duration = Duration::from_millis(100);

pub async fn run(connect: &ConnectArgs, args: WaitArgs) -> Result<(), Error> {
    let client = shylock::Client::connect(connect.options()?).await?;
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut target = args.revision;
    let mut stop = crate::signals::Stop::new()?;
    loop {
        let fleet = args.fleet.read(&client).await?;
        let revision = *target.get_or_insert(fleet.latest);
        let refused: Vec<String> = fleet
            .reports
            .iter()
            .filter(|r| r.applied_revision < revision)
            .filter(|r| r.rejected_revision.is_some_and(|x| x >= revision))
            .map(|r| format!("{}: {}", r.instance, r.rejected.as_deref().unwrap_or("")))
            .collect();
        if !refused.is_empty() {
            return Err(msg(format!(
                "revision {revision} of {} was rejected by {} instance(s): {}",
                args.fleet.prefix,
                refused.len(),
                refused.join("; ")
            )));
        }
        let behind: Vec<&str> = fleet
            .reports
            .iter()
            .filter(|r| r.applied_revision < revision)
            .map(|r| r.instance.as_str())
            .collect();
        let count = fleet.reports.len();
        if behind.is_empty() && count >= args.instances {
            eprintln!("{count} instance(s) run revision {revision} or later");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(msg(format!(
                "timed out after {:?} waiting for revision {revision} of {}: {} of {} \
                 instance(s) there ({} wanted){}",
                args.timeout,
                args.fleet.prefix,
                count - behind.len(),
                count,
                args.instances,
                if behind.is_empty() {
                    String::new()
                } else {
                    format!("; behind: {}", behind.join(", "))
                }
            )));
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = stop.wait() => return Err(msg("interrupted")),
        }
    }
}
