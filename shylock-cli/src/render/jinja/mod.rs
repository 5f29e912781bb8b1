//! The Jinja engine (minijinja), chosen with `engine = "jinja"` or a
//! `.j2`/`.jinja` template: confd's functions under confd's names, over the
//! same store as Go templates. A missing key without a default is an error,
//! and so is an undefined variable: no silent empty output. A loop over
//! keys whose body reads only its item keeps each item's output from the
//! last render (ranges.rs).

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::{Environment, Error as JinjaError, ErrorKind, UndefinedBehavior, Value};

mod ranges;

use super::confd;
use super::store::{Shared, Store};
use super::template::{Bounded, Limits};

trait ExactBool {
    fn as_bool_exact(&self) -> Option<bool>;
}

impl ExactBool for Value {
    fn as_bool_exact(&self) -> Option<bool> {
        (self.kind() == minijinja::value::ValueKind::Bool).then(|| self.is_true())
    }
}

fn fail(text: String) -> JinjaError {
    JinjaError::new(ErrorKind::InvalidOperation, text)
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

/// A JSON document as template values: whole numbers as integers (`8080`,
/// not `8080.0`).
fn json_value(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::from_serialize(n),
        },
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(json_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => {
            Value::from_iter(map.iter().map(|(k, v)| (k.clone(), json_value(v))))
        }
        other => Value::from_serialize(other),
    }
}

/// Renders `source` into `out`: with its cacheable loops rewritten
/// (ranges.rs), and as written if that fails, so errors read as they
/// always did.
pub fn render(
    source: &str,
    store: Shared,
    limits: Limits,
    out: &mut Bounded,
) -> Result<(), String> {
    if let Some(rewritten) = ranges::rewrite(source) {
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            source.hash(&mut hasher);
            hasher.finish()
        };
        let mut env = environment(store.clone(), limits);
        let loops = rewritten
            .loops
            .iter()
            .map(|l| (l.pairs, l.pattern.clone()))
            .collect();
        env.add_function(
            ranges::FUNCTION,
            ranges::function(Arc::new(loops), store.clone(), hash, limits.output_bytes),
        );
        let added = rewritten
            .loops
            .into_iter()
            .try_for_each(|l| env.add_template_owned(l.name, l.source));
        if added.is_ok() && run(env, rewritten.source, out).is_ok() {
            return Ok(());
        }
        out.clear();
    }
    let env = environment(store, limits);
    run(env, source.to_owned(), out)
}

/// An environment with confd's functions over `store`.
fn environment(store: Shared, limits: Limits) -> Environment<'static> {
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
    register(&mut env, store);
    env
}

/// Adds `source` to `env` as "template" and renders it into `out`.
fn run(mut env: Environment<'static>, source: String, out: &mut Bounded) -> Result<(), String> {
    env.add_template_owned("template", source)
        .map_err(|e| e.to_string())?;
    let template = env.get_template("template").map_err(|e| e.to_string())?;
    template.render_captured_to((), out).map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    })?;
    Ok(())
}

/// Parses `source` with the functions a render has; names it uses that
/// are neither functions nor set by the template are errors.
pub fn check(source: &str) -> Result<(), String> {
    let mut env = Environment::new();
    register(
        &mut env,
        Arc::new(Store::new(Default::default(), "/", &[], "", false)),
    );
    env.add_template_owned("template", source.to_owned())
        .map_err(|e| e.to_string())?;
    let template = env.get_template("template").map_err(|e| e.to_string())?;
    let mut unknown: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|name| env.globals().all(|(global, _)| global != name))
        .collect();
    unknown.sort();
    match unknown.is_empty() {
        true => Ok(()),
        false => Err(format!("undefined: {}", unknown.join(", "))),
    }
}

