//! Applies watch events to the view, then tells the kernel which cached
//! entries, attributes and pages are stale. The view is updated on the
//! watch task; the kernel is told from a thread of its own, because an
//! invalidation can wait for a directory lock held by a process whose FUSE
//! request needs the async runtime (the watch task must never block it).
//! Never from inside a FUSE handler, never while holding the view's lock.
//! Contents stored ahead of reads (see `prefetch`) go through a second
//! thread, which takes no directory lock, so a handler may wait for it.
//!
//! The kernel keeps a directory's listing once one was read to its end,
//! and the pieces of one listing can come from different readers: a
//! listing begun before a change can be ended by a reader after it, and
//! kept, while the change's invalidation is on its way. So from the moment
//! a change shows until the kernel was told of it, an open of the directory
//! neither reads nor fills the kept listing (see [`Invalidations::telling`]);
//! the invalidation then waits out every listing being read, and drops the
//! kept one. Once a listing has shown a change, no listing opened after it
//! misses the change.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use fuser::{INodeNo, Notifier};
use shylock::TreeEvent;

use super::view::{ancestors, Node, View};
use crate::names::{self, VALUE_FILE};

pub struct Handler {
    view: Arc<RwLock<View>>,
    base: String,
    /// To the thread that tells the kernel.
    stale: Invalidations,
    /// Whether the view was filled: the first read fills it before the
    /// mount exists (see `handle`).
    filled: AtomicBool,
}

/// A way to the threads that tell the kernel, for the FUSE handlers too
/// (which must never notify the kernel themselves).
#[derive(Clone)]
pub struct Invalidations {
    stale: mpsc::Sender<Stale>,
    stores: mpsc::Sender<(Files, Arc<Stored>)>,
    /// Directories whose changed listings the kernel is still to be told
    /// of, with the number of changes on their way.
    telling: Arc<Mutex<HashMap<u64, usize>>>,
}

/// Files' inodes and the contents to store in them.
pub type Files = Vec<(u64, Arc<[u8]>)>;

/// Whether a batch of contents is in the kernel's cache yet.
#[derive(Default)]
pub struct Stored {
    done: Mutex<bool>,
    progress: Condvar,
}

impl Stored {
    fn finish(&self) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.progress.notify_all();
    }

    /// Waits, at most `limit`, until the batch is stored.
    pub fn wait(&self, limit: Duration) {
        let done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self.progress.wait_timeout_while(done, limit, |done| !*done);
    }
}

impl Invalidations {
    /// Puts these inodes' contents in the kernel's page cache, so the first
    /// read of each needs no READ (a listing's files, on a read-only
    /// mount, where an inode's content never changes); `stored` says when
    /// they are in.
    pub fn prefetch(&self, files: Files, stored: Arc<Stored>) {
        if let Err(mpsc::SendError((_, stored))) = self.stores.send((files, stored)) {
            stored.finish();
        }
    }

    /// Whether the kernel is still to be told of a change of directory
    /// `dir`'s listing: its opens must not use the kept listing.
    pub fn telling(&self, dir: u64) -> bool {
        let telling = self.telling.lock().unwrap_or_else(PoisonError::into_inner);
        telling.contains_key(&dir)
    }

    /// The kernel's cached pages and attributes of `ino` are wrong (a write
    /// through the mount that was not committed left its data there).
    pub fn inode(&self, ino: u64) {
        let _ = self.stale.send(Stale {
            inodes: vec![ino],
            ..Stale::default()
        });
    }
}

/// What the kernel must forget.
#[derive(Default)]
struct Stale {
    entries: Vec<(u64, OsString)>,
    inodes: Vec<u64>,
}

/// A count of changes per directory (see [`Invalidations::telling`]).
type Telling = Arc<Mutex<HashMap<u64, usize>>>;

