//! What `diff`, `rollback`, `log` and `journal` share: the keys under a
//! prefix (a path, as `get --prefix` reads it) as they were at a revision,
//! every change to them between two revisions, and a clear error when etcd
//! compacted a revision away.
//!
//! etcd keeps no index of revisions by key, so the changes come from a
//! watch that replays every event since a revision. Before etcd 3.4.31 and
//! 3.5.13, a watch that is catching up cannot tell when it has caught up
//! (a progress request is answered before the events it should follow), so
//! the replay covers the whole keyspace and stops at the first answer that
//! reaches the last revision: every revision above 1 holds at least one
//! event. The user needs read permission on every key, and the replay
//! costs every write made since its start.

use std::collections::BTreeMap;

use etcd_client::{EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};

use crate::exit::{msg, Error};
use crate::kv::Scope;

/// A key's value and the revision that last changed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// The keys of a scope at one revision, and that revision.
pub struct State {
    pub keys: BTreeMap<String, Version>,
    pub revision: i64,
}

/// The keys of `scope` at `revision` (now with `None`).
pub async fn read_at(
    client: &shylock::Client,
    scope: &Scope,
    revision: Option<i64>,
) -> Result<State, Error> {
    let mut options = GetOptions::new();
    if let Some(revision) = revision {
        options = options.with_revision(revision);
    }
    let what = match revision {
        Some(r) => format!("read {} at revision {r}", scope.key),
        None => format!("read {}", scope.key),
    };
    let (kvs, read) = match read_range(client, scope, &what, options).await {
        Ok(response) => response,
        Err(shylock::Error::Etcd { source, .. }) if compacted(&source) => {
            let revision = revision.unwrap_or_default();
            let oldest = oldest_revision(
                client,
                if scope.key.is_empty() {
                    "/"
                } else {
                    &scope.key
                },
            )
            .await;
            return Err(msg(format!(
                "revision {revision} of {} was compacted away: etcd keeps the history since \
                 its last compaction{}",
                scope.key,
                oldest.map_or(String::new(), |r| format!(
                    " (revision {r}); the oldest revision to ask for is {r}"
                ))
            )));
        }
        Err(error) => return Err(error.into()),
    };
    let keys = kvs
        .iter()
        .filter(|kv| scope.covers(kv.key()))
        .filter_map(|kv| {
            Some((
                kv.key_str().ok()?.to_owned(),
                Version {
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                },
            ))
        })
        .collect();
    Ok(State {
        keys,
        revision: read,
    })
}

/// etcd's ErrCompacted.
fn compacted(error: &etcd_client::Error) -> bool {
    error
        .to_string()
        .contains("required revision has been compacted")
}

/// The compaction revision, as a watch from revision 1 reports it (etcd's
/// KV API does not say it).
async fn oldest_revision(client: &shylock::Client, key: &str) -> Option<i64> {
    let key = key.to_owned();
    let probe = client.request("find the compaction revision", |mut etcd| {
        let key = key.clone();
        async move {
            let options = etcd_client::WatchOptions::new().with_start_revision(1);
            let mut stream = etcd.watch(key, Some(options)).await?;
            while let Some(response) = stream.message().await? {
                if response.compact_revision() > 0 {
                    return Ok(Some(response.compact_revision()));
                }
                if response.canceled() {
                    break;
                }
            }
            Ok(None)
        }
    });
    tokio::time::timeout(std::time::Duration::from_secs(5), probe)
        .await
        .ok()?
        .ok()?
}

/// What one revision did to one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Created,
    Changed,
    Deleted,
}

