//! Writing the generated code from the validated model.
//!
//! Generated code names everything by absolute path (`::odb::..`, `::core::..`) so that it
//! works whatever the user's module imports, and keeps its private items inside
//! `const _: () = { .. };` so that no helper name lands in the user's namespace.

mod fallback;
mod handle;
mod object;
mod schema;

pub(crate) use fallback::fallback;
pub(crate) use schema::schema_fn;

use crate::model::Object;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// Everything `#[derive(odb::Object)]` generates for a valid struct.
pub(crate) fn object(object: &Object) -> TokenStream {
    let type_def_ident = format_ident!("TYPE_DEF");
    let definition = handle::definition(&object.vis, &object.ident, &object.name);
    let type_def = object::type_def(object, &type_def_ident);
    let object_impl = object::object_impl(object, &type_def_ident);
    let functions = object::associated_functions(object);
    let handle_impls = handle::trait_impls(&object.ident, &object.name);
    let handle_methods = handle::methods(object);
    let handle_describe = handle::describe_impl(&object.ident, &object.schema, &object.name);
    quote! {
        #definition

        const _: () = {
            #type_def
            #object_impl
            #functions
            #handle_impls
            #handle_methods
            #handle_describe
        };
    }
}
