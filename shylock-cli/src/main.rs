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
mod logging;
mod mount;
mod names;
mod render;
mod signals;
mod sync;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // confd's single-dash flags after `render` (`-onetime`, `-node x`).
    let argv = match render::confd_argv(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(error) => return exit::report(&exit::msg(error)),
    };
    let cli = cli::Cli::parse_from(argv);
    logging::init();
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
