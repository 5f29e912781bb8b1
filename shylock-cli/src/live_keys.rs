//! A live copy of the keys under a prefix, for the file writer: the watch
//! task keeps it current and reports which keys changed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use shylock::{TreeEvent, TreeWatch};
use tokio::sync::mpsc;

/// Keys (full etcd keys) and values, read as a map. Changed only through
/// its own methods, it also keeps count of the keys that are not plain
/// (see [`is_plain`]), so a reader learns that all are without walking
/// them: a template's store over 10,000 keys checked every name and value
/// on every render (a sixth of a render's time).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keys {
    map: BTreeMap<String, Vec<u8>>,
    not_plain: usize,
}

/// Whether a key is plain: a clean absolute path (no empty, `.` or `..`
/// part, no `/` at its end) with a UTF-8 value. Every part of a plain key
/// below any of its parents is as confd's `path.Join` leaves it.
pub fn is_plain(key: &str, value: &[u8]) -> bool {
    is_clean_path(key) && std::str::from_utf8(value).is_ok()
}

/// Whether a path is as Go's `path.Clean` leaves an absolute one.
pub fn is_clean_path(name: &str) -> bool {
    name.starts_with('/')
        && (name == "/"
            || (!name.ends_with('/')
                && name[1..]
                    .split('/')
                    .all(|part| !matches!(part, "" | "." | ".."))))
}

impl Keys {
    /// Sets a key; returns its value before.
    pub fn insert(&mut self, key: String, value: Vec<u8>) -> Option<Vec<u8>> {
        let clean = is_clean_path(&key);
        let plain = |value: &[u8]| clean && std::str::from_utf8(value).is_ok();
        self.not_plain += usize::from(!plain(&value));
        let old = self.map.insert(key, value);
        if let Some(old) = &old {
            self.not_plain -= usize::from(!plain(old));
        }
        old
    }

    /// Removes a key; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Vec<u8>> {
        let old = self.map.remove(key)?;
        self.not_plain -= usize::from(!is_plain(key, &old));
        Some(old)
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.not_plain = 0;
    }

    /// Whether every key is plain ([`is_plain`]).
    pub fn all_plain(&self) -> bool {
        self.not_plain == 0
    }
}

impl std::ops::Deref for Keys {
    type Target = BTreeMap<String, Vec<u8>>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Extend<(String, Vec<u8>)> for Keys {
    fn extend<I: IntoIterator<Item = (String, Vec<u8>)>>(&mut self, pairs: I) {
        for (key, value) in pairs {
            self.insert(key, value);
        }
    }
}

impl FromIterator<(String, Vec<u8>)> for Keys {
    fn from_iter<I: IntoIterator<Item = (String, Vec<u8>)>>(pairs: I) -> Self {
        let mut keys = Keys::default();
        keys.extend(pairs);
        keys
    }
}

impl<const N: usize> From<[(String, Vec<u8>); N]> for Keys {
    fn from(pairs: [(String, Vec<u8>); N]) -> Self {
        pairs.into_iter().collect()
    }
}

/// The copy the watch updates, and the etcd revision it is at. Readers take
/// the inner `Arc` (no copy); the watch changes it in place unless a reader
/// still holds it, and only then copies it (`Arc::make_mut`).
type Shared = Arc<Mutex<(Arc<Keys>, i64)>>;

pub struct LiveKeys {
    keys: Shared,
    changes: mpsc::UnboundedReceiver<Vec<String>>,
    _watch: TreeWatch,
}

impl LiveKeys {
    /// Reads every key under `prefix/` (and the key `prefix` itself when
    /// `with_key`) and follows them.
    pub async fn follow(
        client: &shylock::Client,
        prefix: &str,
        with_key: bool,
    ) -> Result<LiveKeys, shylock::Error> {
        Self::follow_many(client, &[prefix.to_owned()], with_key).await
    }

