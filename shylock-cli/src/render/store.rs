//! What a template reads: the keys of its resource, with confd's store
//! semantics (its `memkv`): keys are named relative to the resource's
//! prefix (`/services/web/a`), `gets` lists pairs by key, `getvs` sorts
//! the values, `ls` and `lsdir` list names one level down, and patterns
//! are Go's `path.Match`.
//!
//! confd's store holds only the keys a resource declares, so a key outside
//! them reads as missing: `exists` is false and `getv` takes its default.
//! shylock says so in the log once per template and key (a typo in a key
//! is the usual cause), and with `strict` it is an error instead.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use super::cache::ValueCache;
use super::confd::{path_base, path_clean, path_dir};
use super::resource::{covers, full_key};
use crate::live_keys::{is_clean_path, Keys};

/// The keys one render may read.
pub struct Store {
    keys: Visible,
    prefix: String,
    allowed: Vec<String>,
    /// The template's path, for messages.
    template: String,
    strict: bool,
    /// Values made for the template, kept across its renders.
    cache: Arc<ValueCache>,
}

/// The visible keys: usually read in place from the watch's copy (a
/// render of 10,000 keys copies none); copied and renamed only when some
/// key's name needs confd's cleaning (`//`, `/./`), its value is not
/// UTF-8, or it lies outside the prefix.
enum Visible {
    /// The full etcd keys under `scopes` (sorted, none covering another).
    Shared {
        keys: Arc<Keys>,
        scopes: Vec<String>,
    },
    /// Names as confd makes them, with their values.
    Copied(BTreeMap<String, String>),
}

impl Store {
    /// The keys under `allowed` (full etcd keys and prefixes), named
    /// relative to `prefix`, as a template sees them.
    pub fn new(
        keys: Arc<Keys>,
        prefix: &str,
        allowed: &[String],
        template: &str,
        strict: bool,
    ) -> Store {
        let prefix = prefix.trim_end_matches('/').to_owned();
        let mut scopes = allowed.to_vec();
        scopes.sort();
        scopes.dedup();
        let copy = scopes.clone();
        scopes.retain(|s| !copy.iter().any(|other| other != s && covers(other, s)));
        // Every key in a scope below the prefix is named as confd names it
        // when its full key is plain, which `Keys` counts: no walk then.
        let below = |scope: &String| {
            scope
                .trim_end_matches('/')
                .strip_prefix(&prefix)
                .is_some_and(|rest| rest.starts_with('/'))
        };
        let known = keys.all_plain() && scopes.iter().all(below);
        let shared = Visible::Shared { keys, scopes };
        // confd's name is `path.Join("/", name)`: a clean path.
        let plain = known
            || shared.iter(&prefix).all(|(name, value)| {
                name.is_some_and(is_clean_path) && std::str::from_utf8(value).is_ok()
            });
        let keys = if plain {
            shared
        } else {
            Visible::Copied(
                shared
                    .iter_full()
                    .map(|(k, v)| {
                        let relative = k.strip_prefix(&prefix).unwrap_or(k);
                        // confd: path.Join("/", strings.TrimPrefix(key, prefix)).
                        (
                            path_clean(&format!("/{relative}")),
                            String::from_utf8_lossy(v).into_owned(),
                        )
                    })
                    .collect(),
            )
        };
        Store {
            keys,
            prefix,
            allowed: allowed.to_vec(),
            template: template.to_owned(),
            strict,
            cache: Arc::default(),
        }
    }

    /// Keeps the values made for the template in `cache`, across renders.
    pub fn with_cache(mut self, cache: Arc<ValueCache>) -> Store {
        self.cache = cache;
        self
    }

    pub fn cache(&self) -> &ValueCache {
        &self.cache
    }

