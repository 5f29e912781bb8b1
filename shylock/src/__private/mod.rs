//! Support for the code `#[derive(EtcdConfig)]` generates, and parts the
//! `shylock` CLI shares with the library. Not a public API: it may change
//! in any release.

use std::fmt::{self, Display};
use std::marker::PhantomData;
use std::str::FromStr;

use crate::config::{Dependency, DependencyKind, EtcdConfig};
use crate::decode::{self, DecodeError, FromValue};
use crate::error::{Problem, ProblemKind};
use crate::schema::{Encoding, SchemaKey, Shape};
use crate::tree::Tree;

mod patch;
pub mod staged;

pub use patch::{Changed, MapSlot};

/// How one element type (a field, a map value, a list item) is read.
pub enum Elem<T> {
    /// From one key's value.
    Leaf(fn(&[u8]) -> Result<T, DecodeError>),
    /// From a sub-prefix, as a nested `EtcdConfig`.
    Node(Node<T>),
}

/// A nested config's entry points.
pub struct Node<T> {
    build: fn(&mut Cx<'_>, &str) -> Option<T>,
    describe: fn(&str, Flags, &mut Vec<Dependency>),
    schema: fn(&str, Flags, &mut Vec<SchemaKey>),
    patch: fn(&mut T, &mut Cx<'_>, &str, &Changed) -> bool,
}

impl<T> Node<T> {
    /// The keys one entry reads outside its own prefix (absolute keys).
    fn outside(&self, flags: Flags, out: &mut Vec<Dependency>) {
        const MARK: &str = "\u{0}";
        let mut deps = Vec::new();
        (self.describe)(MARK, flags, &mut deps);
        out.extend(deps.into_iter().filter(|d| !d.key.starts_with(MARK)));
    }
}

/// Picks an element's reader by the traits its type implements, preferring a
/// nested config, then [`FromValue`], then `FromStr` (autoref specialization:
/// the derive calls `(&&&Probe::<T>::new()).elem()` on a concrete type).
pub struct Probe<T>(PhantomData<T>);

impl<T> Probe<T> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Probe(PhantomData)
    }
}

pub trait ProbeNode<T> {
    fn elem(&self) -> Elem<T>;
}

impl<T: EtcdConfig> ProbeNode<T> for &&Probe<T> {
    fn elem(&self) -> Elem<T> {
        Elem::Node(Node {
            build: T::__build,
            describe: T::__describe,
            schema: T::__schema,
            patch: T::__patch,
        })
    }
}

pub trait ProbeValue<T> {
    fn elem(&self) -> Elem<T>;
}

impl<T: FromValue> ProbeValue<T> for &Probe<T> {
    fn elem(&self) -> Elem<T> {
        Elem::Leaf(T::from_value)
    }
}

#[diagnostic::on_unimplemented(
    message = "`{T}` cannot be read from etcd",
    label = "this type is not an EtcdConfig, a FromValue or a FromStr type",
    note = "derive EtcdConfig for a nested struct, implement shylock::FromValue or FromStr, or decode it with #[etcd(json)] / #[etcd(toml)]"
)]
pub trait ProbeParse<T> {
    fn elem(&self) -> Elem<T>;
}

impl<T> ProbeParse<T> for Probe<T>
where
    T: FromStr,
    T::Err: Display,
{
    fn elem(&self) -> Elem<T> {
        Elem::Leaf(|raw| {
            decode::text(raw)?
                .parse::<T>()
                .map_err(|e| e.to_string().into())
        })
    }
}

/// `#[etcd(json)]`: the value is one JSON document.
pub fn json<T: serde::de::DeserializeOwned>() -> Elem<T> {
    Elem::Leaf(|raw| Ok(serde_json::from_slice(raw)?))
}

/// `#[etcd(toml)]`: the value is one TOML document.
pub fn toml<T: serde::de::DeserializeOwned>() -> Elem<T> {
    Elem::Leaf(|raw| {
        let text = std::str::from_utf8(raw).map_err(|_| "not valid UTF-8")?;
        Ok(toml::from_str(text)?)
    })
}

/// Properties inherited while describing nested fields.
#[derive(Clone, Copy, Debug)]
pub struct Flags {
    secret: bool,
    required: bool,
    children: bool,
}

impl Flags {
    pub(crate) const ROOT: Flags = Flags {
        secret: false,
        required: true,
        children: false,
    };

    /// The flags of a field inside the current struct.
    pub fn nest(self, secret: bool, required: bool, children: bool) -> Flags {
        Flags {
            secret: self.secret || secret,
            required: self.required && required,
            children,
        }
    }
}

