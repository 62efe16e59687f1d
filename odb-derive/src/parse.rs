//! Parsing of the macros' arguments and of the helper attributes `#[odb(...)]` and `#[index]`.
//!
//! Parsing only reads what was written; whether it makes sense for the struct (does an indexed
//! field exist, is a name used twice) is decided in [`crate::model`] and [`crate::check`].

use crate::errors::Errors;
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Attribute, Ident, LitStr, Meta, Path, Token};

/// The key `#[odb::schema]` adds to each object struct of its module to pass on the schema's
/// name. Users do not write it.
pub(crate) const SCHEMA_KEY: &str = "__schema";

/// The arguments of `#[odb::schema(...)]`.
#[derive(Default)]
pub(crate) struct SchemaArgs {
    /// `name = "..."`: the schema's name, instead of the module's name.
    pub(crate) name: Option<LitStr>,
}

/// Parses the arguments of `#[odb::schema(...)]`.
pub(crate) fn schema_args(args: proc_macro2::TokenStream) -> syn::Result<SchemaArgs> {
    let mut parsed = SchemaArgs::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            let name: LitStr = meta.value()?.parse()?;
            if name.value().is_empty() {
                return Err(syn::Error::new_spanned(
                    &name,
                    "the schema name must not be empty; write #[odb::schema(name = \"my_schema\")] \
                     or leave out `name` to use the module's name",
                ));
            }
            parsed.name = Some(name);
            Ok(())
        } else {
            Err(meta.error(format!(
                "unknown #[odb::schema] argument `{}`; the only argument is `name = \"...\"` \
                 (the schema's name, which defaults to the module's name)",
                path_text(&meta.path)
            )))
        }
    });
    parser.parse2(args)?;
    Ok(parsed)
}

/// A composite index written as `#[odb(index(NAME = (a, b, ..)))]` on the struct.
pub(crate) struct CompositeIndex {
    /// The index's name.
    pub(crate) name: Ident,
    /// The indexed fields' names, in index order.
    pub(crate) fields: Vec<Ident>,
}

/// What the struct-level `#[odb(...)]` attributes say.
#[derive(Default)]
pub(crate) struct StructAttrs {
    /// The schema's name, added by `#[odb::schema]`.
    pub(crate) schema: Option<LitStr>,
    /// The composite indices, in the order written.
    pub(crate) indices: Vec<CompositeIndex>,
}

/// Parses the struct-level helper attributes; problems are recorded in `errors`.
pub(crate) fn struct_attrs(attrs: &[Attribute], errors: &mut Errors) -> StructAttrs {
    let mut parsed = StructAttrs::default();
    for attr in attrs {
        if attr.path().is_ident("index") {
            errors.spanned(
                attr,
                "#[index] goes on a field, not on the struct; for an index over several fields \
                 write #[odb(index(NAME = (field_a, field_b)))] on the struct",
            );
        } else if attr.path().is_ident("odb") {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("index") {
                    meta.parse_nested_meta(|index| {
                        parsed.indices.push(composite_index(&index)?);
                        Ok(())
                    })
                } else if meta.path.is_ident(SCHEMA_KEY) {
                    parsed.schema = Some(meta.value()?.parse()?);
                    Ok(())
                } else {
                    Err(meta.error(format!(
                        "unknown odb attribute `{}` on a struct; the struct-level attribute is \
                         `#[odb(index(NAME = (field, ...)))]` (a named index over the listed fields), \
                         and fields accept `#[odb(default)]` and `#[index]`",
                        path_text(&meta.path)
                    )))
                }
            });
            if let Err(error) = result {
                errors.push(error);
            }
        }
    }
    parsed
}

/// Parses `NAME = (a, b, ..)` inside `index(...)`.
fn composite_index(meta: &ParseNestedMeta<'_>) -> syn::Result<CompositeIndex> {
    let Some(name) = meta.path.get_ident().cloned() else {
        return Err(meta
            .error("an index name is a plain identifier: #[odb(index(user_day = (user, day)))]"));
    };
    let value = meta.value().map_err(|_| {
        meta.error(format!(
            "index `{name}` needs its fields: write #[odb(index({name} = (field_a, field_b)))]"
        ))
    })?;
    let content;
    syn::parenthesized!(content in value);
    let fields = Punctuated::<Ident, Token![,]>::parse_terminated_with(&content, Ident::parse_any)?;
    Ok(CompositeIndex {
        name,
        fields: fields.into_iter().collect(),
    })
}

/// What a field's helper attributes say.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    /// `#[odb(default)]`: a missing stored value reads as `Default::default()`.
    pub(crate) default: bool,
    /// `#[index]`: the field has a single-field index named after it.
    pub(crate) index: bool,
}

