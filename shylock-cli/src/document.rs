//! Keys under a prefix as one document (JSON, YAML, TOML, properties, env),
//! and documents back into keys. A key's path segments are the document's
//! nesting; values are strings.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::exit::{msg, Error};

/// The file formats of `export` and `import`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One key's value, byte for byte.
    Raw,
    Json,
    Yaml,
    Toml,
    /// Java properties: `db.url=...` (Spring Boot's application.properties).
    Properties,
    /// Shell environment assignments: `DB_URL='...'`.
    Env,
}

/// Nests relative keys (`db/url`) into a JSON value (`{"db": {"url": ...}}`).
pub fn nest(keys: &[(String, Vec<u8>)]) -> Result<Value, Error> {
    let mut root = Map::new();
    for (key, value) in keys {
        let text = std::str::from_utf8(value).map_err(|_| {
            msg(format!(
                "key {key} is not UTF-8 text; export it with --format raw"
            ))
        })?;
        let segments: Vec<&str> = key.split('/').collect();
        let (last, parents) = segments.split_last().expect("split yields one segment");
        let mut node = &mut root;
        for segment in parents {
            let entry = node
                .entry(segment.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            node = match entry {
                Value::Object(map) => map,
                _ => return Err(conflict(key)),
            };
        }
        if node.contains_key(*last) {
            return Err(conflict(key));
        }
        node.insert(last.to_string(), Value::String(text.to_owned()));
    }
    Ok(Value::Object(root))
}

fn conflict(key: &str) -> Error {
    msg(format!(
        "key {key} is both a value and a prefix, which a nested document cannot hold; \
         use --format properties or env"
    ))
}

/// Flat (dotted or underscored) names for the flat formats.
fn flat(keys: &[(String, Vec<u8>)]) -> Result<Vec<(Vec<&str>, &str)>, Error> {
    keys.iter()
        .map(|(key, value)| {
            let text = std::str::from_utf8(value).map_err(|_| {
                msg(format!(
                    "key {key} is not UTF-8 text; export it with --format raw"
                ))
            })?;
            Ok((key.split('/').collect(), text))
        })
        .collect()
}

/// Renders keys (relative to the exported prefix) in a text format.
pub fn render(keys: &[(String, Vec<u8>)], format: Format) -> Result<Vec<u8>, Error> {
    let text = match format {
        Format::Raw => {
            return Err(msg(
                "a prefix cannot be exported raw; choose another --format",
            ))
        }
        Format::Json => serde_json::to_string_pretty(&nest(keys)?)? + "\n",
        Format::Yaml => serde_norway::to_string(&nest(keys)?)?,
        Format::Toml => toml::to_string(&nest(keys)?)?,
        Format::Properties => flat(keys)?
            .into_iter()
            .map(|(path, value)| {
                format!(
                    "{}={}\n",
                    properties_key(&path.join(".")),
                    properties_value(value)
                )
            })
            .collect(),
        Format::Env => {
            // Two keys that make one name would set it twice, the second
            // silently winning: an error naming both.
            let mut named: BTreeMap<String, String> = BTreeMap::new();
            let mut out = String::new();
            for (path, value) in flat(keys)? {
                let name = env_name(&path);
                let key = path.join("/");
                if let Some(other) = named.insert(name.clone(), key.clone()) {
                    return Err(format!(
                        "keys {other} and {key} both become the variable {name}; \
                         rename one, or export another format"
                    )
                    .into());
                }
                out.push_str(&format!("{name}={}\n", shell_quote(value)));
            }
            out
        }
    };
    Ok(text.into_bytes())
}

fn properties_key(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if matches!(c, ' ' | ':' | '=' | '#' | '!') {
            out.push('\\');
        }
        escape_char(&mut out, c);
    }
    out
}

fn properties_value(value: &str) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == 0 && matches!(c, ' ' | '#' | '!') {
            out.push('\\');
        }
        escape_char(&mut out, c);
    }
    out
}

/// Java properties files are ISO-8859-1: everything else is `\uXXXX`.
fn escape_char(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (' '..='~').contains(&c) => out.push(c),
        c => {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04X}"));
            }
        }
    }
}

/// `db/url` → `DB_URL`.
fn env_name(path: &[&str]) -> String {
    let mut name: String = path
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        name.insert(0, '_');
    }
    name
}

/// Single quotes, safe for `sh` and for `. file`.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// Flattens a parsed document into relative keys (`db/url`): objects nest,
/// arrays number their items, scalars become their text.
pub fn flatten(document: &Value) -> BTreeMap<String, Vec<u8>> {
    fn walk(value: &Value, path: &mut Vec<String>, out: &mut BTreeMap<String, Vec<u8>>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    walk(v, path, out);
                    path.pop();
                }
            }
            Value::String(s) => {
                out.insert(path.join("/"), s.clone().into_bytes());
            }
            Value::Null => {
                out.insert(path.join("/"), Vec::new());
            }
            other => {
                out.insert(path.join("/"), other.to_string().into_bytes());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(document, &mut Vec::new(), &mut out);
    out
}

/// Parses a document in one of the nested formats, or properties.
pub fn parse(text: &str, format: Format) -> Result<Value, Error> {
    Ok(match format {
        Format::Json => serde_json::from_str(text)?,
        Format::Yaml => serde_norway::from_str(text)?,
        Format::Toml => serde_json::to_value(toml::from_str::<toml::Table>(text)?)?,
        Format::Properties => {
            let mut root = Map::new();
            for (key, value) in parse_properties(text) {
                root.insert(key.replace('.', "/"), Value::String(value));
            }
            Value::Object(root)
        }
        Format::Raw | Format::Env => {
            return Err(msg("import reads json, yaml, toml or properties"))
        }
    })
}