impl Handler {
    pub fn new(view: Arc<RwLock<View>>, notifier: Arc<OnceLock<Notifier>>, base: String) -> Self {
        let (stale, pending) = mpsc::channel::<Stale>();
        let kernel = notifier.clone();
        let telling = Telling::default();
        let told = telling.clone();
        std::thread::Builder::new()
            .name("shylock-invalidate".into())
            .spawn(move || {
                for stale in pending {
                    let dirs = stale.dirs();
                    if let Some(notifier) = kernel.get() {
                        stale.send(notifier);
                    }
                    let mut told = told.lock().unwrap_or_else(PoisonError::into_inner);
                    for dir in dirs {
                        if let Some(count) = told.get_mut(&dir) {
                            *count -= 1;
                            if *count == 0 {
                                told.remove(&dir);
                            }
                        }
                    }
                }
            })
            .expect("start the invalidation thread");
        // Stores have a thread of their own: an invalidation can wait for a
        // directory lock held by a reader that waits for its listing's
        // stores (see `wait_stored`). A store takes no directory lock.
        let (stores, batches) = mpsc::channel::<(Files, Arc<Stored>)>();
        std::thread::Builder::new()
            .name("shylock-store".into())
            .spawn(move || {
                for (files, stored) in batches {
                    if let Some(notifier) = notifier.get() {
                        store(notifier, files);
                    }
                    stored.finish();
                }
            })
            .expect("start the store thread");
        Handler {
            view,
            base,
            stale: Invalidations {
                stale,
                stores,
                telling,
            },
            filled: AtomicBool::new(false),
        }
    }

    /// A way to ask for invalidations from elsewhere.
    pub fn invalidations(&self) -> Invalidations {
        self.stale.clone()
    }

    fn relative<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.base)?.strip_prefix('/')
    }

    pub fn handle(&self, event: TreeEvent<'_>) {
        crate::telemetry::watched(&event);
        if let TreeEvent::Alive(_) = event {
            return;
        }
        let mut stale = Stale::default();
        {
            let mut view = self.view.write().unwrap_or_else(PoisonError::into_inner);
            match event {
                TreeEvent::Changed { changes, .. } => {
                    let keys: Vec<&str> = changes
                        .iter()
                        .filter_map(|(key, _, _)| self.relative(key))
                        .collect();
                    let before = Dirs::above(&view, &keys);
                    for (key, value, revision) in changes {
                        if let Some(key) = self.relative(key) {
                            view.set(key, value.clone().map(|v| (v, *revision)));
                        }
                    }
                    for key in keys {
                        stale.add(&view, key, Some(&before));
                    }
                }
                TreeEvent::Replaced { tree, .. } => {
                    let keys = tree.iter().filter_map(|(key, entry)| {
                        let relative = self.relative(key)?;
                        Some((
                            relative.to_owned(),
                            entry.value.to_vec(),
                            entry.mod_revision,
                        ))
                    });
                    // The first read fills the view before the mount is
                    // made: the kernel holds nothing yet, and telling it
                    // later (once mounted, from the other thread) would
                    // only drop what the first readers have just cached.
                    // After a resync, what was there before is gone: every
                    // entry above a changed key is told.
                    let first = !self.filled.swap(true, Ordering::AcqRel);
                    for key in view.replace(keys.collect::<Vec<_>>()) {
                        if !first {
                            stale.add(&view, &key, None);
                        }
                    }
                }
                TreeEvent::Connection(Some(error)) => {
                    tracing::warn!(%error, "etcd connection lost; serving the last known tree");
                }
                TreeEvent::Connection(None) => tracing::info!("etcd connection up"),
                _ => {}
            }
            // Before the change shows: opens of these directories leave the
            // kept listings alone until the kernel was told (see the top),
            // and their mtimes move.
            let dirs = stale.dirs();
            if !dirs.is_empty() {
                view.touch_dirs(&dirs);
                let mut telling = self
                    .stale
                    .telling
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for dir in dirs {
                    *telling.entry(dir).or_default() += 1;
                }
            }
        }
        if !stale.entries.is_empty() || !stale.inodes.is_empty() {
            let _ = self.stale.stale.send(stale);
        }
    }
}

