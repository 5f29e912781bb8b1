//! Checks across attributes, after parsing: conflicts, bad keys, clashes.

use std::collections::BTreeMap;

use crate::ast::{Field, Input, Shape};
use crate::ctxt::Ctxt;

pub const RENAME_RULES: &[&str] = &[
    "lowercase",
    "UPPERCASE",
    "PascalCase",
    "camelCase",
    "snake_case",
    "SCREAMING_SNAKE_CASE",
    "kebab-case",
    "SCREAMING-KEBAB-CASE",
];

pub fn check(cx: &Ctxt, input: &Input<'_>) {
    let generics = &input.original.generics;
    if !generics.params.is_empty() {
        cx.error_spanned_by(generics, "EtcdConfig cannot be derived for generic structs");
    }
    if let Some(prefix) = input.attrs.prefix.get() {
        let text = prefix.value.value();
        if !text.starts_with('/') {
            cx.error_spanned_by(&prefix.value, "etcd prefix must start with `/`");
        } else if let Some(problem) = key_problem(text.trim_start_matches('/')) {
            if text != "/" {
                cx.error_spanned_by(&prefix.value, format!("invalid etcd prefix: {problem}"));
            }
        }
    }
    if let Some(rule) = input.attrs.rename_all.get() {
        if !RENAME_RULES.contains(&rule.value.value().as_str()) {
            cx.error_spanned_by(
                &rule.value,
                format!(
                    "unknown rename_all rule `{}` (expected one of {})",
                    rule.value.value(),
                    RENAME_RULES.join(", ")
                ),
            );
        }
    }
    let mut keys: BTreeMap<String, &Field<'_>> = BTreeMap::new();
    for field in &input.fields {
        check_field(cx, field);
        if field.attrs.skip.is_set() {
            continue;
        }
        let key = input.key_of(field);
        if let Some(first) = keys.get(&key) {
            cx.error_spanned_by(
                field.ident,
                format!(
                    "fields `{}` and `{}` both read etcd key `{key}`",
                    first.ident, field.ident
                ),
            );
        } else {
            keys.insert(key, field);
        }
    }
}

fn check_field(cx: &Ctxt, field: &Field<'_>) {
    let a = &field.attrs;
    if a.skip.is_set() {
        let others = [
            a.key.get().map(|x| &x.name),
            a.default.get().map(|x| &x.name),
            a.json.get().map(|x| &x.name),
            a.toml.get().map(|x| &x.name),
            a.secret.get().map(|x| &x.name),
            a.validate.get().map(|x| &x.name),
        ];
        for name in others.into_iter().flatten() {
            cx.error_spanned_by(
                name,
                format!(
                    "`{}` has no effect on a field with `skip`",
                    crate::attr::path_name(name)
                ),
            );
        }
        return;
    }
    if let (Some(_), Some(toml)) = (a.json.get(), a.toml.get()) {
        cx.error_spanned_by(&toml.name, "`json` and `toml` cannot both decode one field");
    }
    if let Some(key) = a.key.get() {
        let text = key.value.value();
        if let Some(problem) = key_problem(text.strip_prefix('/').unwrap_or(&text)) {
            cx.error_spanned_by(&key.value, format!("invalid etcd key: {problem}"));
        }
    }
    if let Some(default) = a.default.get() {
        match field.shape {
            Shape::Optional(_) => cx.error_spanned_by(
                &default.name,
                "`default` on an Option field: a missing key is already `None`",
            ),
            Shape::Map(_) | Shape::List(_) => cx.error_spanned_by(
                &default.name,
                "`default` on a map or Vec field: a prefix without children is already empty",
            ),
            Shape::Plain(_) => {}
        }
    }
}

/// What is wrong with a relative key, if anything.
fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("the key is empty")
    } else if key.ends_with('/') {
        Some("a key cannot end with `/`")
    } else if key.split('/').any(str::is_empty) {
        Some("a key cannot contain an empty segment (`//`)")
    } else {
        None
    }
}
