//! confd's function map (`resource/template/template_funcs.go` and its
//! memkv store) for Go templates: each function under confd's name, with
//! the argument types and errors of its Go signature.

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::{FuncMap, TemplateError, Value};

use crate::render::confd;
use crate::render::store::{Shared, Store};

type Result<T> = std::result::Result<T, TemplateError>;

/// An error as Go reports a function's: `error calling NAME: ...`.
fn calling(name: &str, text: impl std::fmt::Display) -> TemplateError {
    TemplateError::Exec(format!("error calling {name}: {text}"))
}

fn count(name: &str, args: &[Value], min: usize, max: usize) -> Result<()> {
    if args.len() < min || args.len() > max {
        let expected = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(TemplateError::Exec(format!(
            "wrong number of args for {name}: want {expected} got {}",
            args.len()
        )));
    }
    Ok(())
}

fn string(name: &str, value: &Value) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.to_string()),
        other => Err(calling(name, format!("expected a string, got {other}"))),
    }
}

fn int(name: &str, value: &Value) -> Result<i64> {
    match value {
        Value::Int(i) => Ok(*i),
        other => Err(calling(name, format!("expected an int, got {other}"))),
    }
}

/// A list argument whose items must all be strings (Go's `[]string`).
fn string_list(name: &str, value: &Value) -> Result<Vec<String>> {
    let Value::List(items) = value else {
        return Err(calling(
            name,
            format!("expected a list of strings, got {value}"),
        ));
    };
    items.iter().map(|i| string(name, i)).collect()
}

fn strings(items: impl IntoIterator<Item = impl Into<Arc<str>>>) -> Value {
    Value::List(items.into_iter().map(|s| Value::String(s.into())).collect())
}

fn record(entries: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Map(Arc::new(
        entries
            .into_iter()
            .map(|(k, v)| (Arc::from(k), v))
            .collect(),
    ))
}

/// confd's `memkv.KVPair`.
pub(super) fn pair(key: &str, value: &str) -> Value {
    record([
        ("Key", Value::String(key.into())),
        ("Value", Value::String(value.into())),
    ])
}

/// A JSON document as Go's `json.Unmarshal` into `interface{}` makes it:
/// numbers are float64. One that Go prints with an exponent (`1e+06`) is
/// kept as the text Go prints, so the output is the same byte for byte.
fn json(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            let go = confd::format_float(f);
            if go == f.to_string() {
                Value::Float(f)
            } else {
                Value::String(go.into())
            }
        }
        serde_json::Value::String(s) => Value::String(s.as_str().into()),
        serde_json::Value::Array(items) => Value::List(items.iter().map(json).collect()),
        serde_json::Value::Object(fields) => Value::Map(Arc::new(
            fields
                .iter()
                .map(|(k, v)| (Arc::from(k.as_str()), json(v)))
                .collect(),
        )),
    }
}

/// One template function, as gotmpl calls it.
type Function = Box<dyn Fn(&[Value]) -> Result<Value> + Send + Sync>;

