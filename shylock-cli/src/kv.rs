//! What `get`, `put`, `del` and `watch` share: a key with path semantics
//! (`--prefix` means the key and the keys under `KEY/`, never `KEY-other`),
//! and how keys and values are printed.

use std::io::Write;

use serde_json::{json, Value};

use crate::exit::{usage, Error};

/// The key argument of `get`, `del` and `watch`, and their `--prefix`.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// The key; with --prefix, the key and every key under KEY/.
    #[arg(id = "KEY")]
    pub key: String,

    /// Also every key under KEY/ (never KEY-other or KEYother).
    #[arg(long)]
    pub prefix: bool,
}

impl KeyArgs {
    pub fn scope(&self) -> Result<Scope, Error> {
        Scope::new(&self.key, self.prefix)
    }
}

/// The keys one command is about.
#[derive(Clone, Debug)]
pub struct Scope {
    /// The key, without a trailing `/` (empty for the root).
    pub key: String,
    /// The key and every key under `key/`.
    pub prefix: bool,
}

impl Scope {
    pub fn new(key: &str, prefix: bool) -> Result<Scope, Error> {
        if key.is_empty() {
            return Err(usage("the key is empty"));
        }
        let key = if prefix {
            key.trim_end_matches('/').to_owned()
        } else {
            key.to_owned()
        };
        Ok(Scope { key, prefix })
    }

    /// The keys under the scope start with this (`key/`).
    pub fn children(&self) -> String {
        format!("{}/", self.key)
    }

    /// Whether `key` is in the scope.
    pub fn covers(&self, key: impl AsRef<[u8]>) -> bool {
        let key = key.as_ref();
        key == self.key.as_bytes() || (self.prefix && key.starts_with(self.children().as_bytes()))
    }

    /// The range that holds every key of the scope (and others between,
    /// such as `key-x`, which `covers` filters out): `[key, key + "0")`,
    /// `0` being the byte after `/`.
    pub fn range_end(&self) -> Vec<u8> {
        let mut end = self.key.as_bytes().to_vec();
        end.push(b'/' + 1);
        end
    }
}

/// A key or value as JSON: a string, or for bytes that are not UTF-8, an
/// object `{"base64": ...}`.
pub fn bytes_json(bytes: &[u8]) -> Value {
    use base64::Engine;
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// Writes and flushes; a closed stdout (`| head`) ends the command quietly.
pub fn emit(out: &mut impl Write, bytes: &[u8]) -> Result<bool, Error> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// One JSON value on a line.
pub fn json_line(value: &Value) -> Vec<u8> {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// etcdctl's text form: the key on a line, then the value and a newline.
pub fn text_entry(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + value.len() + 2);
    out.extend_from_slice(key);
    out.push(b'\n');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_a_path() {
        let scope = Scope::new("/app/", true).unwrap();
        assert!(scope.covers("/app") && scope.covers("/app/a/b"));
        assert!(!scope.covers("/app-x") && !scope.covers("/apple"));
        assert_eq!(scope.range_end(), b"/app0");
        let root = Scope::new("/", true).unwrap();
        assert!(root.covers("/a") && root.children() == "/");
        let key = Scope::new("/app/", false).unwrap();
        assert!(key.covers("/app/") && !key.covers("/app/a"));
    }

    #[test]
    fn values_that_are_not_text_are_base64() {
        assert_eq!(bytes_json(b"8080"), json!("8080"));
        assert_eq!(bytes_json(&[0xff, 0]), json!({"base64": "/wA="}));
    }
}
