//! Template values kept from one render of a resource to the next: the
//! pair `gets` gives for a key is made once per key and value instead of
//! once per render (a template over 10,000 keys made some 60,000
//! allocations per render for them, a third of its time). Entries of keys
//! a render no longer reads are dropped. (`getvs`'s strings cost no more
//! to make than to look up.)

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// One resource's values, per engine and function.
#[derive(Default)]
pub struct ValueCache {
    pub go_pairs: Memo<gotmpl::Value>,
    /// The output of each item of a cached `range` (gotemplate/ranges.rs),
    /// by the template source's hash and the range's number.
    go_ranges: Mutex<HashMap<(u64, usize), Ranged>>,
    /// How many range bodies ran (item outputs not taken from the cache).
    pub bodies_run: std::sync::atomic::AtomicUsize,
    pub jinja_pairs: Memo<minijinja::Value>,
}

impl ValueCache {
    /// Ends a render: what it did not read goes.
    pub fn finish(&self) {
        self.go_pairs.finish();
        let mut ranges = self
            .go_ranges
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A range this render did not run (its template changed) goes.
        ranges.retain(|_, ranged| std::mem::take(&mut ranged.used));
        for ranged in ranges.values() {
            ranged.memo.finish();
        }
        self.jinja_pairs.finish();
    }
}

/// One cached range's outputs.
struct Ranged {
    memo: std::sync::Arc<Memo<std::sync::Arc<str>>>,
    used: bool,
}

impl ValueCache {
    /// The outputs of range `n` of the template whose source hashes to `source`.
    pub fn go_range(&self, source: u64, n: usize) -> std::sync::Arc<Memo<std::sync::Arc<str>>> {
        let mut ranges = self
            .go_ranges
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ranged = ranges.entry((source, n)).or_insert_with(|| Ranged {
            memo: std::sync::Arc::default(),
            used: false,
        });
        ranged.used = true;
        std::sync::Arc::clone(&ranged.memo)
    }
}

impl std::fmt::Debug for ValueCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ValueCache")
    }
}

/// Values made from a key and its value, by key.
pub struct Memo<V>(Mutex<Entries<V>>);

struct Entries<V> {
    by_key: HashMap<Box<str>, Made<V>, foldhash::fast::RandomState>,
    /// The current render's number, and how many keys it read.
    render: u64,
    read: usize,
}

struct Made<V> {
    value: Box<str>,
    made: V,
    render: u64,
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Memo(Mutex::new(Entries {
            by_key: HashMap::default(),
            render: 0,
            read: 0,
        }))
    }
}

impl<V: Clone> Memo<V> {
    /// The values for `pairs`, each made by `make` unless the key held the
    /// same value before.
    pub fn all<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        make: impl Fn(&str, &str) -> V,
    ) -> Vec<V> {
        let pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
        let made: Result<Vec<V>, std::convert::Infallible> =
            self.try_all(pairs.iter().copied(), |i| Ok(make(pairs[i].0, pairs[i].1)));
        made.unwrap_or_else(|never| match never {})
    }

    /// Like [`all`](Self::all), with `make` given the pair's index and
    /// allowed to fail (then nothing new is kept).
    pub fn try_all<'a, E>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        mut make: impl FnMut(usize) -> Result<V, E>,
    ) -> Result<Vec<V>, E> {
        let mut entries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let render = entries.render;
        let mut read = 0;
        let mut out = Vec::new();
        for (i, (key, value)) in pairs.into_iter().enumerate() {
            if let Some(made) = entries.by_key.get_mut(key) {
                read += usize::from(made.render != render);
                made.render = render;
                if &*made.value != value {
                    let fresh = make(i)?;
                    made.value = value.into();
                    made.made = fresh;
                }
                out.push(made.made.clone());
                continue;
            }
            let fresh = make(i)?;
            read += 1;
            entries.by_key.insert(
                key.into(),
                Made {
                    value: value.into(),
                    made: fresh.clone(),
                    render,
                },
            );
            out.push(fresh);
        }
        entries.read += read;
        Ok(out)
    }

    fn finish(&self) {
        let mut entries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.by_key.len() > 2 * entries.read + 1024 {
            let render = entries.render;
            entries.by_key.retain(|_, made| made.render == render);
        }
        entries.render += 1;
        entries.read = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_made_again_only_when_its_key_changes() {
        let memo: Memo<String> = Memo::default();
        let made = std::cell::Cell::new(0);
        let make = |k: &str, v: &str| {
            made.set(made.get() + 1);
            format!("{k}={v}")
        };
        assert_eq!(memo.all([("a", "1"), ("b", "2")], make), ["a=1", "b=2"]);
        memo.finish();
        assert_eq!(memo.all([("a", "1"), ("b", "3")], make), ["a=1", "b=3"]);
        assert_eq!(made.get(), 3);
    }

    #[test]
    fn keys_no_longer_read_go() {
        let memo: Memo<u32> = Memo::default();
        let names: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
        memo.all(names.iter().map(|k| (k.as_str(), "v")), |_, _| 1);
        memo.finish();
        memo.all([("k0", "v")], |_, _| 1);
        memo.finish();
        assert_eq!(memo.0.lock().unwrap().by_key.len(), 1);
    }
}
