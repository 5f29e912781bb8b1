//! `shylock`: etcd keys for programs that are not written in Rust.

mod atomic;
mod cli;
mod command;
mod connect;
mod document;
mod exit;
mod export;
mod import;
mod live_keys;
mod mount;
mod names;
mod render;
mod signals;
mod sync;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHYLOCK_LOG")
                .unwrap_or_else(|_| "shylock=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour for a person at a terminal; plain text for files and journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return exit::report(&error.into()),
    };
    let result = runtime.block_on(cli.run());
    // A render still running on a blocking thread (SIGTERM came meanwhile)
    // must not hold the exit: it would install nothing anyway.
    runtime.shutdown_background();
    match result {
        Ok(()) => exit::SUCCESS,
        Err(error) => exit::report(&error),
    }
}
