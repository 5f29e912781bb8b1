//! Code generation for a valid input.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Type;

use crate::ast::{Field, Input, Shape};
use crate::attr::Default;

pub fn derive(input: &Input<'_>) -> TokenStream {
    let ident = &input.original.ident;
    let prefix = match input.attrs.prefix.get() {
        Some(p) => {
            let p = &p.value;
            quote!(::core::option::Option::Some(#p))
        }
        None => quote!(::core::option::Option::None),
    };
    let describe = input
        .fields
        .iter()
        .filter(|f| !f.attrs.skip.is_set())
        .map(|f| describe_field(input, f));
    let schema = input
        .fields
        .iter()
        .filter(|f| !f.attrs.skip.is_set())
        .map(|f| schema_field(input, f));
    let builds = input.fields.iter().map(|f| build_field(input, f));
    let patches = input.fields.iter().map(|f| patch_field(input, f));
    let names = input.fields.iter().map(|f| f.ident);
    let unwraps = input.fields.iter().map(|f| {
        let name = f.ident;
        quote!(#name: #name?)
    });
    let struct_check = struct_validation(
        input,
        quote!(&__value),
        quote!(::core::option::Option::None),
    );
    let struct_recheck = struct_validation(input, quote!(&*__value), quote!(false));
    let debug = (!input.attrs.no_debug.is_set()).then(|| debug_impl(input));

    quote! {
        #[automatically_derived]
        impl ::shylock::EtcdConfig for #ident {
            const PREFIX: ::core::option::Option<&'static str> = #prefix;

            fn __describe(
                __base: &str,
                __flags: ::shylock::__private::Flags,
                __out: &mut ::std::vec::Vec<::shylock::Dependency>,
            ) {
                #(#describe)*
            }

            fn __schema(
                __base: &str,
                __flags: ::shylock::__private::Flags,
                __out: &mut ::std::vec::Vec<::shylock::SchemaKey>,
            ) {
                #(#schema)*
            }

            fn __build(
                __cx: &mut ::shylock::__private::Cx<'_>,
                __base: &str,
            ) -> ::core::option::Option<Self> {
                #(let #names = #builds;)*
                let __value = #ident { #(#unwraps,)* };
                #struct_check
                ::core::option::Option::Some(__value)
            }

            fn __patch(
                __value: &mut Self,
                __cx: &mut ::shylock::__private::Cx<'_>,
                __base: &str,
                __changed: &::shylock::__private::Changed,
            ) -> bool {
                #(#patches)*
                #struct_recheck
                true
            }
        }
        #debug
    }
}

/// The struct's validator applied to `value`, returning `fail` when it refuses.
fn struct_validation(
    input: &Input<'_>,
    value: TokenStream,
    fail: TokenStream,
) -> Option<TokenStream> {
    input.attrs.validate.get().map(|v| {
        let path = &v.value;
        let call = quote_spanned!(path.span()=> #path(#value));
        quote! {
            if !__cx.check(__base, #call) {
                return #fail;
            }
        }
    })
}

/// The full key of a field, relative to `__base` unless absolute.
fn key_expr(input: &Input<'_>, field: &Field<'_>) -> TokenStream {
    let key = input.key_of(field);
    if key.starts_with('/') {
        quote!(::std::string::String::from(#key))
    } else {
        quote!(::shylock::__private::join(__base, #key))
    }
}

/// The `Elem` describing how one element type is read.
fn elem(field: &Field<'_>, ty: &Type) -> TokenStream {
    let span = ty.span();
    if field.attrs.json.is_set() {
        quote_spanned!(span=> ::shylock::__private::json::<#ty>())
    } else if field.attrs.toml.is_set() {
        quote_spanned!(span=> ::shylock::__private::toml::<#ty>())
    } else {
        quote_spanned! {span=> {
            #[allow(unused_imports)]
            use ::shylock::__private::{ProbeNode as _, ProbeParse as _, ProbeValue as _};
            (&&&::shylock::__private::Probe::<#ty>::new()).elem()
        }}
    }
}

fn describe_field(input: &Input<'_>, field: &Field<'_>) -> TokenStream {
    let key = key_expr(input, field);
    let elem = elem(field, field.shape.element());
    let flags = nested_flags(field);
    quote! {
        ::shylock::__private::describe(&#elem, &#key, #flags, __out);
    }
}

/// The flags of a field inside the struct being described.
fn nested_flags(field: &Field<'_>) -> TokenStream {
    let secret = field.attrs.secret.is_set();
    let required = matches!(field.shape, Shape::Plain(_)) && !field.attrs.default.is_set();
    let children = matches!(field.shape, Shape::Map(_) | Shape::List(_));
    quote!(__flags.nest(#secret, #required, #children))
}

fn schema_field(input: &Input<'_>, field: &Field<'_>) -> TokenStream {
    let key = key_expr(input, field);
    let elem = elem(field, field.shape.element());
    let flags = nested_flags(field);
    let shape = match field.shape {
        Shape::Plain(_) => quote!(Value),
        Shape::Optional(_) => quote!(Optional),
        Shape::Map(_) => quote!(Map),
        Shape::List(_) => quote!(List),
    };
    let encoding = if field.attrs.json.is_set() {
        quote!(Json)
    } else if field.attrs.toml.is_set() {
        quote!(Toml)
    } else {
        quote!(Text)
    };
    let default = match field.attrs.default.get().map(|d| &d.value) {
        Some(Default::Text(text)) => quote!(::core::option::Option::Some(#text)),
        _ => quote!(::core::option::Option::None),
    };
    quote! {
        ::shylock::__private::schema_field(
            &#elem,
            &#key,
            #flags,
            ::shylock::__private::FieldInfo {
                shape: ::shylock::Shape::#shape,
                encoding: ::shylock::Encoding::#encoding,
                default: #default,
            },
            __out,
        );
    }
}

/// The expression reading one field whole: `Option<field type>`, `None`
/// after recording a problem.
fn read_expr(field: &Field<'_>) -> TokenStream {
    let elem = elem(field, field.shape.element());
    let secret = secret_expr(field);
    match (&field.shape, field.attrs.default.get().map(|d| &d.value)) {
        (Shape::Plain(_), None) => quote!(__cx.required(&#elem, &__key, #secret)),
        (Shape::Plain(_), Some(Default::Trait)) => {
            quote!(__cx.or_else(&#elem, &__key, #secret, ::core::default::Default::default))
        }
        (Shape::Plain(_), Some(Default::Expr(expr))) => {
            quote!(__cx.or_else(&#elem, &__key, #secret, || #expr))
        }
        (Shape::Plain(_), Some(Default::Text(text))) => {
            quote!(__cx.or_text(&#elem, &__key, #secret, #text))
        }
        (Shape::Optional(_), _) => quote!(__cx.optional(&#elem, &__key, #secret)),
        (Shape::Map(_), _) => quote!(__cx.map(&#elem, &__key, #secret)),
        (Shape::List(_), _) => quote!(__cx.list(&#elem, &__key, #secret)),
    }
}

fn secret_expr(field: &Field<'_>) -> TokenStream {
    let secret = field.attrs.secret.is_set();
    quote!((__cx.secret() || #secret))
}

/// The field's validator applied to `__v`, if it has one.
fn validator_call(field: &Field<'_>) -> Option<TokenStream> {
    field.attrs.validate.get().map(|v| {
        let path = &v.value;
        quote_spanned!(path.span()=> #path(__v))
    })
}

fn build_field(input: &Input<'_>, field: &Field<'_>) -> TokenStream {
    if field.attrs.skip.is_set() {
        return quote!(::core::option::Option::Some(
            ::core::default::Default::default()
        ));
    }
    let key = key_expr(input, field);
    let read = read_expr(field);
    let validate = validator_call(field)
        .map(|call| quote!(let __read = __read.filter(|__v| __cx.check(&__key, #call));));
    let ty = field.ty();
    quote! {{
        let __key = #key;
        let __read: ::core::option::Option<#ty> = #read;
        #validate
        __read
    }}
}

/// Brings one field of `__value` up to date with the keys in `__changed`.
fn patch_field(input: &Input<'_>, field: &Field<'_>) -> TokenStream {
    if field.attrs.skip.is_set() {
        return TokenStream::new();
    }
    let name = field.ident;
    let key = key_expr(input, field);
    let elem = elem(field, field.shape.element());
    let secret = secret_expr(field);
    let read = read_expr(field);
    let slot = quote!(&mut __value.#name);
    let patch = match field.shape {
        Shape::Plain(_) => quote! {
            __cx.patch_plain(&#elem, &__key, #secret, #slot, __changed, |__cx| #read)
        },
        Shape::Optional(_) => quote! {
            __cx.patch_optional(&#elem, &__key, #secret, #slot, __changed, |__cx| #read)
        },
        Shape::Map(_) => quote!(__cx.patch_map(&#elem, &__key, #secret, #slot, __changed)),
        Shape::List(_) => quote!(__cx.patch_list(&#elem, &__key, #secret, #slot, __changed)),
    };
    let recheck = validator_call(field).map(|call| {
        quote! {
            let __v = &__value.#name;
            if __touched && !__cx.check(&__key, #call) {
                return false;
            }
        }
    });
    quote! {{
        let __key = #key;
        let ::core::option::Option::Some(__touched) = #patch else {
            return false;
        };
        let _ = __touched;
        #recheck
    }}
}

fn debug_impl(input: &Input<'_>) -> TokenStream {
    let ident = &input.original.ident;
    let name = ident.to_string();
    let fields = input.fields.iter().map(|f| {
        let ident = f.ident;
        let label = ident.to_string();
        let label = label.strip_prefix("r#").unwrap_or(&label).to_owned();
        if f.attrs.secret.is_set() {
            quote!(.field(#label, &::shylock::__private::Redacted))
        } else {
            quote!(.field(#label, &self.#ident))
        }
    });
    quote! {
        #[automatically_derived]
        impl ::core::fmt::Debug for #ident {
            fn fmt(&self, __f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                __f.debug_struct(#name) #(#fields)* .finish()
            }
        }
    }
}