impl Kind {
    pub fn sign(self) -> char {
        match self {
            Kind::Created => '+',
            Kind::Changed => '~',
            Kind::Deleted => '-',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Created => "created",
            Kind::Changed => "changed",
            Kind::Deleted => "deleted",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Created, Kind::Changed, Kind::Deleted]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// One key's change at a revision; the value is `None` for a deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub key: String,
    pub kind: Kind,
    pub value: Option<Vec<u8>>,
}

/// The changes under a scope, by revision.
pub type History = BTreeMap<i64, Vec<Event>>;

/// How a replay ended.
pub enum Replay {
    Done(History),
    /// The start is older than this, the oldest revision etcd keeps.
    Compacted(i64),
}

/// etcd's current revision (read from the scope's keys, which a user of
/// the prefix may read).
pub async fn current_revision(client: &shylock::Client, scope: &Scope) -> Result<i64, Error> {
    let (key, options) = if scope.prefix {
        (scope.children(), GetOptions::new().with_prefix())
    } else {
        (scope.key.clone(), GetOptions::new())
    };
    let options = options.with_count_only();
    Ok(client
        .request("read the current revision", |mut etcd| {
            let (key, options) = (key.clone(), options.clone());
            async move { etcd.get(key, Some(options)).await }
        })
        .await?
        .header()
        .map_or(0, |h| h.revision()))
}

/// The scope's key and the keys under `key/`, read with `options` in one
/// transaction (one revision): two ranges, so that a role granted the
/// prefix `key/` may read it; a role that may not read the key itself
/// (only `key/...`) gets the keys under it.
async fn read_range(
    client: &shylock::Client,
    scope: &Scope,
    what: &str,
    options: GetOptions,
) -> Result<(Vec<etcd_client::KeyValue>, i64), shylock::Error> {
    match read_ranges(client, scope, what, options.clone(), true).await {
        Err(shylock::Error::Etcd {
            source: etcd_client::Error::GRpcStatus(status),
            ..
        }) if status.code() as i32 == 7 && scope.prefix && !scope.key.is_empty() => {
            read_ranges(client, scope, what, options, false).await
        }
        read => read,
    }
}

async fn read_ranges(
    client: &shylock::Client,
    scope: &Scope,
    what: &str,
    options: GetOptions,
    with_key: bool,
) -> Result<(Vec<etcd_client::KeyValue>, i64), shylock::Error> {
    let mut ops = Vec::new();
    if with_key && !scope.key.is_empty() {
        ops.push(TxnOp::get(scope.key.as_str(), Some(options.clone())));
    }
    if scope.prefix {
        ops.push(TxnOp::get(scope.children(), Some(options.with_prefix())));
    }
    let txn = Txn::new().and_then(ops);
    let response = client
        .request(what, |mut etcd| {
            let txn = txn.clone();
            async move { etcd.txn(txn).await }
        })
        .await?;
    let mut kvs = Vec::new();
    for op in response.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            kvs.extend(get.kvs().iter().cloned());
        }
    }
    Ok((kvs, response.header().map_or(0, |h| h.revision())))
}

/// Every change under `scope` from `start` through `until`.
pub async fn replay(
    client: &shylock::Client,
    scope: &Scope,
    start: i64,
    until: i64,
) -> Result<Replay, Error> {
    // Revision 1 is an empty store's: no revision before 2 has events.
    if until < 2 || start > until {
        return Ok(Replay::Done(History::new()));
    }
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
                            let (kind, value) = match event.event_type() {
                                EventType::Delete => (Kind::Deleted, None),
                                EventType::Put if kv.version() == 1 => {
                                    (Kind::Created, Some(kv.value().to_vec()))
                                }
                                EventType::Put => (Kind::Changed, Some(kv.value().to_vec())),
                            };
                            let key = String::from_utf8_lossy(kv.key()).into_owned();
                            history.entry(kv.mod_revision()).or_default().push(Event {
                                key,
                                kind,
                                value,
                            });
                        }
                        // A revision's events come in one answer: at
                        // `until`, the history is whole.
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
        msg(if reason.contains("permission denied") {
            format!(
                "etcd refused the replay ({reason}): reading the history replays every key \
                 (etcd before 3.4.31/3.5.13 cannot end a replay of one prefix), so the user \
                 needs read permission on all keys"
            )
        } else {
            format!("the replay of the history failed: {reason}")
        })
    })
}
