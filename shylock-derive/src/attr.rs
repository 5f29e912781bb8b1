//! Parsing of `#[etcd(...)]` attributes. Unknown and repeated attributes are
//! recorded in the context and parsing goes on, so every mistake is reported.

use syn::meta::ParseNestedMeta;
use syn::{Attribute, Expr, LitStr, Path, Token};

use crate::ctxt::Ctxt;

/// One attribute value together with the name it was written under, for spans.
pub struct Attr<T> {
    pub name: Path,
    pub value: T,
}

/// A slot that accepts one value and reports a second one as a duplicate.
pub struct Slot<T>(Option<Attr<T>>);

impl<T> Slot<T> {
    fn new() -> Self {
        Slot(None)
    }

    fn set(&mut self, cx: &Ctxt, name: &Path, value: T) {
        if self.0.is_some() {
            cx.error_spanned_by(
                name,
                format!("duplicate etcd attribute `{}`", path_name(name)),
            );
        } else {
            self.0 = Some(Attr {
                name: name.clone(),
                value,
            });
        }
    }

    pub fn get(&self) -> Option<&Attr<T>> {
        self.0.as_ref()
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

/// `#[etcd(...)]` on the struct.
pub struct StructAttrs {
    pub prefix: Slot<LitStr>,
    pub rename_all: Slot<LitStr>,
    pub validate: Slot<Path>,
    pub no_debug: Slot<()>,
}

/// How a field's default is written.
pub enum Default {
    /// `#[etcd(default)]`: `Default::default()`.
    Trait,
    /// `#[etcd(default = "30s")]`: text decoded as if etcd held it.
    Text(LitStr),
    /// `#[etcd(default = expr)]`: a Rust expression of the field's type.
    Expr(Box<Expr>),
}

/// `#[etcd(...)]` on a field.
pub struct FieldAttrs {
    pub key: Slot<LitStr>,
    pub default: Slot<Default>,
    pub json: Slot<()>,
    pub toml: Slot<()>,
    pub secret: Slot<()>,
    pub validate: Slot<Path>,
    pub skip: Slot<()>,
}

const STRUCT_NAMES: &str = "`prefix`, `rename_all`, `validate`, `no_debug`";
const FIELD_NAMES: &str = "`key`, `default`, `json`, `toml`, `secret`, `validate`, `skip`";

pub fn struct_attrs(cx: &Ctxt, attrs: &[Attribute]) -> StructAttrs {
    let mut out = StructAttrs {
        prefix: Slot::new(),
        rename_all: Slot::new(),
        validate: Slot::new(),
        no_debug: Slot::new(),
    };
    for_each_meta(cx, attrs, |meta| {
        let name = meta.path.clone();
        if name.is_ident("prefix") {
            out.prefix.set(cx, &name, meta.value()?.parse()?);
        } else if name.is_ident("rename_all") {
            out.rename_all.set(cx, &name, meta.value()?.parse()?);
        } else if name.is_ident("validate") {
            out.validate.set(cx, &name, parse_path(&meta)?);
        } else if name.is_ident("no_debug") {
            out.no_debug.set(cx, &name, ());
        } else {
            unknown(cx, &meta, STRUCT_NAMES)?;
        }
        Ok(())
    });
    out
}

pub fn field_attrs(cx: &Ctxt, attrs: &[Attribute]) -> FieldAttrs {
    let mut out = FieldAttrs {
        key: Slot::new(),
        default: Slot::new(),
        json: Slot::new(),
        toml: Slot::new(),
        secret: Slot::new(),
        validate: Slot::new(),
        skip: Slot::new(),
    };
    for_each_meta(cx, attrs, |meta| {
        let name = meta.path.clone();
        if name.is_ident("key") {
            out.key.set(cx, &name, meta.value()?.parse()?);
        } else if name.is_ident("default") {
            let value = if meta.input.peek(Token![=]) {
                match meta.value()?.parse::<Expr>()? {
                    Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(text),
                        ..
                    }) => Default::Text(text),
                    expr => Default::Expr(Box::new(expr)),
                }
            } else {
                Default::Trait
            };
            out.default.set(cx, &name, value);
        } else if name.is_ident("json") {
            out.json.set(cx, &name, ());
        } else if name.is_ident("toml") {
            out.toml.set(cx, &name, ());
        } else if name.is_ident("secret") {
            out.secret.set(cx, &name, ());
        } else if name.is_ident("validate") {
            out.validate.set(cx, &name, parse_path(&meta)?);
        } else if name.is_ident("skip") {
            out.skip.set(cx, &name, ());
        } else {
            unknown(cx, &meta, FIELD_NAMES)?;
        }
        Ok(())
    });
    out
}

fn for_each_meta(
    cx: &Ctxt,
    attrs: &[Attribute],
    mut f: impl FnMut(ParseNestedMeta<'_>) -> syn::Result<()>,
) {
    for attr in attrs.iter().filter(|a| a.path().is_ident("etcd")) {
        if let Err(error) = attr.parse_nested_meta(&mut f) {
            cx.syn_error(error);
        }
    }
}

/// Records an unknown attribute and skips its value so parsing can go on.
fn unknown(cx: &Ctxt, meta: &ParseNestedMeta<'_>, expected: &str) -> syn::Result<()> {
    cx.error_spanned_by(
        &meta.path,
        format!(
            "unknown etcd attribute `{}` (expected one of {expected})",
            path_name(&meta.path)
        ),
    );
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| {
            if inner.input.peek(Token![=]) {
                inner.value()?.parse::<Expr>()?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// `validate = path::to::fn` or `validate = "path::to::fn"`.
fn parse_path(meta: &ParseNestedMeta<'_>) -> syn::Result<Path> {
    let value = meta.value()?;
    if value.peek(LitStr) {
        let text: LitStr = value.parse()?;
        text.parse()
    } else {
        value.parse()
    }
}

pub fn path_name(path: &Path) -> String {
    quote::quote!(#path).to_string().replace(' ', "")
}
