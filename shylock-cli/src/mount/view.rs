//! The mount's in-memory copy of the keys under its prefix, and the inode
//! table. A directory is named by its key prefix ending in `/` (the root is
//! `""`); a file by its key. Both are relative to the mounted prefix.
//!
//! A file's inode stands for one version of its key: its content and size
//! never change. A change made in etcd gives the key a new inode (and its
//! directory entry is invalidated), so the kernel's cached pages and size of
//! an inode always belong together: a reader sees one value whole, and one
//! that has the file open keeps reading the version it opened, as with a
//! file replaced by rename. An old version is kept until the kernel forgets
//! its inode. A write through the mount, or a rename, keeps the inode the
//! writer used: the kernel's cache of it already holds what was written.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{Errno, FileAttr, FileType, INodeNo};

use crate::names::{self, VALUE_FILE};

/// A file or directory of the mount.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// A key prefix ending in `/`, or `""` for the root.
    Dir(String),
    /// A key.
    File(String),
}

/// One key's value as the mount holds it.
#[derive(Clone, Debug)]
pub struct Value {
    pub bytes: Arc<[u8]>,
    pub revision: i64,
    /// When the mount saw the key change (etcd keeps no times).
    pub changed: SystemTime,
}

/// Ownership and modes of everything in the mount.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub read_only: bool,
    /// Permission bits taken away from every file and directory.
    pub umask: u32,
}

impl Owner {
    fn perm(&self, kind: FileType) -> u16 {
        let full = match (kind, self.read_only) {
            (FileType::Directory, false) => 0o755,
            (FileType::Directory, true) => 0o555,
            (_, false) => 0o644,
            (_, true) => 0o444,
        };
        (full & !self.umask & 0o777) as u16
    }
}

#[derive(Default)]
pub struct View {
    keys: BTreeMap<String, Value>,
    /// Directories made with mkdir that hold no key yet.
    local_dirs: BTreeSet<String>,
    /// Files created and not yet written to etcd.
    new_files: BTreeSet<String>,
    /// The inode of each directory, and of each file's current version.
    inodes: HashMap<Node, u64>,
    nodes: HashMap<u64, Node>,
    /// Older versions of files whose inodes the kernel still holds.
    frozen: HashMap<u64, Value>,
    /// The kernel's references to each inode (its lookup count).
    lookups: HashMap<u64, u64>,
    /// Inodes whose content was put in the kernel's cache ahead of reads,
    /// until the kernel forgets them.
    stored: HashSet<u64>,
    next_ino: u64,
    started: Option<SystemTime>,
    /// When each directory's listing last changed, where it did since the
    /// start: its mtime (see `touch_dirs`).
    dir_times: HashMap<u64, SystemTime>,
    /// Moves with every change of a key or a local entry.
    generation: u64,
}

/// A directory entry: its name and what it is.
pub struct Entry {
    pub name: OsString,
    pub node: Node,
}

impl View {
    pub fn new(keys: impl IntoIterator<Item = (String, Vec<u8>, i64)>) -> View {
        let now = SystemTime::now();
        let mut view = View {
            next_ino: 2,
            started: Some(now),
            ..View::default()
        };
        view.inodes.insert(Node::Dir(String::new()), 1);
        view.nodes.insert(1, Node::Dir(String::new()));
        for (key, bytes, revision) in keys {
            view.keys.insert(
                key,
                Value {
                    bytes: bytes.into(),
                    revision,
                    changed: now,
                },
            );
        }
        view
    }

    /// Replaces every key (after a resync), keeping inode numbers.
    pub fn replace(
        &mut self,
        keys: impl IntoIterator<Item = (String, Vec<u8>, i64)>,
    ) -> Vec<String> {
        self.generation += 1;
        let now = SystemTime::now();
        let new: BTreeMap<String, Value> = keys
            .into_iter()
            .map(|(key, bytes, revision)| {
                (
                    key,
                    Value {
                        bytes: bytes.into(),
                        revision,
                        changed: now,
                    },
                )
            })
            .collect();
        let mut changed: Vec<String> = self
            .keys
            .iter()
            .filter(|(k, v)| new.get(*k).map(|n| n.revision) != Some(v.revision))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &changed {
            self.retire(key);
        }
        changed.extend(new.keys().filter(|k| !self.keys.contains_key(*k)).cloned());
        self.keys = new;
        changed
    }

    /// Sets or deletes one key, as etcd now holds it. A new value gets a
    /// new inode; the old one keeps its content while the kernel holds it.
    pub fn set(&mut self, key: &str, value: Option<(Vec<u8>, i64)>) {
        self.generation += 1;
        match value {
            Some((bytes, revision)) => {
                if self.keys.get(key).is_some_and(|v| v.revision >= revision) {
                    return; // Already applied (a write of this mount).
                }
                self.retire(key);
                self.store(key, bytes, revision);
            }
            None => {
                self.retire(key);
                self.keys.remove(key);
            }
        }
    }

