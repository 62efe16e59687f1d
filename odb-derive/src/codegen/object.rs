//! Code for the object struct itself: its `TypeDef`, its `odb::Object` impl, and its
//! associated functions (`create`, `from_id`, the lookups and the index values).

use crate::model::{handle_ident, Index, Object};
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

/// The `static` describing the type, named `type_def_ident` (private to the generated block).
pub(crate) fn type_def(object: &Object, type_def_ident: &syn::Ident) -> TokenStream {
    let schema = &object.schema;
    let name = &object.name;
    let fields = object.fields.iter().map(|field| {
        let name = &field.name;
        let default = field.default;
        let ty = &field.ty;
        quote!(::odb::FieldDef {
            name: #name,
            default: #default,
            describe: {
                #[allow(clippy::needless_borrow)]
                fn describe() -> ::odb::TypeDesc {
                    use ::odb::__private::{ViaDescribe as _, ViaOpaque as _};
                    (&&::odb::__private::Probe::<#ty>::new()).__odb_describe()
                }
                describe
            },
        })
    });
    let indices = object.indices.iter().map(|index| {
        let name = &index.name;
        let positions = &index.fields;
        quote!(::odb::IndexDef { name: #name, fields: &[#(#positions),*] })
    });
    quote! {
        static #type_def_ident: ::odb::TypeDef = ::odb::TypeDef {
            schema: #schema,
            name: #name,
            fields: &[#(#fields),*],
            indices: &[#(#indices),*],
        };
    }
}

/// `impl odb::Object for Struct`.
pub(crate) fn object_impl(object: &Object, type_def_ident: &syn::Ident) -> TokenStream {
    let ident = &object.ident;
    let handle = handle_ident(ident);
    let encode = object.fields.iter().map(|field| {
        let field_ident = &field.ident;
        quote_spanned!(field.ty.span()=> ::odb::encode_value(&self.#field_ident)?)
    });
    let decode = object.fields.iter().enumerate().map(|(position, field)| {
        let field_ident = &field.ident;
        let decode = if field.default {
            quote!(__decode_field_or_default)
        } else {
            quote!(__decode_field)
        };
        quote_spanned! {field.ty.span()=>
            #field_ident: ::odb::__private::#decode(
                &#type_def_ident,
                #position,
                id,
                ::core::iter::Iterator::next(&mut fields).flatten(),
            )?
        }
    });
    quote! {
        #[automatically_derived]
        impl ::odb::Object for #ident {
            type Handle = #handle;

            fn type_def() -> &'static ::odb::TypeDef {
                &#type_def_ident
            }

            fn schema() -> &'static ::odb::Schema {
                self::schema()
            }

            fn __encode_fields(
                &self,
            ) -> ::odb::Result<::std::vec::Vec<::odb::__private::Bytes>> {
                ::core::result::Result::Ok(::std::vec![#(#encode),*])
            }

            fn __decode_fields(
                id: ::odb::ObjectId,
                fields: ::std::vec::Vec<::core::option::Option<::odb::__private::Bytes>>,
            ) -> ::odb::Result<Self> {
                let mut fields = ::std::iter::IntoIterator::into_iter(fields);
                ::core::result::Result::Ok(#ident { #(#decode,)* })
            }
        }
    }
}

/// The associated functions of the struct: `create`, `from_id`, `lookup_all`, `lookup_any`,
/// and per index the `lookup_*_by_NAME` functions and `NAME_index`.
pub(crate) fn associated_functions(object: &Object) -> TokenStream {
    let ident = &object.ident;
    let name = &object.name;
    let handle = handle_ident(ident);
    let ops = quote!(::odb::__private::ops);
    let all_objects = quote!(::core::option::Option::None, ::odb::__private::Bytes::new());

    let create_doc = format!(
        "Creates a new `{name}` object with the given field values in the transaction, and \
         returns its handle.\n\n\
         # Errors\n\n\
         Fails if a field value cannot be encoded or the transaction cannot write."
    );
    let from_id_doc = format!(
        "The handle of the `{name}` object with this id. Touches nothing: the object may or may \
         not exist (see [`{handle}::exists`])."
    );
    let lookup_all_doc = format!(
        "Every `{name}` object visible in this view or transaction, in ascending id order.\n\n\
         # Errors\n\n\
         Fails if the type is not subscribed or the read cannot be done."
    );
    let lookup_any_doc = format!(
        "The `{name}` object with the lowest id, or `None` if there is none.\n\n\
         # Errors\n\n\
         Fails if the type is not subscribed or the read cannot be done."
    );
    let indices = object
        .indices
        .iter()
        .enumerate()
        .map(|(position, index)| index_functions(object, position, index));

    quote! {
        #[allow(dead_code)]
        impl #ident {
            #[doc = #create_doc]
            pub fn create(
                tx: &mut ::odb::Transaction<'_>,
                value: #ident,
            ) -> ::odb::Result<#handle> {
                #ops::create::<#ident>(tx, value)
            }

            #[doc = #from_id_doc]
            pub fn from_id(id: ::odb::ObjectId) -> #handle {
                <#handle as ::odb::Handle>::from_id(id)
            }

            #[doc = #lookup_all_doc]
            pub fn lookup_all(
                r: &impl ::odb::Read,
            ) -> ::odb::Result<::std::vec::Vec<#handle>> {
                #ops::lookup_all::<#ident>(r, #all_objects)
            }

            #[doc = #lookup_any_doc]
            pub fn lookup_any(
                r: &impl ::odb::Read,
            ) -> ::odb::Result<::core::option::Option<#handle>> {
                #ops::lookup_any::<#ident>(r, #all_objects)
            }

            #(#indices)*
        }
    }
}