fn register(env: &mut Environment<'static>, store: Shared) {
    let s = store.clone();
    env.add_function("get", move |key: String| -> Result<Value, JinjaError> {
        match s.value(&key).map_err(fail)? {
            Some(value) => Ok(kv(&key, value)),
            None => Err(fail(Store::missing(&key))),
        }
    });
    let s = store.clone();
    env.add_function(
        "gets",
        move |pattern: String| -> Result<Vec<Value>, JinjaError> {
            let pairs = s.pairs(&pattern).map_err(fail)?;
            Ok(s.cache().jinja_pairs.all(pairs, kv))
        },
    );
    let s = store.clone();
    env.add_function(
        "getv",
        move |key: String, default: Option<String>| -> Result<String, JinjaError> {
            match (s.value(&key).map_err(fail)?, default) {
                (Some(value), _) => Ok(value.to_owned()),
                (None, Some(default)) => Ok(default),
                (None, None) => Err(fail(Store::missing(&key))),
            }
        },
    );
    let s = store.clone();
    env.add_function(
        "getvs",
        move |pattern: String| -> Result<Vec<String>, JinjaError> {
            Ok(s.values(&pattern)
                .map_err(fail)?
                .into_iter()
                .map(str::to_owned)
                .collect())
        },
    );
    let s = store.clone();
    env.add_function("exists", move |key: String| -> Result<bool, JinjaError> {
        Ok(s.value(&key).map_err(fail)?.is_some())
    });
    let s = store.clone();
    env.add_function("ls", move |path: String| s.ls(&path));
    let s = store;
    env.add_function("lsdir", move |path: String| s.lsdir(&path));

    env.add_function("base", |path: String| confd::path_base(&path));
    env.add_function("dir", |path: String| confd::path_dir(&path));
    env.add_function("split", |text: String, sep: String| {
        confd::split(&text, &sep)
    });
    env.add_function("join", |items: Vec<String>, sep: String| items.join(&sep));
    env.add_function("json", |text: String| -> Result<Value, JinjaError> {
        serde_json::from_str::<serde_json::Value>(&text)
            .map(|v| json_value(&v))
            .map_err(|e| fail(format!("json: {e}")))
    });
    env.add_function(
        "jsonArray",
        |text: String| -> Result<Vec<Value>, JinjaError> {
            serde_json::from_str::<Vec<serde_json::Value>>(&text)
                .map(|items| items.iter().map(json_value).collect())
                .map_err(|e| fail(format!("jsonArray: {e}")))
        },
    );
    env.add_function(
        "map",
        |args: minijinja::value::Rest<Value>| -> Result<Value, JinjaError> {
            if !args.len().is_multiple_of(2) {
                return Err(fail("invalid map call".into()));
            }
            let mut map = BTreeMap::new();
            for pair in args.chunks(2) {
                let key = pair[0]
                    .as_str()
                    .ok_or_else(|| fail("map keys must be strings".into()))?;
                map.insert(key.to_owned(), pair[1].clone());
            }
            Ok(Value::from_iter(map))
        },
    );
    env.add_function("toUpper", |text: String| confd::change_case(&text, true));
    env.add_function("toLower", |text: String| confd::change_case(&text, false));
    env.add_function(
        "replace",
        |text: String, old: String, new: String, n: Option<i64>| {
            confd::replace(&text, &old, &new, n.unwrap_or(-1))
        },
    );
    env.add_function("contains", |text: String, part: String| {
        text.contains(&part)
    });
    env.add_function("trimSuffix", |text: String, suffix: String| {
        text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
    });
    env.add_function("getenv", |name: String, default: Option<String>| {
        confd::getenv(&name, default.as_deref())
    });
    env.add_function("datetime", confd::now_string);
    env.add_function("fileExists", |path: String| {
        std::path::Path::new(&path).exists()
    });
    env.add_function("base64Encode", |text: String| confd::base64_encode(&text));
    env.add_function(
        "base64Decode",
        |text: String| -> Result<String, JinjaError> { confd::base64_decode(&text).map_err(fail) },
    );
    env.add_function("lookupIP", |host: String| confd::lookup_ip(&host));
    env.add_function("lookupIPV4", |host: String| {
        confd::lookup_ip_family(&host, true)
    });
    env.add_function("lookupIPV6", |host: String| {
        confd::lookup_ip_family(&host, false)
    });
    env.add_function(
        "lookupSRV",
        |service: String, proto: String, name: String| -> Vec<Value> {
            crate::srv::lookup_sorted(&service, &proto, &name)
                .iter()
                .map(|r| {
                    let map: BTreeMap<&str, Value> = [
                        ("Target", Value::from(r.target.clone())),
                        ("Port", Value::from(r.port)),
                        ("Priority", Value::from(r.priority)),
                        ("Weight", Value::from(r.weight)),
                    ]
                    .into();
                    Value::from_iter(map)
                })
                .collect()
        },
    );
    env.add_function("parseBool", |text: String| -> Result<bool, JinjaError> {
        confd::parse_bool(&text).map_err(fail)
    });
    env.add_function("atoi", |text: String| -> Result<i64, JinjaError> {
        confd::atoi(&text).map_err(fail)
    });
    env.add_function("reverse", |items: Vec<Value>| -> Vec<Value> {
        items.into_iter().rev().collect()
    });
    env.add_function("sortByLength", |items: Vec<String>| {
        confd::sort_by_length(items, String::len)
    });
    env.add_function("sortKVByLength", |items: Vec<Value>| {
        confd::sort_by_length(items, |kv| {
            kv.get_attr("Key")
                .ok()
                .and_then(|k| k.as_str().map(str::len))
                .unwrap_or(0)
        })
    });
    env.add_function("add", |a: i64, b: i64| a.wrapping_add(b));
    env.add_function("sub", |a: i64, b: i64| a.wrapping_sub(b));
    env.add_function("mul", |a: i64, b: i64| a.wrapping_mul(b));
    env.add_function("div", |a: i64, b: i64| -> Result<i64, JinjaError> {
        a.checked_div(b)
            .ok_or_else(|| fail("integer divide by zero".into()))
    });
    env.add_function("mod", |a: i64, b: i64| -> Result<i64, JinjaError> {
        a.checked_rem(b)
            .ok_or_else(|| fail("integer divide by zero".into()))
    });
    env.add_function(
        "seq",
        |first: i64, last: i64| -> Result<Vec<i64>, JinjaError> {
            confd::seq(first, last).map_err(fail)
        },
    );
}