    /// Sets a key to a value written through the mount, as the version of
    /// inode `ino` (the writer's, whose pages in the kernel already hold it).
    pub fn adopt(&mut self, key: &str, bytes: Vec<u8>, revision: i64, ino: u64) {
        if self.known_ino(&Node::File(key.to_owned())) != Some(ino) {
            self.retire(key);
        }
        self.frozen.remove(&ino);
        if let Some(Node::File(old)) = self.nodes.get(&ino).cloned() {
            if old != key && self.inodes.get(&Node::File(old.clone())) == Some(&ino) {
                self.inodes.remove(&Node::File(old));
            }
        }
        self.inodes.insert(Node::File(key.to_owned()), ino);
        self.nodes.insert(ino, Node::File(key.to_owned()));
        self.store(key, bytes, revision);
    }

    /// Holds a key's new value (no longer a created file or a local dir).
    fn store(&mut self, key: &str, bytes: Vec<u8>, revision: i64) {
        self.generation += 1;
        self.new_files.remove(key);
        self.forget_local_dirs_above(key);
        let value = Value {
            bytes: bytes.into(),
            revision,
            changed: SystemTime::now(),
        };
        self.keys.insert(key.to_owned(), value);
    }

    /// The key's current inode stops standing for it: the kernel keeps
    /// reading its content as it is now, and the key gets a new inode.
    fn retire(&mut self, key: &str) {
        let Some(ino) = self.inodes.remove(&Node::File(key.to_owned())) else {
            return;
        };
        match (self.lookups.contains_key(&ino), self.keys.get(key)) {
            (true, Some(value)) => {
                self.frozen.insert(ino, value.clone());
            }
            _ => {
                self.nodes.remove(&ino);
            }
        }
    }

    /// The kernel took one more reference to `ino` (an entry reply).
    pub fn referenced(&mut self, ino: u64) {
        *self.lookups.entry(ino).or_default() += 1;
    }

    /// The kernel dropped `n` references to `ino`; an old version nobody
    /// can read any more is freed.
    pub fn forget(&mut self, ino: u64, n: u64) {
        let Some(count) = self.lookups.get_mut(&ino) else {
            return;
        };
        *count = count.saturating_sub(n);
        if *count > 0 {
            return;
        }
        self.lookups.remove(&ino);
        self.stored.remove(&ino);
        if self.frozen.remove(&ino).is_some() {
            self.nodes.remove(&ino);
        }
    }

    /// The listings of these directories changed: each gets a later mtime
    /// than any it had. The kernel keeps a listing with the directory's
    /// mtime when it began, and drops it at the next open that finds
    /// another (so a listing begun before a change is never shown after
    /// the change's invalidation).
    pub fn touch_dirs(&mut self, dirs: &[u64]) {
        let now = SystemTime::now();
        let started = self.started.unwrap_or(now);
        for dir in dirs {
            let last = self.dir_times.get(dir).copied().unwrap_or(started);
            let next = now.max(last + Duration::from_nanos(1));
            self.dir_times.insert(*dir, next);
        }
    }

    /// Whether `ino`'s content is still to be put in the kernel's cache
    /// (true once per inode the kernel holds).
    pub fn first_store(&mut self, ino: u64) -> bool {
        self.stored.insert(ino)
    }

    /// The content of a file inode: its version, old or current.
    pub fn version(&self, ino: u64) -> Option<&Value> {
        if let Some(value) = self.frozen.get(&ino) {
            return Some(value);
        }
        match self.nodes.get(&ino)? {
            Node::File(key) if self.inodes.get(&Node::File(key.clone())) == Some(&ino) => {
                self.keys.get(key)
            }
            _ => None,
        }
    }

    /// The node an inode stands for, if it still exists: a directory, a
    /// key's current version, a created file, or an old version the
    /// kernel holds.
    pub fn live(&self, ino: u64) -> Option<&Node> {
        let node = self.nodes.get(&ino)?;
        let current = self.inodes.get(node) == Some(&ino);
        let exists = self.frozen.contains_key(&ino) || (current && self.exists(node));
        exists.then_some(node)
    }

