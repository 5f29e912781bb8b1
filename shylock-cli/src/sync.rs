//! `shylock sync`: a prefix mirrored into a directory of files, for
//! consumers that cannot use FUSE. As Kubernetes does for ConfigMap
//! volumes, every update is written to a fresh versioned directory and
//! published by renaming one symlink, `..data`; the top-level names are
//! symlinks through it. A reader that resolves `..data` once sees exactly
//! one version, never half of an update. Names follow the mount's rules
//! (`%value`, `%`-escapes); a top-level name starting with `..` (sync's own
//! names) has its first dot escaped (`%2E.data`).
//!
//! A version that cannot be written whole (a full disk) is removed, and the
//! directory keeps serving the last one; versions left by a crash are
//! removed at start. With `--watch`, a failed version is retried with
//! backoff until it is written or the keys change.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::atomic::sync_dir;
use crate::command::parse_mode;
use crate::connect::ConnectArgs;
use crate::exit::{msg, Error};
use crate::export::RetryArgs;
use crate::live_keys::{relative, LiveKeys, Wake};
use crate::names::{self, VALUE_FILE};

/// The symlink that names the current version.
pub const DATA: &str = "..data";
const VERSION_PREFIX: &str = "..v";
/// Where the next `..data` is made before it is renamed into place.
const DATA_STAGING: &str = "..data_tmp";

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// The etcd prefix to mirror.
    pub prefix: String,

    /// The directory to mirror it into (created if missing).
    pub dir: PathBuf,

    /// Keep running and publish a new version on every change.
    #[arg(long)]
    pub watch: bool,

    /// Mode of every file, in octal; directories get it with search (x)
    /// wherever it allows reading (0640 makes directories 0750).
    #[arg(long, default_value = "0644", value_parser = parse_mode)]
    pub mode: u32,

    #[command(flatten)]
    pub retry: RetryArgs,

    #[command(flatten)]
    pub report: crate::reporting::ReportArgs,
}

pub async fn run(connect: &ConnectArgs, args: SyncArgs) -> Result<(), Error> {
    let client = shylock::Client::connect(connect.options()?).await?;
    let base = args.prefix.trim_end_matches('/').to_owned();
    let mut live = LiveKeys::follow(&client, &base, false).await?;
    fs::create_dir_all(&args.dir)
        .map_err(|e| msg(format!("cannot create {}: {e}", args.dir.display())))?;
    let mut writer = Writer::new(args.dir.clone(), args.mode);
    if !args.watch {
        return writer.publish(&relative(&live.snapshot(), &base));
    }
    let reporter = args.report.start(&client, "sync")?;
    let report = crate::reporting::prefix_report(reporter.as_ref(), &args.prefix);
    let mut stop = crate::signals::Stop::new()?;
    let mut retry = args.retry.retry();
    let mut wake = Wake::Changed;
    while wake != Wake::Stop {
        if wake == Wake::Changed {
            retry.succeeded();
        }
        let (keys, revision) = live.snapshot_at();
        let published = writer.publish(&relative(&keys, &base));
        drop(keys);
        crate::telemetry::written("sync", published.is_ok());
        crate::reporting::outcome(report.as_ref(), revision, &published);
        match published {
            Ok(()) => {
                retry.succeeded();
                crate::notify::status(&format!(
                    "{} synced into {}",
                    args.prefix,
                    args.dir.display()
                ));
            }
            Err(error) => {
                let retry_in = retry.failed();
                tracing::error!(%error, ?retry_in, "sync failed; the directory keeps its last version");
                crate::notify::status(&format!("sync failed, retrying: {error}"));
            }
        }
        crate::notify::ready(&format!(
            "syncing {} into {}",
            args.prefix,
            args.dir.display()
        ));
        wake = live.next_wake(&mut stop, &retry).await?;
    }
    crate::reporting::stop(reporter.as_ref()).await;
    Ok(())
}

/// Publishes versions of a tree of keys into a directory.
pub struct Writer {
    dir: PathBuf,
    next: u64,
    mode: u32,
    cleaned: bool,
}

impl Writer {
    pub fn new(dir: PathBuf, mode: u32) -> Self {
        Writer {
            dir,
            next: 0,
            mode: mode & 0o7777,
            cleaned: false,
        }
    }

    /// Directories: the files' mode with search wherever reading is allowed.
    fn dir_mode(&self) -> u32 {
        (self.mode & 0o777) | ((self.mode & 0o444) >> 2)
    }

    /// Writes `keys` (relative to the prefix) as a new version and makes it
    /// current. A version that cannot be written whole is removed again.
    pub fn publish(&mut self, keys: &[(String, Vec<u8>)]) -> Result<(), Error> {
        if !self.cleaned {
            self.remove_unused()?;
            self.cleaned = true;
        }
        self.next += 1;
        let version = format!(
            "{VERSION_PREFIX}{}.{}.{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            std::process::id(),
            self.next
        );
        let root = self.dir.join(&version);
        let written = self
            .write_version(&root, keys)
            .and_then(|()| self.make_current(&version));
        if written.is_err() {
            // Never leave a half-written version to fill the disk.
            let _ = fs::remove_dir_all(&root);
            return written;
        }
        self.link_top_level(&root)?;
        self.remove_unused()?;
        tracing::info!(dir = %self.dir.display(), keys = keys.len(), version, "published");
        Ok(())
    }

