//! `shylock completions SHELL` and `shylock man DIR`: shell completions and
//! man pages, generated from the clap definitions (so they never drift
//! from `--help`).

use std::path::PathBuf;

use clap::CommandFactory;

use crate::exit::{msg, Error};

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell. For bash:
    /// `shylock completions bash > /etc/bash_completion.d/shylock`.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The directory to write shylock.1 and shylock-COMMAND.1 into (it is
    /// created if missing).
    pub dir: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> Result<(), Error> {
    let mut command = crate::cli::Cli::command();
    clap_complete::generate(args.shell, &mut command, "shylock", &mut std::io::stdout());
    Ok(())
}

pub fn man(args: ManArgs) -> Result<(), Error> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| msg(format!("cannot create {}: {e}", args.dir.display())))?;
    let command = crate::cli::Cli::command();
    clap_mangen::generate_to(command, &args.dir).map_err(|e| {
        msg(format!(
            "cannot write man pages to {}: {e}",
            args.dir.display()
        ))
    })?;
    Ok(())
}