/// Records what one field reads.
pub fn describe<T>(elem: &Elem<T>, key: &str, flags: Flags, out: &mut Vec<Dependency>) {
    let dependency = |key: String, kind| Dependency {
        key,
        kind,
        secret: flags.secret,
        required: flags.required,
    };
    match elem {
        _ if flags.children => {
            out.push(dependency(format!("{key}/"), DependencyKind::Prefix));
            // Absolute keys read by every entry lie outside the prefix.
            if let Elem::Node(node) = elem {
                node.outside(flags, out);
            }
        }
        Elem::Leaf(_) => out.push(dependency(key.to_owned(), DependencyKind::Key)),
        Elem::Node(node) => (node.describe)(key, flags, out),
    }
}

/// What the derive knows of one field beyond its element type.
pub struct FieldInfo {
    pub shape: Shape,
    pub encoding: Encoding,
    /// The text of `default = "text"`.
    pub default: Option<&'static str>,
}

/// Records the schema of one field: a leaf's key (`key/*` for a map's or
/// list's entries), or a nested config's keys under it.
pub fn schema_field<T>(
    elem: &Elem<T>,
    key: &str,
    flags: Flags,
    info: FieldInfo,
    out: &mut Vec<SchemaKey>,
) {
    let key = if flags.children {
        format!("{key}/*")
    } else {
        key.to_owned()
    };
    match elem {
        Elem::Leaf(_) => {
            let rust_type = short_type_name::<T>();
            out.push(SchemaKey {
                json_schema: crate::schema::json_schema(&rust_type, info.encoding),
                key,
                shape: info.shape,
                rust_type,
                encoding: info.encoding,
                required: flags.required,
                default: info.default.map(str::to_owned),
                secret: flags.secret,
            });
        }
        Elem::Node(node) => {
            // An entry of a map or list needs its own required keys.
            let inner = Flags {
                children: false,
                required: flags.required || flags.children,
                ..flags
            };
            (node.schema)(&key, inner, out)
        }
    }
}

/// Brings `value`, built from earlier keys, up to the keys in `tree`,
/// reading again only what the `changed` keys touch; `false` when a problem
/// was met. What an update does when a spare copy of the config is free;
/// public for the benchmarks only.
pub fn patch<T: EtcdConfig>(
    value: &mut T,
    tree: &Tree,
    prefix: &str,
    changed: Vec<String>,
) -> bool {
    crate::config::patch(value, tree, prefix, &Changed::new(changed))
}

/// This machine's name, for reports and audit records.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The base path of a prefix: no trailing `/`, so `join` adds exactly one.
pub fn base(prefix: &str) -> String {
    prefix.trim_end_matches('/').to_owned()
}

/// A relative key under a base path.
pub fn join(base: &str, key: &str) -> String {
    let mut out = String::with_capacity(base.len() + 1 + key.len());
    out.push_str(base);
    out.push('/');
    out.push_str(key);
    out
}

/// Shown in `Debug` output in place of a secret value.
pub struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The build context: the keys, and every problem found so far.
pub struct Cx<'a> {
    tree: &'a Tree,
    problems: Vec<Problem>,
    secret_depth: u32,
}

impl<'a> Cx<'a> {
    pub(crate) fn new(tree: &'a Tree) -> Self {
        Cx {
            tree,
            problems: Vec::new(),
            secret_depth: 0,
        }
    }

    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// Whether the struct being built sits under a secret field.
    pub fn secret(&self) -> bool {
        self.secret_depth > 0
    }

    fn problem(&mut self, key: &str, kind: ProblemKind) {
        self.problems.push(Problem {
            key: key.to_owned(),
            kind,
        });
    }

    /// Records a value that does not decode; secret values are not described.
    fn invalid<T>(
        &mut self,
        key: &str,
        raw: &[u8],
        error: &(dyn std::error::Error + Send + Sync),
        secret: bool,
    ) {
        let reason = (!secret).then(|| describe_failure(raw, error));
        let expected = short_type_name::<T>();
        self.problem(key, ProblemKind::Invalid { expected, reason });
    }

    /// Reads one element: `Ok(None)` when a leaf's key is missing.
    fn read<T>(&mut self, elem: &Elem<T>, key: &str, secret: bool) -> Result<Option<T>, ()> {
        match elem {
            Elem::Leaf(decode) => {
                let Some(entry) = self.tree.get(key) else {
                    return Ok(None);
                };
                match decode(&entry.value) {
                    Ok(value) => Ok(Some(value)),
                    Err(error) => {
                        self.invalid::<T>(key, &entry.value, &*error, secret);
                        Err(())
                    }
                }
            }
            Elem::Node(node) => {
                self.secret_depth += u32::from(secret);
                let value = (node.build)(self, key);
                self.secret_depth -= u32::from(secret);
                value.map(Some).ok_or(())
            }
        }
    }

    /// A field without a default: a missing key is a problem.
    pub fn required<T>(&mut self, elem: &Elem<T>, key: &str, secret: bool) -> Option<T> {
        match self.read(elem, key, secret) {
            Ok(Some(value)) => Some(value),
            Ok(None) => {
                self.problem(key, ProblemKind::Missing);
                None
            }
            Err(()) => None,
        }
    }

