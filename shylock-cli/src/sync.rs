//! `shylock sync`: a prefix mirrored into a directory of files, for
//! consumers that cannot use FUSE. As Kubernetes does for ConfigMap
//! volumes, every update is written to a fresh versioned directory and
//! published by renaming one symlink, `..data`; the top-level names are
//! symlinks through it. A reader that resolves `..data` once sees exactly
//! one version, never half of an update. Names follow the mount's rules
//! (`%value`, `%`-escapes).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::atomic::sync_dir;
use crate::connect::ConnectArgs;
use crate::exit::{msg, Error};
use crate::live_keys::{relative, LiveKeys};
use crate::names::{self, VALUE_FILE};

/// The symlink that names the current version.
pub const DATA: &str = "..data";
const VERSION_PREFIX: &str = "..v";

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// The etcd prefix to mirror.
    pub prefix: String,

    /// The directory to mirror it into (created if missing).
    pub dir: PathBuf,

    /// Keep running and publish a new version on every change.
    #[arg(long)]
    pub watch: bool,
}

pub async fn run(connect: &ConnectArgs, args: SyncArgs) -> Result<(), Error> {
    let client = shylock::Client::connect(connect.options()?).await?;
    let base = args.prefix.trim_end_matches('/').to_owned();
    let mut live = LiveKeys::follow(&client, &base, false).await?;
    fs::create_dir_all(&args.dir)
        .map_err(|e| msg(format!("cannot create {}: {e}", args.dir.display())))?;
    let mut writer = Writer::new(args.dir.clone());
    writer.publish(&relative(&live.snapshot(), &base))?;
    if !args.watch {
        return Ok(());
    }
    let mut stop = crate::signals::Stop::new()?;
    while live.next_change(&mut stop).await? {
        if let Err(error) = writer.publish(&relative(&live.snapshot(), &base)) {
            tracing::error!(%error, "sync failed; the directory keeps its last version");
        }
    }
    Ok(())
}

/// Publishes versions of a tree of keys into a directory.
pub struct Writer {
    dir: PathBuf,
    next: u64,
}

impl Writer {
    pub fn new(dir: PathBuf) -> Self {
        Writer { dir, next: 0 }
    }

    /// Writes `keys` (relative to the prefix) as a new version and makes it current.
    pub fn publish(&mut self, keys: &[(String, Vec<u8>)]) -> Result<(), Error> {
        let err = |what: &str, path: &Path, e: std::io::Error| {
            msg(format!("sync: cannot {what} {}: {e}", path.display()))
        };
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
        fs::create_dir(&root).map_err(|e| err("create", &root, e))?;
        for (key, value) in keys {
            let path = root.join(file_path(key, keys));
            let parent = path.parent().expect("inside the version directory");
            fs::create_dir_all(parent).map_err(|e| err("create", parent, e))?;
            fs::write(&path, value).map_err(|e| err("write", &path, e))?;
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| err("fsync", &path, e))?;
        }
        sync_tree(&root)?;

        // Publish: one rename of a symlink.
        let staged = self.dir.join("..data_tmp");
        let _ = fs::remove_file(&staged);
        std::os::unix::fs::symlink(&version, &staged).map_err(|e| err("link", &staged, e))?;
        fs::rename(&staged, self.dir.join(DATA)).map_err(|e| err("publish", &staged, e))?;
        sync_dir(&self.dir)?;

        // Top-level names: symlinks through ..data, added or removed.
        let wanted: BTreeSet<OsString> = fs::read_dir(&root)
            .map_err(|e| err("list", &root, e))?
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
            let is_ours = name.as_bytes().starts_with(b"..");
            if is_ours {
                if name.as_bytes().starts_with(VERSION_PREFIX.as_bytes())
                    && name != version.as_str()
                {
                    let _ = fs::remove_dir_all(entry.path());
                }
            } else if !wanted.contains(&name)
                && fs::read_link(entry.path()).is_ok_and(|target| target.starts_with(DATA))
            {
                let _ = fs::remove_file(entry.path());
            }
        }
        sync_dir(&self.dir)?;
        tracing::info!(dir = %self.dir.display(), keys = keys.len(), version, "published");
        Ok(())
    }
}

/// A key's file path inside a version: escaped segments, and `%value` for
/// a key that is also a prefix.
fn file_path(key: &str, keys: &[(String, Vec<u8>)]) -> PathBuf {
    let mut path: PathBuf = key
        .split('/')
        .map(|s| names::encode(s.as_bytes()))
        .collect();
    let prefix = format!("{key}/");
    if keys.iter().any(|(k, _)| k.starts_with(&prefix)) {
        path.push(VALUE_FILE);
    }
    path
}

fn sync_tree(dir: &Path) -> Result<(), Error> {
    for entry in fs::read_dir(dir)
        .map_err(|e| msg(format!("sync: cannot list {}: {e}", dir.display())))?
        .flatten()
    {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::keys;

    #[test]
    fn versions_are_published_through_one_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Writer::new(dir.path().to_owned());
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
}
