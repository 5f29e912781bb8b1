//! `shylock`: etcd keys for programs that are not written in Rust.

mod atomic;
mod cli;
mod command;
mod connect;
mod del;
mod diff;
mod docs;
mod document;
mod exit;
mod export;
mod feed;
mod fleet;
mod get;
mod guard;
mod history;
mod import;
mod journal;
mod kv;
mod live_keys;
mod log;
mod logging;
mod mount;
mod names;
mod notify;
mod put;
mod render;
mod reporting;
mod rollback;
mod schema;
mod signals;
mod srv;
mod status;
mod sync;
mod telemetry;
mod wait;
mod watch;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    notify::init();
    // confd's single-dash flags after `render` (`-onetime`, `-node x`).
    let argv = match render::confd_argv(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(error) => return exit::report(&exit::usage(error)),
    };
    let cli = cli::Cli::parse_from(argv);
    if let Err(error) = logging::init(&cli.log) {
        return exit::report(&exit::usage(error));
    }
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
