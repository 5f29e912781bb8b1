//! `shylock log PREFIX`: the revisions that changed keys under a prefix,
//! newest first, each with the keys it created, changed or deleted and,
//! where shylock wrote it with an audit record, who, when and why.
//!
//! etcd keeps no index of revisions by key, so the history comes from a
//! watch that replays every event since `--since`. Before etcd 3.4.31 and
//! 3.5.13, a watch that is catching up cannot tell when it has caught up
//! (a progress request is answered before the events it should follow), so
//! the replay covers the whole keyspace and stops at the first event of
//! the last revision: every revision above 1 holds at least one event. The
//! user needs read permission on every key, and the replay costs every
//! write made since `--since`.

use std::collections::BTreeMap;

use etcd_client::{EventType, GetOptions, WatchOptions};
use serde_json::{json, Value};

use crate::connect::ConnectArgs;
use crate::exit::{msg, Error};
use crate::guard::AUDIT_ROOT;
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
}

/// What one revision did to one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Created,
    Changed,
    Deleted,
}

impl Kind {
    fn sign(self) -> char {
        match self {
            Kind::Created => '+',
            Kind::Changed => '~',
            Kind::Deleted => '-',
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Created => "created",
            Kind::Changed => "changed",
            Kind::Deleted => "deleted",
        }
    }
}

/// The changes under the prefix, by revision.
type History = BTreeMap<i64, Vec<(String, Kind)>>;

pub async fn run(connect: &ConnectArgs, args: LogArgs) -> Result<(), Error> {
    let scope = Scope::new(&args.prefix, true)?;
    let client = shylock::Client::connect(connect.options()?).await?;
    let now = client
        .request("read the current revision", |mut etcd| async move {
            etcd.get("\0", Some(GetOptions::new().with_count_only()))
                .await
        })
        .await?
        .header()
        .map_or(0, |h| h.revision());
    let until = args.until.unwrap_or(now).min(now);
    let history = replay(&client, &scope, args.since, until).await?;
    let since = args.since.unwrap_or(1);
    let audits = audit_records(&client, &args.audit_root, since, until).await?;
    let mut out = std::io::stdout().lock();
    let newest = history.iter().rev().take(args.limit.unwrap_or(usize::MAX));
    for (revision, changes) in newest {
        let audit = audits.get(revision);
        let text = if args.json {
            let changes: Vec<Value> = changes
                .iter()
                .map(|(key, kind)| json!({ "key": key, "change": kind.name() }))
                .collect();
            json_line(&json!({ "revision": revision, "changes": changes, "audit": audit }))
        } else {
            let mut text = format!("revision {revision}");
            if let Some(audit) = audit {
                text.push_str(&describe_audit(audit));
            }
            text.push('\n');
            for (key, kind) in changes {
                text.push_str(&format!("  {} {key}\n", kind.sign()));
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

/// Every change under the scope from `since` (the oldest kept, if none)
/// through `until`.
async fn replay(
    client: &shylock::Client,
    scope: &Scope,
    since: Option<i64>,
    until: i64,
) -> Result<History, Error> {
    let mut start = since.unwrap_or(1).max(1);
    loop {
        // Revision 1 is an empty store's: no revision before 2 has events.
        if until < 2 || start > until {
            return Ok(History::new());
        }
        match replay_from(client, scope, start, until).await? {
            Replay::Done(history) => return Ok(history),
            Replay::Compacted(oldest) if since.is_none() => start = oldest,
            Replay::Compacted(oldest) => {
                return Err(msg(format!(
                    "revision {start} was compacted away: etcd keeps the history since its \
                     last compaction (revision {oldest}); the oldest revision to ask for is {oldest}"
                )))
            }
        }
    }
}

enum Replay {
    Done(History),
    /// The start is older than this, the oldest revision etcd keeps.
    Compacted(i64),
}

async fn replay_from(
    client: &shylock::Client,
    scope: &Scope,
    start: i64,
    until: i64,
) -> Result<Replay, Error> {
    let scope = scope.clone();
    let replay = client
        .request(
            &format!("replay the history since revision {start}"),
            |mut etcd| {
                let scope = scope.clone();
                async move {
                    let options = WatchOptions::new()
                        .with_all_keys()
                        .with_start_revision(start);
                    let mut stream = etcd.watch("\0", Some(options)).await?;
                    let mut history = History::new();
                    while let Some(response) = stream.message().await? {
                        if response.compact_revision() > 0 {
                            return Ok(Ok(Replay::Compacted(response.compact_revision())));
                        }
                        if response.canceled() {
                            return Ok(Err(response.cancel_reason().to_owned()));
                        }
                        let mut last = 0;
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            last = last.max(kv.mod_revision());
                            if kv.mod_revision() > until || !scope.covers(kv.key()) {
                                continue;
                            }
                            let kind = match event.event_type() {
                                EventType::Delete => Kind::Deleted,
                                EventType::Put if kv.version() == 1 => Kind::Created,
                                EventType::Put => Kind::Changed,
                            };
                            let key = String::from_utf8_lossy(kv.key()).into_owned();
                            history
                                .entry(kv.mod_revision())
                                .or_default()
                                .push((key, kind));
                        }
                        // A revision's events come in one answer: at `until`,
                        // the history is whole.
                        if last >= until {
                            return Ok(Ok(Replay::Done(history)));
                        }
                    }
                    Ok(Err("the watch ended".to_owned()))
                }
            },
        )
        .await?;
    replay.map_err(|reason| {
        let permission = reason.contains("permission denied");
        msg(if permission {
            format!(
                "etcd refused the replay ({reason}): `shylock log` reads the history of every \
                 key (etcd before 3.4.31/3.5.13 cannot end a replay of one prefix), so the \
                 user needs read permission on all keys"
            )
        } else {
            format!("the replay of the history failed: {reason}")
        })
    })
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