/// Java properties: `key=value`, `key: value` or `key value`, with `#`/`!`
/// comments, backslash escapes (`\uXXXX` included) and continuation lines.
fn parse_properties(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        let trailing = line.chars().rev().take_while(|&c| c == '\\').count();
        if trailing % 2 == 1 {
            logical.push_str(&line[..line.len() - 1]);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        // The key ends at the first unescaped `=`, `:` or whitespace.
        let mut chars = entry.char_indices();
        let mut end = entry.len();
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                chars.next();
            } else if c == '=' || c == ':' || c.is_whitespace() {
                end = i;
                break;
            }
        }
        let key = unescape(&entry[..end]);
        let rest = entry[end..].trim_start();
        let rest = rest.strip_prefix(['=', ':']).unwrap_or(rest).trim_start();
        out.push((key, unescape(rest)));
    }
    out
}

/// Undoes properties escapes, `\uXXXX` surrogate pairs included.
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut units: Vec<u16> = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.clone().next() == Some('u') {
            chars.next();
            let hex: String = chars.by_ref().take(4).collect();
            if let Ok(unit) = u16::from_str_radix(&hex, 16) {
                units.push(unit);
                continue;
            }
            out.push_str(&hex);
            continue;
        }
        out.push_str(&String::from_utf16_lossy(&units));
        units.clear();
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out.push_str(&String::from_utf16_lossy(&units));
    out
}

/// Relative keys from text pairs, for tests of the writers.
#[cfg(test)]
pub fn keys(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_renders_nested_keys() {
        let k = keys(&[
            ("db/url", "postgres://x"),
            ("db/pool", "4"),
            ("name", "it's \"web\""),
        ]);
        let json = String::from_utf8(render(&k, Format::Json).unwrap()).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap()["db"]["url"],
            "postgres://x"
        );
        let yaml = String::from_utf8(render(&k, Format::Yaml).unwrap()).unwrap();
        assert_eq!(parse(&yaml, Format::Yaml).unwrap()["name"], "it's \"web\"");
        let toml = String::from_utf8(render(&k, Format::Toml).unwrap()).unwrap();
        assert_eq!(parse(&toml, Format::Toml).unwrap()["db"]["pool"], "4");
        let props = String::from_utf8(render(&k, Format::Properties).unwrap()).unwrap();
        assert!(
            props.contains("db.url=postgres\\://x") || props.contains("db.url=postgres://x"),
            "{props}"
        );
        let env = String::from_utf8(render(&k, Format::Env).unwrap()).unwrap();
        assert!(
            env.contains("DB_URL='postgres://x'\n") && env.contains("NAME='it'\\''s \"web\"'\n"),
            "{env}"
        );
    }

    /// Regression: `db-url` and `db/url` both became `DB_URL`, set twice.
    #[test]
    fn two_keys_of_one_variable_name_are_an_error() {
        let error = render(&keys(&[("db-url", "a"), ("db/url", "b")]), Format::Env)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("db-url") && error.contains("db/url") && error.contains("DB_URL"),
            "{error}"
        );
    }

    #[test]
    fn a_key_that_is_also_a_prefix_is_named() {
        let error = nest(&keys(&[("a", "1"), ("a/b", "2")]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("key a/b") && error.contains("--format properties"),
            "{error}"
        );
    }

    #[test]
    fn documents_flatten_back_into_keys() {
        let doc = parse(
            "server:\n  port: 8080\n  hosts: [a, b]\nname: web\n",
            Format::Yaml,
        )
        .unwrap();
        let flat = flatten(&doc);
        assert_eq!(flat["server/port"], b"8080");
        assert_eq!(flat["server/hosts/1"], b"b");
        assert_eq!(flat["name"], b"web");
        let props = parse(
            "# c\nspring.datasource.url = jdbc:x\na=b=c\n",
            Format::Properties,
        )
        .unwrap();
        assert_eq!(flatten(&props)["spring/datasource/url"], b"jdbc:x");
        assert_eq!(flatten(&props)["a"], b"b=c");
    }

    #[test]
    fn properties_escapes_round_trip() {
        let k = keys(&[
            ("greeting", "héllo 😀"),
            ("path", "C:\\dir\nnext"),
            ("sp ace", " lead"),
        ]);
        let text = String::from_utf8(render(&k, Format::Properties).unwrap()).unwrap();
        let back = flatten(&parse(&text, Format::Properties).unwrap());
        assert_eq!(back["greeting"], "héllo 😀".as_bytes());
        assert_eq!(back["path"], "C:\\dir\nnext".as_bytes());
        assert_eq!(back["sp ace"], b" lead");
        let continued = parse("a = one \\\n    two\n", Format::Properties).unwrap();
        assert_eq!(continued["a"], "one two");
    }

    #[test]
    fn non_ascii_properties_are_escaped() {
        let out = String::from_utf8(
            render(&keys(&[("greeting", "héllo 😀")]), Format::Properties).unwrap(),
        )
        .unwrap();
        assert_eq!(out, "greeting=h\\u00E9llo \\uD83D\\uDE00\n");
    }
}
