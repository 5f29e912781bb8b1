//! `shylock watch`: print every change of a key, or of the keys under a
//! prefix, as it arrives, through the same watch the other commands use
//! (after a compaction, the keys are read again and the differences
//! printed, so no change is silently skipped).

use std::collections::BTreeMap;

use serde_json::json;
use shylock::TreeEvent;
use tokio::sync::mpsc;

use crate::connect::ConnectArgs;
use crate::exit::{msg, Error};
use crate::kv::{bytes_json, emit, json_line, KeyArgs};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub target: KeyArgs,

    /// One JSON object per change: {"type": "PUT" or "DELETE", "key",
    /// "value" (PUT only), "revision"}.
    #[arg(long)]
    pub json: bool,
}

/// One change: the key, its new value (`None`: deleted) and revision.
type Change = (String, Option<Vec<u8>>, i64);

pub async fn run(connect: &ConnectArgs, args: WatchArgs) -> Result<(), Error> {
    let scope = args.target.scope()?;
    let client = shylock::Client::connect(connect.options()?).await?;
    let (tx, mut changes) = mpsc::unbounded_channel::<Vec<Change>>();
    let mut known: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut first = true;
    let filter = scope.clone();
    let handler = move |event: TreeEvent<'_>| {
        let batch: Vec<Change> = match event {
            TreeEvent::Connection(Some(error)) => {
                tracing::warn!(%error, "etcd connection lost; changes follow once it is back");
                return;
            }
            TreeEvent::Changed { changes, .. } => changes
                .iter()
                .filter(|(key, _, _)| filter.covers(key))
                .cloned()
                .collect(),
            TreeEvent::Replaced { revision, tree } => {
                let now: BTreeMap<String, Vec<u8>> = tree
                    .iter()
                    .filter(|(key, _)| filter.covers(key))
                    .map(|(key, entry)| (key.to_owned(), entry.value.to_vec()))
                    .collect();
                let mut batch: Vec<Change> = known
                    .keys()
                    .filter(|key| !now.contains_key(*key))
                    .map(|key| (key.clone(), None, revision))
                    .collect();
                batch.extend(
                    now.iter()
                        .filter(|(key, value)| known.get(*key) != Some(value))
                        .map(|(key, value)| (key.clone(), Some(value.clone()), revision)),
                );
                known = now;
                // The first read is where the watch starts, not a change.
                if std::mem::take(&mut first) {
                    return;
                }
                batch
            }
            _ => return,
        };
        for (key, value, _) in &batch {
            match value {
                Some(value) => known.insert(key.clone(), value.clone()),
                None => known.remove(key),
            };
        }
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
    };
    let root = if scope.key.is_empty() {
        "/"
    } else {
        &scope.key
    };
    let (revision, _watch) = client.watch_trees(&[root], true, handler).await?;
    tracing::info!(revision, key = %args.target.key, "watching");
    let mut stop = crate::signals::Stop::new()?;
    let mut out = std::io::stdout().lock();
    loop {
        let batch = tokio::select! {
            batch = changes.recv() => batch.ok_or_else(|| msg("the watch ended"))?,
            () = stop.wait() => return Ok(()),
        };
        for (key, value, revision) in batch {
            let line = match (&value, args.json) {
                (Some(value), true) => json_line(&json!({
                    "type": "PUT", "key": key, "value": bytes_json(value), "revision": revision,
                })),
                (None, true) => json_line(&json!({
                    "type": "DELETE", "key": key, "revision": revision,
                })),
                (Some(value), false) => [b"PUT\n", key.as_bytes(), b"\n", value, b"\n"].concat(),
                (None, false) => [b"DELETE\n", key.as_bytes(), b"\n"].concat(),
            };
            if !emit(&mut out, &line)? {
                return Ok(());
            }
        }
    }
}
