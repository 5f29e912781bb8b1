//! The FUSE filesystem over the view. Every handler ends in exactly one
//! reply; helpers return `Result<_, Errno>`. Reads are served from memory;
//! writes go to etcd when a file is flushed or closed.
//!
//! Each writer has a buffer of its own, filled from the version it opened
//! (empty with `O_TRUNC`, which the kernel hands to open instead of
//! truncating the file for everyone), and committed whole in one put,
//! compare-and-swap against that version unless `--conflicts lww`. A handler
//! never holds the table of open files across an etcd call.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use fuser::{
    Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::invalidate::Invalidations;
use super::listing::{Cookies, Listed, Page};
use super::prefetch::Prefetch;
use super::view::{Node, Owner, View};
use crate::cli::Conflicts;
use crate::guard::{Change, Guard, WriteArgs};
use crate::names;

/// How long the kernel may cache entries and attributes: long, because every
/// change seen by the watch invalidates them.
const TTL: Duration = Duration::from_secs(3600);
/// The largest file a listing puts in the kernel's cache before it is read.
const PREFETCH_FILE: u64 = 128 * 1024;
/// How long one etcd request from a handler may take before it is an EIO.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

pub struct EtcdFs {
    view: Arc<RwLock<View>>,
    client: shylock::Client,
    runtime: tokio::runtime::Handle,
    /// The mounted prefix without its trailing `/`: a key is `base/relative`.
    base: String,
    owner: Owner,
    conflicts: Conflicts,
    /// The largest value a write may make (etcd refuses larger requests).
    max_value: usize,
    write: WriteArgs,
    invalidations: Invalidations,
    files: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    cookies: Cookies,
    /// Listings' files to put in the kernel's cache (read-only mounts).
    prefetch: Prefetch,
}

/// What a mount was asked for.
pub struct Settings {
    /// The mounted prefix without its trailing `/`.
    pub base: String,
    pub owner: Owner,
    pub conflicts: Conflicts,
    /// The largest value a write may make.
    pub max_value: usize,
    /// Schema checks and audit records for writes.
    pub write: WriteArgs,
}

/// A file opened for writing. What `stat` needs is readable without
/// waiting for the file, which is locked while it is committed.
struct Handle {
    /// The inode written: the version the data started from.
    ino: AtomicU64,
    /// The size of the data while it differs from the inode's version.
    dirty_size: AtomicU64,
    file: Mutex<OpenFile>,
}

/// Not dirty: the inode's own size holds.
const CLEAN: u64 = u64::MAX;

impl Handle {
    fn new(file: OpenFile, ino: u64) -> Self {
        let dirty_size = if file.dirty {
            file.data.len() as u64
        } else {
            CLEAN
        };
        Handle {
            ino: AtomicU64::new(ino),
            dirty_size: AtomicU64::new(dirty_size),
            file: Mutex::new(file),
        }
    }

    /// Records the file's state after a change (its lock is held).
    fn changed(&self, file: &OpenFile) {
        let size = if file.dirty {
            file.data.len() as u64
        } else {
            CLEAN
        };
        self.dirty_size.store(size, Ordering::Release);
    }
}