    /// Every visible key by name, with its value, in name order.
    fn entries(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        match &self.keys {
            Visible::Copied(map) => Box::new(map.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            shared @ Visible::Shared { scopes, .. } => {
                let entries = shared.iter(&self.prefix).map(|(name, value)| {
                    // Checked in `new`: in the prefix, and UTF-8.
                    (
                        name.unwrap_or_default(),
                        std::str::from_utf8(value).unwrap_or_default(),
                    )
                });
                if scopes.len() < 2 {
                    return Box::new(entries);
                }
                // Scopes like `/a` and `/a-b` interleave: put names in order.
                let mut all: Vec<(&str, &str)> = entries.collect();
                all.sort_unstable();
                Box::new(all.into_iter())
            }
        }
    }

    /// The value of a key by name.
    fn get(&self, name: &str) -> Option<&str> {
        match &self.keys {
            Visible::Copied(map) => map.get(name).map(String::as_str),
            Visible::Shared { keys, scopes } => {
                if !name.starts_with('/') {
                    return None;
                }
                let full = format!("{}{name}", self.prefix);
                if !scopes.iter().any(|s| covers(s, &full)) {
                    return None;
                }
                keys.get(&full).and_then(|v| std::str::from_utf8(v).ok())
            }
        }
    }

    /// How many keys the resource sees (for `min_keys`).
    pub fn len(&self) -> usize {
        match &self.keys {
            Visible::Copied(map) => map.len(),
            shared => shared.iter_full().count(),
        }
    }

    /// A key read by name must lie within the resource's keys: outside
    /// them it is missing (an error with `strict`), as in confd.
    fn check(&self, key: &str) -> Result<(), String> {
        let full = full_key(&self.prefix, key);
        if self.allowed.iter().any(|scope| covers(scope, &full)) {
            return Ok(());
        }
        let text = format!(
            "template {} reads {key}, which is not in the resource's keys {:?}",
            self.template, self.allowed
        );
        if self.strict {
            return Err(text);
        }
        warn_once(&self.template, key, &text);
        Ok(())
    }

    /// confd's `get`/`getv`: the value, if the key exists.
    pub fn value(&self, key: &str) -> Result<Option<&str>, String> {
        self.check(key)?;
        Ok(self.get(key))
    }

    /// confd's error for a missing key.
    pub fn missing(key: &str) -> String {
        format!("key does not exist: {key}")
    }

    /// confd's `gets`: the pairs matching a pattern, by key.
    pub fn pairs(&self, pattern: &str) -> Result<Vec<(&str, &str)>, String> {
        super::glob::check(pattern).map_err(|e| format!("pattern {pattern:?}: {e}"))?;
        Ok(self
            .entries()
            .filter(|(k, _)| super::glob::matches(pattern, k) == Ok(true))
            .collect())
    }

    /// confd's `getvs`: the values matching a pattern, sorted.
    pub fn values(&self, pattern: &str) -> Result<Vec<&str>, String> {
        let mut values: Vec<&str> = self.pairs(pattern)?.into_iter().map(|(_, v)| v).collect();
        values.sort_unstable();
        Ok(values)
    }

    /// What a cached loop over `gets` (`pairs`) or `getvs` walks: each
    /// item's key and value, in the function's order. A `getvs` item is
    /// known by its value alone.
    pub fn loop_items(&self, pairs: bool, pattern: &str) -> Result<Vec<(&str, &str)>, String> {
        match pairs {
            true => self.pairs(pattern),
            false => Ok(self.values(pattern)?.into_iter().map(|v| (v, v)).collect()),
        }
    }

    /// confd's `ls`: the names one level below `path` (for a key itself,
    /// its own name), sorted.
    pub fn ls(&self, path: &str) -> Vec<String> {
        let prefix = terms(path);
        let mut names = BTreeSet::new();
        for (key, _) in self.entries() {
            if key == path {
                names.insert(path_base(key));
                continue;
            }
            if same_prefix(&prefix, &terms(&path_dir(key))) {
                // confd's stripKey: the path and one `/` removed.
                let rest = key.strip_prefix(path).unwrap_or(key);
                let rest = rest.strip_prefix('/').unwrap_or(rest);
                names.insert(rest.split('/').next().unwrap_or_default().to_owned());
            }
        }
        names.into_iter().collect()
    }

    /// confd's `lsdir`: the names one level below `path` that have keys
    /// under them, sorted.
    pub fn lsdir(&self, path: &str) -> Vec<String> {
        let prefix = terms(path);
        let mut names = BTreeSet::new();
        for (key, _) in self.entries().filter(|(k, _)| k.starts_with(path)) {
            let items = terms(&path_dir(key));
            if same_prefix(&prefix, &items) && items.len() > prefix.len() {
                names.insert(items[prefix.len()].clone());
            }
        }
        names.into_iter().collect()
    }
}

impl Visible {
    /// The full etcd keys in the scopes, with their values.
    fn iter_full(&self) -> Box<dyn Iterator<Item = (&str, &[u8])> + '_> {
        match self {
            Visible::Copied(map) => Box::new(map.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))),
            Visible::Shared { keys, scopes } => Box::new(scopes.iter().flat_map(move |scope| {
                let start = scope.trim_end_matches('/');
                keys.range::<str, _>((Bound::Included(start), Bound::Unbounded))
                    .take_while(move |(k, _)| k.starts_with(start))
                    .filter(move |(k, _)| covers(scope, k))
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
            })),
        }
    }

    /// Each key's name under `prefix` (none if outside it), with its value.
    fn iter<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (Option<&'a str>, &'a [u8])> + 'a {
        self.iter_full().map(move |(k, v)| {
            let name = k.strip_prefix(prefix).filter(|n| n.starts_with('/'));
            (name, v)
        })
    }
}

