//! What a config does when etcd does not answer at startup.

use std::path::PathBuf;

/// The startup policy of one config. The default fails fast.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Startup {
    /// Fail with an error naming the endpoints and the cause when etcd does
    /// not answer within the startup timeout.
    #[default]
    FailFast,
    /// Keep trying until etcd answers (a warning per attempt, at most one
    /// every 10 seconds); `config()` returns only then.
    Wait,
    /// Start on the struct's defaults (every field must be optional or have a
    /// default) and switch to etcd's values when it answers.
    Defaults,
    /// Start from the snapshot file at this path, and switch to etcd's
    /// values when it answers. The file is refreshed after each good update.
    LastKnownGood(PathBuf),
}

/// Options of one config: its startup policy and snapshot file.
#[derive(Clone, Debug, Default)]
pub struct ConfigOptions {
    pub(crate) startup: Startup,
    pub(crate) snapshot_secrets: bool,
}

impl ConfigOptions {
    /// Fail-fast startup, no snapshot file.
    pub fn new() -> Self {
        Self::default()
    }

    /// The startup policy.
    pub fn with_startup(mut self, startup: Startup) -> Self {
        self.startup = startup;
        self
    }

    /// Store secret fields in the snapshot file too (off by default: a
    /// config whose secrets have no default then cannot start from the file).
    pub fn with_secrets_in_snapshot(mut self, secrets: bool) -> Self {
        self.snapshot_secrets = secrets;
        self
    }

    pub(crate) fn snapshot_path(&self) -> Option<&std::path::Path> {
        match &self.startup {
            Startup::LastKnownGood(path) => Some(path),
            _ => None,
        }
    }
}