    /// Like [`follow`](Self::follow) for several prefixes: read at one
    /// revision and followed by one watch, so the copy only ever holds a
    /// state etcd held (a transaction across prefixes is one change).
    pub async fn follow_many(
        client: &shylock::Client,
        prefixes: &[String],
        with_key: bool,
    ) -> Result<LiveKeys, shylock::Error> {
        let keys: Shared = Arc::default();
        let (tx, mut changes) = mpsc::unbounded_channel();
        let copy = keys.clone();
        let handler = move |event: TreeEvent<'_>| {
            crate::telemetry::watched(&event);
            if let TreeEvent::Alive(_) = event {
                return;
            }
            if let TreeEvent::Connection(error) = &event {
                if let Some(error) = error {
                    tracing::warn!(%error, "etcd connection lost; files keep their last content");
                }
                return;
            }
            let mut shared = copy.lock().unwrap_or_else(PoisonError::into_inner);
            let (keys, at) = &mut *shared;
            let keys = Arc::make_mut(keys);
            let changed = match event {
                TreeEvent::Changed { changes, revision } => {
                    *at = revision;
                    changes
                        .iter()
                        .map(|(key, value, _)| {
                            match value {
                                Some(value) => keys.insert(key.clone(), value.clone()),
                                None => keys.remove(key),
                            };
                            key.clone()
                        })
                        .collect()
                }
                TreeEvent::Replaced { tree, revision } => {
                    *at = revision;
                    let mut changed: Vec<String> = keys.keys().cloned().collect();
                    keys.clear();
                    keys.extend(tree.iter().map(|(k, e)| (k.to_owned(), e.value.to_vec())));
                    changed.extend(tree.iter().map(|(k, _)| k.to_owned()));
                    changed
                }
                _ => Vec::new(),
            };
            if !changed.is_empty() {
                let _ = tx.send(changed);
            }
        };
        let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let (_, watch) = client.watch_trees(&prefixes, with_key, handler).await?;
        // The first read reached the copy as a change: not one to act on.
        while changes.try_recv().is_ok() {}
        Ok(LiveKeys {
            keys,
            changes,
            _watch: watch,
        })
    }

    /// The keys as they are now. Drop it before the next change arrives,
    /// or that change has to copy every key.
    pub fn snapshot(&self) -> Arc<Keys> {
        self.snapshot_at().0
    }

    /// The keys as they are now, and the etcd revision they are at.
    pub fn snapshot_at(&self) -> (Arc<Keys>, i64) {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits for the next change; returns the changed keys, with every other
    /// change that is already waiting merged in.
    pub async fn changed(&mut self) -> Option<Vec<String>> {
        let mut keys = self.changes.recv().await?;
        while let Ok(more) = self.changes.try_recv() {
            keys.extend(more);
        }
        Some(keys)
    }
}

/// Why a `--watch` loop wakes up.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// The keys changed.
    Changed,
    /// A failed write is due to be retried.
    Retry,
    /// SIGINT or SIGTERM.
    Stop,
}

impl LiveKeys {
    /// For `--watch` loops: waits for a change, the retry (if one is
    /// pending), or SIGINT/SIGTERM. An error if the watch ended.
    pub async fn next_wake(
        &mut self,
        stop: &mut crate::signals::Stop,
        retry: &Retry,
    ) -> Result<Wake, crate::exit::Error> {
        let due = retry.due;
        let retry_due = async move {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = self.changed() => match changed {
                Some(_) => Ok(Wake::Changed),
                None => Err(crate::exit::msg("the watch ended")),
            },
            () = retry_due => Ok(Wake::Retry),
            () = stop.wait() => Ok(Wake::Stop),
        }
    }
}

/// When a failed write is tried again: after `min`, doubling up to `max`,
/// until it succeeds or the keys change (then at once).
#[derive(Debug)]
pub struct Retry {
    min: std::time::Duration,
    max: std::time::Duration,
    delay: std::time::Duration,
    due: Option<tokio::time::Instant>,
}

impl Retry {
    pub fn new(min: std::time::Duration, max: std::time::Duration) -> Self {
        Retry {
            min,
            max: max.max(min),
            delay: min,
            due: None,
        }
    }

    /// The write worked: nothing to retry.
    pub fn succeeded(&mut self) {
        self.delay = self.min;
        self.due = None;
    }

    /// The write failed: try again later; returns when.
    pub fn failed(&mut self) -> std::time::Duration {
        let delay = self.delay;
        self.due = Some(tokio::time::Instant::now() + delay);
        self.delay = (self.delay * 2).min(self.max);
        delay
    }
}

/// The keys under `base/` relative to it (`db/url`), in key order.
pub fn relative(keys: &Keys, base: &str) -> Vec<(String, Vec<u8>)> {
    let prefix = format!("{base}/");
    keys.range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k[prefix.len()..].to_owned(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_count_what_is_not_plain_through_every_change() {
        let mut keys: Keys = [("/a".to_owned(), b"1".to_vec())].into();
        assert!(keys.all_plain());
        keys.insert("/b".into(), b"\xff".to_vec());
        keys.insert("/c//d".into(), b"2".to_vec());
        assert!(!keys.all_plain());
        keys.insert("/b".into(), b"fixed".to_vec());
        assert!(!keys.all_plain(), "/c//d is still not clean");
        keys.remove("/c//d");
        assert!(keys.all_plain());
        keys.insert("/a".into(), b"\xfe".to_vec());
        keys.insert("/a".into(), b"\xfd".to_vec());
        assert_eq!(keys.not_plain, 1, "a key replaced is counted once");
        assert_eq!(keys.remove("/missing"), None);
        keys.clear();
        assert!(keys.all_plain() && keys.is_empty());
        let copied = keys.clone();
        assert_eq!(copied, keys);
        assert!(is_plain("/a/b", b"v") && !is_plain("/a/", b"v") && !is_plain("a", b"v"));
    }
}
