//! Exit codes and error output, in one place. Every command exits with:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | done |
//! | 1 | failed (the error is printed) |
//! | 2 | usage: a wrong flag, value or argument (nothing was done) |
//! | 3 | etcd unreachable: no endpoint answered, or the connection failed |
//! | 4 | partial: some of the work was done, some failed (render `-onetime` with some resources failed) |

use std::process::ExitCode;

/// The command did what it was asked.
pub const SUCCESS: ExitCode = ExitCode::SUCCESS;
/// The command failed; the error was printed.
pub const FAILURE: u8 = 1;
/// A wrong flag, value or argument (clap exits with 2 too).
pub const USAGE: u8 = 2;
/// etcd could not be reached.
pub const UNREACHABLE: u8 = 3;
/// Some of the work was done, some failed.
pub const PARTIAL: u8 = 4;

/// An error with what the user should do about it.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A usage mistake found after clap's own checks.
#[derive(Debug)]
pub struct Usage(pub String);

/// Some of the work was done, some failed.
#[derive(Debug)]
pub struct Partial(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}
impl std::error::Error for Partial {}

/// Prints `shylock: error: ...` with the chain of causes; returns the code.
pub fn report(error: &Error) -> ExitCode {
    let mut shown = error.to_string();
    eprintln!("shylock: error: {shown}");
    let mut source = error.source();
    while let Some(cause) = source {
        // Messages that already include their cause's text (thiserror's
        // `{source}`) do not print it twice.
        let text = cause.to_string();
        if !shown.contains(&text) {
            eprintln!("  caused by: {text}");
            shown = text;
        }
        source = cause.source();
    }
    ExitCode::from(code(error.as_ref()))
}

/// The exit code of an error: the first cause in its chain that has one.
pub fn code(error: &(dyn std::error::Error + 'static)) -> u8 {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<Usage>() {
            return USAGE;
        }
        if error.is::<Partial>() {
            return PARTIAL;
        }
        if let Some(error) = error.downcast_ref::<shylock::Error>() {
            match error {
                shylock::Error::Unreachable { .. } | shylock::Error::NoSnapshot { .. } => {
                    return UNREACHABLE
                }
                shylock::Error::Etcd { source, .. } if unreachable(source) => return UNREACHABLE,
                _ => {}
            }
        }
        if let Some(error) = error.downcast_ref::<etcd_client::Error>() {
            if unreachable(error) {
                return UNREACHABLE;
            }
        }
        next = error.source();
    }
    FAILURE
}

/// A transport failure, or etcd's gRPC saying no member could answer.
fn unreachable(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) => true,
        // gRPC's DEADLINE_EXCEEDED (4) and UNAVAILABLE (14).
        etcd_client::Error::GRpcStatus(status) => matches!(status.code() as i32, 4 | 14),
        _ => false,
    }
}

/// A plain message as an error.
pub fn msg(text: impl Into<String>) -> Error {
    text.into().into()
}

/// A usage mistake as an error (exit code 2).
pub fn usage(text: impl Into<String>) -> Error {
    Box::new(Usage(text.into()))
}
