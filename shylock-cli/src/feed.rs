//! Every change of the keys in a scope, as it arrives, through the hub's
//! watch: what `watch` prints and `journal` records. After a re-read (a
//! compaction the watch could not follow) the differences come as one
//! batch, so no change is skipped silently.

use std::collections::BTreeMap;

use shylock::{TreeEvent, TreeWatch};
use tokio::sync::mpsc;

use crate::kv::Scope;

/// One change: the key, its new value (`None`: deleted) and revision,
/// and whether the key existed before it.
pub struct Change {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub revision: i64,
    pub existed: bool,
}

/// The changes of one watch answer, or the differences after a re-read.
pub struct Batch {
    pub changes: Vec<Change>,
    /// The keys were read again: these are differences, not events (their
    /// revision is the read's).
    pub resync: bool,
}

pub struct Feed {
    batches: mpsc::UnboundedReceiver<Batch>,
    /// The revision the feed starts after.
    pub revision: i64,
    _watch: TreeWatch,
}

impl Feed {
    pub async fn follow(client: &shylock::Client, scope: &Scope) -> Result<Feed, shylock::Error> {
        let (tx, batches) = mpsc::unbounded_channel::<Batch>();
        let mut known: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut first = true;
        let filter = scope.clone();
        let handler = move |event: TreeEvent<'_>| {
            let (changes, resync): (Vec<Change>, bool) = match event {
                TreeEvent::Connection(Some(error)) => {
                    tracing::warn!(%error, "etcd connection lost; changes follow once it is back");
                    return;
                }
                TreeEvent::Changed { changes, .. } => (
                    changes
                        .iter()
                        .filter(|(key, _, _)| filter.covers(key))
                        .map(|(key, value, revision)| Change {
                            key: key.clone(),
                            value: value.clone(),
                            revision: *revision,
                            existed: false,
                        })
                        .collect(),
                    false,
                ),
                TreeEvent::Replaced { revision, tree } => {
                    let now: BTreeMap<String, Vec<u8>> = tree
                        .iter()
                        .filter(|(key, _)| filter.covers(key))
                        .map(|(key, entry)| (key.to_owned(), entry.value.to_vec()))
                        .collect();
                    let change = |key: &String, value: Option<&Vec<u8>>| Change {
                        key: key.clone(),
                        value: value.cloned(),
                        revision,
                        existed: known.contains_key(key),
                    };
                    let mut batch: Vec<Change> = known
                        .keys()
                        .filter(|key| !now.contains_key(*key))
                        .map(|key| change(key, None))
                        .collect();
                    batch.extend(
                        now.iter()
                            .filter(|(key, value)| known.get(*key) != Some(value))
                            .map(|(key, value)| change(key, Some(value))),
                    );
                    known = now;
                    // The first read is where the feed starts, not a change.
                    if std::mem::take(&mut first) {
                        return;
                    }
                    (batch, true)
                }
                _ => return,
            };
            let mut changes = changes;
            if !resync {
                for change in &mut changes {
                    change.existed = match &change.value {
                        Some(value) => known.insert(change.key.clone(), value.clone()),
                        None => known.remove(&change.key),
                    }
                    .is_some();
                }
            }
            if !changes.is_empty() {
                let _ = tx.send(Batch { changes, resync });
            }
        };
        let root = if scope.key.is_empty() {
            "/"
        } else {
            &scope.key
        };
        let (revision, watch) = client.watch_trees(&[root], true, handler).await?;
        Ok(Feed {
            batches,
            revision,
            _watch: watch,
        })
    }

    /// The next batch; `None` when the watch ended.
    pub async fn next(&mut self) -> Option<Batch> {
        self.batches.recv().await
    }
}
