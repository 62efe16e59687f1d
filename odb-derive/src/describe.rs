//! `#[derive(odb::Describe)]`: the serde shape of a struct or an enum, as a
//! `odb::TypeDesc` built at run time from its fields' descriptions.
//!
//! The model is the type's serialized layout: which fields serde writes, in which order. Serde
//! attributes that drop a field (`skip`, `skip_serializing`) are followed; those that change the
//! encoding in ways a description cannot express (`tag`, `untagged`, `flatten`, `with`, `into`,
//! `from`, ...) make the whole type opaque, which is honest: tools then show its bytes.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::{Attribute, Data, DeriveInput, Fields, Type};

/// The serialized layout of a type.
enum Layout {
    /// Serde writes something the description cannot follow.
    Opaque,
    /// `#[serde(transparent)]`: the single serialized field.
    Transparent(Type),
    Struct(Shape),
    Enum(Vec<(String, Shape)>),
}

/// The serialized fields of a struct or a variant.
enum Shape {
    Unit,
    Newtype(Type),
    Tuple(Vec<Type>),
    Named(Vec<(String, Type)>),
}

/// What the serde attributes of an item say.
#[derive(Default)]
struct SerdeAttrs {
    skip: bool,
    opaque: bool,
    transparent: bool,
}

/// The serde attribute words that matter here.
fn serde_attrs(attrs: &[Attribute]) -> syn::Result<SerdeAttrs> {
    let mut found = SerdeAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            let word = meta
                .path
                .get_ident()
                .map(|i| i.unraw().to_string())
                .unwrap_or_default();
            match word.as_str() {
                "skip" | "skip_serializing" => found.skip = true,
                "transparent" => found.transparent = true,
                "tag" | "content" | "untagged" | "flatten" | "with" | "serialize_with" | "into"
                | "from" | "try_from" | "remote" => found.opaque = true,
                _ => {}
            }
            // Skip the argument of `key = value` and `key(..)` forms alike.
            if meta.input.peek(syn::Token![=]) {
                let _: syn::Expr = meta.value()?.parse()?;
            } else if meta.input.peek(syn::token::Paren) {
                let _ = meta.parse_nested_meta(|inner| {
                    if inner.input.peek(syn::Token![=]) {
                        let _: syn::Expr = inner.value()?.parse()?;
                    }
                    Ok(())
                });
            }
            Ok(())
        })?;
    }
    Ok(found)
}

/// The serialized fields of a struct or variant; `None` if one of them is not describable.
fn shape(fields: &Fields) -> syn::Result<Option<Shape>> {
    let mut kept = Vec::new();
    for field in fields {
        let attrs = serde_attrs(&field.attrs)?;
        if attrs.opaque {
            return Ok(None);
        }
        if !attrs.skip {
            kept.push(field);
        }
    }
    Ok(Some(match fields {
        Fields::Unit => Shape::Unit,
        Fields::Named(_) => Shape::Named(
            kept.iter()
                .filter_map(|f| Some((f.ident.as_ref()?.unraw().to_string(), f.ty.clone())))
                .collect(),
        ),
        Fields::Unnamed(_) if fields.len() == 1 && kept.len() == 1 => {
            Shape::Newtype(kept[0].ty.clone())
        }
        Fields::Unnamed(_) => Shape::Tuple(kept.iter().map(|f| f.ty.clone()).collect()),
    }))
}

fn layout(input: &DeriveInput) -> syn::Result<Layout> {
    let attrs = serde_attrs(&input.attrs)?;
    if attrs.opaque {
        return Ok(Layout::Opaque);
    }
    match &input.data {
        Data::Struct(s) => {
            if attrs.transparent {
                let field = s
                    .fields
                    .iter()
                    .find(|f| serde_attrs(&f.attrs).map_or(true, |a| !a.skip));
                return Ok(field.map_or(Layout::Opaque, |f| Layout::Transparent(f.ty.clone())));
            }
            Ok(shape(&s.fields)?.map_or(Layout::Opaque, Layout::Struct))
        }
        Data::Enum(e) => {
            let mut variants = Vec::new();
            for v in &e.variants {
                let Some(shape) = shape(&v.fields)? else {
                    return Ok(Layout::Opaque);
                };
                if serde_attrs(&v.attrs)?.opaque {
                    return Ok(Layout::Opaque);
                }
                variants.push((v.ident.unraw().to_string(), shape));
            }
            Ok(Layout::Enum(variants))
        }
        Data::Union(u) => Err(syn::Error::new_spanned(
            u.union_token,
            "#[derive(odb::Describe)] does not support unions: serde cannot serialize them",
        )),
    }
}

/// The description of one field type: its `Describe` impl, or opaque without one.
fn field_desc(ty: &Type) -> TokenStream {
    quote! {{
        use ::odb::__private::{ViaDescribe as _, ViaOpaque as _};
        (&&::odb::__private::Probe::<#ty>::new()).__odb_describe()
    }}
}

fn shape_desc(shape: &Shape) -> TokenStream {
    match shape {
        Shape::Unit => quote!(::odb::describe::Fields::Unit),
        Shape::Newtype(ty) => {
            let desc = field_desc(ty);
            quote!(::odb::describe::Fields::Newtype(::std::boxed::Box::new(#desc)))
        }
        Shape::Tuple(types) => {
            let descs = types.iter().map(field_desc);
            quote!(::odb::describe::Fields::Tuple(::std::vec![#(#descs),*]))
        }
        Shape::Named(fields) => {
            let descs = fields.iter().map(|(name, ty)| {
                let desc = field_desc(ty);
                quote!((::std::string::String::from(#name), #desc))
            });
            quote!(::odb::describe::Fields::Named(::std::vec![#(#descs),*]))
        }
    }
}

/// `#[derive(odb::Describe)]`.
pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "#[derive(odb::Describe)] does not support generic types; implement odb::Describe \
             by hand, describing each instantiation's fields",
        ));
    }
    let ident = &input.ident;
    let name = ident.unraw().to_string();
    let body = match layout(input)? {
        Layout::Opaque => quote! {
            ::odb::TypeDesc::Opaque {
                rust_type: ::std::string::String::from(::std::any::type_name::<Self>()),
            }
        },
        Layout::Transparent(ty) => field_desc(&ty),
        Layout::Struct(shape) => {
            let fields = shape_desc(&shape);
            quote! {
                ::odb::TypeDesc::Struct { name: ::std::string::String::from(#name), fields: #fields }
            }
        }
        Layout::Enum(variants) => {
            let variants = variants.iter().map(|(variant, shape)| {
                let fields = shape_desc(shape);
                quote! {
                    ::odb::describe::VariantDesc {
                        name: ::std::string::String::from(#variant),
                        fields: #fields,
                    }
                }
            });
            quote! {
                ::odb::TypeDesc::Enum {
                    name: ::std::string::String::from(#name),
                    variants: ::std::vec![#(#variants),*],
                }
            }
        }
    };
    Ok(quote! {
        const _: () = {
            impl ::odb::Describe for #ident {
                fn describe() -> ::odb::TypeDesc {
                    ::odb::__private::__nested::<Self>(#name, || #body)
                }
            }
        };
    })
}
