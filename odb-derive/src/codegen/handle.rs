//! Code for the handle type `<Struct>Ref` (`odb::Ref<Struct>`): its definition, its trait
//! impls, and its methods (`id`, `exists`, `get`, `delete` and a getter and setter per field).

use crate::model::{handle_ident, Object};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{Ident, Visibility};

/// The handle struct; it goes next to the object struct, with the same visibility.
pub(crate) fn definition(vis: &Visibility, ident: &Ident, name: &str) -> TokenStream {
    let handle = handle_ident(ident);
    let doc = format!(
        "A reference to a stored [`{name}`] object, also written `odb::Ref<{name}>`: what \
         [`{name}::create`] and the `{name}::lookup_*` functions return.\n\n\
         It is the object's id and nothing more, so it is `Copy` and compares, orders and hashes \
         by id. Read the object's fields with its methods in a view or transaction, and change \
         them in a transaction. It serializes as the plain id number."
    );
    quote! {
        #[doc = #doc]
        #[derive(
            ::core::clone::Clone,
            ::core::marker::Copy,
            ::core::cmp::PartialEq,
            ::core::cmp::Eq,
            ::core::cmp::PartialOrd,
            ::core::cmp::Ord,
            ::core::hash::Hash,
        )]
        #vis struct #handle(::odb::ObjectId);
    }
}

/// The trait impls of the handle: `odb::Handle`, `Debug` (`Name(42)`), and serde as the id.
pub(crate) fn trait_impls(ident: &Ident, name: &str) -> TokenStream {
    let handle = handle_ident(ident);
    let serde = quote!(::odb::__private::serde);
    let debug_format = format!("{name}({{}})");
    quote! {
        #[automatically_derived]
        impl ::odb::Handle for #handle {
            type Object = #ident;

            fn from_id(id: ::odb::ObjectId) -> Self {
                #handle(id)
            }

            fn id(&self) -> ::odb::ObjectId {
                self.0
            }
        }

        #[automatically_derived]
        impl ::core::fmt::Debug for #handle {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::write!(f, #debug_format, self.0 .0)
            }
        }

        #[automatically_derived]
        impl #serde::Serialize for #handle {
            fn serialize<S: #serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::core::result::Result<S::Ok, S::Error> {
                #serde::Serialize::serialize(&self.0 .0, serializer)
            }
        }

        #[automatically_derived]
        impl<'de> #serde::Deserialize<'de> for #handle {
            fn deserialize<D: #serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::core::result::Result<Self, D::Error> {
                let id = <u64 as #serde::Deserialize<'de>>::deserialize(deserializer)?;
                ::core::result::Result::Ok(#handle(::odb::ObjectId(id)))
            }
        }
    }
}

/// The handle's methods.
pub(crate) fn methods(object: &Object) -> TokenStream {
    let ident = &object.ident;
    let name = &object.name;
    let handle = handle_ident(ident);
    let ops = quote!(::odb::__private::ops);
    let read_errors = "# Errors\n\nFails if the object does not exist, its type is not \
                       subscribed, or a stored value cannot be decoded.";

    let id_doc = format!("The id of this `{name}` object.");
    let exists_doc = format!(
        "Whether this `{name}` object exists (it may have been deleted, or never created).\n\n\
         # Errors\n\nFails if the type is not subscribed."
    );
    let get_doc = format!("Reads every field of this `{name}` object at once.\n\n{read_errors}");
    let delete_doc = format!(
        "Deletes this `{name}` object in the transaction.\n\n\
         # Errors\n\nFails if the object does not exist."
    );

    let accessors = object.fields.iter().enumerate().map(|(position, field)| {
        let getter = &field.ident;
        let setter = format_ident!("set_{}", field.ident);
        let ty = &field.ty;
        let field_name = &field.name;
        let (read, default_note) = if field.default {
            (
                quote!(field_or_default),
                " If the object has no stored value for it, reads `Default::default()`.",
            )
        } else {
            (quote!(field), "")
        };
        let getter_doc = format!(
            "Reads field `{field_name}` of this `{name}` object.{default_note}\n\n{read_errors}"
        );
        let setter_doc = format!(
            "Writes field `{field_name}` of this `{name}` object in the transaction.\n\n\
             # Errors\n\nFails if the value cannot be encoded or the object does not exist."
        );
        quote! {
            #[doc = #getter_doc]
            pub fn #getter(&self, r: &impl ::odb::Read) -> ::odb::Result<#ty> {
                #ops::#read::<#ident, #ty>(r, self.0, #position)
            }

            #[doc = #setter_doc]
            pub fn #setter(
                &self,
                tx: &mut ::odb::Transaction<'_>,
                value: #ty,
            ) -> ::odb::Result<()> {
                #ops::set_field::<#ident, #ty>(tx, self.0, #position, &value)
            }
        }
    });

    quote! {
        #[allow(dead_code)]
        impl #handle {
            #[doc = #id_doc]
            pub fn id(&self) -> ::odb::ObjectId {
                self.0
            }

            #[doc = #exists_doc]
            pub fn exists(&self, r: &impl ::odb::Read) -> ::odb::Result<bool> {
                #ops::exists::<#ident>(r, self.0)
            }

            #[doc = #get_doc]
            pub fn get(&self, r: &impl ::odb::Read) -> ::odb::Result<#ident> {
                #ops::get::<#ident>(r, self.0)
            }

            #[doc = #delete_doc]
            pub fn delete(&self, tx: &mut ::odb::Transaction<'_>) -> ::odb::Result<()> {
                #ops::delete::<#ident>(tx, self.0)
            }

            #(#accessors)*
        }
    }
}

/// `impl odb::Describe for StructRef`: a reference, stored as the id number.
pub(crate) fn describe_impl(ident: &syn::Ident, schema: &str, name: &str) -> TokenStream {
    let handle = handle_ident(ident);
    let type_name = format!("{schema}.{name}");
    quote! {
        impl ::odb::Describe for #handle {
            fn describe() -> ::odb::TypeDesc {
                ::odb::TypeDesc::Ref { type_name: ::std::string::String::from(#type_name) }
            }
        }
    }
}
