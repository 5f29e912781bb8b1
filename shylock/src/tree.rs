//! The in-memory copy of the keys a config reads, kept current by the watch.

use std::collections::BTreeMap;
use std::ops::Bound;

/// One key's value and the revision that last changed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The raw value, as etcd holds it. Boxed rather than a `Vec` (8 bytes
    /// less per key, no spare capacity): trees can hold millions of keys.
    pub value: Box<[u8]>,
    /// The revision of the key's last change.
    pub mod_revision: i64,
}

/// Keys and values, ordered by key, as etcd orders them.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    entries: BTreeMap<Box<str>, Entry>,
}

impl FromIterator<(String, Entry)> for Tree {
    /// A tree from entries in any order; a key given twice keeps one of its entries.
    fn from_iter<I: IntoIterator<Item = (String, Entry)>>(entries: I) -> Self {
        Tree {
            entries: entries
                .into_iter()
                .map(|(key, entry)| (key.into_boxed_str(), entry))
                .collect(),
        }
    }
}

impl Tree {
    /// Sets a key; returns the entry it replaced.
    pub fn insert(&mut self, key: String, value: Vec<u8>, mod_revision: i64) -> Option<Entry> {
        self.entries.insert(
            key.into_boxed_str(),
            Entry {
                value: value.into_boxed_slice(),
                mod_revision,
            },
        )
    }

    /// Removes a key; returns the entry it held.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        self.entries.remove(key)
    }

    /// One key's entry.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every key that starts with `prefix`, in key order.
    pub fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a Entry)> + 'a {
        self.entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (&**k, v))
    }

    /// Whether any key starts with `prefix`.
    pub fn has_under(&self, prefix: &str) -> bool {
        self.under(prefix).next().is_some()
    }

    /// All keys and entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }
}
