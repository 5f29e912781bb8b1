//! Templates in Jinja syntax (minijinja) with confd's key functions under
//! confd's names and meanings. Every key a template reads must lie within
//! the resource's `keys`; reading another is an error naming the key, and
//! a missing key without a default is an error too: no silent empty output.

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::{Environment, Error as JinjaError, ErrorKind, UndefinedBehavior, Value};

trait ExactBool {
    fn as_bool_exact(&self) -> Option<bool>;
}

impl ExactBool for Value {
    fn as_bool_exact(&self) -> Option<bool> {
        (self.kind() == minijinja::value::ValueKind::Bool).then(|| self.is_true())
    }
}

use super::resource::{covers, full_key, Resource};
use crate::exit::{msg, Error};
use crate::live_keys::Keys;

/// What a render may read: the keys, and the resource's scope.
struct Scope {
    keys: Arc<Keys>,
    prefix: String,
    allowed: Vec<String>,
    template: String,
}

fn fail(text: String) -> JinjaError {
    JinjaError::new(ErrorKind::InvalidOperation, text)
}

impl Scope {
    /// The full key of a template's key, if the resource may read it.
    fn check(&self, key: &str) -> Result<String, JinjaError> {
        let full = full_key(&self.prefix, key);
        if self.allowed.iter().any(|scope| covers(scope, &full)) {
            Ok(full)
        } else {
            Err(fail(format!(
                "template {} reads {key}, which is not in the resource's keys {:?}",
                self.template, self.allowed
            )))
        }
    }

    /// The template's name for a full key (the prefix removed).
    fn relative<'k>(&self, full: &'k str) -> &'k str {
        full.strip_prefix(&self.prefix).unwrap_or(full)
    }

    fn value(&self, full: &str) -> Option<String> {
        self.keys
            .get(full)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Keys matching a glob pattern (Go's path.Match, as confd's).
    fn matching(&self, pattern: &str) -> Result<Vec<(String, String)>, JinjaError> {
        super::glob::check(pattern).map_err(|e| fail(format!("pattern {pattern:?}: {e}")))?;
        let literal = &pattern[..pattern.find(['*', '?', '[']).unwrap_or(pattern.len())];
        let full_literal = full_key(&self.prefix, literal);
        let scope = full_literal.rsplit_once('/').map_or("", |(dir, _)| dir);
        if !self
            .allowed
            .iter()
            .any(|a| covers(a, scope) || covers(a, &full_literal))
        {
            self.check(literal)?;
        }
        let full_pattern = full_key(&self.prefix, pattern);
        Ok(self
            .keys
            .range(full_literal.clone()..)
            .take_while(|(k, _)| k.starts_with(&full_literal))
            .filter(|(k, _)| super::glob::matches(&full_pattern, k) == Ok(true))
            .filter(|(k, _)| self.allowed.iter().any(|a| covers(a, k)))
            .map(|(k, v)| {
                (
                    self.relative(k).to_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect())
    }

    /// Names one level below `path`: all of them, or only those with children.
    fn children(&self, path: &str, dirs_only: bool) -> Result<Vec<String>, JinjaError> {
        let full = self.check(path)?;
        let prefix = format!("{}/", full.trim_end_matches('/'));
        let mut names: Vec<String> = Vec::new();
        for key in self
            .keys
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
        {
            let rest = &key[prefix.len()..];
            let (name, deeper) = match rest.split_once('/') {
                Some((name, _)) => (name, true),
                None => (rest, false),
            };
            if (deeper || !dirs_only) && names.last().map(String::as_str) != Some(name) {
                names.push(name.to_owned());
            }
        }
        names.dedup();
        Ok(names)
    }
}

fn kv(key: &str, value: &str) -> Value {
    let map: BTreeMap<&str, &str> = [
        ("Key", key),
        ("Value", value),
        ("key", key),
        ("value", value),
    ]
    .into();
    Value::from_serialize(map)
}

/// What one render may cost.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Engine steps (minijinja's fuel).
    pub steps: u64,
    /// Bytes of output.
    pub output_bytes: usize,
    /// Time, on a thread of its own.
    pub time: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            steps: 50_000_000,
            output_bytes: 64 << 20,
            time: std::time::Duration::from_secs(30),
        }
    }
}

/// Most numbers one `seq` may make.
const MAX_SEQ: i64 = 1_000_000;

