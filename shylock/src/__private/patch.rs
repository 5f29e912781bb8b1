//! Patching: turning an earlier config into the one the key copy describes
//! now by reading again only what the changed keys touch. A patched config
//! equals a config built whole from the same keys (tests/patch.rs checks it
//! against etcd); a patch that meets a problem is abandoned and the config is
//! built whole, so errors read the same either way.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use super::{join, Cx, Elem, Flags, Node};

/// The keys changed since the config being patched was built, sorted.
pub struct Changed {
    keys: Vec<String>,
}

impl Changed {
    pub(crate) fn new(mut keys: Vec<String>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        Changed { keys }
    }

    /// Whether `key` itself or any key under `key/` changed.
    pub fn touches(&self, key: &str) -> bool {
        let start = self.keys.partition_point(|k| k.as_str() < key);
        self.keys[start..]
            .iter()
            .take_while(|k| k.starts_with(key))
            .any(|k| k.len() == key.len() || k.as_bytes()[key.len()] == b'/')
    }

    /// The changed keys that start with `prefix`, in order.
    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let start = self.keys.partition_point(|k| k.as_str() < prefix);
        self.keys[start..]
            .iter()
            .take_while(move |k| k.starts_with(prefix))
            .map(String::as_str)
    }
}

impl<T> Node<T> {
    /// Whether every key the nested config reads lies under its own prefix
    /// (no absolute keys), so that changes elsewhere cannot touch it.
    fn stays_under(&self) -> bool {
        let mut outside = Vec::new();
        self.outside(Flags::ROOT, &mut outside);
        outside.is_empty()
    }
}

/// The map types a map field can have, as patching needs them.
pub trait MapSlot<T> {
    fn put(&mut self, name: &str, value: T);
    fn take(&mut self, name: &str);
    fn slot(&mut self, name: &str) -> Option<&mut T>;
    fn each(&mut self, f: &mut dyn FnMut(&str, &mut T));
}

/// The same four methods for both map types.
macro_rules! map_slot {
    () => {
        fn put(&mut self, name: &str, value: T) {
            match self.get_mut(name) {
                Some(slot) => *slot = value,
                None => {
                    self.insert(name.to_owned(), value);
                }
            }
        }

        fn take(&mut self, name: &str) {
            self.remove(name);
        }

        fn slot(&mut self, name: &str) -> Option<&mut T> {
            self.get_mut(name)
        }

        fn each(&mut self, f: &mut dyn FnMut(&str, &mut T)) {
            self.iter_mut().for_each(|(k, v)| f(k, v));
        }
    };
}

impl<T> MapSlot<T> for BTreeMap<String, T> {
    map_slot!();
}

impl<T, S: BuildHasher> MapSlot<T> for HashMap<String, T, S> {
    map_slot!();
}

