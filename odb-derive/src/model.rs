//! The validated description of what the macros generate code for: an object type with its
//! fields and indices, and a schema module with its object types.

use crate::check;
use crate::errors::Errors;
use crate::parse::{self, CompositeIndex};
use syn::ext::IdentExt;
use syn::visit_mut::VisitMut;
use syn::{Data, DeriveInput, Fields, Ident, Type, Visibility};

/// A struct that derives `odb::Object`.
pub(crate) struct Object {
    /// The struct's visibility, which its handle type shares.
    pub(crate) vis: Visibility,
    /// The struct's identifier.
    pub(crate) ident: Ident,
    /// The type's name as stored (the identifier without `r#`).
    pub(crate) name: String,
    /// The name of the schema it belongs to.
    pub(crate) schema: String,
    /// The fields, in declaration order.
    pub(crate) fields: Vec<Field>,
    /// The indices: composite ones first, in the order written, then the `#[index]` fields.
    pub(crate) indices: Vec<Index>,
}

/// A stored field.
pub(crate) struct Field {
    /// The field's identifier, as written.
    pub(crate) ident: Ident,
    /// The field's name as stored (the identifier without `r#`).
    pub(crate) name: String,
    /// The field's type, with `Self` replaced by the struct's name so that it can be used in
    /// the handle's methods.
    pub(crate) ty: Type,
    /// `#[odb(default)]`: a missing stored value reads as `Default::default()`.
    pub(crate) default: bool,
}

/// An index over one or several fields.
pub(crate) struct Index {
    /// The identifier the index was declared with (the field's for `#[index]`); the generated
    /// methods are named after it and errors point at it.
    pub(crate) ident: Ident,
    /// The index's name as stored (the identifier without `r#`).
    pub(crate) name: String,
    /// Positions of the indexed fields, in index order; never empty.
    pub(crate) fields: Vec<usize>,
    /// Declared with `#[odb(index(..))]` on the struct rather than `#[index]` on a field.
    pub(crate) composite: bool,
}

impl Object {
    /// Builds the model of `input`, or every problem found in it.
    pub(crate) fn from_input(input: &DeriveInput) -> syn::Result<Object> {
        let mut errors = Errors::default();
        let named = named_fields(input, &mut errors);
        if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
            errors.spanned(
                &input.generics,
                "#[derive(odb::Object)] does not support generic structs: a stored type needs \
                 one fixed layout; remove the generic parameters and use concrete field types",
            );
        }
        let attrs = parse::struct_attrs(&input.attrs, &mut errors);
        if attrs.schema.is_none() {
            errors.spanned(
                &input.ident,
                "#[derive(odb::Object)] needs to know which schema the type belongs to; put it \
                 directly inside an #[odb::schema] module: #[odb::schema] mod my_schema { .. }",
            );
        }

        let mut fields = Vec::new();
        let mut field_indices = Vec::new();
        for field in named.into_iter().flatten() {
            let Some(ident) = field.ident.clone() else {
                continue;
            };
            let field_attrs = parse::field_attrs(&field.attrs, &mut errors);
            if field_attrs.index {
                field_indices.push(Index {
                    name: ident.unraw().to_string(),
                    ident: ident.clone(),
                    fields: vec![fields.len()],
                    composite: false,
                });
            }
            let mut ty = field.ty.clone();
            ReplaceSelf(&input.ident).visit_type_mut(&mut ty);
            fields.push(Field {
                name: ident.unraw().to_string(),
                ident,
                ty,
                default: field_attrs.default,
            });
        }

        let mut indices = Vec::new();
        for composite in &attrs.indices {
            if let Some(index) = resolve_composite(composite, &input.ident, &fields, &mut errors) {
                indices.push(index);
            }
        }
        indices.extend(field_indices);

        let object = Object {
            vis: input.vis.clone(),
            name: input.ident.unraw().to_string(),
            ident: input.ident.clone(),
            schema: attrs.schema.map(|s| s.value()).unwrap_or_default(),
            fields,
            indices,
        };
        check::check_object(&object, &mut errors);
        errors.finish()?;
        Ok(object)
    }
}

/// The named fields of a struct; anything else is an error.
fn named_fields<'a>(
    input: &'a DeriveInput,
    errors: &mut Errors,
) -> Option<impl Iterator<Item = &'a syn::Field>> {
    let name = input.ident.unraw();
    match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(fields) => return Some(fields.named.iter()),
            Fields::Unnamed(fields) => errors.spanned(
                fields,
                format!(
                    "#[derive(odb::Object)] needs a struct with named fields, because fields are \
                     stored by name; write `struct {name} {{ name: Type, .. }}` instead of a tuple \
                     struct"
                ),
            ),
            Fields::Unit => errors.spanned(
                &input.ident,
                format!(
                    "#[derive(odb::Object)] needs a struct with named fields, and a unit struct \
                     has nothing to store; write `struct {name} {{ name: Type, .. }}`"
                ),
            ),
        },
        Data::Enum(data) => errors.spanned(
            data.enum_token,
            "#[derive(odb::Object)] works on structs with named fields, not on enums; to store \
             an enum, derive Serialize and Deserialize for it and use it as a field of an \
             object struct",
        ),
        Data::Union(data) => errors.spanned(
            data.union_token,
            "#[derive(odb::Object)] works on structs with named fields, not on unions; use a \
             struct, or an enum as a field of an object struct",
        ),
    }
    None
}

