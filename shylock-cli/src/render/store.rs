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
use std::sync::{Arc, Mutex};

use super::confd::{path_base, path_clean, path_dir};
use super::resource::{covers, full_key};
use crate::live_keys::Keys;

/// The keys one render may read.
pub struct Store {
    /// Visible keys by their name in templates, with their values.
    keys: BTreeMap<String, String>,
    prefix: String,
    allowed: Vec<String>,
    /// The template's path, for messages.
    template: String,
    strict: bool,
}

impl Store {
    /// The keys under `allowed` (full etcd keys and prefixes), named
    /// relative to `prefix`, as a template sees them.
    pub fn new(
        keys: &Keys,
        prefix: &str,
        allowed: &[String],
        template: &str,
        strict: bool,
    ) -> Store {
        let prefix = prefix.trim_end_matches('/').to_owned();
        let visible = keys
            .iter()
            .filter(|(k, _)| allowed.iter().any(|a| covers(a, k)))
            .map(|(k, v)| {
                let relative = k.strip_prefix(&prefix).unwrap_or(k);
                // confd: path.Join("/", strings.TrimPrefix(key, prefix)).
                (
                    path_clean(&format!("/{relative}")),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        Store {
            keys: visible,
            prefix,
            allowed: allowed.to_vec(),
            template: template.to_owned(),
            strict,
        }
    }

    /// How many keys the resource sees (for `min_keys`).
    pub fn len(&self) -> usize {
        self.keys.len()
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
        Ok(self.keys.get(key).map(String::as_str))
    }

    /// confd's error for a missing key.
    pub fn missing(key: &str) -> String {
        format!("key does not exist: {key}")
    }

    /// confd's `gets`: the pairs matching a pattern, by key.
    pub fn pairs(&self, pattern: &str) -> Result<Vec<(&str, &str)>, String> {
        super::glob::check(pattern).map_err(|e| format!("pattern {pattern:?}: {e}"))?;
        Ok(self
            .keys
            .iter()
            .filter(|(k, _)| super::glob::matches(pattern, k) == Ok(true))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect())
    }

    /// confd's `getvs`: the values matching a pattern, sorted.
    pub fn values(&self, pattern: &str) -> Result<Vec<&str>, String> {
        let mut values: Vec<&str> = self.pairs(pattern)?.into_iter().map(|(_, v)| v).collect();
        values.sort_unstable();
        Ok(values)
    }

    /// confd's `ls`: the names one level below `path` (for a key itself,
    /// its own name), sorted.
    pub fn ls(&self, path: &str) -> Vec<String> {
        let prefix = terms(path);
        let mut names = BTreeSet::new();
        for key in self.keys.keys() {
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
        for key in self.keys.keys().filter(|k| k.starts_with(path)) {
            let items = terms(&path_dir(key));
            if same_prefix(&prefix, &items) && items.len() > prefix.len() {
                names.insert(items[prefix.len()].clone());
            }
        }
        names.into_iter().collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store(keys: &[&str], allowed: &[&str]) -> Store {
        let keys: Keys = keys
            .iter()
            .map(|k| (format!("/prod{k}"), k.as_bytes().to_vec()))
            .collect();
        let allowed: Vec<String> = allowed.iter().map(|a| format!("/prod{a}")).collect();
        Store::new(&keys, "/prod", &allowed, "t.tmpl", false)
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
        let s = Store::new(&keys, "/prod", &["/prod/a".into()], "t", false);
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
        let strict = Store::new(&keys, "/prod", &["/prod/app".into()], "t", true);
        assert!(strict
            .value("/secret/pw")
            .unwrap_err()
            .contains("not in the resource's keys"));
    }
}