    fn write_version(&self, root: &Path, keys: &[(String, Vec<u8>)]) -> Result<(), Error> {
        let mut dirs = fs::DirBuilder::new();
        dirs.mode(self.dir_mode());
        dirs.create(root).map_err(|e| err("create", root, e))?;
        dirs.recursive(true);
        for (key, value) in keys {
            let path = root.join(file_path(key, keys));
            let parent = path.parent().expect("inside the version directory");
            dirs.create(parent).map_err(|e| err("create", parent, e))?;
            let written = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(self.mode)
                .open(&path)
                .and_then(|mut file| {
                    std::io::Write::write_all(&mut file, value)?;
                    // The mode exactly, whatever the umask took away.
                    file.set_permissions(fs::Permissions::from_mode(self.mode))?;
                    file.sync_all()
                });
            written.map_err(|e| err("write", &path, e))?;
        }
        sync_tree(root, self.dir_mode())
    }

    /// Publishes a version: one rename of a symlink.
    fn make_current(&self, version: &str) -> Result<(), Error> {
        let staged = self
            .dir
            .join(format!("{DATA_STAGING}.{}", std::process::id()));
        let _ = fs::remove_file(&staged);
        std::os::unix::fs::symlink(version, &staged).map_err(|e| err("link", &staged, e))?;
        if let Err(e) = fs::rename(&staged, self.dir.join(DATA)) {
            let _ = fs::remove_file(&staged);
            return Err(err("publish", &staged, e));
        }
        sync_dir(&self.dir)
    }

    /// Top-level names: symlinks through `..data`, added or removed.
    fn link_top_level(&self, root: &Path) -> Result<(), Error> {
        let wanted: BTreeSet<OsString> = fs::read_dir(root)
            .map_err(|e| err("list", root, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        for name in &wanted {
            let link = self.dir.join(name);
            if fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new(DATA).join(name), &link)
                    .map_err(|e| err("link", &link, e))?;
            }
        }
        for entry in fs::read_dir(&self.dir)
            .map_err(|e| err("list", &self.dir, e))?
            .flatten()
        {
            let name = entry.file_name();
            if !name.as_bytes().starts_with(b"..")
                && !wanted.contains(&name)
                && fs::read_link(entry.path()).is_ok_and(|target| target.starts_with(DATA))
            {
                let _ = fs::remove_file(entry.path());
            }
        }
        sync_dir(&self.dir)
    }

    /// Removes every version but the current one, and staged links left by
    /// a crash: what a failure or `kill -9` left behind.
    fn remove_unused(&self) -> Result<(), Error> {
        let current = fs::read_link(self.dir.join(DATA)).ok();
        for entry in fs::read_dir(&self.dir)
            .map_err(|e| err("list", &self.dir, e))?
            .flatten()
        {
            let name = entry.file_name();
            let bytes = name.as_bytes();
            let is_version = bytes.starts_with(VERSION_PREFIX.as_bytes());
            if is_version && current.as_deref() != Some(Path::new(&name)) {
                let _ = fs::remove_dir_all(entry.path());
            } else if bytes.starts_with(DATA_STAGING.as_bytes()) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

fn err(what: &str, path: &Path, e: std::io::Error) -> Error {
    msg(format!("sync: cannot {what} {}: {e}", path.display()))
}

/// A key's file path inside a version: escaped segments, and `%value` for
/// a key that is also a prefix. A first segment starting with `..` would
/// be taken for sync's own names: its first dot is escaped.
fn file_path(key: &str, keys: &[(String, Vec<u8>)]) -> PathBuf {
    let mut path = PathBuf::new();
    for (i, segment) in key.split('/').enumerate() {
        let mut name = names::encode(segment.as_bytes());
        if i == 0 && name.as_bytes().starts_with(b"..") {
            let mut escaped = OsString::from("%2E");
            escaped.push(std::ffi::OsStr::from_bytes(&name.as_bytes()[1..]));
            name = escaped;
        }
        path.push(name);
    }
    let prefix = format!("{key}/");
    if keys.iter().any(|(k, _)| k.starts_with(&prefix)) {
        path.push(VALUE_FILE);
    }
    path
}

/// Gives every directory of a version its mode (exactly, whatever the
/// umask took away) and fsyncs it.
fn sync_tree(dir: &Path, mode: u32) -> Result<(), Error> {
    for entry in fs::read_dir(dir)
        .map_err(|e| err("list", dir, e))?
        .flatten()
    {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            sync_tree(&entry.path(), mode)?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(|e| err("chmod", dir, e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::keys;

    #[test]
    fn versions_are_published_through_one_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Writer::new(dir.path().to_owned(), 0o644);
        writer
            .publish(&keys(&[("a", "1"), ("db/url", "x"), ("db", "own")]))
            .unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "1");
        assert_eq!(fs::read_to_string(dir.path().join("db/url")).unwrap(), "x");
        assert_eq!(
            fs::read_to_string(dir.path().join("db/%value")).unwrap(),
            "own"
        );
        writer.publish(&keys(&[("b", "2")])).unwrap();
        assert!(!dir.path().join("a").exists(), "removed keys disappear");
        assert_eq!(fs::read_to_string(dir.path().join("b")).unwrap(), "2");
        let versions = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(VERSION_PREFIX)
            })
            .count();
        assert_eq!(versions, 1, "old versions are removed");
    }

    #[test]
    fn names_of_syncs_own_are_escaped_and_modes_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Writer::new(dir.path().to_owned(), 0o640);
        writer
            .publish(&keys(&[
                ("..data", "mine"),
                ("..v1/x", "y"),
                ("a/..b", "z"),
            ]))
            .unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("%2E.data")).unwrap(),
            "mine"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("%2E.v1/x")).unwrap(),
            "y"
        );
        assert_eq!(fs::read_to_string(dir.path().join("a/..b")).unwrap(), "z");
        let mode = |p: &str| {
            fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!((mode("%2E.data"), mode("a")), (0o640, 0o750));
    }
}
