//! The command line. Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::connect::ConnectArgs;
use crate::exit::Error;

/// etcd as the /etc of a data center: keys as a live filesystem and as files.
#[derive(Debug, Parser)]
#[command(name = "shylock", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub connect: ConnectArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the keys under a prefix as a live FUSE filesystem (prefixes are
    /// directories, keys are files), until SIGINT or SIGTERM.
    Mount(MountArgs),
    /// Write one key's value, or a prefix as a JSON/YAML/TOML/properties/env
    /// document, to a file; with --watch, keep it current.
    Export(crate::export::ExportArgs),
    /// Mirror a prefix into a directory of files, swapping each update in at
    /// once (for containers that cannot use FUSE; Spring's configtree).
    Sync(crate::sync::SyncArgs),
    /// Write a JSON/YAML/TOML/properties document, or a directory of files,
    /// into keys under a prefix (the producer side).
    Import(crate::import::ImportArgs),
    /// Render confd-style template resources (conf.d/*.toml, templates/)
    /// into files, with check and reload commands; keep them current.
    Render(Box<crate::render::RenderArgs>),
}

/// How writes through the mount treat a concurrent change of the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Conflicts {
    /// Compare-and-swap: a write fails (ESTALE) if the key changed since the
    /// file was opened.
    Cas,
    /// Last writer wins.
    Lww,
}

#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// The directory to mount on (it must exist).
    pub mountpoint: PathBuf,

    /// The etcd prefix shown at the mount's root.
    #[arg(long, default_value = "/")]
    pub prefix: String,

    /// Refuse every write with EROFS [env: SHYLOCK_READ_ONLY, ETC_READ_ONLY].
    #[arg(long)]
    pub read_only: bool,

    /// Owner of every file and directory [default: the mounting user].
    #[arg(long)]
    pub uid: Option<u32>,

    /// Group of every file and directory [default: the mounting user's group].
    #[arg(long)]
    pub gid: Option<u32>,

    /// Let users other than the mounting one use the mount (for consumers
    /// running as another user).
    #[arg(long)]
    pub allow_other: bool,

    /// What a write does when the key changed since the file was opened.
    #[arg(long, value_enum, default_value_t = Conflicts::Cas)]
    pub conflicts: Conflicts,

    /// Permission bits removed from every file (0644, or 0444 read-only) and
    /// directory (0755 / 0555), in octal: 027 with --gid and --allow-other
    /// lets one group read the values and nobody else.
    #[arg(long, default_value = "022", value_parser = crate::command::parse_mode)]
    pub umask: u32,

    /// etcd's --max-request-bytes: a write whose value could not fit in one
    /// request is refused at once with EFBIG.
    #[arg(long, default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
}

impl Cli {
    pub async fn run(self) -> Result<(), Error> {
        match self.command {
            Command::Mount(args) => crate::mount::run(&self.connect, args).await,
            Command::Export(args) => crate::export::run(&self.connect, args).await,
            Command::Sync(args) => crate::sync::run(&self.connect, args).await,
            Command::Import(args) => crate::import::run(&self.connect, args).await,
            Command::Render(args) => crate::render::run(&self.connect, *args).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