/// Parses a field's helper attributes; problems are recorded in `errors`.
pub(crate) fn field_attrs(attrs: &[Attribute], errors: &mut Errors) -> FieldAttrs {
    let mut parsed = FieldAttrs::default();
    for attr in attrs {
        if attr.path().is_ident("index") {
            if !matches!(attr.meta, Meta::Path(_)) {
                errors.spanned(
                    &attr.meta,
                    "#[index] takes no arguments: it indexes this field under the field's name; \
                     for a named or composite index write #[odb(index(NAME = (field, ...)))] on \
                     the struct",
                );
            } else if parsed.index {
                errors.spanned(attr, "duplicate #[index] on this field; remove one");
            }
            parsed.index = true;
        } else if attr.path().is_ident("odb") {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("default") {
                    if !(meta.input.is_empty() || meta.input.peek(Token![,])) {
                        return Err(meta.error("`default` takes no value: write #[odb(default)]"));
                    }
                    if parsed.default {
                        return Err(meta.error("duplicate `default` on this field; remove one"));
                    }
                    parsed.default = true;
                    Ok(())
                } else {
                    Err(meta.error(format!(
                        "unknown odb attribute `{}` on a field; fields accept `#[odb(default)]` \
                         (a missing stored value reads as Default::default()) and `#[index]` \
                         (an index on this field)",
                        path_text(&meta.path)
                    )))
                }
            });
            if let Err(error) = result {
                errors.push(error);
            }
        }
    }
    parsed
}

/// The position of the `#[derive(..)]` attribute that lists `Object` (or `odb::Object`), if any.
pub(crate) fn derive_object_position(attrs: &[Attribute]) -> Option<usize> {
    attrs.iter().position(|attr| {
        attr.path().is_ident("derive")
            && attr
                .parse_args_with(Punctuated::<Path, Token![,]>::parse_terminated)
                .is_ok_and(|paths| paths.iter().any(is_object_derive))
    })
}

/// `Object`, `odb::Object` or `::odb::Object`.
fn is_object_derive(path: &Path) -> bool {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    match segments.as_slice() {
        [last] => last == "Object" && path.leading_colon.is_none(),
        [krate, last] => krate == "odb" && last == "Object",
        _ => false,
    }
}

/// A path as written, for messages.
fn path_text(path: &Path) -> String {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    segments.join("::")
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn composite_indices_in_order() {
        let attrs: Vec<Attribute> = vec![
            parse_quote!(#[odb(index(user_day = (user, day)), index(day = (day)))]),
            parse_quote!(#[odb(__schema = "s")]),
        ];
        let mut errors = Errors::default();
        let parsed = struct_attrs(&attrs, &mut errors);
        assert!(errors.finish().is_ok());
        assert_eq!(parsed.schema.map(|s| s.value()).as_deref(), Some("s"));
        let names: Vec<String> = parsed.indices.iter().map(|i| i.name.to_string()).collect();
        assert_eq!(names, ["user_day", "day"]);
        assert_eq!(parsed.indices[0].fields.len(), 2);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let attrs: Vec<Attribute> = vec![parse_quote!(#[odb(indx)]), parse_quote!(#[odb(foo)])];
        let mut errors = Errors::default();
        struct_attrs(&attrs, &mut errors);
        let error = errors.finish().err().map(|e| e.into_iter().count());
        assert_eq!(error, Some(2));
    }

    #[test]
    fn field_attributes() {
        let attrs: Vec<Attribute> = vec![parse_quote!(#[index]), parse_quote!(#[odb(default)])];
        let mut errors = Errors::default();
        let parsed = field_attrs(&attrs, &mut errors);
        assert!(errors.finish().is_ok());
        assert!(parsed.index && parsed.default);

        let attrs: Vec<Attribute> = vec![parse_quote!(#[index(unique)])];
        let mut errors = Errors::default();
        field_attrs(&attrs, &mut errors);
        assert!(errors.finish().is_err());
    }

    #[test]
    fn recognises_object_derives() {
        let yes: [Attribute; 3] = [
            parse_quote!(#[derive(Debug, odb::Object)]),
            parse_quote!(#[derive(Object)]),
            parse_quote!(#[derive(::odb::Object, Clone)]),
        ];
        for attr in yes {
            assert_eq!(derive_object_position(&[attr]), Some(0));
        }
        let no: Attribute = parse_quote!(#[derive(other::Object)]);
        assert_eq!(derive_object_position(&[no]), None);
    }

    #[test]
    fn schema_arguments() {
        let args = schema_args(quote::quote!(name = "chat")).ok();
        assert_eq!(
            args.and_then(|a| a.name).map(|n| n.value()).as_deref(),
            Some("chat")
        );
        assert!(schema_args(quote::quote!(nmae = "chat")).is_err());
        assert!(schema_args(quote::quote!(name = "")).is_err());
    }
}
