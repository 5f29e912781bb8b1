//! The [`EtcdConfig`] trait and the description of what a config reads.

use std::fmt;

use crate::__private::{Changed, Cx, Flags};
use crate::error::ConfigError;
use crate::tree::Tree;

/// A struct whose fields are read from etcd keys. Derive it with
/// `#[derive(EtcdConfig)]`; implementing it by hand is not supported.
pub trait EtcdConfig: Sized + Send + Sync + 'static {
    /// The prefix given by `#[etcd(prefix = "...")]`, if any.
    const PREFIX: Option<&'static str>;

    /// Every key and prefix this config reads when its fields live under `prefix`.
    ///
    /// ```
    /// use shylock::EtcdConfig;
    ///
    /// #[derive(EtcdConfig)]
    /// struct Db {
    ///     url: String,
    ///     #[etcd(secret)]
    ///     password: String,
    /// }
    ///
    /// let keys: Vec<String> = Db::dependencies("/app")
    ///     .iter()
    ///     .map(|d| d.to_string())
    ///     .collect();
    /// assert_eq!(keys, ["/app/url", "/app/password (secret)"]);
    /// ```
    fn dependencies(prefix: &str) -> Vec<Dependency> {
        let mut out = Vec::new();
        Self::__describe(&crate::__private::base(prefix), Flags::ROOT, &mut out);
        out
    }

    /// Builds the config from key/value pairs held in memory, as if etcd held
    /// them: for unit tests of code that takes a config, without etcd.
    ///
    /// ```
    /// use shylock::EtcdConfig;
    ///
    /// #[derive(EtcdConfig)]
    /// struct App {
    ///     port: u16,
    ///     #[etcd(default = "info")]
    ///     log_level: String,
    /// }
    ///
    /// let app = App::from_pairs("/app", [("/app/port", "8080")]).unwrap();
    /// assert_eq!(app.port, 8080);
    /// assert_eq!(app.log_level, "info");
    ///
    /// let err = App::from_pairs("/app", [("/app/port", "eighty")]).unwrap_err();
    /// assert!(err.to_string().contains("/app/port"));
    /// ```
    fn from_pairs<K, V>(
        prefix: &str,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError>
    where
        K: Into<String>,
        V: Into<Vec<u8>>,
    {
        let mut tree = Tree::default();
        for (key, value) in pairs {
            tree.insert(key.into(), value.into(), 0);
        }
        build::<Self>(&tree, prefix, 0)
    }

    #[doc(hidden)]
    fn __describe(base: &str, flags: Flags, out: &mut Vec<Dependency>);

    #[doc(hidden)]
    fn __schema(base: &str, flags: Flags, out: &mut Vec<crate::schema::SchemaKey>);

    #[doc(hidden)]
    fn __build(cx: &mut Cx<'_>, base: &str) -> Option<Self>;

    #[doc(hidden)]
    fn __patch(value: &mut Self, cx: &mut Cx<'_>, base: &str, changed: &Changed) -> bool;
}

/// Builds `T` from the keys in `tree`, collecting every problem.
pub(crate) fn build<T: EtcdConfig>(
    tree: &Tree,
    prefix: &str,
    revision: i64,
) -> Result<T, ConfigError> {
    let mut cx = Cx::new(tree);
    let value = T::__build(&mut cx, &crate::__private::base(prefix));
    match (value, cx.into_problems()) {
        (Some(value), problems) if problems.is_empty() => Ok(value),
        (_, problems) => Err(ConfigError::new(revision, problems)),
    }
}

/// Brings `value`, built from earlier keys, up to the keys in `tree`, reading
/// again only what `changed` touches. `false` means a problem was met and
/// `value` is left half patched: build it whole instead.
pub(crate) fn patch<T: EtcdConfig>(
    value: &mut T,
    tree: &Tree,
    prefix: &str,
    changed: &Changed,
) -> bool {
    let mut cx = Cx::new(tree);
    T::__patch(value, &mut cx, &crate::__private::base(prefix), changed)
        && cx.into_problems().is_empty()
}

/// One key or prefix that a config reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    /// The full etcd key, or the prefix (ending in `/`) whose children are read.
    pub key: String,
    /// Whether `key` is one key or a prefix.
    pub kind: DependencyKind,
    /// Values read here are secret: never logged, printed or put in errors.
    pub secret: bool,
    /// The config cannot be built while this key is missing.
    pub required: bool,
}

/// Whether a [`Dependency`] is one key or all keys under a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DependencyKind {
    /// Exactly this key.
    Key,
    /// Every key that starts with this prefix.
    Prefix,
}

impl Dependency {
    /// Whether this dependency covers `key`.
    pub fn covers(&self, key: &str) -> bool {
        match self.kind {
            DependencyKind::Key => self.key == key,
            DependencyKind::Prefix => key.starts_with(&self.key),
        }
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)?;
        if self.kind == DependencyKind::Prefix {
            f.write_str("*")?;
        }
        let tags: Vec<&str> = [(!self.required, "optional"), (self.secret, "secret")]
            .into_iter()
            .filter_map(|(on, tag)| on.then_some(tag))
            .collect();
        if !tags.is_empty() {
            write!(f, " ({})", tags.join(", "))?;
        }
        Ok(())
    }
}
