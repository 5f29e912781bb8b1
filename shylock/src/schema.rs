//! What a config reads, as data a writer can check values against: every
//! key (or key pattern) with its type, shape, default and whether it is
//! required or secret. A program prints it or publishes it beside its
//! prefix; `shylock put`, `import`, `rollback` and read-write mounts refuse
//! writes it does not allow.
//!
//! Published at `_shylock/schema/<prefix without its leading and trailing />`
//! (`_shylock/schema/apps/web` for `/apps/web`), one JSON document per
//! prefix.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::EtcdConfig;
use crate::decode::{self, DecodeError, FromValue};

/// Where published schemas live, unless a command says otherwise.
pub const SCHEMA_ROOT: &str = "_shylock/schema";

/// The version of the document [`Schema`] writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The keys a config type reads under one prefix, and what each may hold.
///
/// ```
/// use shylock::EtcdConfig;
///
/// #[derive(EtcdConfig)]
/// struct App {
///     port: u16,
///     #[etcd(default = "30s")]
///     timeout: std::time::Duration,
///     hosts: Vec<String>,
/// }
///
/// let schema = shylock::schema::<App>("/app");
/// assert!(schema.check_value("/app/port", b"8080").is_ok());
/// let refused = schema.check_value("/app/port", b"80800").unwrap_err();
/// assert_eq!(refused.to_string(), "/app/port: expected u16: \"80800\": number too large to fit in target type");
/// assert!(schema.check_value("/app/hosts/0", b"a.example").is_ok());
/// assert!(schema.check_value("/app/colour", b"red").unwrap_err().is_unknown());
/// assert_eq!(schema.required_keys(), ["/app/port"]);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// The document's version ([`SCHEMA_VERSION`]).
    pub shylock_schema: u32,
    /// The Rust type the schema was made from.
    pub config: String,
    /// The prefix the keys live under (no trailing `/`).
    pub prefix: String,
    /// Every key the config reads, in field order. A `*` segment in a key
    /// stands for any one segment (the entries of a map or list).
    pub keys: Vec<SchemaKey>,
}

/// One key, or one pattern of keys, a config reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchemaKey {
    /// The full key; `*` segments stand for any one segment.
    pub key: String,
    /// How the field holds it.
    pub shape: Shape,
    /// The Rust type one value decodes into (`u16`, `Duration`, `String`…).
    #[serde(rename = "type")]
    pub rust_type: String,
    /// How the value is written: plain text, or a JSON or TOML document.
    pub encoding: Encoding,
    /// The value as JSON Schema describes it, where it fits.
    pub json_schema: Value,
    /// The config cannot be built while this key is missing.
    pub required: bool,
    /// The text used when the key is missing, for `default = "text"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The value is secret: a refusal never shows it.
    pub secret: bool,
}

/// How a field holds its key or keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// One value.
    Value,
    /// `Option<T>`: one value that may be missing.
    Optional,
    /// A map's entries.
    Map,
    /// A list's items.
    List,
}

/// How a value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Text, decoded by the type.
    Text,
    /// `#[etcd(json)]`: one JSON document.
    Json,
    /// `#[etcd(toml)]`: one TOML document.
    Toml,
}

/// Why a schema refuses a value, or a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No key of the schema is this key, though it lies under its prefix.
    Unknown {
        /// The full key.
        key: String,
    },
    /// The value does not decode as the key's type.
    Invalid {
        /// The full key.
        key: String,
        /// What the key holds.
        expected: String,
        /// Why not; `None` for a secret value, which is never shown.
        reason: Option<String>,
    },
    /// The key is required and would be missing.
    Missing {
        /// The full key.
        key: String,
    },
}

impl Refusal {
    /// An unknown key (a warning unless a writer is strict).
    pub fn is_unknown(&self) -> bool {
        matches!(self, Refusal::Unknown { .. })
    }

    /// The key refused.
    pub fn key(&self) -> &str {
        match self {
            Refusal::Unknown { key } | Refusal::Invalid { key, .. } | Refusal::Missing { key } => {
                key
            }
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unknown { key } => write!(f, "{key}: not a key the config reads"),
            Refusal::Invalid {
                key,
                expected,
                reason: Some(reason),
            } => write!(f, "{key}: expected {expected}: {reason}"),
            Refusal::Invalid { key, expected, .. } => {
                write!(f, "{key}: expected {expected} (secret value not shown)")
            }
            Refusal::Missing { key } => write!(f, "{key}: required, and would be missing"),
        }
    }
}

impl std::error::Error for Refusal {}