/// Every function, over one render's store.
pub fn map(store: Shared) -> FuncMap {
    let mut m = FuncMap::new();
    let mut add = |name: &'static str, f: Function| {
        m.insert(name.to_owned(), Arc::from(f));
    };

    let s = store.clone();
    add(
        "get",
        Box::new(move |args| {
            count("get", args, 1, 1)?;
            let key = string("get", &args[0])?;
            match s.value(&key).map_err(|e| calling("get", e))? {
                Some(value) => Ok(pair(&key, value)),
                None => Err(calling("get", Store::missing(&key))),
            }
        }),
    );
    let s = store.clone();
    add(
        "gets",
        Box::new(move |args| {
            count("gets", args, 1, 1)?;
            let pattern = string("gets", &args[0])?;
            let pairs = s.pairs(&pattern).map_err(|e| calling("gets", e))?;
            Ok(Value::List(s.cache().go_pairs.all(pairs, pair).into()))
        }),
    );
    let s = store.clone();
    add(
        "getv",
        Box::new(move |args| {
            count("getv", args, 1, 2)?;
            let key = string("getv", &args[0])?;
            match (s.value(&key).map_err(|e| calling("getv", e))?, args.get(1)) {
                (Some(value), _) => Ok(Value::String(value.into())),
                (None, Some(default)) => Ok(Value::String(string("getv", default)?.into())),
                (None, None) => Err(calling("getv", Store::missing(&key))),
            }
        }),
    );
    let s = store.clone();
    add(
        "getvs",
        Box::new(move |args| {
            count("getvs", args, 1, 1)?;
            let pattern = string("getvs", &args[0])?;
            Ok(strings(
                s.values(&pattern).map_err(|e| calling("getvs", e))?,
            ))
        }),
    );
    let s = store.clone();
    add(
        "exists",
        Box::new(move |args| {
            count("exists", args, 1, 1)?;
            let key = string("exists", &args[0])?;
            Ok(Value::Bool(
                s.value(&key).map_err(|e| calling("exists", e))?.is_some(),
            ))
        }),
    );
    let s = store.clone();
    add(
        "ls",
        Box::new(move |args| {
            count("ls", args, 1, 1)?;
            Ok(strings(s.ls(&string("ls", &args[0])?)))
        }),
    );
    let s = store;
    add(
        "lsdir",
        Box::new(move |args| {
            count("lsdir", args, 1, 1)?;
            Ok(strings(s.lsdir(&string("lsdir", &args[0])?)))
        }),
    );

    add(
        "base",
        Box::new(|args| {
            count("base", args, 1, 1)?;
            Ok(Value::String(
                confd::path_base(&string("base", &args[0])?).into(),
            ))
        }),
    );
    add(
        "dir",
        Box::new(|args| {
            count("dir", args, 1, 1)?;
            Ok(Value::String(
                confd::path_dir(&string("dir", &args[0])?).into(),
            ))
        }),
    );
    add(
        "split",
        Box::new(|args| {
            count("split", args, 2, 2)?;
            Ok(strings(confd::split(
                &string("split", &args[0])?,
                &string("split", &args[1])?,
            )))
        }),
    );
    add(
        "join",
        Box::new(|args| {
            count("join", args, 2, 2)?;
            let items = string_list("join", &args[0])?;
            Ok(Value::String(items.join(&string("join", &args[1])?).into()))
        }),
    );
    add(
        "json",
        Box::new(|args| {
            count("json", args, 1, 1)?;
            let text = string("json", &args[0])?;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v @ serde_json::Value::Object(_)) => Ok(json(&v)),
                Ok(serde_json::Value::Null) => Ok(Value::Map(Arc::default())),
                Ok(_) => Err(calling("json", "json: cannot unmarshal into a map")),
                Err(e) => Err(calling("json", e)),
            }
        }),
    );
    add(
        "jsonArray",
        Box::new(|args| {
            count("jsonArray", args, 1, 1)?;
            let text = string("jsonArray", &args[0])?;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v @ serde_json::Value::Array(_)) => Ok(json(&v)),
                Ok(serde_json::Value::Null) => Ok(Value::List(Arc::from(Vec::new()))),
                Ok(_) => Err(calling("jsonArray", "json: cannot unmarshal into a list")),
                Err(e) => Err(calling("jsonArray", e)),
            }
        }),
    );
    add(
        "map",
        Box::new(|args| {
            if args.len() % 2 != 0 {
                return Err(calling("map", "invalid map call"));
            }
            let mut entries = BTreeMap::new();
            for pair in args.chunks(2) {
                let Value::String(key) = &pair[0] else {
                    return Err(calling("map", "map keys must be strings"));
                };
                entries.insert(key.clone(), pair[1].clone());
            }
            Ok(Value::Map(Arc::new(entries)))
        }),
    );
    add(
        "getenv",
        Box::new(|args| {
            count("getenv", args, 1, 2)?;
            let default = args.get(1).map(|d| string("getenv", d)).transpose()?;
            Ok(Value::String(
                confd::getenv(&string("getenv", &args[0])?, default.as_deref()).into(),
            ))
        }),
    );
    add(
        "datetime",
        Box::new(|args| {
            count("datetime", args, 0, 0)?;
            Ok(Value::String(confd::now_string().into()))
        }),
    );
    add(
        "datetimeFormat",
        Box::new(|args| {
            count("datetime.Format", args, 1, 1)?;
            let layout = string("datetime.Format", &args[0])?;
            Ok(Value::String(
                crate::render::gotime::now().format(&layout).into(),
            ))
        }),
    );
    add(
        "toUpper",
        Box::new(|args| {
            count("toUpper", args, 1, 1)?;
            Ok(Value::String(
                confd::change_case(&string("toUpper", &args[0])?, true).into(),
            ))
        }),
    );
    add(
        "toLower",
        Box::new(|args| {
            count("toLower", args, 1, 1)?;
            Ok(Value::String(
                confd::change_case(&string("toLower", &args[0])?, false).into(),
            ))
        }),
    );
    add(
        "contains",
        Box::new(|args| {
            count("contains", args, 2, 2)?;
            Ok(Value::Bool(
                string("contains", &args[0])?.contains(&string("contains", &args[1])?),
            ))
        }),
    );
    add(
        "replace",
        Box::new(|args| {
            count("replace", args, 4, 4)?;
            let [text, old, new] = [0, 1, 2].map(|i| string("replace", &args[i]));
            Ok(Value::String(
                confd::replace(&text?, &old?, &new?, int("replace", &args[3])?).into(),
            ))
        }),
    );
    add(
        "trimSuffix",
        Box::new(|args| {
            count("trimSuffix", args, 2, 2)?;
            let text = string("trimSuffix", &args[0])?;
            let suffix = string("trimSuffix", &args[1])?;
            Ok(Value::String(
                text.strip_suffix(&suffix).unwrap_or(&text).into(),
            ))
        }),
    );
    add(
        "lookupIP",
        Box::new(|args| {
            count("lookupIP", args, 1, 1)?;
            Ok(strings(confd::lookup_ip(&string("lookupIP", &args[0])?)))
        }),
    );
    add(
        "lookupIPV4",
        Box::new(|args| {
            count("lookupIPV4", args, 1, 1)?;
            Ok(strings(confd::lookup_ip_family(
                &string("lookupIPV4", &args[0])?,
                true,
            )))
        }),
    );
    add(
        "lookupIPV6",
        Box::new(|args| {
            count("lookupIPV6", args, 1, 1)?;
            Ok(strings(confd::lookup_ip_family(
                &string("lookupIPV6", &args[0])?,
                false,
            )))
        }),
    );
    add(
        "lookupSRV",
        Box::new(|args| {
            count("lookupSRV", args, 3, 3)?;
            let [service, proto, name] = [0, 1, 2].map(|i| string("lookupSRV", &args[i]));
            let records = crate::srv::lookup_sorted(&service?, &proto?, &name?);
            Ok(Value::List(
                records
                    .into_iter()
                    .map(|r| {
                        record([
                            ("Target", Value::String(r.target.into())),
                            ("Port", Value::Int(i64::from(r.port))),
                            ("Priority", Value::Int(i64::from(r.priority))),
                            ("Weight", Value::Int(i64::from(r.weight))),
                        ])
                    })
                    .collect(),
            ))
        }),
    );
    add(
        "fileExists",
        Box::new(|args| {
            count("fileExists", args, 1, 1)?;
            Ok(Value::Bool(
                std::path::Path::new(&string("fileExists", &args[0])?).exists(),
            ))
        }),
    );
    add(
        "base64Encode",
        Box::new(|args| {
            count("base64Encode", args, 1, 1)?;
            Ok(Value::String(
                confd::base64_encode(&string("base64Encode", &args[0])?).into(),
            ))
        }),
    );
    add(
        "base64Decode",
        Box::new(|args| {
            count("base64Decode", args, 1, 1)?;
            let decoded = confd::base64_decode(&string("base64Decode", &args[0])?);
            Ok(Value::String(
                decoded.map_err(|e| calling("base64Decode", e))?.into(),
            ))
        }),
    );
    add(
        "parseBool",
        Box::new(|args| {
            count("parseBool", args, 1, 1)?;
            let parsed = confd::parse_bool(&string("parseBool", &args[0])?);
            Ok(Value::Bool(parsed.map_err(|e| calling("parseBool", e))?))
        }),
    );
    add(
        "atoi",
        Box::new(|args| {
            count("atoi", args, 1, 1)?;
            let parsed = confd::atoi(&string("atoi", &args[0])?);
            Ok(Value::Int(parsed.map_err(|e| calling("atoi", e))?))
        }),
    );
    add(
        "reverse",
        Box::new(|args| {
            count("reverse", args, 1, 1)?;
            Ok(match &args[0] {
                Value::List(items) => Value::List(items.iter().rev().cloned().collect()),
                other => other.clone(),
            })
        }),
    );
    add(
        "sortByLength",
        Box::new(|args| {
            count("sortByLength", args, 1, 1)?;
            let items = string_list("sortByLength", &args[0])?;
            Ok(strings(confd::sort_by_length(items, String::len)))
        }),
    );
    add(
        "sortKVByLength",
        Box::new(|args| {
            count("sortKVByLength", args, 1, 1)?;
            let Value::List(items) = &args[0] else {
                return Err(calling(
                    "sortKVByLength",
                    format!("expected a list of pairs, got {}", args[0]),
                ));
            };
            let key_len = |kv: &Value| match kv {
                Value::Map(m) => m.get("Key").map_or(0, |k| k.to_string().len()),
                _ => 0,
            };
            Ok(Value::List(
                confd::sort_by_length(items.to_vec(), key_len).into(),
            ))
        }),
    );
    for (name, op) in [
        ("add", i64::wrapping_add as fn(i64, i64) -> i64),
        ("sub", i64::wrapping_sub),
        ("mul", i64::wrapping_mul),
    ] {
        add(
            name,
            Box::new(move |args| {
                count(name, args, 2, 2)?;
                Ok(Value::Int(op(int(name, &args[0])?, int(name, &args[1])?)))
            }),
        );
    }
    for (name, op) in [
        ("div", i64::checked_div as fn(i64, i64) -> Option<i64>),
        ("mod", i64::checked_rem),
    ] {
        add(
            name,
            Box::new(move |args| {
                count(name, args, 2, 2)?;
                op(int(name, &args[0])?, int(name, &args[1])?)
                    .map(Value::Int)
                    .ok_or_else(|| calling(name, "runtime error: integer divide by zero"))
            }),
        );
    }
    add(
        "seq",
        Box::new(|args| {
            count("seq", args, 2, 2)?;
            let numbers = confd::seq(int("seq", &args[0])?, int("seq", &args[1])?);
            Ok(Value::List(
                numbers
                    .map_err(|e| calling("seq", e))?
                    .into_iter()
                    .map(Value::Int)
                    .collect(),
            ))
        }),
    );
    m
}
