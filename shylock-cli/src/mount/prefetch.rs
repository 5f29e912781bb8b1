//! A read-only mount puts a listing's files in the kernel's page cache
//! before they are read (FUSE_NOTIFY_STORE), so that copying a tree costs no
//! READ per file. An inode's content never changes there, so a stored page
//! can never be stale.
//!
//! A store must wait until the kernel has the inode, which it makes only
//! when the reader takes the listing's reply in, after the reply is sent; a
//! store sent earlier is dropped without a sign (fuser takes the kernel's
//! ENOENT for an inode already forgotten). So a listing's files are only
//! armed when it is answered, and stored when the reader shows it took the
//! reply in: its next request for that directory (`cp -r` reads a whole
//! listing before any file), or a READ of one of those files (a reader
//! that reads each file as it lists). The request waits, briefly, until
//! they are in, so the reads that follow do not overtake the stores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::invalidate::{Files, Invalidations, Stored};

/// The longest a request waits for a listing's files to be stored. The
/// store thread waits for nothing but the kernel, so this bounds only the
/// worst case (a store held up by a page another reader is reading).
const WAIT: Duration = Duration::from_millis(200);

pub struct Prefetch {
    invalidations: Invalidations,
    armed: Mutex<Armed>,
}

#[derive(Default)]
struct Armed {
    /// Per directory, its last listing's files not stored yet.
    dirs: HashMap<u64, Files>,
    /// The directory each armed file was listed in.
    files: HashMap<u64, u64>,
}

impl Armed {
    fn take(&mut self, dir: u64) -> Option<Files> {
        let files = self.dirs.remove(&dir)?;
        for (ino, _) in &files {
            if self.files.get(ino) == Some(&dir) {
                self.files.remove(ino);
            }
        }
        Some(files)
    }
}

impl Prefetch {
    pub fn new(invalidations: Invalidations) -> Self {
        Prefetch {
            invalidations,
            armed: Mutex::default(),
        }
    }

    fn armed(&self) -> std::sync::MutexGuard<'_, Armed> {
        self.armed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A listing of `dir` naming these files was answered.
    pub fn arm(&self, dir: u64, files: Files) {
        if files.is_empty() {
            return;
        }
        let mut armed = self.armed();
        armed.take(dir);
        for (ino, _) in &files {
            armed.files.insert(*ino, dir);
        }
        armed.dirs.insert(dir, files);
    }

    /// A request for `dir` came: its last listing was taken in.
    pub fn listed_again(&self, dir: u64) {
        let files = self.armed().take(dir);
        self.store(files);
    }

    /// A READ of `ino` came: the listing that named it was taken in. The
    /// file itself is left to the READ, whose page the kernel holds locked.
    pub fn reading(&self, ino: u64) {
        let files = {
            let mut armed = self.armed();
            match armed.files.get(&ino).copied() {
                Some(dir) => armed.take(dir),
                None => None,
            }
        };
        self.store(files.map(|f| f.into_iter().filter(|(i, _)| *i != ino).collect()));
    }

    fn store(&self, files: Option<Files>) {
        let Some(files) = files.filter(|f| !f.is_empty()) else {
            return;
        };
        let stored = Arc::new(Stored::default());
        self.invalidations.prefetch(files, stored.clone());
        stored.wait(WAIT);
    }
}
