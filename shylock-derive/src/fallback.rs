//! When the input has mistakes: the errors, plus a stub impl so that the
//! user's other uses of the type do not add follow-on errors.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

pub fn expand(input: &DeriveInput, errors: syn::Error) -> TokenStream {
    let errors = errors.to_compile_error();
    if !input.generics.params.is_empty() {
        // A stub for a generic struct only adds bound errors of its own.
        return errors;
    }
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #errors
        #[automatically_derived]
        impl #impl_generics ::shylock::EtcdConfig for #ident #ty_generics #where_clause {
            const PREFIX: ::core::option::Option<&'static str> = ::core::option::Option::None;
            fn __describe(
                _: &str,
                _: ::shylock::__private::Flags,
                _: &mut ::std::vec::Vec<::shylock::Dependency>,
            ) {
                ::core::panic!("EtcdConfig derive failed")
            }
            fn __schema(
                _: &str,
                _: ::shylock::__private::Flags,
                _: &mut ::std::vec::Vec<::shylock::SchemaKey>,
            ) {
                ::core::panic!("EtcdConfig derive failed")
            }
            fn __build(
                _: &mut ::shylock::__private::Cx<'_>,
                _: &str,
            ) -> ::core::option::Option<Self> {
                ::core::panic!("EtcdConfig derive failed")
            }
            fn __patch(
                _: &mut Self,
                _: &mut ::shylock::__private::Cx<'_>,
                _: &str,
                _: &::shylock::__private::Changed,
            ) -> bool {
                ::core::panic!("EtcdConfig derive failed")
            }
        }
    }
}
