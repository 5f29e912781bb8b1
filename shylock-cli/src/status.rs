//! `shylock status PREFIX`: every instance following a prefix (from their
//! reports), the revision each runs, how far behind the prefix's newest
//! change it is, and what it rejected and why. Exits 1 when any instance
//! rejects or lags, so a deployment can gate on it.

use std::io::Write;

use serde_json::json;

use crate::connect::ConnectArgs;
use crate::exit::{msg, Error};
use crate::fleet::FleetArgs;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,

    /// Print JSON: {"prefix", "revision" (newest change), "instances": [...]}.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(connect: &ConnectArgs, args: StatusArgs) -> Result<(), Error> {
    let client = shylock::Client::connect(connect.options()?).await?;
    let fleet = args.fleet.read(&client).await?;
    let behind = |applied: i64| (fleet.latest > applied).then(|| fleet.latest - applied);
    let mut out = std::io::stdout().lock();
    if args.json {
        let instances: Vec<_> = fleet
            .reports
            .iter()
            .map(|r| {
                let mut value = serde_json::to_value(r).expect("a report serializes");
                value["behind"] = json!(behind(r.applied_revision).unwrap_or(0));
                value["rejecting"] = json!(r.is_rejecting());
                value
            })
            .collect();
        let document = json!({
            "prefix": args.fleet.prefix,
            "revision": fleet.latest,
            "instances": instances,
        });
        writeln!(out, "{document}")?;
    } else {
        writeln!(
            out,
            "{:<24} {:<22} {:>9} {:>7} {:>9}  {:<20}  REASON",
            "INSTANCE", "PROGRAM", "APPLIED", "BEHIND", "REJECTED", "LAST CHANGE"
        )?;
        for r in &fleet.reports {
            let rejected = r
                .rejected_revision
                .filter(|_| r.is_rejecting())
                .map_or("-".to_owned(), |v| v.to_string());
            let reason = r
                .rejected
                .as_deref()
                .filter(|_| r.is_rejecting())
                .unwrap_or("");
            writeln!(
                out,
                "{:<24} {:<22} {:>9} {:>7} {:>9}  {:<20}  {reason}",
                r.instance,
                format!("{} {}", r.program, r.version).trim(),
                r.applied_revision,
                behind(r.applied_revision).map_or("-".to_owned(), |b| b.to_string()),
                rejected,
                r.updated,
            )?;
        }
    }
    drop(out);
    if fleet.reports.is_empty() {
        return Err(msg(format!(
            "no instance reports on {} (under {}); are its consumers running with reports on?",
            args.fleet.prefix,
            shylock::report::report_range(&args.fleet.report_root, &args.fleet.prefix)
        )));
    }
    let rejecting = fleet.reports.iter().filter(|r| r.is_rejecting()).count();
    let lagging = fleet
        .reports
        .iter()
        .filter(|r| behind(r.applied_revision).is_some())
        .count();
    match (rejecting, lagging) {
        (0, 0) => Ok(()),
        _ => Err(msg(format!(
            "{rejecting} instance(s) rejecting, {lagging} behind revision {} of {}",
            fleet.latest, args.fleet.prefix
        ))),
    }
}
