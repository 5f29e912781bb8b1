//! `shylock log PREFIX`: the revisions that changed keys under a prefix,
//! newest first, each with the keys it created, changed or deleted and,
//! where shylock wrote it with an audit record, who, when and why. The
//! history is etcd's (a replay: see history.rs), and with `--journal` also
//! what a `shylock journal` kept of revisions etcd compacted away.

use std::collections::BTreeMap;

use etcd_client::GetOptions;
use serde_json::{json, Value};

use crate::connect::ConnectArgs;
use crate::exit::{msg, Error};
use crate::guard::AUDIT_ROOT;
use crate::history::{current_revision, replay, History, Replay};
use crate::kv::{emit, json_line, Scope};

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// The prefix (a path: the key and the keys under PREFIX/).
    pub prefix: String,

    /// The oldest revision to show [default: the oldest etcd still has,
    /// its last compaction].
    #[arg(long, value_name = "REV")]
    pub since: Option<i64>,

    /// The newest revision to show [default: now].
    #[arg(long, value_name = "REV")]
    pub until: Option<i64>,

    /// Show at most this many revisions (the newest).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// One JSON object per revision: {"revision", "changes": [{"key",
    /// "change": "created"|"changed"|"deleted"}], "audit"}.
    #[arg(long)]
    pub json: bool,

    /// Where audit records are read from.
    #[arg(long, value_name = "PREFIX", default_value = AUDIT_ROOT)]
    pub audit_root: String,

    /// Also the records a `shylock journal --into JOURNAL` kept: revisions
    /// etcd compacted away come from there.
    #[arg(long, value_name = "JOURNAL")]
    pub journal: Option<String>,
}

pub async fn run(connect: &ConnectArgs, args: LogArgs) -> Result<(), Error> {
    let scope = Scope::new(&args.prefix, true)?;
    let client = shylock::Client::connect(connect.options()?).await?;
    let until = match args.until {
        Some(until) => until.min(current_revision(&client, &scope).await?),
        None => current_revision(&client, &scope).await?,
    };
    let since = args.since.unwrap_or(1);
    let mut start = since;
    let replayed = loop {
        match replay(&client, &scope, start, until).await? {
            Replay::Done(history) => break history,
            Replay::Compacted(oldest) if args.since.is_none() || args.journal.is_some() => {
                start = oldest;
            }
            Replay::Compacted(oldest) => {
                return Err(msg(format!(
                    "revision {since} was compacted away: etcd keeps the history since its \
                     last compaction (revision {oldest}); the oldest revision to ask for is \
                     {oldest}, or keep a journal (`shylock journal`) and give --journal"
                )))
            }
        }
    };
    // The journal for what etcd no longer has; etcd's own history wins
    // where both have a revision.
    let mut history = match &args.journal {
        Some(journal) => crate::journal::read(&client, journal, &scope, since, until).await?,
        None => History::new(),
    };
    history.extend(replayed);
    let audits = audit_records(&client, &args.audit_root, since, until).await?;
    let mut out = std::io::stdout().lock();
    let newest = history.iter().rev().take(args.limit.unwrap_or(usize::MAX));
    for (revision, changes) in newest {
        let audit = audits.get(revision);
        let text = if args.json {
            let changes: Vec<Value> = changes
                .iter()
                .map(|e| json!({ "key": e.key, "change": e.kind.name() }))
                .collect();
            json_line(&json!({ "revision": revision, "changes": changes, "audit": audit }))
        } else {
            let mut text = format!("revision {revision}");
            if let Some(audit) = audit {
                text.push_str(&describe_audit(audit));
            }
            text.push('\n');
            for event in changes {
                text.push_str(&format!("  {} {}\n", event.kind.sign(), event.key));
            }
            text.into_bytes()
        };
        if !emit(&mut out, &text)? {
            break;
        }
    }
    Ok(())
}

/// ` by etcd:alice at 2026-… (put): the reason`.
fn describe_audit(audit: &Value) -> String {
    let field = |name: &str| audit.get(name).and_then(Value::as_str).unwrap_or("?");
    let mut text = format!(
        " by {} at {} ({})",
        field("user"),
        field("time"),
        field("command")
    );
    if let Some(reason) = audit.get("reason").and_then(Value::as_str) {
        text.push_str(": ");
        text.push_str(reason);
    }
    text
}

/// The audit records written from `since` through `until`, by the revision
/// of the change each went with (its create revision). A user who may not
/// read them sees the log without them.
async fn audit_records(
    client: &shylock::Client,
    root: &str,
    since: i64,
    until: i64,
) -> Result<BTreeMap<i64, Value>, Error> {
    let range = format!("{}/", root.trim_end_matches('/'));
    let options = GetOptions::new()
        .with_prefix()
        .with_min_create_revision(since)
        .with_max_create_revision(until);
    let response = match client
        .request(
            &format!("read the audit records under {range}"),
            |mut etcd| {
                let (range, options) = (range.clone(), options.clone());
                async move { etcd.get(range, Some(options)).await }
            },
        )
        .await
    {
        Ok(response) => response,
        Err(shylock::Error::Etcd {
            source: etcd_client::Error::GRpcStatus(status),
            ..
        }) if status.code() as i32 == 7 => {
            tracing::warn!(root = %range, "may not read the audit records: the log shows none");
            return Ok(BTreeMap::new());
        }
        Err(error) => return Err(error.into()),
    };
    Ok(response
        .kvs()
        .iter()
        .filter_map(|kv| {
            Some((
                kv.create_revision(),
                serde_json::from_slice(kv.value()).ok()?,
            ))
        })
        .collect())
}
