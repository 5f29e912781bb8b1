//! Template values kept from one render of a resource to the next: the
//! pair `gets` gives for a key is made once per key and value instead of
//! once per render (a template over 10,000 keys made some 60,000
//! allocations per render for them, a third of its time). Entries of keys
//! a render no longer reads are dropped. (`getvs`'s strings cost no more
//! to make than to look up.) And the output of each item of a cached loop
//! (gotemplate/ranges.rs, jinja/ranges.rs), so a render runs a loop's body
//! only for the items that changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// One resource's values, per engine and function.
#[derive(Default)]
pub struct ValueCache {
    pub go_pairs: Memo<gotmpl::Value>,
    /// The output of each item of a cached loop (gotemplate/ranges.rs,
    /// jinja/ranges.rs), by the template source's hash and the loop's number.
    ranges: Mutex<HashMap<(u64, usize), Ranged>>,
    /// How many loop bodies ran (item outputs not taken from the cache).
    pub bodies_run: AtomicUsize,
    pub jinja_pairs: Memo<minijinja::Value>,
}

impl ValueCache {
    /// Ends a render: what it did not read goes.
    pub fn finish(&self) {
        self.go_pairs.finish();
        // A loop this render did not run (its template changed) goes.
        self.ranges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, ranged| std::mem::take(&mut ranged.used));
        self.jinja_pairs.finish();
    }

    /// The output of cached loop `n` of the template whose source hashes
    /// to `source`, over `items` (key and value, in the loop's order): an
    /// item's output is the last render's when that render had the same
    /// key with the same value, else `run(i)`. The walk is a merge of two
    /// sorted lists, not a lookup per item; an order that is not sorted
    /// only costs reuse. Past `limit` bytes it stops with `over()`, so the
    /// cache never holds more than a render may write.
    pub fn loop_output<E>(
        &self,
        (source, n): (u64, usize),
        items: &[(&str, &str)],
        limit: usize,
        over: impl Fn() -> E,
        mut run: impl FnMut(usize) -> Result<String, E>,
    ) -> Result<String, E> {
        let mut ranges = self.ranges.lock().unwrap_or_else(PoisonError::into_inner);
        let ranged = ranges.entry((source, n)).or_default();
        ranged.used = true;
        let mut last = std::mem::take(&mut ranged.items).into_iter().peekable();
        let mut fresh = Vec::with_capacity(items.len());
        let mut total = 0usize;
        for (i, &(key, value)) in items.iter().enumerate() {
            while last.next_if(|item| &*item.key < key).is_some() {}
            let item = match last.next_if(|item| &*item.key == key && &*item.value == value) {
                Some(same) => same,
                None => {
                    self.bodies_run.fetch_add(1, Ordering::Relaxed);
                    Item {
                        key: key.into(),
                        value: value.into(),
                        output: run(i)?.into(),
                    }
                }
            };
            total += item.output.len();
            if total > limit {
                return Err(over());
            }
            fresh.push(item);
        }
        let mut out = String::with_capacity(total);
        for item in &fresh {
            out.push_str(&item.output);
        }
        ranged.items = fresh;
        Ok(out)
    }
}

/// One cached loop's items, as its last render made them.
#[derive(Default)]
struct Ranged {
    items: Vec<Item>,
    used: bool,
}

struct Item {
    key: Box<str>,
    value: Box<str>,
    output: Box<str>,
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
