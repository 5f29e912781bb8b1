//! Writing a file so that readers see the old content or the new, never a
//! mix: stage in the destination's directory, fsync, optionally check the
//! staged file, rename over the destination, fsync the directory. Nothing
//! is written when content, mode and owner are already right.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::exit::{msg, Error};

/// A destination file and what it should look like besides its content.
#[derive(Clone, Debug)]
pub struct Target {
    pub path: PathBuf,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Target {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Target {
            path: path.into(),
            mode: 0o644,
            uid: None,
            gid: None,
        }
    }

    /// Whether the destination already has this content, mode and owner.
    pub fn is_current(&self, content: &[u8]) -> bool {
        let Ok(meta) = fs::metadata(&self.path) else {
            return false;
        };
        meta.mode() & 0o7777 == self.mode
            && self.uid.is_none_or_eq(meta.uid())
            && self.gid.is_none_or_eq(meta.gid())
            && meta.len() == content.len() as u64
            && fs::read(&self.path).is_ok_and(|current| current == content)
    }

    /// Writes the content to a staged file next to the destination.
    pub fn stage(&self, content: &[u8]) -> Result<Staged, Error> {
        let dir = parent(&self.path);
        let name = self
            .path
            .file_name()
            .ok_or_else(|| msg(format!("{} is not a file path", self.path.display())))?;
        let staged = dir.join(format!(
            ".{}.shylock-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let written = (|| -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&staged)?;
            file.write_all(content)?;
            fs::set_permissions(&staged, fs::Permissions::from_mode(self.mode))?;
            if self.uid.is_some() || self.gid.is_some() {
                std::os::unix::fs::chown(&staged, self.uid, self.gid)?;
            }
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&staged);
            return Err(msg(format!("cannot write {}: {e}", staged.display())));
        }
        Ok(Staged {
            staged,
            target: self.path.clone(),
            done: false,
        })
    }

    /// Stages and installs in one go; returns whether anything changed.
    pub fn write(&self, content: &[u8]) -> Result<bool, Error> {
        if self.is_current(content) {
            return Ok(false);
        }
        self.stage(content)?.install()?;
        Ok(true)
    }
}

/// A staged file; removed on drop unless installed.
pub struct Staged {
    staged: PathBuf,
    target: PathBuf,
    done: bool,
}

impl Staged {
    /// The staged file's path (for a check command).
    pub fn path(&self) -> &Path {
        &self.staged
    }

    /// Renames the staged file over the destination and fsyncs the directory.
    pub fn install(mut self) -> Result<(), Error> {
        fs::rename(&self.staged, &self.target)
            .map_err(|e| msg(format!("cannot replace {}: {e}", self.target.display())))?;
        self.done = true;
        sync_dir(parent(&self.target))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.staged);
        }
    }
}

pub fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| msg(format!("cannot fsync directory {}: {e}", dir.display())))
}

trait NoneOrEq {
    fn is_none_or_eq(&self, value: u32) -> bool;
}

impl NoneOrEq for Option<u32> {
    fn is_none_or_eq(&self, value: u32) -> bool {
        self.map_or(true, |v| v == value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_when_something_differs() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target {
            mode: 0o640,
            ..Target::new(dir.path().join("f"))
        };
        assert!(target.write(b"one").unwrap());
        assert!(
            !target.write(b"one").unwrap(),
            "same content, mode and owner"
        );
        assert_eq!(fs::metadata(&target.path).unwrap().mode() & 0o7777, 0o640);
        let chmod = Target {
            mode: 0o600,
            ..target.clone()
        };
        assert!(
            chmod.write(b"one").unwrap(),
            "a mode change alone is applied"
        );
        assert!(chmod.write(b"two").unwrap());
        assert_eq!(fs::read(&target.path).unwrap(), b"two");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no staged files left behind");
    }

    #[test]
    fn a_dropped_stage_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(dir.path().join("f"));
        target.write(b"old").unwrap();
        let staged = target.stage(b"new").unwrap();
        assert_eq!(fs::read(staged.path()).unwrap(), b"new");
        drop(staged);
        assert_eq!(fs::read(&target.path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