/// Resolves the field names of a composite index to positions.
fn resolve_composite(
    composite: &CompositeIndex,
    struct_ident: &Ident,
    fields: &[Field],
    errors: &mut Errors,
) -> Option<Index> {
    let index = composite.name.unraw();
    if let Some(rest) = index
        .to_string()
        .strip_prefix("by_")
        .filter(|rest| rest.starts_with(|c: char| c.is_alphabetic()))
    {
        // One rule for every index, NAME gives `lookup_*_by_NAME` and `NAME_index`, so a name
        // starting with `by_` would give `lookup_all_by_by_..`: almost surely not what was meant.
        errors.spanned(
            &composite.name,
            format!(
                "index names do not start with `by_`: an index NAME gets the lookups \
                 `lookup_all_by_NAME` (and `_any_`, `_one_`, `_unique_`) and the index value \
                 `NAME_index`; name it `{rest}` to get `lookup_all_by_{rest}` and `{rest}_index`"
            ),
        );
        return None;
    }
    if composite.fields.is_empty() {
        errors.spanned(
            &composite.name,
            format!(
                "index `{index}` lists no fields; list the fields it covers, in order: \
                 #[odb(index({index} = (field_a, field_b)))]"
            ),
        );
        return None;
    }
    let mut positions = Vec::new();
    let mut ok = true;
    for name in &composite.fields {
        let wanted = name.unraw().to_string();
        match fields.iter().position(|f| f.name == wanted) {
            Some(position) if positions.contains(&position) => {
                ok = false;
                errors.spanned(
                    name,
                    format!("index `{index}` lists field `{wanted}` twice; list each field once"),
                );
            }
            Some(position) => positions.push(position),
            None => {
                ok = false;
                let known: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
                errors.spanned(
                    name,
                    format!(
                        "index `{index}` names field `{wanted}`, but `{}` has no such field; \
                         its fields are: {}",
                        struct_ident.unraw(),
                        known.join(", ")
                    ),
                );
            }
        }
    }
    ok.then(|| Index {
        ident: composite.name.clone(),
        name: index.to_string(),
        fields: positions,
        composite: true,
    })
}

/// Replaces `Self` in a field type by the struct's name, keeping the span.
struct ReplaceSelf<'a>(&'a Ident);

impl VisitMut for ReplaceSelf<'_> {
    fn visit_path_mut(&mut self, path: &mut syn::Path) {
        if path.leading_colon.is_none() {
            if let Some(first) = path.segments.first_mut() {
                if first.ident == "Self" {
                    first.ident = Ident::new(&self.0.to_string(), first.ident.span());
                }
            }
        }
        syn::visit_mut::visit_path_mut(self, path);
    }
}

/// A module carrying `#[odb::schema]`.
pub(crate) struct SchemaModule {
    /// The schema's name.
    pub(crate) name: String,
    /// The object types to list in `schema()`, in declaration order.
    pub(crate) types: Vec<SchemaType>,
}

/// One object type of a schema module.
pub(crate) struct SchemaType {
    /// The struct's identifier.
    pub(crate) ident: Ident,
    /// Its `#[cfg(..)]` attributes, which also apply to its entry in `schema()`.
    pub(crate) cfgs: Vec<syn::Attribute>,
}

/// The identifier of the handle type generated for the struct `ident`.
pub(crate) fn handle_ident(ident: &Ident) -> Ident {
    Ident::new(&format!("{}Ref", ident.unraw()), ident.span())
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn model_of_a_struct() {
        let input: DeriveInput = parse_quote! {
            #[derive(odb::Object)]
            #[odb(__schema = "s", index(user_day = (user, r#day)))]
            pub struct Visit {
                #[index]
                pub user: String,
                pub r#day: u32,
                #[odb(default)]
                pub next: Option<odb::Ref<Self>>,
            }
        };
        let object = Object::from_input(&input).map_err(|e| e.to_string());
        let Ok(object) = object else {
            panic!("unexpected error: {object:?}", object = object.err());
        };
        assert_eq!(object.schema, "s");
        let fields: Vec<(&str, bool)> = object
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.default))
            .collect();
        assert_eq!(fields, [("user", false), ("day", false), ("next", true)]);
        let indices: Vec<(&str, &[usize])> = object
            .indices
            .iter()
            .map(|i| (i.name.as_str(), i.fields.as_slice()))
            .collect();
        assert_eq!(indices, [("user_day", &[0, 1][..]), ("user", &[0][..])]);
        let next = &object.fields[2].ty;
        let expected: Type = parse_quote!(Option<odb::Ref<Visit>>);
        assert_eq!(
            quote::quote!(#next).to_string(),
            quote::quote!(#expected).to_string()
        );
    }

    #[test]
    fn errors_are_collected() {
        let input: DeriveInput = parse_quote! {
            #[odb(index(empty = (), missing = (nope)))]
            struct S<T> {
                #[index(x)]
                id: T,
            }
        };
        let count = Object::from_input(&input)
            .err()
            .map(|e| e.into_iter().count());
        // generic, no schema, empty index, missing field, #[index(x)], reserved `id`
        assert_eq!(count, Some(6));
    }
}
