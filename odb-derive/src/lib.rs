//! Procedural macros of ODB: `#[odb::schema]` and `#[derive(odb::Object)]`.
//!
//! Use them through the `odb` crate, which re-exports and documents them. This crate is
//! organised as a pipeline: `parse` reads the macros' arguments and helper attributes,
//! `model` turns a struct into a validated description of an object type, `check` holds the
//! rules that span several fields or items, and `codegen` writes the Rust code. `expand` ties
//! the stages together for each macro.

mod check;
mod codegen;
mod describe;
mod errors;
mod expand;
mod model;
mod parse;

use proc_macro::TokenStream;

/// Declares an ODB schema: see `odb::schema`.
#[proc_macro_attribute]
pub fn schema(args: TokenStream, item: TokenStream) -> TokenStream {
    let original = proc_macro2::TokenStream::from(item.clone());
    expand::expand_schema(args.into(), item.into())
        .unwrap_or_else(|error| {
            let mut tokens = error.into_compile_error();
            tokens.extend(original);
            tokens
        })
        .into()
}

/// Makes a struct an ODB object type: see `odb::Object`.
#[proc_macro_derive(Object, attributes(index, odb))]
pub fn derive_object(item: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(item as syn::DeriveInput);
    expand::expand_object(&input)
        .unwrap_or_else(|error| {
            let mut tokens = error.into_compile_error();
            tokens.extend(expand::object_fallback(&input));
            tokens
        })
        .into()
}

/// Describes a struct or enum's serialized shape: see `odb::Describe`.
#[proc_macro_derive(Describe, attributes(serde))]
pub fn derive_describe(item: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(item as syn::DeriveInput);
    describe::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
