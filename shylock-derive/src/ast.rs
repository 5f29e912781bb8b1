//! The parsed model of a `#[derive(EtcdConfig)]` input. Every node keeps the
//! `syn` item it came from, so diagnostics point at the user's code.

use syn::{Data, DeriveInput, Fields, GenericArgument, PathArguments, Type};

use crate::attr::{self, FieldAttrs, StructAttrs};
use crate::ctxt::Ctxt;

pub struct Input<'a> {
    pub original: &'a DeriveInput,
    pub attrs: StructAttrs,
    pub fields: Vec<Field<'a>>,
}

pub struct Field<'a> {
    pub original: &'a syn::Field,
    pub ident: &'a syn::Ident,
    pub attrs: FieldAttrs,
    pub shape: Shape<'a>,
}

/// How a field's type maps onto etcd keys, read from its syntax.
pub enum Shape<'a> {
    /// One key (or, for a nested `EtcdConfig`, one sub-prefix).
    Plain(&'a Type),
    /// `Option<T>`: one key that may be missing.
    Optional(&'a Type),
    /// `BTreeMap<String, T>` / `HashMap<String, T>`: the children of a sub-prefix.
    Map(&'a Type),
    /// `Vec<T>`: the children of a sub-prefix, in key order.
    List(&'a Type),
}

impl<'a> Input<'a> {
    pub fn from_syn(cx: &Ctxt, input: &'a DeriveInput) -> Option<Self> {
        let attrs = attr::struct_attrs(cx, &input.attrs);
        let named = match &input.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => named,
                Fields::Unnamed(_) | Fields::Unit => {
                    cx.error_spanned_by(
                        &input.ident,
                        "EtcdConfig needs a struct with named fields: each field names a key",
                    );
                    return None;
                }
            },
            Data::Enum(data) => {
                cx.error_spanned_by(
                    data.enum_token,
                    "EtcdConfig can only be derived for structs, not enums",
                );
                return None;
            }
            Data::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    "EtcdConfig can only be derived for structs, not unions",
                );
                return None;
            }
        };
        let fields = named
            .named
            .iter()
            .map(|field| Field::from_syn(cx, field))
            .collect();
        Some(Input {
            original: input,
            attrs,
            fields,
        })
    }
}

impl<'a> Field<'a> {
    fn from_syn(cx: &Ctxt, field: &'a syn::Field) -> Self {
        let attrs = attr::field_attrs(cx, &field.attrs);
        // A serde-decoded field reads one key whatever its type looks like.
        let whole_value = attrs.json.is_set() || attrs.toml.is_set();
        let shape = Shape::of(&field.ty, whole_value);
        Field {
            original: field,
            ident: field.ident.as_ref().expect("named field"),
            attrs,
            shape,
        }
    }

    pub fn ty(&self) -> &'a Type {
        &self.original.ty
    }
}

impl<'a> Shape<'a> {
    fn of(ty: &'a Type, whole_value: bool) -> Self {
        if let Some(inner) = generic_args(ty, "Option", 1) {
            return Shape::Optional(inner[0]);
        }
        if whole_value {
            return Shape::Plain(ty);
        }
        for map in ["BTreeMap", "HashMap"] {
            if let Some(args) = generic_args(ty, map, 2) {
                return Shape::Map(args[1]);
            }
        }
        if let Some(inner) = generic_args(ty, "Vec", 1) {
            return Shape::List(inner[0]);
        }
        Shape::Plain(ty)
    }

    /// The type decoded from one key or built from one sub-prefix.
    pub fn element(&self) -> &'a Type {
        match *self {
            Shape::Plain(t) | Shape::Optional(t) | Shape::Map(t) | Shape::List(t) => t,
        }
    }
}

/// The `n` type arguments of `ty` when its last path segment is `name`.
fn generic_args<'a>(ty: &'a Type, name: &str, n: usize) -> Option<Vec<&'a Type>> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|arg| match arg {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    (types.len() == n).then_some(types)
}

impl Input<'_> {
    /// The key a field reads, relative to the struct's prefix unless it starts with `/`.
    pub fn key_of(&self, field: &Field<'_>) -> String {
        if let Some(key) = field.attrs.key.get() {
            return key.value.value();
        }
        let name = field.ident.to_string();
        let name = name.strip_prefix("r#").unwrap_or(&name);
        let rule = self.attrs.rename_all.get().map(|r| r.value.value());
        rename(name, rule.as_deref())
    }
}

fn rename(name: &str, rule: Option<&str>) -> String {
    use heck::{
        ToKebabCase, ToLowerCamelCase, ToShoutyKebabCase, ToShoutySnakeCase, ToSnakeCase,
        ToUpperCamelCase,
    };
    match rule {
        Some("lowercase") => name.to_lowercase(),
        Some("UPPERCASE") => name.to_uppercase(),
        Some("PascalCase") => name.to_upper_camel_case(),
        Some("camelCase") => name.to_lower_camel_case(),
        Some("snake_case") => name.to_snake_case(),
        Some("SCREAMING_SNAKE_CASE") => name.to_shouty_snake_case(),
        Some("kebab-case") => name.to_kebab_case(),
        Some("SCREAMING-KEBAB-CASE") => name.to_shouty_kebab_case(),
        _ => name.to_owned(),
    }
}