/// A writer's whole content, written back on flush.
struct OpenFile {
    /// A write this file refused (too large): its content is not what the
    /// program meant, so it is never committed.
    failed: Option<Errno>,
    key: String,
    data: Vec<u8>,
    /// The key's revision the data started from (0: it did not exist), for
    /// compare-and-swap.
    base: i64,
    dirty: bool,
    /// Whether the program wrote (or ftruncated) since the last commit, as
    /// opposed to only opening with O_TRUNC.
    written: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EtcdFs {
    pub fn new(
        view: Arc<RwLock<View>>,
        client: shylock::Client,
        runtime: tokio::runtime::Handle,
        settings: Settings,
        invalidations: Invalidations,
    ) -> Self {
        EtcdFs {
            view,
            client,
            runtime,
            base: settings.base,
            owner: settings.owner,
            conflicts: settings.conflicts,
            max_value: settings.max_value,
            write: settings.write,
            files: Mutex::default(),
            next_fh: AtomicU64::new(1),
            cookies: Cookies::default(),
            prefetch: Prefetch::new(invalidations.clone()),
            invalidations,
        }
    }

    fn read_view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_view(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn abs(&self, key: &str) -> String {
        format!("{}/{key}", self.base)
    }

    fn writable(&self) -> Result<(), Errno> {
        if self.owner.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// A writer's handle, without holding the table.
    fn handle(&self, fh: u64) -> Option<Arc<Handle>> {
        lock(&self.files).get(&fh).cloned()
    }

    /// The node an inode stands for, if it exists (an old version too).
    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        self.read_view().live(ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: INodeNo) -> Result<String, Errno> {
        match self.node(ino)? {
            Node::Dir(prefix) => Ok(prefix),
            Node::File(_) => Err(Errno::ENOTDIR),
        }
    }

    /// The attributes of inode `ino`, standing for `node`.
    fn attr_of(&self, ino: u64, node: &Node) -> FileAttr {
        let mut attr = self.read_view().attr_of(ino, node, self.owner);
        // An inode being written shows the size its writer's data has.
        if let Node::File(_) = node {
            let files = lock(&self.files);
            let writing = files
                .values()
                .filter(|h| h.ino.load(Ordering::Acquire) == ino);
            if let Some(size) = writing
                .map(|h| h.dirty_size.load(Ordering::Acquire))
                .find(|&s| s != CLEAN)
            {
                attr.size = size;
                attr.blocks = size.div_ceil(512);
            }
        }
        attr
    }

    /// The attributes of a node's current inode, for an entry reply: the
    /// kernel takes a reference to it.
    fn entry(&self, node: &Node) -> FileAttr {
        let ino = {
            let mut view = self.write_view();
            let ino = view.ino(node);
            view.referenced(ino);
            ino
        };
        self.attr_of(ino, node)
    }

    /// Runs one etcd request from a handler thread, with a timeout (made
    /// again on another member if one refuses the connection).
    fn etcd<T, F, Fut>(&self, what: &str, call: F) -> Result<T, Errno>
    where
        F: FnMut(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let request = self.client.request(what, call);
        match self
            .runtime
            .block_on(async { tokio::time::timeout(ETCD_TIMEOUT, request).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(shylock::Error::Etcd {
                source: etcd_client::Error::GRpcStatus(status),
                ..
            })) if matches!(status.code() as i32, 7 | 16) => {
                tracing::warn!(what, error = %status.message(), "etcd refused (permission)");
                Err(Errno::EACCES)
            }
            Ok(Err(error)) => {
                tracing::error!(what, %error, "etcd request failed");
                Err(Errno::EIO)
            }
            Err(_) => {
                tracing::error!(what, "etcd did not answer within {ETCD_TIMEOUT:?}");
                Err(Errno::EIO)
            }
        }
    }

    /// Checks `changes` against the published schemas (read again for
    /// each write, so a schema published after the mount holds), and
    /// returns the audit record's operation, if any. A refusal is EINVAL,
    /// logged with its reasons.
    fn guard(&self, changes: &[Change<'_>], keys: &[&str]) -> Result<Option<TxnOp>, Errno> {
        let guard = self
            .runtime
            .block_on(async {
                tokio::time::timeout(ETCD_TIMEOUT, Guard::new(&self.client, &self.write, "mount"))
                    .await
            })
            .map_err(|_| {
                tracing::error!("etcd did not answer within {ETCD_TIMEOUT:?}");
                Errno::EIO
            })?
            .map_err(|error| {
                tracing::error!(%error, "cannot read the published schemas");
                Errno::EIO
            })?;
        let refused = guard.refusals(changes);
        if !refused.is_empty() {
            for refusal in &refused {
                tracing::warn!(%refusal, "write refused by the published schema");
            }
            return Err(Errno::EINVAL);
        }
        Ok(guard.audit_op(keys))
    }

    /// Writes a file's content to its key in one put (compare-and-swap
    /// against the revision it started from, or last writer wins), as the
    /// version of inode `ino`. Only this file's lock is held meanwhile.
    /// Returns the inode the value ended up with.
    fn commit(&self, fh: Option<u64>, ino: u64, file: &mut OpenFile) -> Result<u64, Errno> {
        let key = self.abs(&file.key);
        let audit = match self.guard(&[Change::Put(&key, &file.data)], &[&key]) {
            Ok(audit) => audit,
            Err(errno) => {
                self.invalidations.inode(ino);
                return Err(errno);
            }
        };
        let mut ops = vec![TxnOp::put(key.clone(), file.data.clone(), None)];
        ops.extend(audit);
        let txn = match self.conflicts {
            Conflicts::Cas => Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    file.base,
                )])
                .and_then(ops),
            Conflicts::Lww => Txn::new().and_then(ops),
        };
        let result = self
            .etcd(&key, |mut etcd| {
                let txn = txn.clone();
                async move { etcd.txn(txn).await }
            })
            .and_then(|response| {
                if response.succeeded() {
                    Ok(response.header().map_or(0, |h| h.revision()))
                } else {
                    tracing::warn!(
                        key,
                        "write refused: the key changed since the file was opened"
                    );
                    Err(Errno::ESTALE)
                }
            });
        let revision = match result {
            Ok(revision) => revision,
            Err(errno) => {
                // The kernel's pages of the inode may hold what was written:
                // they must not outlive the failed write.
                self.invalidations.inode(ino);
                return Err(errno);
            }
        };
        // Another writer of the same inode wrote into the same pages: the
        // value gets an inode of its own, and those pages are dropped.
        let shared = lock(&self.files)
            .iter()
            .any(|(&h, other)| Some(h) != fh && other.ino.load(Ordering::Acquire) == ino);
        let mut view = self.write_view();
        let ino = if shared {
            view.set(&file.key, Some((file.data.clone(), revision)));
            let new = view.ino(&Node::File(file.key.clone()));
            drop(view);
            self.invalidations.inode(ino);
            new
        } else {
            view.adopt(&file.key, file.data.clone(), revision, ino);
            ino
        };
        file.base = revision;
        file.dirty = false;
        file.written = false;
        Ok(ino)
    }

    /// Commits a writer's file if it changed. A close that is not the last
    /// (`echo v > f`: the shell closes the descriptor it dup2'ed to stdout
    /// before anything is written) commits only what was written; an open
    /// that only truncated is committed by the last one (`last`).
    fn flush_handle(&self, fh: FileHandle, last: bool) -> Result<(), Errno> {
        let Some(handle) = self.handle(fh.0) else {
            return Ok(());
        };
        let mut file = lock(&handle.file);
        if let Some(errno) = file.failed {
            return Err(errno);
        }
        if !file.dirty || !(file.written || last) {
            return Ok(());
        }
        let ino = handle.ino.load(Ordering::Acquire);
        let result = self.commit(Some(fh.0), ino, &mut file);
        if let Ok(ino) = result {
            handle.ino.store(ino, Ordering::Release);
        }
        handle.changed(&file);
        result.map(drop)
    }

    fn new_handle(&self, file: OpenFile, ino: u64) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(fh, Arc::new(Handle::new(file, ino)));
        fh
    }

