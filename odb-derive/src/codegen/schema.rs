//! The `schema()` function `#[odb::schema]` adds to its module.

use crate::model::SchemaModule;
use proc_macro2::TokenStream;
use quote::quote;

/// `pub fn schema() -> &'static odb::Schema`, built on first use.
pub(crate) fn schema_fn(module: &SchemaModule) -> TokenStream {
    let name = &module.name;
    let type_names: Vec<String> = module
        .types
        .iter()
        .map(|t| format!("`{}`", t.ident))
        .collect();
    let doc = format!(
        "The schema `{name}`: the object types of this module ({}). Built on first use; pass \
         it to the client's `subscribe` to receive every object of the schema.",
        if type_names.is_empty() {
            "none".to_string()
        } else {
            type_names.join(", ")
        }
    );
    let type_def = |ident: &syn::Ident| quote!(<#ident as ::odb::Object>::type_def());
    let any_cfg = module.types.iter().any(|t| !t.cfgs.is_empty());
    let (types, allow) = if any_cfg {
        // A type left out by `#[cfg]` must be left out of the list too, and attributes on
        // statements, unlike on array elements, are allowed.
        let pushes = module.types.iter().map(|t| {
            let cfgs = &t.cfgs;
            let type_def = type_def(&t.ident);
            quote!(#(#cfgs)* types.push(#type_def);)
        });
        let types = quote! {{
            let mut types = ::std::vec::Vec::new();
            #(#pushes)*
            types
        }};
        (types, quote!(#[allow(clippy::vec_init_then_push)]))
    } else {
        let type_defs = module.types.iter().map(|t| type_def(&t.ident));
        (quote!(::std::vec![#(#type_defs),*]), TokenStream::new())
    };
    quote! {
        #[doc = #doc]
        #allow
        pub fn schema() -> &'static ::odb::Schema {
            static SCHEMA: ::odb::__private::Lazy<::odb::Schema> =
                ::odb::__private::Lazy::new(|| ::odb::Schema::new(#name, #types));
            &SCHEMA
        }
    }
}