/// confd's `pathToTerms`: a cleaned path split at `/`.
fn terms(path: &str) -> Vec<String> {
    path_clean(path).split('/').map(str::to_owned).collect()
}

fn same_prefix(prefix: &[String], test: &[String]) -> bool {
    test.len() >= prefix.len() && prefix.iter().zip(test).all(|(a, b)| a == b)
}

/// Logs a key read outside a resource's keys once per template and key.
fn warn_once(template: &str, key: &str, text: &str) {
    static WARNED: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);
    let mut warned = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if warned
        .get_or_insert_with(HashSet::new)
        .insert((template.to_owned(), key.to_owned()))
    {
        tracing::warn!(
            "{text}: it reads as missing, as in confd (strict = true makes this an error)"
        );
    }
}

/// Shared by a render's functions.
pub type Shared = Arc<Store>;

/// A store over `keys` (full keys, all visible, prefix `/`) for tests of
/// the engines, keeping its values in `cache`.
#[cfg(test)]
pub fn for_test(keys: &[(&str, &str)], template: &str, cache: &Arc<ValueCache>) -> Shared {
    let keys = keys
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    Arc::new(
        Store::new(Arc::new(keys), "/", &["/".to_owned()], template, false)
            .with_cache(Arc::clone(cache)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(keys: &[&str], allowed: &[&str]) -> Store {
        let keys: Keys = keys
            .iter()
            .map(|k| (format!("/prod{k}"), k.as_bytes().to_vec()))
            .collect();
        let allowed: Vec<String> = allowed.iter().map(|a| format!("/prod{a}")).collect();
        Store::new(Arc::new(keys), "/prod", &allowed, "t.tmpl", false)
    }

    /// confd's memkv tests, with shylock's store.
    #[test]
    fn ls_and_lsdir_as_confd_has_them() {
        let s = store(
            &[
                "/deis/database/user",
                "/deis/database/pass",
                "/deis/services/key",
                "/deis/services/notaservice/foo",
                "/deis/services/srv1/node1",
                "/deis/services/srv1/node2",
                "/deis/services/srv2/node1",
            ],
            &["/deis"],
        );
        assert_eq!(
            s.ls("/deis/services"),
            ["key", "notaservice", "srv1", "srv2"]
        );
        assert_eq!(s.ls("/deis/database"), ["pass", "user"]);
        assert_eq!(s.ls("/deis/services/key"), ["key"], "a leaf lists itself");
        assert_eq!(s.lsdir("/deis/services"), ["notaservice", "srv1", "srv2"]);
        assert_eq!(s.lsdir("/deis"), ["database", "services"]);
        assert!(s.ls("/nope").is_empty());
    }

    #[test]
    fn getvs_sorts_values_and_gets_sorts_keys() {
        let keys: Keys = [
            ("/prod/a/1", "zeta"),
            ("/prod/a/2", "alpha"),
            ("/prod/a/3", "mid"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        let s = Store::new(Arc::new(keys), "/prod", &["/prod/a".into()], "t", false);
        assert_eq!(s.values("/a/*").unwrap(), ["alpha", "mid", "zeta"]);
        let keys: Vec<&str> = s
            .pairs("/a/*")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["/a/1", "/a/2", "/a/3"]);
        assert_eq!(
            s.values("/a/[12]").unwrap(),
            ["alpha", "zeta"],
            "classes match"
        );
        assert!(s.values("/a/[").is_err(), "a bad pattern is an error");
    }

    #[test]
    fn keys_outside_the_resource_read_as_missing_or_fail_when_strict() {
        let s = store(&["/app/port", "/secret/pw"], &["/app"]);
        assert_eq!(s.value("/app/port").unwrap(), Some("/app/port"));
        assert_eq!(s.value("/secret/pw").unwrap(), None, "not visible");
        let keys: Keys = [("/prod/secret/pw".to_string(), b"x".to_vec())].into();
        let strict = Store::new(Arc::new(keys), "/prod", &["/prod/app".into()], "t", true);
        assert!(strict
            .value("/secret/pw")
            .unwrap_err()
            .contains("not in the resource's keys"));
    }

    /// Read in place or copied, a store gives the same names in the same
    /// order: scopes that interleave (`/a`, `/a-b`) or overlap, a key
    /// confd would clean, a value that is not UTF-8.
    #[test]
    fn names_and_order_are_confds_whether_shared_or_copied() {
        let build = |pairs: &[(&str, &[u8])], allowed: &[&str]| {
            let keys: Keys = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect();
            let allowed: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            Store::new(Arc::new(keys), "/p", &allowed, "t", false)
        };
        let pairs: [(&str, &[u8]); 4] = [
            ("/p/a/1", b"x"),
            ("/p/a-b/1", b"y"),
            ("/p/a/2", b"z"),
            ("/p/other", b"no"),
        ];
        let s = build(&pairs, &["/p/a-b", "/p/a", "/p/a/1"]);
        assert!(matches!(s.keys, Visible::Shared { .. }));
        let names: Vec<&str> = s
            .pairs("/*/*")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            names,
            ["/a-b/1", "/a/1", "/a/2"],
            "in name order, once each"
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s.value("/a/2").unwrap(), Some("z"));
        assert_eq!(s.value("/other").unwrap(), None, "outside the scopes");
        assert_eq!(s.value("a/2").unwrap(), None, "confd's names start with /");

        let s = build(&[("/p/a//1", b"x"), ("/p/a/2", b"\xff")], &["/p/a"]);
        assert!(matches!(s.keys, Visible::Copied(_)));
        assert_eq!(s.value("/a/1").unwrap(), Some("x"), "cleaned as confd does");
        assert_eq!(s.value("/a/2").unwrap(), Some("\u{fffd}"));
        assert!(
            is_clean_path("/")
                && is_clean_path("/a/b")
                && !is_clean_path("/a/")
                && !is_clean_path("/a/./b")
                && !is_clean_path("a")
        );

        // Plain keys, but a scope that is the prefix itself: the key named
        // like the prefix is `/` to confd, so the names are copied.
        let s = build(&[("/p", b"x"), ("/p/a", b"y")], &["/p"]);
        assert!(matches!(s.keys, Visible::Copied(_)));
        assert_eq!(s.value("/").unwrap(), Some("x"));
        assert_eq!(s.value("/a").unwrap(), Some("y"));
        // Plain keys under the prefix are read in place, with no walk.
        let s = build(&[("/p/a", b"x"), ("/p/b/c", b"y")], &["/p/"]);
        assert!(matches!(s.keys, Visible::Shared { .. }));
        assert_eq!(s.pairs("/*").unwrap(), [("/a", "x")]);
    }
}
