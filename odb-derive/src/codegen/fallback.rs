//! What `#[derive(odb::Object)]` generates when the struct has errors: the handle type and
//! the trait impls with bodies that never run, so that the errors reported are the ones about
//! the struct and not a cascade of "`Object` is not implemented" from code that uses it.

use super::handle;
use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::DeriveInput;

/// Stand-in items for an object type whose declaration has errors.
pub(crate) fn fallback(input: &DeriveInput) -> TokenStream {
    if !input.generics.params.is_empty() {
        // Impls would need the generic parameters; the type's own error is enough.
        return TokenStream::new();
    }
    let ident = &input.ident;
    let name = ident.unraw().to_string();
    let definition = handle::definition(&input.vis, ident, &name);
    let handle = crate::model::handle_ident(ident);
    let trait_impls = handle::trait_impls(ident, &name);
    let never = quote!(::core::unreachable!(
        "the declaration of this type has compile errors"
    ));
    quote! {
        #definition

        const _: () = {
            #trait_impls

            impl ::odb::Object for #ident {
                type Handle = #handle;

                fn type_def() -> &'static ::odb::TypeDef {
                    #never
                }

                fn schema() -> &'static ::odb::Schema {
                    #never
                }

                fn __encode_fields(
                    &self,
                ) -> ::odb::Result<::std::vec::Vec<::odb::__private::Bytes>> {
                    #never
                }

                fn __decode_fields(
                    _: ::odb::ObjectId,
                    _: ::std::vec::Vec<::core::option::Option<::odb::__private::Bytes>>,
                ) -> ::odb::Result<Self> {
                    #never
                }
            }
        };
    }
}
