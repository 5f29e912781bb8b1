//! The command line. Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::connect::ConnectArgs;
use crate::exit::Error;

/// etcd as the /etc of a data center: keys as a live filesystem and as files.
#[derive(Debug, Parser)]
#[command(
    name = "shylock",
    version,
    propagate_version = true,
    after_help = EXIT_CODES,
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub connect: ConnectArgs,

    #[command(flatten)]
    pub log: crate::logging::LogArgs,

    #[command(flatten)]
    pub metrics: crate::telemetry::MetricsArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// The exit codes (crate::exit), the same for every command.
const EXIT_CODES: &str = "Exit codes: 0 done, 1 failed, 2 usage error, 3 etcd unreachable, \
4 partly done (some resources or keys failed).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the keys under a prefix as a live FUSE filesystem (prefixes are
    /// directories, keys are files), until SIGINT or SIGTERM. `shylock etcd
    /// MOUNTPOINT` is the same (with ETC_HOSTS and ETC_READ_ONLY=true).
    #[command(visible_alias = "etcd")]
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
    /// Print a key's value, or the keys under a prefix.
    Get(crate::get::GetArgs),
    /// Write a key, the value from the command line or standard input.
    Put(crate::put::PutArgs),
    /// Delete a key, or a key and the keys under it.
    Del(crate::del::DelArgs),
    /// Print the changes of a key, or of the keys under a prefix, as they come.
    Watch(crate::watch::WatchArgs),
    /// The revisions that changed keys under a prefix, newest first, with
    /// who, when and why where an audit record says.
    Log(crate::log::LogArgs),
    /// Keep a record of every change under a prefix in etcd, beyond
    /// compaction, for `log --journal`.
    Journal(crate::journal::JournalArgs),
    /// A unified diff of the keys under a prefix between two revisions.
    Diff(crate::diff::DiffArgs),
    /// Write the keys under a prefix back as they were at a revision, in
    /// one guarded transaction.
    Rollback(crate::rollback::RollbackArgs),
    /// Publish, show or check the schema a program's config reads: writers
    /// refuse values it does not allow.
    Schema(crate::schema::SchemaArgs),
    /// Show the instances following a prefix (from their --report): the
    /// revision each runs, how far behind, what it rejected and why.
    Status(crate::status::StatusArgs),
    /// Wait until the instances following a prefix run a revision; fail
    /// naming any that rejected it.
    Wait(crate::wait::WaitArgs),
    /// Print shell completions.
    Completions(crate::docs::CompletionsArgs),
    /// Write man pages.
    Man(crate::docs::ManArgs),
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

    /// Show the keys as they were at this etcd revision, read-only and
    /// fixed (no watch), as long as etcd keeps it (until compaction).
    #[arg(long, value_name = "REV", conflicts_with = "report")]
    pub revision: Option<i64>,

    #[command(flatten)]
    pub write: crate::guard::WriteArgs,

    #[command(flatten)]
    pub report: crate::reporting::ReportArgs,
}

impl Cli {
    pub async fn run(self) -> Result<(), Error> {
        self.metrics.serve()?;
        match self.command {
            Command::Mount(args) => crate::mount::run(&self.connect, args).await,
            Command::Export(args) => crate::export::run(&self.connect, args).await,
            Command::Sync(args) => crate::sync::run(&self.connect, args).await,
            Command::Import(args) => crate::import::run(&self.connect, args).await,
            Command::Render(args) => crate::render::run(&self.connect, *args).await,
            Command::Get(args) => crate::get::run(&self.connect, args).await,
            Command::Put(args) => crate::put::run(&self.connect, args).await,
            Command::Del(args) => crate::del::run(&self.connect, args).await,
            Command::Watch(args) => crate::watch::run(&self.connect, args).await,
            Command::Log(args) => crate::log::run(&self.connect, args).await,
            Command::Journal(args) => crate::journal::run(&self.connect, args).await,
            Command::Diff(args) => crate::diff::run(&self.connect, args).await,
            Command::Rollback(args) => crate::rollback::run(&self.connect, args).await,
            Command::Schema(args) => crate::schema::run(&self.connect, args).await,
            Command::Status(args) => crate::status::run(&self.connect, args).await,
            Command::Wait(args) => crate::wait::run(&self.connect, args).await,
            Command::Completions(args) => crate::docs::completions(args),
            Command::Man(args) => crate::docs::man(args),
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
