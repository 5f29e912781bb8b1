//! `shylock journal PREFIX --into JOURNAL`: a daemon that keeps a record of
//! every change under a prefix in etcd itself, one key per revision
//! (`JOURNAL/<revision, 20 digits>`), so `shylock log --journal` shows
//! history that etcd's compaction removed. Kept to `--keep` records and
//! `--max-age`.
//!
//! A record holds the revision, the time it was journaled, and each key's
//! change with its new value. Changes made while no journal ran are
//! replayed from etcd's history at start; if etcd compacted them away, a
//! record with `gap_since` says which revisions are missing. A record is
//! written only if absent, so two journals of one prefix agree.

use std::time::{Duration, SystemTime};

use base64::Engine;
use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp,
};
use serde_json::{json, Value};

use crate::connect::ConnectArgs;
use crate::exit::{msg, Error};
use crate::feed::Feed;
use crate::history::{replay, Event, History, Kind, Replay};
use crate::kv::{bytes_json, Scope};

/// The most a record's values may take: etcd refuses larger requests
/// (1.5 MiB by default); a bigger record keeps its keys and drops values.
const MAX_RECORD: usize = 1024 * 1024;

/// How many records are written between two prunings.
const PRUNE_EVERY: u64 = 64;

#[derive(Debug, clap::Args)]
pub struct JournalArgs {
    /// The prefix to journal (a path: the key and the keys under PREFIX/).
    pub prefix: String,

    /// Where the records go (outside PREFIX).
    #[arg(long, value_name = "JOURNAL")]
    pub into: String,

    /// Keep at most this many records (the newest).
    #[arg(long, default_value_t = 100_000)]
    pub keep: u64,

    /// Delete records older than this.
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    pub max_age: Duration,
}

pub async fn run(connect: &ConnectArgs, args: JournalArgs) -> Result<(), Error> {
    let scope = Scope::new(&args.prefix, true)?;
    let root = args.into.trim_end_matches('/').to_owned();
    if scope.covers(&root) || scope.covers(format!("{root}/")) {
        return Err(crate::exit::usage(
            "the journal must not lie under the prefix it journals",
        ));
    }
    let client = shylock::Client::connect(connect.options()?).await?;
    let journal = Journal {
        client: client.clone(),
        root,
        keep: args.keep,
        max_age: args.max_age,
    };
    let mut feed = Feed::follow(&client, &scope).await?;
    journal.catch_up(&scope, feed.revision).await?;
    journal.prune().await?;
    // Signals are caught before readiness is told: a stop sent as soon as
    // the journal is ready ends it cleanly.
    let mut stop = crate::signals::Stop::new()?;
    crate::notify::ready(&format!("journaling {} into {}", args.prefix, journal.root));
    tracing::info!(revision = feed.revision, prefix = %args.prefix, into = %journal.root, "journaling");
    let mut written = 0u64;
    loop {
        let batch = tokio::select! {
            batch = feed.next() => batch.ok_or_else(|| msg("the watch ended"))?,
            () = stop.wait() => return Ok(()),
        };
        // A transaction's changes share its revision; a resync's, the read's.
        let mut by_revision = History::new();
        for change in batch.changes {
            let kind = match (&change.value, change.existed) {
                (None, _) => Kind::Deleted,
                (Some(_), false) => Kind::Created,
                (Some(_), true) => Kind::Changed,
            };
            by_revision.entry(change.revision).or_default().push(Event {
                key: change.key,
                kind,
                value: change.value,
            });
        }
        for (revision, events) in by_revision {
            let extra = batch.resync.then_some(("resync", json!(true)));
            journal.write(revision, &events, extra).await?;
            written += 1;
            if written.is_multiple_of(PRUNE_EVERY) {
                journal.prune().await?;
            }
        }
    }
}

struct Journal {
    client: shylock::Client,
    root: String,
    keep: u64,
    max_age: Duration,
}

impl Journal {
    fn key(&self, revision: i64) -> String {
        format!("{}/{revision:020}", self.root)
    }