/// The schema of `T` with its fields under `prefix`.
pub fn schema<T: EtcdConfig>(prefix: &str) -> Schema {
    let base = crate::__private::base(prefix);
    let mut keys = Vec::new();
    T::__schema(&base, crate::__private::Flags::ROOT, &mut keys);
    let config = std::any::type_name::<T>();
    Schema {
        shylock_schema: SCHEMA_VERSION,
        config: config.rsplit("::").next().unwrap_or(config).to_owned(),
        prefix: base,
        keys,
    }
}

/// The key a schema for `prefix` is published at, under `root`.
pub fn schema_key(root: &str, prefix: &str) -> String {
    format!(
        "{}/{}",
        root.trim_end_matches('/'),
        prefix.trim_matches('/')
    )
}

impl Schema {
    /// The document as published: pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a schema is JSON")
    }

    /// Stores the schema where shylock's writers find it (at
    /// [`schema_key`]`(`[`SCHEMA_ROOT`]`, prefix)`), returning the revision.
    ///
    /// ```no_run
    /// # #[derive(shylock::EtcdConfig)] struct App { port: u16 }
    /// # async fn f(client: shylock::Client) -> shylock::Result<()> {
    /// shylock::schema::<App>("/app").publish(&client).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish(&self, client: &crate::Client) -> crate::Result<i64> {
        self.publish_under(client, SCHEMA_ROOT).await
    }

    /// [`publish`](Self::publish) under another root than [`SCHEMA_ROOT`].
    pub async fn publish_under(&self, client: &crate::Client, root: &str) -> crate::Result<i64> {
        let key = schema_key(root, &self.prefix);
        let document = self.to_json();
        let response = client
            .request(&format!("publish the schema at {key}"), |mut etcd| {
                let (key, document) = (key.clone(), document.clone());
                async move { etcd.put(key, document, None).await }
            })
            .await?;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    /// Reads a published document.
    pub fn from_json(text: &[u8]) -> Result<Schema, String> {
        let value: Value =
            serde_json::from_slice(text).map_err(|e| format!("not a schema document: {e}"))?;
        match value.get("shylock_schema").and_then(Value::as_u64) {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "schema version {v}; this shylock reads version {SCHEMA_VERSION}"
                ))
            }
            None => return Err("not a schema document: no \"shylock_schema\" version".into()),
        }
        serde_json::from_value(value).map_err(|e| format!("not a schema document: {e}"))
    }

    /// Whether `key` lies under the schema's prefix (as a path).
    pub fn governs(&self, key: &str) -> bool {
        self.prefix.is_empty()
            || key == self.prefix
            || key
                .strip_prefix(&self.prefix)
                .is_some_and(|rest| rest.starts_with('/'))
            || self.keys.iter().any(|k| matches(&k.key, key))
    }

    /// The schema's entry for `key`, if one matches it.
    pub fn entry(&self, key: &str) -> Option<&SchemaKey> {
        self.keys.iter().find(|k| matches(&k.key, key))
    }

    /// Whether `value` may be written to `key`. A key under the prefix that
    /// no entry matches is [`Refusal::Unknown`].
    pub fn check_value(&self, key: &str, value: &[u8]) -> Result<(), Refusal> {
        let Some(entry) = self.entry(key) else {
            return Err(Refusal::Unknown { key: key.into() });
        };
        entry.check(value).map_err(|error| Refusal::Invalid {
            key: key.into(),
            expected: entry.expected(),
            reason: (!entry.secret).then(|| describe(value, &*error)),
        })
    }

    /// The keys the config cannot do without (patterns excluded: a map or
    /// list may have no entries).
    pub fn required_keys(&self) -> Vec<&str> {
        self.keys
            .iter()
            .filter(|k| k.required && !k.key.split('/').any(|s| s == "*"))
            .map(|k| k.key.as_str())
            .collect()
    }

    /// Whether deleting `key` leaves the config without a required key.
    pub fn check_delete(&self, key: &str) -> Result<(), Refusal> {
        if self.required_keys().contains(&key) {
            return Err(Refusal::Missing { key: key.into() });
        }
        Ok(())
    }
}

impl SchemaKey {
    /// `u16`, or `JSON for Rules` for an `#[etcd(json)]` field.
    fn expected(&self) -> String {
        match self.encoding {
            Encoding::Text => self.rust_type.clone(),
            Encoding::Json => format!("a JSON document for {}", self.rust_type),
            Encoding::Toml => format!("a TOML document for {}", self.rust_type),
        }
    }

    /// Decodes the value as the program would, where the type is one a
    /// writer knows (std types); other types are checked only as text.
    fn check(&self, raw: &[u8]) -> Result<(), DecodeError> {
        match self.encoding {
            Encoding::Json => serde_json::from_slice::<Value>(raw)
                .map(drop)
                .map_err(Into::into),
            Encoding::Toml => {
                let text = std::str::from_utf8(raw).map_err(|_| "not valid UTF-8")?;
                toml::from_str::<toml::Table>(text)
                    .map(drop)
                    .map_err(Into::into)
            }
            Encoding::Text => check_text(&self.rust_type, raw),
        }
    }
}