    /// A size a write may give a file: etcd refuses requests over its limit.
    fn check_size(&self, size: u64) -> Result<usize, Errno> {
        usize::try_from(size)
            .ok()
            .filter(|&s| s <= self.max_value)
            .ok_or(Errno::EFBIG)
    }

    fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let prefix = self.dir(parent)?;
        let node = self.read_view().lookup(&prefix, name)?;
        Ok(self.entry(&node))
    }

    fn do_open(&self, ino: INodeNo, flags: OpenFlags) -> Result<(u64, FopenFlags), Errno> {
        let Node::File(key) = self.node(ino)? else {
            return Err(Errno::EISDIR);
        };
        if flags.acc_mode() == OpenAccMode::O_RDONLY {
            // Readers are served from memory and the kernel's page cache of
            // this inode, whose content never changes; their close has
            // nothing to commit, so the kernel need not send a flush.
            return Ok((0, FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH));
        }
        self.writable()?;
        let (data, base) = self
            .read_view()
            .version(ino.0)
            .map_or((Vec::new(), 0), |v| (v.bytes.to_vec(), v.revision));
        // O_TRUNC comes with the open (atomic_o_trunc): only this writer's
        // buffer starts empty, and the truncation is committed with what
        // follows, as one put.
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let file = OpenFile {
            failed: None,
            key,
            data: if truncate { Vec::new() } else { data },
            base,
            dirty: truncate,
            written: false,
        };
        Ok((self.new_handle(file, ino.0), FopenFlags::FOPEN_KEEP_CACHE))
    }

    fn do_create(
        &self,
        parent: INodeNo,
        name: &OsStr,
        flags: i32,
    ) -> Result<(FileAttr, u64), Errno> {
        self.writable()?;
        let prefix = self.dir(parent)?;
        let segment = decode_new(name)?;
        let key = format!("{prefix}{segment}");
        let mut view = self.write_view();
        if view.is_dir(&format!("{key}/")) {
            return Err(Errno::EISDIR);
        }
        let existing = view.value(&key).map(|v| (v.bytes.to_vec(), v.revision));
        if existing.is_some() && flags & libc::O_EXCL != 0 {
            return Err(Errno::EEXIST);
        }
        let created = existing.is_none();
        if created {
            view.add_new_file(key.clone());
        }
        let node = Node::File(key.clone());
        let ino = view.ino(&node);
        drop(view);
        let (mut data, base) = existing.unwrap_or_default();
        let truncate = flags & libc::O_TRUNC != 0;
        if truncate {
            data.clear();
        }
        let file = OpenFile {
            failed: None,
            key,
            data,
            base,
            dirty: created || truncate,
            written: false,
        };
        let fh = self.new_handle(file, ino);
        Ok((self.entry(&node), fh))
    }

    fn do_setattr(
        &self,
        ino: INodeNo,
        size: Option<u64>,
        fh: Option<FileHandle>,
        owner: (Option<u32>, Option<u32>, Option<u32>),
    ) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let current = self.attr_of(ino.0, &node);
        let (mode, uid, gid) = owner;
        // Modes and owners are the mount's (--uid, --gid, --umask): a change
        // is refused, not pretended; setting what is already there is fine.
        let same_mode = mode.is_none_or(|m| m & 0o7777 == u32::from(current.perm));
        if !same_mode
            || uid.is_some_and(|u| u != current.uid)
            || gid.is_some_and(|g| g != current.gid)
        {
            return Err(if self.owner.read_only {
                Errno::EROFS
            } else {
                Errno::EPERM
            });
        }
        let (Some(size), Node::File(key)) = (size, &node) else {
            return Ok(current);
        };
        self.writable()?;
        let size = self.check_size(size)?;
        match fh.and_then(|fh| self.handle(fh.0).map(|h| (fh.0, h))) {
            Some((_, handle)) => {
                // ftruncate: this writer's buffer only.
                let mut file = lock(&handle.file);
                file.data.resize(size, 0);
                file.dirty = true;
                file.written = true;
                handle.changed(&file);
            }
            None => {
                // truncate(2) on a path: write the shortened value now.
                let (mut data, base) = self
                    .read_view()
                    .version(ino.0)
                    .map_or((Vec::new(), 0), |v| (v.bytes.to_vec(), v.revision));
                data.resize(size, 0);
                let mut file = OpenFile {
                    failed: None,
                    key: key.clone(),
                    data,
                    base,
                    dirty: true,
                    written: true,
                };
                self.commit(None, ino.0, &mut file)?;
            }
        }
        Ok(self.attr_of(ino.0, &node))
    }

    fn do_unlink(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        self.writable()?;
        let prefix = self.dir(parent)?;
        let node = self.read_view().lookup(&prefix, name)?;
        let Node::File(key) = node else {
            return Err(Errno::EISDIR);
        };
        if self.read_view().value(&key).is_none() {
            // Created but never written: nothing in etcd.
            self.write_view().remove_new_file(&key);
            return Ok(());
        }
        let abs = self.abs(&key);
        let audit = self.guard(&[Change::Delete(&abs)], &[&abs])?;
        // One key, never a prefix.
        let mut ops = vec![TxnOp::delete(abs.clone(), None)];
        ops.extend(audit);
        let txn = Txn::new().and_then(ops);
        self.etcd(&abs, |mut etcd| {
            let txn = txn.clone();
            async move { etcd.txn(txn).await }
        })?;
        let mut view = self.write_view();
        view.set(&key, None);
        keep_dir(&mut view, prefix);
        Ok(())
    }

    fn do_mkdir(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        self.writable()?;
        let prefix = self.dir(parent)?;
        if self.read_view().lookup(&prefix, name).is_ok() {
            return Err(Errno::EEXIST);
        }
        let dir = format!("{prefix}{}/", decode_new(name)?);
        self.write_view().add_local_dir(dir.clone());
        Ok(self.entry(&Node::Dir(dir)))
    }

    fn do_rmdir(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        self.writable()?;
        let prefix = self.dir(parent)?;
        let Node::Dir(dir) = self.read_view().lookup(&prefix, name)? else {
            return Err(Errno::ENOTDIR);
        };
        let mut view = self.write_view();
        if !view.is_empty_dir(&dir) {
            return Err(Errno::ENOTEMPTY);
        }
        view.remove_local_dir(&dir);
        keep_dir(&mut view, prefix);
        Ok(())
    }

    fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
    ) -> Result<(), Errno> {
        self.writable()?;
        let from_dir = self.dir(parent)?;
        let to_dir = self.dir(newparent)?;
        let Node::File(from) = self.read_view().lookup(&from_dir, name)? else {
            // Directories are many keys: let `mv` copy and delete them.
            return Err(Errno::EXDEV);
        };
        let to = match self.read_view().lookup(&to_dir, newname) {
            Ok(Node::Dir(_)) => return Err(Errno::EISDIR),
            Ok(Node::File(key)) => key,
            Err(_) => format!("{to_dir}{}", decode_new(newname)?),
        };
        let (Some(value), Some(ino)) = (
            self.read_view().value(&from).cloned(),
            self.read_view().known_ino(&Node::File(from.clone())),
        ) else {
            return Err(Errno::EBUSY); // Still being created.
        };
        let (from_abs, to_abs) = (self.abs(&from), self.abs(&to));
        let audit = self.guard(
            &[
                Change::Put(&to_abs, &value.bytes),
                Change::Delete(&from_abs),
            ],
            &[&to_abs, &from_abs],
        )?;
        let mut ops = vec![
            TxnOp::put(to_abs.clone(), value.bytes.to_vec(), None),
            TxnOp::delete(from_abs.clone(), None),
        ];
        ops.extend(audit);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                from_abs.clone(),
                CompareOp::Equal,
                value.revision,
            )])
            .and_then(ops);
        let response = self.etcd(&from_abs, |mut etcd| {
            let txn = txn.clone();
            async move { etcd.txn(txn).await }
        })?;
        if !response.succeeded() {
            return Err(Errno::ESTALE);
        }
        let revision = response.header().map_or(0, |h| h.revision());
        // The kernel moved the entry to the new name with the same inode:
        // that inode is now the new key's version.
        let mut view = self.write_view();
        view.set(&from, None);
        view.adopt(&to, value.bytes.to_vec(), revision, ino);
        keep_dir(&mut view, from_dir);
        Ok(())
    }

    /// The entries of directory `ino` after `offset`, as the view holds
    /// them now (see `listing`), with the directory's own attributes.
    fn list_after(&self, ino: INodeNo, offset: u64) -> Result<(Page, FileAttr), Errno> {
        let node = self.node(ino)?;
        let Node::Dir(prefix) = &node else {
            return Err(Errno::ENOTDIR);
        };
        let listed = self.cookies.after(&self.read_view(), prefix, offset);
        Ok((listed, self.attr_of(ino.0, &node)))
    }
}

