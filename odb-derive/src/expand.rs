//! The two macros, stage by stage: parse, build the model, check, generate.

use crate::errors::Errors;
use crate::model::{Object, SchemaModule, SchemaType};
use crate::{check, codegen, parse};
use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::{DeriveInput, Ident, Item, ItemMod};

/// `#[derive(odb::Object)]`.
pub(crate) fn expand_object(input: &DeriveInput) -> syn::Result<TokenStream> {
    let object = Object::from_input(input)?;
    Ok(codegen::object(&object))
}

/// What `#[derive(odb::Object)]` emits next to its errors, see [`codegen::fallback`].
pub(crate) fn object_fallback(input: &DeriveInput) -> TokenStream {
    codegen::fallback(input)
}

/// `#[odb::schema]`. Only a misplaced attribute is an `Err`; other problems are reported next
/// to the expanded module, so that the object types inside it still expand and do not add
/// errors of their own.
pub(crate) fn expand_schema(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut module = inline_module(item)?;
    let mut errors = Errors::default();
    let name = match parse::schema_args(args) {
        Ok(args) => args.name.map(|name| name.value()),
        Err(error) => {
            errors.push(error);
            None
        }
    }
    .unwrap_or_else(|| module.ident.unraw().to_string());

    let mut types = Vec::new();
    let key = Ident::new(parse::SCHEMA_KEY, Span::call_site());
    let items = module.content.as_mut().map(|(_, items)| items);
    for item in items.into_iter().flatten() {
        let (attrs, listed) = match item {
            Item::Struct(s) => {
                let listed = s.generics.params.is_empty().then(|| s.ident.clone());
                (&mut s.attrs, listed)
            }
            Item::Enum(e) => (&mut e.attrs, None),
            Item::Union(u) => (&mut u.attrs, None),
            _ => continue,
        };
        let Some(derive) = parse::derive_object_position(attrs) else {
            continue;
        };
        // After the derive: a helper attribute may not come before the derive introducing it.
        attrs.insert(derive + 1, syn::parse_quote!(#[odb(#key = #name)]));
        if let Some(ident) = listed {
            let cfgs = attrs
                .iter()
                .filter(|a| a.path().is_ident("cfg"))
                .cloned()
                .collect();
            types.push(SchemaType { ident, cfgs });
        }
    }

    let model = SchemaModule { name, types };
    if let Some((_, items)) = &mut module.content {
        // A clashing item is reported and left out, so that the error about it is the only one.
        let clashing = check::check_schema_items(items, &model.types, &mut errors);
        let mut position = 0;
        items.retain(|_| {
            position += 1;
            !clashing.contains(&(position - 1))
        });
        items.push(Item::Verbatim(codegen::schema_fn(&model)));
    }
    let errors = errors.finish().err().map(syn::Error::into_compile_error);
    Ok(quote!(#errors #module))
}

/// The module `#[odb::schema]` is on, which must be written inline.
fn inline_module(item: TokenStream) -> syn::Result<ItemMod> {
    match syn::parse2::<Item>(item) {
        Ok(Item::Mod(module)) if module.content.is_some() => Ok(module),
        Ok(Item::Mod(module)) => Err(syn::Error::new_spanned(
            module.semi.map_or_else(
                || module.ident.to_token_stream(),
                |s| {
                    let ident = &module.ident;
                    quote!(#ident #s)
                },
            ),
            "#[odb::schema] needs the module's items written inline, `mod name { .. }`, because \
             a macro cannot read a module from another file; move the items into the braces",
        )),
        Ok(other) => Err(syn::Error::new_spanned(
            item_head(&other),
            "#[odb::schema] goes on an inline module that holds the object structs: \
             #[odb::schema] pub mod my_schema { #[derive(odb::Object)] pub struct .. }",
        )),
        Err(error) => Err(error),
    }
}

/// The tokens to point at for an item: its keyword and name where it has them.
fn item_head(item: &Item) -> TokenStream {
    match item {
        Item::Struct(i) => head(i.struct_token, &i.ident),
        Item::Enum(i) => head(i.enum_token, &i.ident),
        Item::Union(i) => head(i.union_token, &i.ident),
        Item::Fn(i) => head(i.sig.fn_token, &i.sig.ident),
        Item::Trait(i) => head(i.trait_token, &i.ident),
        Item::Impl(i) => i.impl_token.to_token_stream(),
        _ => item.to_token_stream(),
    }
}

fn head(keyword: impl ToTokens, ident: &Ident) -> TokenStream {
    quote!(#keyword #ident)
}
