//! What subscribers are told after each watch response.

use crate::error::ConfigError;

/// One thing that happened to a live config.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A new config is in place; `load()` already returns it.
    Changed(Change),
    /// etcd now holds values that do not make a valid config; the last good
    /// config keeps serving.
    Rejected(ConfigError),
    /// The watch could not resume at `from` because etcd compacted that
    /// history away; every key was re-read at `revision`. The difference
    /// (deletions included) follows as one `Changed` or `Rejected` event.
    Resynced {
        /// The first revision that could not be replayed.
        from: i64,
        /// The revision everything was re-read at.
        revision: i64,
    },
}

/// A new config and the keys that made it.
#[derive(Clone, Debug)]
pub struct Change {
    /// The etcd revision of the new config.
    pub revision: i64,
    /// Every key that changed, in the order etcd applied them.
    pub keys: Vec<KeyChange>,
}

/// One key's change. Values of secret fields read `<redacted>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    /// The full etcd key.
    pub key: String,
    /// The value before, or `None` if the key was created.
    pub old: Option<String>,
    /// The value after, or `None` if the key was deleted.
    pub new: Option<String>,
}

/// What a secret value looks like in events.
pub(crate) const REDACTED: &str = "<redacted>";

impl KeyChange {
    pub(crate) fn new(key: &str, old: Option<&[u8]>, new: Option<&[u8]>, secret: bool) -> Self {
        let show = |v: &[u8]| {
            if secret {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(v).into_owned()
            }
        };
        KeyChange {
            key: key.to_owned(),
            old: old.map(show),
            new: new.map(show),
        }
    }
}