/// Renders on a blocking thread within the limits; the daemon's own tasks
/// (signals, the watch) go on meanwhile. A render past its time limit is
/// reported and abandoned (its steps are bounded, so the thread ends).
pub async fn render_within(
    resource: &Resource,
    keys: &Arc<Keys>,
    limits: Limits,
) -> Result<String, Error> {
    let (resource, keys) = (resource.clone(), Arc::clone(keys));
    let name = resource.template.display().to_string();
    let task = tokio::task::spawn_blocking(move || render(&resource, &keys, limits));
    match tokio::time::timeout(limits.time, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(msg(format!("template {name}: the render failed: {panic}"))),
        Err(_) => Err(msg(format!(
            "template {name}: the render took longer than {:?}; not installed",
            limits.time
        ))),
    }
}

/// Output that stops at a size limit.
struct Bounded {
    out: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            return Err(std::io::Error::other(format!(
                "the output is larger than {} bytes",
                self.limit
            )));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders a resource's template with the keys as they are now.
pub fn render(resource: &Resource, keys: &Arc<Keys>, limits: Limits) -> Result<String, Error> {
    let source = std::fs::read_to_string(&resource.template).map_err(|e| {
        msg(format!(
            "cannot read template {}: {e}",
            resource.template.display()
        ))
    })?;
    let scope = Arc::new(Scope {
        keys: Arc::clone(keys),
        prefix: resource.prefix.clone(),
        allowed: resource.watched().to_vec(),
        template: resource.template.display().to_string(),
    });
    if let Some(min) = resource.min_keys {
        let present = scope
            .keys
            .keys()
            .filter(|k| scope.allowed.iter().any(|a| covers(a, k)))
            .count();
        if present < min {
            return Err(msg(format!(
                "{}: only {present} key(s) under {:?}, fewer than min_keys = {min}; not rendered",
                resource.name, scope.allowed
            )));
        }
    }
    let mut env = Environment::new();
    env.set_fuel(Some(limits.steps));
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // A config file keeps its last newline (Jinja drops it by default).
    env.set_keep_trailing_newline(true);
    // Config files spell booleans true/false, not Python's True/False.
    env.set_formatter(|out, state, value| match value.as_bool_exact() {
        Some(b) => out
            .write_str(if b { "true" } else { "false" })
            .map_err(JinjaError::from),
        None => minijinja::escape_formatter(out, state, value),
    });
    register(&mut env, scope);
    env.add_template_owned("template", source)
        .map_err(|e| msg(format!("template {}: {e}", resource.template.display())))?;
    let template = env.get_template("template").expect("just added");
    let mut out = Bounded {
        out: Vec::new(),
        limit: limits.output_bytes,
    };
    template.render_captured_to((), &mut out).map_err(|e| {
        let mut text = format!("template {}: {e}", resource.template.display());
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        msg(text)
    })?;
    String::from_utf8(out.out).map_err(|e| {
        msg(format!(
            "template {}: the output is not UTF-8: {e}",
            resource.template.display()
        ))
    })
}

fn register(env: &mut Environment<'static>, scope: Arc<Scope>) {
    let s = scope.clone();
    env.add_function("get", move |key: String| -> Result<Value, JinjaError> {
        let full = s.check(&key)?;
        let value = s
            .value(&full)
            .ok_or_else(|| fail(format!("key {key} does not exist ({full})")))?;
        Ok(kv(&key, &value))
    });
    let s = scope.clone();
    env.add_function(
        "gets",
        move |pattern: String| -> Result<Vec<Value>, JinjaError> {
            Ok(s.matching(&pattern)?
                .iter()
                .map(|(k, v)| kv(k, v))
                .collect())
        },
    );
    let s = scope.clone();
    env.add_function(
        "getv",
        move |key: String, default: Option<String>| -> Result<String, JinjaError> {
            let full = s.check(&key)?;
            match (s.value(&full), default) {
                (Some(value), _) => Ok(value),
                (None, Some(default)) => Ok(default),
                (None, None) => Err(fail(format!(
                    "key {key} does not exist ({full}) and getv has no default"
                ))),
            }
        },
    );
    let s = scope.clone();
    env.add_function(
        "getvs",
        move |pattern: String| -> Result<Vec<String>, JinjaError> {
            Ok(s.matching(&pattern)?.into_iter().map(|(_, v)| v).collect())
        },
    );
    let s = scope.clone();
    env.add_function("exists", move |key: String| -> Result<bool, JinjaError> {
        let full = s.check(&key)?;
        Ok(s.keys.contains_key(&full))
    });
    let s = scope.clone();
    env.add_function("ls", move |path: String| s.children(&path, false));
    let s = scope;
    env.add_function("lsdir", move |path: String| s.children(&path, true));

    env.add_function("base", |path: String| {
        path.trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned()
    });
    env.add_function("dir", |path: String| {
        match path.trim_end_matches('/').rsplit_once('/') {
            Some(("", _)) | None => "/".to_owned(),
            Some((dir, _)) => dir.to_owned(),
        }
    });
    env.add_function("split", |text: String, sep: String| -> Vec<String> {
        text.split(&sep).map(str::to_owned).collect()
    });
    env.add_function("join", |items: Vec<String>, sep: String| items.join(&sep));
    env.add_function("json", |text: String| -> Result<Value, JinjaError> {
        serde_json::from_str::<serde_json::Value>(&text)
            .map(Value::from_serialize)
            .map_err(|e| fail(format!("json: {e}")))
    });
    env.add_function(
        "jsonArray",
        |text: String| -> Result<Vec<Value>, JinjaError> {
            serde_json::from_str::<Vec<serde_json::Value>>(&text)
                .map(|items| items.iter().map(Value::from_serialize).collect())
                .map_err(|e| fail(format!("jsonArray: {e}")))
        },
    );
    env.add_function("toUpper", |text: String| text.to_uppercase());
    env.add_function("toLower", |text: String| text.to_lowercase());
    env.add_function(
        "replace",
        |text: String, old: String, new: String, n: Option<i64>| match n {
            Some(n) if n >= 0 => text.replacen(&old, &new, n as usize),
            _ => text.replace(&old, &new),
        },
    );
    env.add_function("contains", |text: String, part: String| {
        text.contains(&part)
    });
    env.add_function("trimSuffix", |text: String, suffix: String| {
        text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
    });
    env.add_function("getenv", |name: String, default: Option<String>| {
        std::env::var(&name).ok().or(default).unwrap_or_default()
    });
    env.add_function(
        "lookupIP",
        |host: String| -> Result<Vec<String>, JinjaError> {
            use std::net::ToSocketAddrs;
            let mut ips: Vec<String> = (host.as_str(), 0)
                .to_socket_addrs()
                .map_err(|e| fail(format!("lookupIP {host}: {e}")))?
                .map(|a| a.ip().to_string())
                .collect();
            ips.sort();
            ips.dedup();
            Ok(ips)
        },
    );
    env.add_function(
        "lookupSRV",
        |service: String, proto: String, name: String| -> Result<Vec<Value>, JinjaError> {
            super::srv::lookup(&service, &proto, &name)
                .map_err(|e| fail(format!("lookupSRV _{service}._{proto}.{name}: {e}")))
        },
    );
    env.add_function("parseBool", |text: String| -> Result<bool, JinjaError> {
        match text.to_ascii_lowercase().as_str() {
            "1" | "t" | "true" => Ok(true),
            "0" | "f" | "false" => Ok(false),
            _ => Err(fail(format!("parseBool: {text:?} is not a boolean"))),
        }
    });
    env.add_function("atoi", |text: String| -> Result<i64, JinjaError> {
        text.trim()
            .parse()
            .map_err(|e| fail(format!("atoi: {text:?}: {e}")))
    });
    env.add_function("add", |a: i64, b: i64| a + b);
    env.add_function("sub", |a: i64, b: i64| a - b);
    env.add_function("mul", |a: i64, b: i64| a * b);
    env.add_function("div", |a: i64, b: i64| -> Result<i64, JinjaError> {
        a.checked_div(b).ok_or_else(|| fail("div by zero".into()))
    });
    env.add_function("mod", |a: i64, b: i64| -> Result<i64, JinjaError> {
        a.checked_rem(b).ok_or_else(|| fail("mod by zero".into()))
    });
    env.add_function(
        "seq",
        |first: i64, last: i64| -> Result<Vec<i64>, JinjaError> {
            let count = last.saturating_sub(first).saturating_add(1);
            if count > MAX_SEQ {
                return Err(fail(format!(
                    "seq({first}, {last}) would make {count} numbers, more than {MAX_SEQ}"
                )));
            }
            Ok((first..=last).collect())
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_default(resource: &Resource, keys: &Arc<Keys>) -> Result<String, Error> {
        render(resource, keys, Limits::default())
    }
    use crate::atomic::Target;

    fn resource(dir: &std::path::Path, template: &str, keys: &[&str]) -> Resource {
        let path = dir.join("t.tmpl");
        std::fs::write(&path, template).unwrap();
        Resource {
            name: "t.toml".into(),
            template: path,
            target: Target::new(dir.join("out")),
            prefix: "/prod".into(),
            scopes: keys.iter().map(|k| full_key("/prod", k)).collect(),
            check_cmd: None,
            reload_cmd: None,
            min_keys: None,
            wait: None,
        }
    }

    fn keys(pairs: &[(&str, &str)]) -> Arc<Keys> {
        Arc::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn confd_functions_under_confd_names() {
        let dir = tempfile::tempdir().unwrap();
        let data = keys(&[
            ("/prod/services/web/a", "10.0.0.1:80"),
            ("/prod/services/web/b", "10.0.0.2:80"),
            ("/prod/services/db/x/port", "5432"),
            ("/prod/app/name", "shop"),
            ("/prod/app/flags", r#"{"beta": true}"#),
            ("/prod/app/list", r#"["x","y"]"#),
        ]);
        let template = "{% for s in gets(\"/services/web/*\") %}server {{ s.Value }}; # {{ base(s.Key) }}\n{% endfor %}\
            {{ getv(\"/app/name\") | upper }} {{ getv(\"/app/missing\", \"dflt\") }} {{ exists(\"/app/name\") }}\n\
            {{ ls(\"/services\") | join(\",\") }} {{ lsdir(\"/services/db\") | join(\",\") }} {{ getvs(\"/services/web/*\") | length }}\n\
            {{ json(getv(\"/app/flags\")).beta }} {{ jsonArray(getv(\"/app/list\"))[1] }} {{ toUpper(\"a\") }}{{ toLower(\"B\") }} \
            {{ split(\"a:b\", \":\")[1] }} {{ replace(\"aaa\", \"a\", \"b\", 2) }} {{ add(atoi(\"40\"), 2) }} {{ parseBool(\"true\") }} {{ dir(\"/a/b/c\") }}";
        let r = resource(dir.path(), template, &["/services", "/app"]);
        let out = render_default(&r, &data).unwrap();
        assert_eq!(
            out,
            "server 10.0.0.1:80; # a\nserver 10.0.0.2:80; # b\nSHOP dflt true\ndb,web x 2\ntrue y Ab b bba 42 true /a/b"
        );
    }

    #[test]
    fn reading_outside_the_keys_or_a_missing_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = keys(&[("/prod/app/name", "shop"), ("/prod/secret/pw", "x")]);
        let outside = render_default(
            &resource(dir.path(), "{{ getv(\"/secret/pw\") }}", &["/app"]),
            &data,
        )
        .unwrap_err()
        .to_string();
        assert!(
            outside.contains("reads /secret/pw") && outside.contains("not in the resource's keys"),
            "{outside}"
        );
        let missing = render_default(
            &resource(dir.path(), "{{ getv(\"/app/port\") }}", &["/app"]),
            &data,
        )
        .unwrap_err()
        .to_string();
        assert!(missing.contains("/app/port does not exist"), "{missing}");
        let undefined = render_default(&resource(dir.path(), "{{ nope }}", &["/app"]), &data)
            .unwrap_err()
            .to_string();
        assert!(undefined.contains("undefined"), "{undefined}");
        let syntax = render_default(&resource(dir.path(), "{% for %}", &["/app"]), &data)
            .unwrap_err()
            .to_string();
        assert!(syntax.contains("t.tmpl"), "{syntax}");
    }

    #[test]
    fn min_keys_refuses_an_empty_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = resource(
            dir.path(),
            "upstream { {% for s in getvs(\"/up/*\") %}server {{ s }};{% endfor %} }",
            &["/up"],
        );
        r.min_keys = Some(1);
        let error = render_default(&r, &keys(&[])).unwrap_err().to_string();
        assert!(error.contains("min_keys"), "{error}");
        assert!(render_default(&r, &keys(&[("/prod/up/a", "1.2.3.4")]))
            .unwrap()
            .contains("server 1.2.3.4;"));
    }
}