    /// A field with `#[etcd(default)]` or `#[etcd(default = expr)]`.
    pub fn or_else<T>(
        &mut self,
        elem: &Elem<T>,
        key: &str,
        secret: bool,
        default: impl FnOnce() -> T,
    ) -> Option<T> {
        match self.read(elem, key, secret) {
            Ok(value) => Some(value.unwrap_or_else(default)),
            Err(()) => None,
        }
    }

    /// A field with `#[etcd(default = "text")]`: the text is decoded as a value.
    pub fn or_text<T>(&mut self, elem: &Elem<T>, key: &str, secret: bool, text: &str) -> Option<T> {
        match self.read(elem, key, secret) {
            Ok(Some(value)) => Some(value),
            Ok(None) => match elem {
                Elem::Leaf(decode) => match decode(text.as_bytes()) {
                    Ok(value) => Some(value),
                    Err(error) => {
                        let reason = format!("the default {text:?} does not decode: {error}");
                        self.problem(key, ProblemKind::Rejected { reason });
                        None
                    }
                },
                Elem::Node(..) => {
                    let reason = "a nested config cannot take a text default".to_owned();
                    self.problem(key, ProblemKind::Rejected { reason });
                    None
                }
            },
            Err(()) => None,
        }
    }

    /// An `Option<T>` field: a missing key (or an empty sub-prefix) is `None`.
    pub fn optional<T>(&mut self, elem: &Elem<T>, key: &str, secret: bool) -> Option<Option<T>> {
        if matches!(elem, Elem::Node(..)) && !self.tree.has_under(&format!("{key}/")) {
            return Some(None);
        }
        self.read(elem, key, secret).ok()
    }

    /// The children of `key/` as (name, value) pairs: direct child keys for
    /// leaves (decoded in one pass over the keys), first path segments for
    /// nested configs.
    fn children<T>(&mut self, elem: &Elem<T>, key: &str, secret: bool) -> Option<Vec<(String, T)>> {
        let prefix = format!("{key}/");
        let mut out = Vec::new();
        let mut ok = true;
        match elem {
            Elem::Leaf(decode) => {
                let tree = self.tree;
                for (full, entry) in tree.under(&prefix) {
                    let name = &full[prefix.len()..];
                    if name.is_empty() || name.contains('/') {
                        continue;
                    }
                    match decode(&entry.value) {
                        Ok(value) => out.push((name.to_owned(), value)),
                        Err(error) => {
                            ok = false;
                            self.invalid::<T>(full, &entry.value, &*error, secret);
                        }
                    }
                }
            }
            Elem::Node(..) => {
                let mut names: Vec<&str> = Vec::new();
                for (full, _) in self.tree.under(&prefix) {
                    let Some((first, _)) = full[prefix.len()..].split_once('/') else {
                        continue;
                    };
                    if names.last() != Some(&first) {
                        names.push(first);
                    }
                }
                for name in names {
                    match self.read(elem, &join(key, name), secret) {
                        Ok(Some(value)) => out.push((name.to_owned(), value)),
                        Ok(None) => {}
                        Err(()) => ok = false,
                    }
                }
            }
        }
        ok.then_some(out)
    }

    /// A `BTreeMap<String, T>` or `HashMap<String, T>` field.
    pub fn map<T, M>(&mut self, elem: &Elem<T>, key: &str, secret: bool) -> Option<M>
    where
        M: FromIterator<(String, T)>,
    {
        self.children(elem, key, secret)
            .map(|c| c.into_iter().collect())
    }

    /// A `Vec<T>` field: the children's values in key order.
    pub fn list<T>(&mut self, elem: &Elem<T>, key: &str, secret: bool) -> Option<Vec<T>> {
        self.children(elem, key, secret)
            .map(|c| c.into_iter().map(|(_, v)| v).collect())
    }

    /// Records a validator's verdict; returns whether it passed.
    pub fn check<E: Display>(&mut self, key: &str, verdict: Result<(), E>) -> bool {
        match verdict {
            Ok(()) => true,
            Err(error) => {
                let reason = error.to_string();
                self.problem(key, ProblemKind::Rejected { reason });
                false
            }
        }
    }
}

/// `"abc": invalid digit found in string`, with long values cut short.
pub(crate) fn describe_failure(
    raw: &[u8],
    error: &(dyn std::error::Error + Send + Sync),
) -> String {
    const SHOWN: usize = 64;
    let text = String::from_utf8_lossy(raw);
    let shown: String = text.chars().take(SHOWN).collect();
    let more = if text.chars().count() > SHOWN {
        "…"
    } else {
        ""
    };
    format!("{shown:?}{more}: {error}")
}

/// `core::time::Duration` → `Duration`, `alloc::string::String` → `String`.
fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut word = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(&word));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(&word));
    out
}