/// Each `patch_*` method brings one field up to date. It returns `None` when
/// a problem was found (the patch is abandoned), otherwise whether the field
/// was read again (so its validator runs again).
impl Cx<'_> {
    fn patch_node<T>(
        &mut self,
        node: &Node<T>,
        key: &str,
        secret: bool,
        slot: &mut T,
        changed: &Changed,
    ) -> bool {
        self.secret_depth += u32::from(secret);
        let ok = (node.patch)(slot, self, key, changed);
        self.secret_depth -= u32::from(secret);
        ok
    }

    /// A plain field: a nested config is patched in place, a value read again
    /// with `read` (the field's own read, defaults included) if its key changed.
    pub fn patch_plain<T>(
        &mut self,
        elem: &Elem<T>,
        key: &str,
        secret: bool,
        slot: &mut T,
        changed: &Changed,
        read: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<bool> {
        match elem {
            Elem::Node(node) => self
                .patch_node(node, key, secret, slot, changed)
                .then_some(true),
            Elem::Leaf(_) if changed.touches(key) => {
                *slot = read(self)?;
                Some(true)
            }
            Elem::Leaf(_) => Some(false),
        }
    }

    /// An `Option<T>` field.
    pub fn patch_optional<T>(
        &mut self,
        elem: &Elem<T>,
        key: &str,
        secret: bool,
        slot: &mut Option<T>,
        changed: &Changed,
        read: impl FnOnce(&mut Self) -> Option<Option<T>>,
    ) -> Option<bool> {
        if let (Elem::Node(node), Some(inner)) = (elem, slot.as_mut()) {
            if self.tree.has_under(&format!("{key}/")) {
                return self
                    .patch_node(node, key, secret, inner, changed)
                    .then_some(true);
            }
        }
        if !changed.touches(key) {
            return Some(false);
        }
        *slot = read(self)?;
        Some(true)
    }

    /// A map field: only the entries whose keys changed are read again.
    pub fn patch_map<T, M: MapSlot<T>>(
        &mut self,
        elem: &Elem<T>,
        key: &str,
        secret: bool,
        map: &mut M,
        changed: &Changed,
    ) -> Option<bool> {
        let prefix = format!("{key}/");
        let mut ok = true;
        let mut touched = false;
        match elem {
            Elem::Leaf(decode) => {
                let tree = self.tree;
                for full in changed.under(&prefix) {
                    let name = &full[prefix.len()..];
                    if name.is_empty() || name.contains('/') {
                        continue;
                    }
                    touched = true;
                    let Some(entry) = tree.get(full) else {
                        map.take(name);
                        continue;
                    };
                    match decode(&entry.value) {
                        Ok(value) => map.put(name, value),
                        Err(error) => {
                            ok = false;
                            self.invalid::<T>(full, &entry.value, &*error, secret);
                        }
                    }
                }
            }
            Elem::Node(node) => {
                let everywhere = !node.stays_under();
                if everywhere {
                    touched = true;
                    map.each(&mut |name, slot| {
                        ok &= self.patch_node(node, &join(key, name), secret, slot, changed);
                    });
                }
                let mut names: Vec<&str> = changed
                    .under(&prefix)
                    .filter_map(|full| full[prefix.len()..].split_once('/'))
                    .map(|(name, _)| name)
                    .collect();
                names.dedup();
                for name in names {
                    touched = true;
                    let sub = join(key, name);
                    if !self.tree.has_under(&format!("{sub}/")) {
                        map.take(name);
                    } else if let Some(slot) = map.slot(name) {
                        if !everywhere {
                            ok &= self.patch_node(node, &sub, secret, slot, changed);
                        }
                    } else {
                        match self.read(elem, &sub, secret) {
                            Ok(Some(value)) => map.put(name, value),
                            Ok(None) => {}
                            Err(()) => ok = false,
                        }
                    }
                }
            }
        }
        ok.then_some(touched)
    }

    /// A `Vec<T>` field: read again whole when any of its keys changed.
    pub fn patch_list<T>(
        &mut self,
        elem: &Elem<T>,
        key: &str,
        secret: bool,
        slot: &mut Vec<T>,
        changed: &Changed,
    ) -> Option<bool> {
        let everywhere = matches!(elem, Elem::Node(node) if !node.stays_under());
        if !everywhere && !changed.touches(key) {
            return Some(false);
        }
        *slot = self.list(elem, key, secret)?;
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::Changed;

    #[test]
    fn touches_the_key_and_what_lies_under_it_only() {
        let changed = Changed::new(vec!["/a/b".into(), "/a-b".into(), "/c".into()]);
        assert!(changed.touches("/a"));
        assert!(changed.touches("/a/b"));
        assert!(changed.touches("/a-b"));
        assert!(changed.touches("/c"));
        assert!(!changed.touches("/a/b/c"));
        assert!(!changed.touches("/a-"));
        assert!(!changed.touches("/b"));
        assert!(
            !changed.touches("/"),
            "a prefix is not a parent without its slash"
        );
        let under: Vec<&str> = changed.under("/a/").collect();
        assert_eq!(under, ["/a/b"]);
    }
}