    fn forget_local_dirs_above(&mut self, key: &str) {
        let mut prefix = String::new();
        for segment in key
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, rest)| rest)
        {
            prefix.push_str(segment);
            prefix.push('/');
            self.local_dirs.remove(&prefix);
        }
    }

    /// A number that moves with every change of a key or a local entry.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn value(&self, key: &str) -> Option<&Value> {
        self.keys.get(key)
    }

    pub fn ino(&mut self, node: &Node) -> u64 {
        if let Some(&ino) = self.inodes.get(node) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(node.clone(), ino);
        self.nodes.insert(ino, node.clone());
        ino
    }

    /// The inode of a node, if it was ever handed to the kernel.
    pub fn known_ino(&self, node: &Node) -> Option<u64> {
        self.inodes.get(node).copied()
    }

    fn has_keys_under(&self, prefix: &str) -> bool {
        self.keys
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .next()
            .is_some_and(|(k, _)| k.starts_with(prefix))
    }

    fn has_local_under(&self, prefix: &str) -> bool {
        self.local_dirs
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .next()
            .is_some_and(|d| d.starts_with(prefix))
            || self
                .new_files
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .next()
                .is_some_and(|f| f.starts_with(prefix))
    }

    pub fn is_dir(&self, prefix: &str) -> bool {
        prefix.is_empty() || self.has_keys_under(prefix) || self.has_local_under(prefix)
    }

    pub fn is_file(&self, key: &str) -> bool {
        self.keys.contains_key(key) || self.new_files.contains(key)
    }

    /// Whether a node exists now.
    pub fn exists(&self, node: &Node) -> bool {
        match node {
            Node::Dir(prefix) => self.is_dir(prefix),
            Node::File(key) => self.is_file(key),
        }
    }

    /// Whether a directory holds nothing (no keys, no value, no local entries).
    pub fn is_empty_dir(&self, prefix: &str) -> bool {
        let own = prefix.strip_suffix('/').is_some_and(|k| self.is_file(k));
        !own && !self.has_keys_under(prefix)
            && !self
                .local_dirs
                .range::<str, _>((Bound::Excluded(prefix), Bound::Unbounded))
                .next()
                .is_some_and(|d| d.starts_with(prefix))
            && !self.new_files.iter().any(|f| f.starts_with(prefix))
    }

    pub fn add_local_dir(&mut self, prefix: String) {
        self.generation += 1;
        self.local_dirs.insert(prefix);
    }

    pub fn remove_local_dir(&mut self, prefix: &str) -> bool {
        self.generation += 1;
        self.local_dirs.remove(prefix)
    }

    pub fn add_new_file(&mut self, key: String) {
        self.generation += 1;
        self.new_files.insert(key);
    }

    pub fn remove_new_file(&mut self, key: &str) {
        self.generation += 1;
        self.new_files.remove(key);
    }

    /// The node called `name` in the directory `prefix`.
    pub fn lookup(&self, prefix: &str, name: &OsStr) -> Result<Node, Errno> {
        if name == VALUE_FILE {
            return match prefix.strip_suffix('/') {
                Some(key) if self.is_file(key) => Ok(Node::File(key.to_owned())),
                _ => Err(Errno::ENOENT),
            };
        }
        let segment = if names::is_shortened(name) {
            let entry = self.children(prefix).into_iter().find(|e| e.name == name);
            return entry.map(|e| e.node).ok_or(Errno::ENOENT);
        } else {
            names::decode(name).map_err(|_| Errno::ENOENT)?
        };
        let segment = String::from_utf8(segment).map_err(|_| Errno::ENOENT)?;
        let dir = format!("{prefix}{segment}/");
        if self.is_dir(&dir) {
            return Ok(Node::Dir(dir));
        }
        let key = format!("{prefix}{segment}");
        if self.is_file(&key) {
            Ok(Node::File(key))
        } else {
            Err(Errno::ENOENT)
        }
    }

    /// Every entry of a directory, in key order (without `.` and `..`).
    pub fn children(&self, prefix: &str) -> Vec<Entry> {
        let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        let mut cursor = Bound::Included(prefix.to_owned());
        while let Some((key, _)) = self
            .keys
            .range::<String, _>((cursor.clone(), Bound::Unbounded))
            .next()
        {
            if !key.starts_with(prefix) {
                break;
            }
            let rest = &key[prefix.len()..];
            match rest.find('/') {
                None => {
                    seen.entry(rest.to_owned()).or_default().0 = true;
                    cursor = Bound::Excluded(key.clone());
                }
                Some(i) => {
                    let segment = &rest[..i];
                    seen.entry(segment.to_owned()).or_default().1 = true;
                    // Skip the subtree: the first key after `prefix/segment/...`.
                    cursor = Bound::Included(format!("{prefix}{segment}0"));
                }
            }
        }
        for local in self
            .local_dirs
            .iter()
            .chain(&self.new_files)
            .filter(|d| d.starts_with(prefix))
        {
            let rest = &local[prefix.len()..];
            match rest.find('/') {
                Some(i) => seen.entry(rest[..i].to_owned()).or_default().1 = true,
                None => seen.entry(rest.to_owned()).or_default().0 = true,
            }
        }
        let mut out: Vec<Entry> = Vec::with_capacity(seen.len() + 1);
        if let Some(key) = prefix.strip_suffix('/') {
            if self.is_file(key) {
                out.push(Entry {
                    name: VALUE_FILE.into(),
                    node: Node::File(key.to_owned()),
                });
            }
        }
        for (segment, (_, dir)) in seen {
            let node = if dir {
                Node::Dir(format!("{prefix}{segment}/"))
            } else {
                Node::File(format!("{prefix}{segment}"))
            };
            out.push(Entry {
                name: names::encode(segment.as_bytes()),
                node,
            });
        }
        out
    }

    /// The directory holding a node, and the node's name in it.
    pub fn parent_and_name(&self, node: &Node) -> Option<(Node, OsString)> {
        match node {
            Node::Dir(prefix) if prefix.is_empty() => None,
            Node::Dir(prefix) => {
                let trimmed = &prefix[..prefix.len() - 1];
                let (parent, segment) = split_last(trimmed);
                Some((
                    Node::Dir(parent.to_owned()),
                    names::encode(segment.as_bytes()),
                ))
            }
            Node::File(key) if self.is_dir(&format!("{key}/")) => {
                Some((Node::Dir(format!("{key}/")), VALUE_FILE.into()))
            }
            Node::File(key) => {
                let (parent, segment) = split_last(key);
                Some((
                    Node::Dir(parent.to_owned()),
                    names::encode(segment.as_bytes()),
                ))
            }
        }
    }

    /// The attributes of an inode standing for `node`.
    pub fn attr_of(&self, ino: u64, node: &Node, owner: Owner) -> FileAttr {
        let started = self.started.unwrap_or_else(SystemTime::now);
        let (kind, size, time) = match node {
            Node::Dir(_) => {
                let changed = self.dir_times.get(&ino).copied();
                (FileType::Directory, 0, changed.unwrap_or(started))
            }
            Node::File(_) => {
                let (size, time) = self.version(ino).map_or((0, SystemTime::now()), |v| {
                    (v.bytes.len() as u64, v.changed)
                });
                (FileType::RegularFile, size, time)
            }
        };
        let perm = owner.perm(kind);
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: owner.uid,
            gid: owner.gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }
}

