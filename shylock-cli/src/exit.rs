//! Exit codes and error output, in one place.

use std::process::ExitCode;

/// The command did what it was asked.
pub const SUCCESS: ExitCode = ExitCode::SUCCESS;
/// The command failed; the error was printed. (clap exits with 2 for usage.)
pub const FAILURE: u8 = 1;

/// An error with what the user should do about it.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Prints `shylock: error: ...` with the chain of causes; returns the code.
pub fn report(error: &Error) -> ExitCode {
    eprintln!("shylock: error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    ExitCode::from(FAILURE)
}

/// A plain message as an error.
pub fn msg(text: impl Into<String>) -> Error {
    text.into().into()
}
