//! Rules that involve several fields, indices or items: name clashes between what the user
//! wrote and what the macros generate.

use crate::errors::Errors;
use crate::model::{handle_ident, Object, SchemaType};
use syn::{Fields, Ident, Item};

/// Methods every handle type has; a field with one of these names would clash with them.
const HANDLE_METHODS: [&str; 4] = ["id", "exists", "get", "delete"];

/// Checks the rules of one object type.
pub(crate) fn check_object(object: &Object, errors: &mut Errors) {
    check_field_names(object, errors);
    check_index_names(object, errors);
}

/// A field `f` generates the handle methods `f` and `set_f`; they must not clash with the fixed
/// handle methods or with each other.
fn check_field_names(object: &Object, errors: &mut Errors) {
    let handle = handle_ident(&object.ident);
    for field in &object.fields {
        let name = field.name.as_str();
        if name == "id" {
            // The most common field name there is, so the message says what to do instead.
            errors.spanned(
                &field.ident,
                format!(
                    "a field cannot be named `id`: every object already has one, `{handle}::id()` \
                     returns its `odb::ObjectId`, assigned by `create` and unique across the \
                     server; drop the field to use that id, or name the field after what it \
                     identifies (`order_id`, `external_id`, `key`) and add `#[index]` to look \
                     objects up by it"
                ),
            );
        } else if HANDLE_METHODS.contains(&name) {
            errors.spanned(
                &field.ident,
                format!(
                    "a field cannot be named `{name}`: the handle type `{handle}` has a method \
                     `{name}` already (the reserved names are {}); rename the field",
                    HANDLE_METHODS.map(|m| format!("`{m}`")).join(", ")
                ),
            );
        }
        if let Some(setter_of) = name.strip_prefix("set_") {
            if object.fields.iter().any(|other| other.name == setter_of) {
                errors.spanned(
                    &field.ident,
                    format!(
                        "a field cannot be named `{name}`: the handle type `{handle}` has the \
                         setter `{name}` of field `{setter_of}` already; rename one of the fields"
                    ),
                );
            }
        }
    }
}

/// Index names must be unique: the generated methods are named after them.
fn check_index_names(object: &Object, errors: &mut Errors) {
    for (position, index) in object.indices.iter().enumerate() {
        let Some(earlier) = object.indices[..position]
            .iter()
            .find(|earlier| earlier.name == index.name)
        else {
            continue;
        };
        let name = &index.name;
        let message = if earlier.composite && index.composite {
            format!(
                "duplicate index name `{name}`: another #[odb(index({name} = (..)))] on this \
                 struct has it already; give each index its own name"
            )
        } else {
            format!(
                "duplicate index name `{name}`: the #[index] on field `{name}` already declares \
                 an index with this name (a field's index is named after the field); give this \
                 index another name: #[odb(index(OTHER_NAME = (..)))]"
            )
        };
        // Point at the composite index: a field's index cannot be renamed.
        let culprit = if earlier.composite && !index.composite {
            earlier
        } else {
            index
        };
        errors.spanned(&culprit.ident, message);
    }
}

/// Checks that the items of a schema module do not clash with what the macros generate there:
/// the function `schema` and a handle type `<Struct>Ref` per object struct. Returns the
/// positions of the clashing items.
pub(crate) fn check_schema_items(
    items: &[Item],
    types: &[SchemaType],
    errors: &mut Errors,
) -> Vec<usize> {
    let mut clashing = Vec::new();
    for (position, item) in items.iter().enumerate() {
        if let Some(ident) = value_ident(item).filter(|ident| *ident == "schema") {
            clashing.push(position);
            errors.spanned(
                ident,
                "#[odb::schema] generates a function `schema` in this module, which returns the \
                 schema; rename this item",
            );
        }
        let Some(ident) = type_ident(item) else {
            continue;
        };
        if let Some(owner) = types.iter().find(|t| handle_ident(&t.ident) == *ident) {
            clashing.push(position);
            errors.spanned(
                ident,
                format!(
                    "`{ident}` is the name of the handle type #[derive(odb::Object)] generates \
                     for `{}`; rename this item",
                    owner.ident
                ),
            );
        }
    }
    clashing
}

/// The name an item defines in the value namespace, if any.
fn value_ident(item: &Item) -> Option<&Ident> {
    match item {
        Item::Const(i) => Some(&i.ident),
        Item::Fn(i) => Some(&i.sig.ident),
        Item::Static(i) => Some(&i.ident),
        Item::Struct(i) if !matches!(i.fields, Fields::Named(_)) => Some(&i.ident),
        _ => None,
    }
}

/// The name an item defines in the type namespace, if any.
fn type_ident(item: &Item) -> Option<&Ident> {
    match item {
        Item::Enum(i) => Some(&i.ident),
        Item::Mod(i) => Some(&i.ident),
        Item::Struct(i) => Some(&i.ident),
        Item::Trait(i) => Some(&i.ident),
        Item::Type(i) => Some(&i.ident),
        Item::Union(i) => Some(&i.ident),
        _ => None,
    }
}