/// `("a/b/", "c")` for `"a/b/c"`; `("", "c")` for `"c"`.
fn split_last(key: &str) -> (&str, &str) {
    match key.rfind('/') {
        Some(i) => (&key[..=i], &key[i + 1..]),
        None => ("", key),
    }
}

/// Every directory prefix above a key, root first: `"", "a/", "a/b/"` for `"a/b/c"`.
pub fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(key.match_indices('/').map(move |(i, _)| &key[..=i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(keys: &[&str]) -> View {
        View::new(keys.iter().map(|k| (k.to_string(), b"v".to_vec(), 1)))
    }

    fn names(view: &View, prefix: &str) -> Vec<String> {
        view.children(prefix)
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn keys_and_prefixes_both_show() {
        let v = view(&["a", "a/b", "a/c/d", "ab", "a-x", "/lead", "x//y"]);
        assert_eq!(names(&v, ""), ["%", "a", "a-x", "ab", "x"]);
        assert_eq!(names(&v, "a/"), ["%value", "b", "c"]);
        assert_eq!(names(&v, "x/"), ["%"]);
        assert_eq!(
            v.lookup("", OsStr::new("a")).unwrap(),
            Node::Dir("a/".into())
        );
        assert_eq!(
            v.lookup("a/", OsStr::new(VALUE_FILE)).unwrap(),
            Node::File("a".into())
        );
        assert_eq!(
            v.lookup("", OsStr::new("%")).unwrap(),
            Node::Dir("/".into())
        );
        assert_eq!(
            v.lookup("x/", OsStr::new("%")).unwrap(),
            Node::Dir("x//".into())
        );
        assert_eq!(
            v.lookup("", OsStr::new("ab")).unwrap(),
            Node::File("ab".into())
        );
        assert_eq!(v.lookup("", OsStr::new("zz")), Err(Errno::ENOENT));
    }

    #[test]
    fn listing_skips_deep_subtrees() {
        let keys: Vec<String> = (0..1000)
            .map(|i| format!("deep/sub/k{i:04}"))
            .chain(["deep/z".into()])
            .collect();
        let v = View::new(keys.into_iter().map(|k| (k, vec![], 1)));
        assert_eq!(names(&v, "deep/"), ["sub", "z"]);
    }

    #[test]
    fn ancestors_of_a_key() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["", "a/", "a/b/"]);
        assert_eq!(ancestors("c").collect::<Vec<_>>(), [""]);
    }
}
