//! Errors. Every error names the full etcd key it is about; none carries a
//! secret value.

use std::fmt;

/// A config that could not be built from what etcd holds: every problem found,
/// each with its full key. The last good config keeps serving.
///
/// `Debug` prints the problems one per line, as `main` shows an error it
/// returns; `{:#?}` shows the fields.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigError {
    revision: i64,
    problems: Vec<Problem>,
}

/// One reason a config could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The full etcd key (or, for a struct-level validator, the prefix).
    pub key: String,
    /// What is wrong there.
    pub kind: ProblemKind,
}

/// What is wrong with one key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A required key is not in etcd.
    Missing,
    /// The value does not decode as the field's type.
    Invalid {
        /// The type the field expects, such as `u16` or `Duration`.
        expected: String,
        /// Why decoding failed, with the offending value; `None` for secrets.
        reason: Option<String>,
    },
    /// A `validate` function rejected the value.
    Rejected {
        /// The validator's message.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn new(revision: i64, problems: Vec<Problem>) -> Self {
        Self { revision, problems }
    }

    /// The etcd revision whose values were rejected.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Every problem found, in field order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid config: {one}"),
            many => {
                write!(f, "invalid config ({} problems): ", many.len())?;
                for (i, p) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return f
                .debug_struct("ConfigError")
                .field("revision", &self.revision)
                .field("problems", &self.problems)
                .finish();
        }
        write!(f, "invalid config at etcd revision {}:", self.revision)?;
        for problem in &self.problems {
            write!(f, "\n    {problem}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        match &self.kind {
            ProblemKind::Missing => write!(f, "key `{key}` is missing"),
            ProblemKind::Invalid {
                expected,
                reason: Some(reason),
            } => write!(f, "key `{key}` is not a valid {expected}: {reason}"),
            ProblemKind::Invalid {
                expected,
                reason: None,
            } => write!(
                f,
                "key `{key}` is not a valid {expected} (value is secret, details redacted)"
            ),
            ProblemKind::Rejected { reason } => write!(f, "key `{key}` rejected: {reason}"),
        }
    }
}

/// An error from the library: connecting, reading etcd, or building a config.
///
/// `Debug` is the message and its causes, one per line, so that
/// `fn main() -> shylock::Result<()>` prints something a person can read
/// (match on the variants for the fields).
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// etcd did not answer in time at startup.
    #[error("could not reach etcd at {endpoints} within {timeout:?}: {cause}")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The configured startup timeout.
        timeout: std::time::Duration,
        /// The last error seen, or "timed out".
        cause: String,
    },
    /// An etcd request failed.
    #[error("etcd request failed ({context}): {source}")]
    Etcd {
        /// What was being done, including the key or prefix.
        context: String,
        /// The etcd client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// What etcd holds does not make a valid config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// etcd did not answer at startup and the last-known-good snapshot could
    /// not be used either.
    #[error("{etcd}; and the last-known-good snapshot cannot be used: {snapshot}")]
    NoSnapshot {
        /// Why etcd could not be read.
        etcd: Box<Error>,
        /// Why the snapshot could not be read.
        snapshot: crate::snapshot::SnapshotError,
    },
    /// A connection option (or the environment variable it came from) is wrong.
    #[error("{name} {reason}")]
    Option {
        /// The option or environment variable.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The background task that keeps configs current has stopped.
    #[error("the shylock watch task has stopped")]
    Closed,
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Error::Config(error) = self {
            return fmt::Debug::fmt(error, f);
        }
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            write!(f, "\n    caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_what_main_should_print() {
        let error = Error::Config(ConfigError::new(
            7,
            vec![
                Problem {
                    key: "/app/port".into(),
                    kind: ProblemKind::Missing,
                },
                Problem {
                    key: "/app/password".into(),
                    kind: ProblemKind::Invalid {
                        expected: "u16".into(),
                        reason: None,
                    },
                },
            ],
        ));
        assert_eq!(
            format!("{error:?}"),
            "invalid config at etcd revision 7:\n    key `/app/port` is missing\n    \
             key `/app/password` is not a valid u16 (value is secret, details redacted)"
        );
        let unreachable = Error::Unreachable {
            endpoints: "http://127.0.0.1:1".into(),
            timeout: std::time::Duration::from_secs(5),
            cause: "connection refused".into(),
        };
        assert_eq!(
            format!("{unreachable:?}"),
            "could not reach etcd at http://127.0.0.1:1 within 5s: connection refused"
        );
        let fields = format!("{:#?}", ConfigError::new(7, vec![]));
        assert!(fields.contains("revision: 7"), "{fields}");
    }
}