/// The functions of one index.
fn index_functions(object: &Object, position: usize, index: &Index) -> TokenStream {
    let ident = &object.ident;
    let name = &object.name;
    let handle = handle_ident(ident);
    let ops = quote!(::odb::__private::ops);
    let span = index.ident.span();
    let method =
        |pattern: &str| format_ident!("{}", pattern.replace("{}", &index.name), span = span);
    let (lookup_all, lookup_any, lookup_one, lookup_unique, index_value) = (
        method("lookup_all_by_{}"),
        method("lookup_any_by_{}"),
        method("lookup_one_by_{}"),
        method("lookup_unique_by_{}"),
        method("{}_index"),
    );

    let types: Vec<&syn::Type> = index.fields.iter().map(|&f| &object.fields[f].ty).collect();
    // A composite index takes a tuple whose every element converts on its own, so that
    // `("ann", 3)` is accepted for `(String, u32)` as `"ann"` is for `String`.
    let (value_ty, arg_ty, convert) = match types.as_slice() {
        [single] => (
            quote!(#single),
            quote!(impl ::odb::IndexArg<#single>),
            quote!(let value: #single = ::odb::IndexArg::into_index_value(value);),
        ),
        several => {
            let parts: Vec<_> = (0..several.len())
                .map(|i| format_ident!("__odb_part{}", i))
                .collect();
            (
                quote!((#(#several),*)),
                quote!((#(impl ::odb::IndexArg<#several>),*)),
                quote! {
                    let (#(#parts),*) = value;
                    let value: (#(#several),*) =
                        (#(::odb::IndexArg::into_index_value(#parts)),*);
                },
            )
        }
    };
    let field_names: Vec<&str> = index
        .fields
        .iter()
        .map(|&f| object.fields[f].name.as_str())
        .collect();
    let value_text = match field_names.as_slice() {
        [single] => format!("`{single}` value"),
        several => format!("value of `({})`", several.join(", ")),
    };
    let index_name = &index.name;
    let errors = "# Errors\n\nFails if the value cannot be encoded, the index is not subscribed \
                  (nor the whole type), or the read cannot be done.";

    let all_doc = format!(
        "Every `{name}` object with this {value_text} (index `{index_name}`), in ascending id \
         order.\n\n{errors}"
    );
    let any_doc = format!(
        "The `{name}` object with the lowest id among those with this {value_text} (index \
         `{index_name}`), or `None` if there is none.\n\n{errors}"
    );
    let one_doc = format!(
        "Like [`{name}::{lookup_any}`], but no such object is an error \
         (`odb::Error::NotFound`).\n\n{errors}"
    );
    let unique_doc = format!(
        "The only `{name}` object with this {value_text} (index `{index_name}`), or `None` if \
         there is none.\n\n{errors} Several such objects are an error \
         (`odb::Error::NotUnique`)."
    );
    let value_doc = format!(
        "The index value of `{name}` objects with this {value_text} (index `{index_name}`): \
         what to subscribe to in order to receive exactly those objects. A value that cannot be \
         encoded makes the subscription fail."
    );
    let encode = quote! {
        #convert
        let value = ::odb::encode_value::<#value_ty>(&value)?;
    };
    let index_arg = quote!(::core::option::Option::Some(#position));

    quote! {
        #[doc = #all_doc]
        pub fn #lookup_all(
            r: &impl ::odb::Read,
            value: #arg_ty,
        ) -> ::odb::Result<::std::vec::Vec<#handle>> {
            #encode
            #ops::lookup_all::<#ident>(r, #index_arg, value)
        }

        #[doc = #any_doc]
        pub fn #lookup_any(
            r: &impl ::odb::Read,
            value: #arg_ty,
        ) -> ::odb::Result<::core::option::Option<#handle>> {
            #encode
            #ops::lookup_any::<#ident>(r, #index_arg, value)
        }

        #[doc = #one_doc]
        pub fn #lookup_one(
            r: &impl ::odb::Read,
            value: #arg_ty,
        ) -> ::odb::Result<#handle> {
            #convert
            let looked_up = value;
            let value = ::odb::encode_value::<#value_ty>(&looked_up)?;
            #ops::lookup_one::<#ident>(r, #index_arg, value, || {
                use ::odb::__private::{DescribeDebug as _, DescribeOther as _};
                (&::odb::__private::Described(&looked_up)).describe()
            })
        }

        #[doc = #unique_doc]
        pub fn #lookup_unique(
            r: &impl ::odb::Read,
            value: #arg_ty,
        ) -> ::odb::Result<::core::option::Option<#handle>> {
            #encode
            #ops::lookup_unique::<#ident>(r, #index_arg, value)
        }

        #[doc = #value_doc]
        pub fn #index_value(
            value: #arg_ty,
        ) -> ::odb::IndexValue {
            #convert
            #ops::index_value::<#ident>(#position, ::odb::encode_value(&value))
        }
    }
}
