//! The `#[derive(EtcdConfig)]` macro of [shylock](https://docs.rs/shylock).
//!
//! Depend on `shylock`, which re-exports this derive; the generated code refers
//! to `::shylock::__private` and does not work without it.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod fallback;
mod valid;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Derives `shylock::EtcdConfig` (and a `Debug` that redacts secret fields).
///
/// See the `shylock` crate documentation for the attribute reference.
#[proc_macro_derive(EtcdConfig, attributes(etcd))]
pub fn derive_etcd_config(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let cx = ctxt::Ctxt::new();
    let model = ast::Input::from_syn(&cx, &input);
    if let Some(model) = &model {
        valid::check(&cx, model);
    }
    match (model, cx.finish()) {
        (Some(model), Ok(())) => expand::derive(&model).into(),
        (_, Err(errors)) => fallback::expand(&input, errors).into(),
        (None, Ok(())) => unreachable!("a failed parse always records an error"),
    }
}
