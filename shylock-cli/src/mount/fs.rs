//! The FUSE filesystem over the view. Every handler ends in exactly one
//! reply; helpers return `Result<_, Errno>`. Reads are served from memory;
//! writes go to etcd when a file is flushed or closed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::view::{Node, Owner, View};
use crate::cli::Conflicts;
use crate::names;

/// How long the kernel may cache entries and attributes: long, because every
/// change seen by the watch invalidates them.
const TTL: Duration = Duration::from_secs(3600);
/// How long one etcd request from a handler may take before it is an EIO.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

pub struct EtcdFs {
    pub view: Arc<RwLock<View>>,
    pub etcd: etcd_client::Client,
    pub runtime: tokio::runtime::Handle,
    /// The mounted prefix without its trailing `/`: a key is `base/relative`.
    pub base: String,
    pub owner: Owner,
    pub conflicts: Conflicts,
    files: Mutex<HashMap<u64, OpenFile>>,
    dirs: Mutex<HashMap<u64, Vec<DirEntry>>>,
    next_fh: AtomicU64,
}

/// One entry of an open directory: inode, kind and name.
type DirEntry = (u64, FileType, std::ffi::OsString);

/// A file opened for writing: its whole content, written back on flush.
struct OpenFile {
    key: String,
    data: Vec<u8>,
    /// The key's revision when opened (0: it did not exist), for compare-and-swap.
    base: i64,
    dirty: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EtcdFs {
    pub fn new(
        view: Arc<RwLock<View>>,
        etcd: etcd_client::Client,
        runtime: tokio::runtime::Handle,
        base: String,
        owner: Owner,
        conflicts: Conflicts,
    ) -> Self {
        EtcdFs {
            view,
            etcd,
            runtime,
            base,
            owner,
            conflicts,
            files: Mutex::default(),
            dirs: Mutex::default(),
            next_fh: AtomicU64::new(1),
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

    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        let view = self.read_view();
        let node = view.node(ino.0).ok_or(Errno::ENOENT)?;
        if view.exists(node)
            || matches!(node, Node::File(k) if lock(&self.files).values().any(|f| &f.key == k))
        {
            Ok(node.clone())
        } else {
            Err(Errno::ENOENT)
        }
    }

    fn dir(&self, ino: INodeNo) -> Result<String, Errno> {
        match self.node(ino)? {
            Node::Dir(prefix) => Ok(prefix),
            Node::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn attr(&self, node: &Node) -> FileAttr {
        let mut attr = self.write_view().attr(node, self.owner);
        // A file being written shows the size it will have.
        if let Node::File(key) = node {
            if let Some(open) = lock(&self.files)
                .values()
                .find(|f| &f.key == key && f.dirty)
            {
                attr.size = open.data.len() as u64;
            }
        }
        attr
    }

    /// Runs one etcd request from a handler thread, with a timeout.
    fn etcd<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Errno> {
        match self
            .runtime
            .block_on(async { tokio::time::timeout(ETCD_TIMEOUT, call).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(etcd_client::Error::GRpcStatus(status)))
                if matches!(status.code() as i32, 7 | 16) =>
            {
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

    /// Writes a file's content to its key (compare-and-swap against the
    /// revision it was opened at, or last writer wins).
    fn commit(&self, file: &mut OpenFile) -> Result<(), Errno> {
        let key = self.abs(&file.key);
        let put = TxnOp::put(key.clone(), file.data.clone(), None);
        let txn = match self.conflicts {
            Conflicts::Cas => Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    file.base,
                )])
                .and_then([put]),
            Conflicts::Lww => Txn::new().and_then([put]),
        };
        let mut kv = self.etcd.kv_client();
        let response = self.etcd(&key, kv.txn(txn))?;
        if !response.succeeded() {
            tracing::warn!(
                key,
                "write refused: the key changed since the file was opened"
            );
            return Err(Errno::ESTALE);
        }
        let revision = response.header().map_or(0, |h| h.revision());
        self.write_view()
            .set(&file.key, Some((file.data.clone(), revision)));
        file.base = revision;
        file.dirty = false;
        Ok(())
    }

    fn flush_handle(&self, fh: FileHandle) -> Result<(), Errno> {
        let mut files = lock(&self.files);
        match files.get_mut(&fh.0) {
            Some(file) if file.dirty => self.commit(file),
            _ => Ok(()),
        }
    }

    fn new_handle(&self, file: OpenFile) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(fh, file);
        fh
    }

    fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let prefix = self.dir(parent)?;
        let node = self.read_view().lookup(&prefix, name)?;
        Ok(self.attr(&node))
    }

    fn do_open(&self, ino: INodeNo, flags: OpenFlags) -> Result<(u64, FopenFlags), Errno> {
        let Node::File(key) = self.node(ino)? else {
            return Err(Errno::EISDIR);
        };
        if flags.acc_mode() == OpenAccMode::O_RDONLY {
            // Readers are served from memory and the kernel's page cache,
            // which the watch invalidates on every change; their close has
            // nothing to commit, so the kernel need not send a flush.
            return Ok((0, FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH));
        }
        self.writable()?;
        let (data, base) = self
            .read_view()
            .value(&key)
            .map_or((Vec::new(), 0), |v| (v.bytes.to_vec(), v.revision));
        let fh = self.new_handle(OpenFile {
            key,
            data,
            base,
            dirty: false,
        });
        Ok((fh, FopenFlags::empty()))
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
        let dirty = existing.is_none();
        if dirty {
            view.add_new_file(key.clone());
        }
        drop(view);
        let (data, base) = existing.unwrap_or_default();
        let fh = self.new_handle(OpenFile {
            key: key.clone(),
            data,
            base,
            dirty,
        });
        Ok((self.attr(&Node::File(key)), fh))
    }

    fn do_setattr(
        &self,
        ino: INodeNo,
        size: Option<u64>,
        fh: Option<FileHandle>,
        other: bool,
    ) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        if other || size.is_some() {
            self.writable()?;
        }
        if let (Some(size), Node::File(key)) = (size, &node) {
            let size = usize::try_from(size).map_err(|_| Errno::EFBIG)?;
            // The kernel truncates for O_TRUNC without naming the handle:
            // apply it to every open writer of the key.
            let truncated = {
                let mut files = lock(&self.files);
                let mut any = false;
                for (&handle, file) in files.iter_mut() {
                    if &file.key == key && fh.is_none_or_eq(handle) {
                        file.data.resize(size, 0);
                        file.dirty = true;
                        any = true;
                    }
                }
                any
            };
            if !truncated {
                // truncate(2) on a path: write the shortened value now.
                let (mut data, base) = self
                    .read_view()
                    .value(key)
                    .map_or((Vec::new(), 0), |v| (v.bytes.to_vec(), v.revision));
                data.resize(size, 0);
                let mut file = OpenFile {
                    key: key.clone(),
                    data,
                    base,
                    dirty: true,
                };
                self.commit(&mut file)?;
            }
        }
        Ok(self.attr(&node))
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
        let mut kv = self.etcd.kv_client();
        // One key, never a prefix.
        self.etcd(&abs, kv.delete(abs.clone(), None))?;
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
        Ok(self.attr(&Node::Dir(dir)))
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
        let Some(value) = self.read_view().value(&from).cloned() else {
            return Err(Errno::EBUSY); // Still being created.
        };
        let (from_abs, to_abs) = (self.abs(&from), self.abs(&to));
        let txn = Txn::new()
            .when([Compare::mod_revision(
                from_abs.clone(),
                CompareOp::Equal,
                value.revision,
            )])
            .and_then([
                TxnOp::put(to_abs.clone(), value.bytes.to_vec(), None),
                TxnOp::delete(from_abs.clone(), None),
            ]);
        let mut kv = self.etcd.kv_client();
        let response = self.etcd(&from_abs, kv.txn(txn))?;
        if !response.succeeded() {
            return Err(Errno::ESTALE);
        }
        let revision = response.header().map_or(0, |h| h.revision());
        let mut view = self.write_view();
        view.set(&to, Some((value.bytes.to_vec(), revision)));
        view.set(&from, None);
        keep_dir(&mut view, from_dir);
        Ok(())
    }

    fn do_opendir(&self, ino: INodeNo) -> Result<u64, Errno> {
        let prefix = self.dir(ino)?;
        let mut view = self.write_view();
        let parent = match view.parent_and_name(&Node::Dir(prefix.clone())) {
            Some((parent, _)) => view.ino(&parent),
            None => 1,
        };
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".into()),
            (parent, FileType::Directory, "..".into()),
        ];
        for entry in view.children(&prefix) {
            let kind = match entry.node {
                Node::Dir(_) => FileType::Directory,
                Node::File(_) => FileType::RegularFile,
            };
            entries.push((view.ino(&entry.node), kind, entry.name));
        }
        drop(view);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(fh, entries);
        Ok(fh)
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

trait HandleMatch {
    fn is_none_or_eq(&self, handle: u64) -> bool;
}

impl HandleMatch for Option<FileHandle> {
    /// No handle named, or this one.
    fn is_none_or_eq(&self, handle: u64) -> bool {
        self.map_or(true, |fh| fh.0 == handle)
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

impl Filesystem for EtcdFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Ok(node) => reply.attr(&TTL, &self.attr(&node)),
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
        // Modes, owners and times are the mount's; changing them is accepted
        // and has no effect, except on a read-only mount.
        let other = mode.is_some() || uid.is_some() || gid.is_some();
        match self.do_setattr(ino, size, fh, other) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
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
        let slice = |data: &[u8]| {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let end = start.saturating_add(size as usize).min(data.len());
            data[start..end].to_vec()
        };
        if let Some(file) = lock(&self.files).get(&fh.0) {
            return reply.data(&slice(&file.data));
        }
        match self.node(ino) {
            Ok(Node::File(key)) => {
                let bytes = self.read_view().value(&key).map(|v| v.bytes.clone());
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
        let mut files = lock(&self.files);
        let Some(file) = files.get_mut(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let Ok(start) = usize::try_from(offset) else {
            return reply.error(Errno::EFBIG);
        };
        let end = start + data.len();
        if file.data.len() < end {
            file.data.resize(end, 0);
        }
        file.data[start..end].copy_from_slice(data);
        file.dirty = true;
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
        if self.owner.read_only {
            // Nothing to commit ever: ENOSYS stops the kernel's flushes.
            return reply.error(Errno::ENOSYS);
        }
        done(reply, self.flush_handle(fh))
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        done(reply, self.flush_handle(fh))
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
        let result = self.flush_handle(fh);
        if let Some(file) = lock(&self.files).remove(&fh.0) {
            if file.dirty {
                // Never written: a created file disappears again.
                self.write_view().remove_new_file(&file.key);
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
        match self.do_mkdir(parent, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
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
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        done(reply, self.do_rename(parent, name, newparent, newname))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.do_opendir(ino) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let dirs = lock(&self.dirs);
        let Some(entries) = dirs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            // The offset of an entry is the cookie of the one after it.
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
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

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }
}