/// The directories above some keys that existed before a change, for
/// [`Stale::add`]: an entry above a key is stale only if the directory it
/// names appeared or vanished.
struct Dirs(HashSet<String>);

impl Dirs {
    fn above(view: &View, keys: &[&str]) -> Dirs {
        let mut dirs = HashSet::new();
        for key in keys {
            for dir in ancestors(&format!("{key}/")).skip(1) {
                if !dirs.contains(dir) && view.is_dir(dir) {
                    dirs.insert(dir.to_owned());
                }
            }
        }
        Dirs(dirs)
    }
}

impl Stale {
    /// Everything a change of `key` made stale: its own entry (its name now
    /// stands for a new inode), the pages of its inode if it kept one (a
    /// write of this mount, seen again), and the entry of each directory
    /// above it that appeared or vanished (or that turned from a file into
    /// one). A directory that was there before and is there after keeps its
    /// entry: dropping it would drop every entry below it from the kernel's
    /// cache, and with them the cached pages of every file in it (one put
    /// would cost a LOOKUP and a READ of each sibling). `before` is `None`
    /// when that is not known: every entry above the key is then told.
    fn add(&mut self, view: &View, key: &str, before: Option<&Dirs>) {
        if let Some(ino) = view.known_ino(&Node::File(key.to_owned())) {
            self.inodes.push(ino);
        }
        if let Some(ino) = view.known_ino(&Node::Dir(format!("{key}/"))) {
            self.entries.push((ino, VALUE_FILE.into()));
        }
        let full = format!("{key}/");
        for dir in ancestors(key) {
            let Some(ino) = view.known_ino(&Node::Dir(dir.to_owned())) else {
                continue;
            };
            let rest = &full[dir.len()..];
            let segment = rest.split('/').next().unwrap_or_default();
            let child = &full[..dir.len() + segment.len() + 1];
            let kept = before.is_some_and(|b| b.0.contains(child) && view.is_dir(child));
            if !kept {
                self.entries.push((ino, names::encode(segment.as_bytes())));
            }
        }
    }

    /// The directories whose listings changed: those an entry is told in.
    fn dirs(&self) -> Vec<u64> {
        let mut dirs: Vec<u64> = self.entries.iter().map(|(dir, _)| *dir).collect();
        dirs.sort_unstable();
        dirs.dedup();
        dirs
    }

    fn send(self, notifier: &Notifier) {
        let dirs = self.dirs();
        for ino in self.inodes {
            if let Err(error) = notifier.inval_inode(INodeNo(ino), 0, 0) {
                tracing::debug!(ino, %error, "inval_inode");
            }
        }
        for (parent, name) in self.entries {
            if let Err(error) = notifier.inval_entry(INodeNo(parent), &name) {
                tracing::debug!(parent, ?name, %error, "inval_entry");
            }
        }
        // The listings the kernel keeps of those directories go, after
        // their entries: an entry's invalidation takes the directory's lock,
        // so it waits for any listing being read, which may have been made
        // before the change and put in the kernel's cache; dropping the
        // cached listing after that leaves none made before the change.
        for dir in dirs {
            if let Err(error) = notifier.inval_inode(INodeNo(dir), 0, 0) {
                tracing::debug!(dir, %error, "inval_inode of a directory");
            }
        }
    }
}

/// Puts files' contents in the kernel's page cache.
fn store(notifier: &Notifier, files: Files) {
    for (ino, data) in files {
        // ENOENT: the kernel already forgot the inode; nothing to do.
        if let Err(error) = notifier.store(INodeNo(ino), 0, &data) {
            tracing::debug!(ino, %error, "store");
        }
    }
}