/// Ends a handler whose reply carries no data.
fn done(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

/// A directory whose last entry went away through the mount stays until it
/// is removed with rmdir, as on any filesystem.
fn keep_dir(view: &mut View, prefix: String) {
    if !view.is_dir(&prefix) {
        view.add_local_dir(prefix);
    }
}

/// The segment a new file or directory name stands for.
fn decode_new(name: &OsStr) -> Result<String, Errno> {
    if name == names::VALUE_FILE || names::is_shortened(name) {
        return Err(Errno::EINVAL);
    }
    let segment = names::decode(name).map_err(|_| Errno::EINVAL)?;
    String::from_utf8(segment).map_err(|_| Errno::EINVAL)
}

/// Counts one FUSE request (`shylock_fuse_requests_total{op}`, for
/// `--metrics-addr`).
fn requested(op: &'static str) {
    metrics::counter!("shylock_fuse_requests_total", "op" => op).increment(1);
}

impl Filesystem for EtcdFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // O_TRUNC arrives with the open instead of as a truncation of the
        // file for every writer and reader.
        // Listings carry attributes (READDIRPLUS), always: every file is
        // looked up right after by what lists a directory here.
        if let Err(missing) = config.add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS) {
            tracing::warn!(?missing, "the kernel cannot list with attributes");
        }
        if let Err(missing) = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC) {
            tracing::warn!(
                ?missing,
                "the kernel cannot pass O_TRUNC with open; truncations are separate writes"
            );
        }
        Ok(())
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.write_view().forget(ino.0, nlookup);
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        requested("lookup");
        match self.do_lookup(parent, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        requested("getattr");
        match self.node(ino) {
            Ok(node) => reply.attr(&TTL, &self.attr_of(ino.0, &node)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        requested("setattr");
        // Times are the mount's: setting them (touch) is accepted and has
        // no effect. Modes and owners are checked in do_setattr.
        match self.do_setattr(ino, size, fh, (mode, uid, gid)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        requested("open");
        if self.owner.read_only {
            // No file of a read-only mount needs a handle: ENOSYS tells the
            // kernel to stop sending opens and releases (it keeps the page
            // cache, which the watch invalidates). Writes never get here: the
            // mount itself is read-only.
            return reply.error(Errno::ENOSYS);
        }
        match self.do_open(ino, flags) {
            Ok((fh, open_flags)) => reply.opened(FileHandle(fh), open_flags),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        requested("read");
        if self.owner.read_only {
            self.prefetch.reading(ino.0);
        }
        let slice = |data: &[u8]| {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let end = start.saturating_add(size as usize).min(data.len());
            data[start..end].to_vec()
        };
        if let Some(handle) = self.handle(fh.0) {
            return reply.data(&slice(&lock(&handle.file).data));
        }
        // The inode's own version: its content never changes.
        match self.node(ino) {
            Ok(Node::File(_)) => {
                let bytes = self.read_view().version(ino.0).map(|v| v.bytes.clone());
                reply.data(&slice(bytes.as_deref().unwrap_or_default()));
            }
            Ok(Node::Dir(_)) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        requested("write");
        let Some(handle) = self.handle(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        // Past etcd's request limit the write could never be committed:
        // refused now, not at close.
        let end = offset.saturating_add(data.len() as u64);
        let mut file = lock(&handle.file);
        let Ok(end) = self.check_size(end) else {
            file.failed = Some(Errno::EFBIG);
            return reply.error(Errno::EFBIG);
        };
        let start = end - data.len();
        if file.data.len() < end {
            file.data.resize(end, 0);
        }
        file.data[start..end].copy_from_slice(data);
        file.dirty = true;
        file.written = true;
        handle.changed(&file);
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        requested("flush");
        if self.owner.read_only {
            // Nothing to commit ever: ENOSYS stops the kernel's flushes.
            return reply.error(Errno::ENOSYS);
        }
        done(reply, self.flush_handle(fh, false))
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        requested("fsync");
        done(reply, self.flush_handle(fh, true))
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        requested("release");
        let result = self.flush_handle(fh, true);
        if let Err(errno) = result {
            tracing::warn!(
                fh = fh.0,
                ?errno,
                "a file closed without its last write reaching etcd"
            );
        }
        let handle = lock(&self.files).remove(&fh.0);
        if let Some(handle) = handle {
            let file = lock(&handle.file);
            if file.dirty {
                // Never committed: a created file disappears again, and what
                // the kernel cached of the writes goes.
                self.write_view().remove_new_file(&file.key);
                self.invalidations.inode(handle.ino.load(Ordering::Acquire));
            }
        }
        done(reply, result)
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        requested("create");
        match self.do_create(parent, name, flags) {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        requested("unlink");
        done(reply, self.do_unlink(parent, name))
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        requested("mkdir");
        match self.do_mkdir(parent, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        requested("rmdir");
        done(reply, self.do_rmdir(parent, name))
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        requested("rename");
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        done(reply, self.do_rename(parent, name, newparent, newname))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        requested("opendir");
        // The kernel keeps a listing until the watch invalidates the
        // directory (see `invalidate`). While a change of it is on its way
        // to the kernel, an open reads the listing from here, and fills no
        // kept one. (Answering ENOSYS would spare this request, but then
        // every open would use the kept listing.)
        let flags = if self.invalidations.telling(ino.0) {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR
        };
        match self.dir(ino) {
            Ok(_) => reply.opened(FileHandle(0), flags),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        requested("readdir");
        let (listed, parent) = match self.list_after(ino, offset) {
            Ok((listed, _)) => {
                let view = self.read_view();
                let parent = view.live(ino.0).and_then(|dir| view.parent_and_name(dir));
                let parent = parent.and_then(|(p, _)| view.known_ino(&p));
                (listed, parent.unwrap_or(1))
            }
            Err(e) => return reply.error(e),
        };
        for entry in listed.iter() {
            let entry_ino = match &entry.node {
                Some(node) => self.write_view().ino(node),
                None if entry.name == ".." => parent,
                None => ino.0,
            };
            if reply.add(INodeNo(entry_ino), entry.cookie, entry.kind, &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    /// A listing with each entry's attributes, so that `ls -l` and `cp -r`
    /// need no LOOKUP per file. Each entry given is a reference the kernel
    /// takes, as a LOOKUP's.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        requested("readdirplus");
        let (listed, dir_attr) = match self.list_after(ino, offset) {
            Ok(found) => found,
            Err(e) => return reply.error(e),
        };
        // The reader took this directory's last listing in.
        self.prefetch.listed_again(ino.0);
        let mut prefetch = Vec::new();
        for Listed {
            cookie, name, node, ..
        } in listed.iter()
        {
            let Some(node) = node else {
                // `.` and `..`: the kernel takes no reference to them.
                if reply.add(dir_attr.ino, *cookie, name, &TTL, &dir_attr, Generation(0)) {
                    break;
                }
                continue;
            };
            // A node gone since the listing was made is left out: the
            // kernel would keep its entry for TTL, and the delete's
            // invalidation may already have been sent. (One deleted after
            // this check is still safe: the invalidation waits for the
            // directory lock this listing holds, so it lands after the
            // entry.)
            if !self.read_view().exists(node) {
                continue;
            }
            // The node's current inode, referenced only if the entry fits.
            let ino = self.write_view().ino(node);
            let attr = self.attr_of(ino, node);
            if reply.add(INodeNo(ino), *cookie, name, &TTL, &attr, Generation(0)) {
                break;
            }
            let mut view = self.write_view();
            view.referenced(ino);
            let small = attr.size > 0 && attr.size <= PREFETCH_FILE;
            if self.owner.read_only && small && view.first_store(ino) {
                if let Some(value) = view.version(ino) {
                    prefetch.push((ino, value.bytes.clone()));
                }
            }
        }
        // What lists a directory here reads its files next (`cp -r`).
        self.prefetch.arm(ino.0, prefetch);
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Files of keys are not terminals or devices (isatty asks this).
        reply.error(Errno::ENOTTY);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        // Keys have no extended attributes.
        reply.error(Errno::ENODATA);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }
}
