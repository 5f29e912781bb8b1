//! Writing a file so that readers see the old content or the new, never a
//! mix: stage in the destination's directory, fsync, optionally check the
//! staged file, rename over the destination, fsync the directory. Nothing
//! is written when content, mode and owner are already right. Staged files
//! are safe in a directory other users can write, and a killed writer's
//! are removed by the next (`shylock::__private::staged`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use shylock::__private::staged;

use crate::exit::{msg, Error};

/// Mode of a new destination when nothing else says otherwise.
pub const DEFAULT_MODE: u32 = 0o644;

/// A destination file and what it should look like besides its content.
/// `None` keeps what the existing file has (a new file gets
/// [`DEFAULT_MODE`] and the writer's own user and group).
#[derive(Clone, Debug)]
pub struct Target {
    pub path: PathBuf,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Mode and owner a write gives the destination.
struct Wanted {
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
}

impl Target {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Target {
            path: path.into(),
            mode: None,
            uid: None,
            gid: None,
        }
    }

    /// What the destination should get, from this target and the file now.
    fn wanted(&self, current: Option<&fs::Metadata>) -> Wanted {
        Wanted {
            mode: self
                .mode
                .or(current.map(|m| m.mode() & 0o7777))
                .unwrap_or(DEFAULT_MODE),
            uid: self.uid.or(current.map(MetadataExt::uid)),
            gid: self.gid.or(current.map(MetadataExt::gid)),
        }
    }

    /// Whether the destination already has this content, mode and owner.
    pub fn is_current(&self, content: &[u8]) -> bool {
        let Ok(meta) = fs::metadata(&self.path) else {
            return false;
        };
        let wanted = self.wanted(Some(&meta));
        meta.mode() & 0o7777 == wanted.mode
            && wanted.uid.is_none_or(|uid| uid == meta.uid())
            && wanted.gid.is_none_or(|gid| gid == meta.gid())
            && meta.len() == content.len() as u64
            && fs::read(&self.path).is_ok_and(|current| current == content)
    }

    /// The mode the destination ends up with (for `--noop`'s report).
    pub fn mode_to_write(&self) -> u32 {
        self.wanted(fs::metadata(&self.path).ok().as_ref()).mode
    }

    /// Writes the content to a staged file next to the destination, with
    /// the destination's mode and owner set through its descriptor.
    pub fn stage(&self, content: &[u8]) -> Result<Staged, Error> {
        let wanted = self.wanted(fs::metadata(&self.path).ok().as_ref());
        let fail = |e: std::io::Error| {
            msg(format!(
                "cannot write a staged copy of {}: {e}",
                self.path.display()
            ))
        };
        let mut staged = staged::stage(&self.path).map_err(fail)?;
        let file = staged.file();
        file.write_all(content).map_err(fail)?;
        if wanted.uid.is_some() || wanted.gid.is_some() {
            std::os::unix::fs::fchown(&*file, wanted.uid, wanted.gid).map_err(fail)?;
        }
        file.set_permissions(fs::Permissions::from_mode(wanted.mode))
            .map_err(fail)?;
        file.sync_all().map_err(fail)?;
        Ok(Staged(staged))
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
pub struct Staged(staged::Staged);

impl Staged {
    /// The staged file's path (for a check command).
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Renames the staged file over the destination and fsyncs the
    /// directory, if its name still is the file this process wrote.
    pub fn install(self) -> Result<(), Error> {
        let target = self.0.target().display().to_string();
        self.0
            .install()
            .map_err(|e| msg(format!("{target} not replaced: {e}")))
    }

    /// Leaves the staged file in place, for inspection; returns its path.
    pub fn keep(self) -> Result<PathBuf, Error> {
        self.0
            .keep()
            .map_err(|e| msg(format!("cannot keep the staged file: {e}")))
    }
}

pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| msg(format!("cannot fsync directory {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_when_something_differs() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target {
            mode: Some(0o640),
            ..Target::new(dir.path().join("f"))
        };
        assert!(target.write(b"one").unwrap());
        assert!(
            !target.write(b"one").unwrap(),
            "same content, mode and owner"
        );
        assert_eq!(fs::metadata(&target.path).unwrap().mode() & 0o7777, 0o640);
        let chmod = Target {
            mode: Some(0o600),
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