    /// Writes one revision's record, unless one is there.
    async fn write(
        &self,
        revision: i64,
        events: &[Event],
        extra: Option<(&str, Value)>,
    ) -> Result<(), Error> {
        let mut record = record(revision, events, true);
        if record.to_string().len() > MAX_RECORD {
            record = record_without_values(revision, events);
        }
        if let Some((name, value)) = extra {
            record[name] = value;
        }
        let key = self.key(revision);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), record.to_string(), None)]);
        self.client
            .request(&format!("write the journal record {key}"), |mut etcd| {
                let txn = txn.clone();
                async move { etcd.txn(txn).await }
            })
            .await?;
        Ok(())
    }

    /// Journals what changed between the newest record and `now` (while
    /// no journal ran), from etcd's history; a gap record if it is gone.
    async fn catch_up(&self, scope: &Scope, now: i64) -> Result<(), Error> {
        let newest = self
            .client
            .request("read the newest journal record", |mut etcd| {
                let range = format!("{}/", self.root);
                async move {
                    let options = GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_sort(SortTarget::Key, SortOrder::Descend)
                        .with_limit(1);
                    etcd.get(range, Some(options)).await
                }
            })
            .await?;
        let Some(last) = newest
            .kvs()
            .first()
            .and_then(|kv| kv.key_str().ok()?.rsplit('/').next()?.parse::<i64>().ok())
        else {
            return Ok(()); // A new journal starts now.
        };
        match replay(&self.client, scope, last + 1, now).await? {
            Replay::Done(history) => {
                for (revision, events) in history {
                    self.write(revision, &events, None).await?;
                }
            }
            Replay::Compacted(oldest) => {
                tracing::warn!(
                    since = last + 1,
                    oldest,
                    "changes made while no journal ran were compacted away; recording the gap"
                );
                self.write(now, &[], Some(("gap_since", json!(last + 1))))
                    .await?;
            }
        }
        Ok(())
    }

    /// Deletes records beyond `keep` and older than `max_age`.
    async fn prune(&self) -> Result<(), Error> {
        let range = format!("{}/", self.root);
        let all = self
            .client
            .request("count the journal records", |mut etcd| {
                let range = range.clone();
                async move {
                    let options = GetOptions::new().with_prefix().with_count_only();
                    etcd.get(range, Some(options)).await
                }
            })
            .await?;
        let excess = u64::try_from(all.count())
            .unwrap_or(0)
            .saturating_sub(self.keep);
        let cutoff = SystemTime::now() - self.max_age;
        // The oldest records, in order: those over the count, then those
        // older than the cutoff.
        let oldest = self
            .client
            .request("read the oldest journal records", |mut etcd| {
                let range = range.clone();
                async move {
                    let options = GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Key, SortOrder::Ascend)
                        .with_limit(i64::try_from(excess).unwrap_or(i64::MAX).max(1) + 64);
                    etcd.get(range, Some(options)).await
                }
            })
            .await?;
        let mut until = None;
        for (i, kv) in oldest.kvs().iter().enumerate() {
            let old = serde_json::from_slice::<Value>(kv.value())
                .ok()
                .and_then(|v| humantime::parse_rfc3339(v["time"].as_str()?).ok())
                .is_some_and(|time| time < cutoff);
            if (i as u64) < excess || old {
                until = Some(kv.key().to_vec());
            } else {
                break;
            }
        }
        let Some(mut end) = until else {
            return Ok(());
        };
        end.push(0);
        self.client
            .request("prune the journal", |mut etcd| {
                let (range, end) = (range.clone(), end.clone());
                async move {
                    etcd.delete(range, Some(DeleteOptions::new().with_range(end)))
                        .await
                }
            })
            .await?;
        Ok(())
    }
}

/// A record's JSON.
fn record(revision: i64, events: &[Event], values: bool) -> Value {
    let changes: Vec<Value> = events
        .iter()
        .map(|event| {
            let mut change = json!({ "key": event.key, "change": event.kind.name() });
            if let (true, Some(value)) = (values, &event.value) {
                change["value"] = bytes_json(value);
            }
            change
        })
        .collect();
    json!({
        "revision": revision,
        "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "changes": changes,
    })
}

fn record_without_values(revision: i64, events: &[Event]) -> Value {
    let mut record = record(revision, events, false);
    record["values_omitted"] = json!(true);
    record
}

/// The journal's records of changes under `scope` from `since` through
/// `until`, as history (gap records are logged, not returned).
pub async fn read(
    client: &shylock::Client,
    root: &str,
    scope: &Scope,
    since: i64,
    until: i64,
) -> Result<History, Error> {
    let root = root.trim_end_matches('/');
    let journal = Journal {
        client: client.clone(),
        root: root.to_owned(),
        keep: 0,
        max_age: Duration::ZERO,
    };
    let (from, mut to) = (journal.key(since.max(0)), journal.key(until).into_bytes());
    to.push(0);
    let response = client
        .request(&format!("read the journal under {root}/"), |mut etcd| {
            let (from, to) = (from.clone(), to.clone());
            async move { etcd.get(from, Some(GetOptions::new().with_range(to))).await }
        })
        .await?;
    let mut history = History::new();
    for kv in response.kvs() {
        let record: Value = serde_json::from_slice(kv.value()).map_err(|e| {
            msg(format!(
                "journal record {}: {e}",
                String::from_utf8_lossy(kv.key())
            ))
        })?;
        let revision = record["revision"].as_i64().unwrap_or_default();
        if let Some(gap) = record["gap_since"].as_i64() {
            tracing::warn!(
                since = gap,
                until = revision,
                "the journal misses these revisions (compacted while no journal ran)"
            );
        }
        let events: Vec<Event> = record["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|change| {
                let key = change["key"].as_str()?.to_owned();
                let kind = Kind::from_name(change["change"].as_str()?)?;
                let value = match &change["value"] {
                    Value::String(text) => Some(text.clone().into_bytes()),
                    Value::Object(o) => o
                        .get("base64")
                        .and_then(Value::as_str)
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok()),
                    _ => None,
                };
                Some(Event { key, kind, value })
            })
            .filter(|event| scope.covers(&event.key))
            .collect();
        if !events.is_empty() {
            history.insert(revision, events);
        }
    }
    Ok(history)
}