/// Decodes a value as the named type, if it is one we know.
fn check_text(rust_type: &str, raw: &[u8]) -> Result<(), DecodeError> {
    fn parse<T: FromStr>(raw: &[u8]) -> Result<(), DecodeError>
    where
        T::Err: std::fmt::Display,
    {
        decode::text(raw)?
            .parse::<T>()
            .map(drop)
            .map_err(|e| e.to_string().into())
    }
    match rust_type {
        "String" => String::from_value(raw).map(drop),
        "bool" => bool::from_value(raw).map(drop),
        "Duration" => Duration::from_value(raw).map(drop),
        "u8" => parse::<u8>(raw),
        "u16" => parse::<u16>(raw),
        "u32" => parse::<u32>(raw),
        "u64" => parse::<u64>(raw),
        "u128" => parse::<u128>(raw),
        "usize" => parse::<usize>(raw),
        "i8" => parse::<i8>(raw),
        "i16" => parse::<i16>(raw),
        "i32" => parse::<i32>(raw),
        "i64" => parse::<i64>(raw),
        "i128" => parse::<i128>(raw),
        "isize" => parse::<isize>(raw),
        "f32" => parse::<f32>(raw),
        "f64" => parse::<f64>(raw),
        "char" => parse::<char>(raw),
        "PathBuf" => parse::<std::path::PathBuf>(raw),
        "IpAddr" => parse::<std::net::IpAddr>(raw),
        "Ipv4Addr" => parse::<std::net::Ipv4Addr>(raw),
        "Ipv6Addr" => parse::<std::net::Ipv6Addr>(raw),
        "SocketAddr" => parse::<std::net::SocketAddr>(raw),
        _ => Ok(()),
    }
}

/// The JSON Schema of one value of a type we know; `{}` (anything) for
/// others.
pub(crate) fn json_schema(rust_type: &str, encoding: Encoding) -> Value {
    fn int(min: i128, max: u128) -> Value {
        json!({ "type": "integer", "minimum": min, "maximum": max })
    }
    if encoding != Encoding::Text {
        return json!({});
    }
    match rust_type {
        "String" | "PathBuf" => json!({ "type": "string" }),
        "char" => json!({ "type": "string", "minLength": 1, "maxLength": 1 }),
        "bool" => json!({ "type": "boolean" }),
        "Duration" => json!({ "type": "string", "format": "duration" }),
        "f32" | "f64" => json!({ "type": "number" }),
        "u8" => int(0, u8::MAX.into()),
        "u16" => int(0, u16::MAX.into()),
        "u32" => int(0, u32::MAX.into()),
        "u64" | "usize" => int(0, u64::MAX.into()),
        "i8" => int(i8::MIN.into(), i8::MAX as u128),
        "i16" => int(i16::MIN.into(), i16::MAX as u128),
        "i32" => int(i32::MIN.into(), i32::MAX as u128),
        "i64" | "isize" => int(i64::MIN.into(), i64::MAX as u128),
        "IpAddr" => json!({ "type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}] }),
        "Ipv4Addr" => json!({ "type": "string", "format": "ipv4" }),
        "Ipv6Addr" => json!({ "type": "string", "format": "ipv6" }),
        _ => json!({}),
    }
}

/// Whether a key matches a pattern whose `*` segments stand for any one
/// segment.
fn matches(pattern: &str, key: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == key;
    }
    let mut want = pattern.split('/');
    let mut have = key.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (Some("*"), Some(segment)) if !segment.is_empty() => {}
            (Some(w), Some(h)) if w == h => {}
            _ => return false,
        }
    }
}

/// `"abc": invalid digit found in string`, long values cut short.
fn describe(raw: &[u8], error: &(dyn std::error::Error + Send + Sync)) -> String {
    crate::__private::describe_failure(raw, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_one_segment() {
        assert!(matches("/a/*/url", "/a/x/url"));
        assert!(!matches("/a/*/url", "/a/x/y/url"));
        assert!(!matches("/a/*", "/a/"));
        assert!(matches("/a/b", "/a/b") && !matches("/a/b", "/a/bc"));
    }

    #[test]
    fn std_types_decode_as_the_program_decodes() {
        assert!(check_text("u16", b" 8080\n").is_ok());
        assert!(check_text("u16", b"-1").is_err());
        assert!(check_text("bool", b"on").is_ok());
        assert!(check_text("Duration", b"30").is_err());
        assert!(check_text("SocketAddr", b"127.0.0.1:80").is_ok());
        assert!(check_text("String", &[0xff]).is_err());
        assert!(check_text("Hex", &[0xff]).is_ok(), "unknown types pass");
    }
}
