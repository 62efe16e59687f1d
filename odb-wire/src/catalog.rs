//! What the server's schemas say about ids: which type an object is, what a field is called
//! and how its values decode. Tools that show stored data without its Rust types (the `odb`
//! command, the server's web inspector) read it through a [`Catalog`].

use crate::describe::{decode_value, Value};
use crate::{FieldId, IndexId, ObjectData, SchemaInfo, TypeDesc, TypeId, TypeInfo};
use std::collections::HashMap;
use std::fmt;

/// Where a field id leads.
#[derive(Clone, Debug)]
struct FieldEntry {
    ty: TypeId,
    name: String,
    desc: Option<TypeDesc>,
}

/// Every schema, indexed by id.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The schemas as the server sent them.
    pub schemas: Vec<SchemaInfo>,
    types: HashMap<TypeId, (String, TypeInfo)>,
    exists: HashMap<FieldId, TypeId>,
    fields: HashMap<FieldId, FieldEntry>,
    indices: HashMap<IndexId, (TypeId, String, Vec<String>)>,
    all_indices: HashMap<IndexId, TypeId>,
}

/// A field's value, decoded when the field has a description that fits.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// Decoded through the description.
    Value(Value),
    /// No description, or bytes that do not fit it: the raw bytes and why.
    Raw {
        /// The stored bytes.
        bytes: Vec<u8>,
        /// Why they were not decoded.
        why: String,
    },
}

/// One object, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectView {
    /// Its id.
    pub id: u64,
    /// `schema.Type`.
    pub type_name: String,
    /// Its fields, in field id order (declaration order).
    pub fields: Vec<(String, Decoded)>,
    /// Its index values (type indices left out).
    pub indices: Vec<(String, Decoded)>,
}

impl Catalog {
    /// Indexes the schemas.
    pub fn new(schemas: Vec<SchemaInfo>) -> Catalog {
        let mut catalog = Catalog::default();
        for schema in &schemas {
            for ty in &schema.types {
                let qualified = format!("{}.{}", schema.name, ty.name);
                catalog.exists.insert(ty.exists_field, ty.type_id);
                catalog.all_indices.insert(ty.all_index, ty.type_id);
                for f in &ty.fields {
                    catalog.fields.insert(
                        f.id,
                        FieldEntry {
                            ty: ty.type_id,
                            name: f.name.clone(),
                            desc: f.desc.clone(),
                        },
                    );
                }
                for i in &ty.indices {
                    catalog
                        .indices
                        .insert(i.id, (ty.type_id, i.name.clone(), i.fields.clone()));
                }
                catalog.types.insert(ty.type_id, (qualified, ty.clone()));
            }
        }
        catalog.schemas = schemas;
        catalog
    }

    /// The type named `schema.Type`.
    pub fn type_named(&self, name: &str) -> Option<&TypeInfo> {
        self.types
            .values()
            .find(|(qualified, _)| qualified == name)
            .map(|(_, ty)| ty)
    }

    /// A type by id.
    pub fn type_info(&self, ty: TypeId) -> Option<&TypeInfo> {
        self.types.get(&ty).map(|(_, info)| info)
    }

    /// The type whose index of all objects `index` is.
    pub fn all_index_type(&self, index: IndexId) -> Option<TypeId> {
        self.all_indices.get(&index).copied()
    }

    /// `schema.Type` of a type id.
    pub fn type_name(&self, ty: TypeId) -> Option<&str> {
        self.types.get(&ty).map(|(name, _)| name.as_str())
    }

    /// The type of an object, from its fields.
    pub fn type_of(&self, object: &ObjectData) -> Option<TypeId> {
        object
            .fields
            .iter()
            .find_map(|(f, _)| self.exists.get(f).copied())
    }

    /// The type a field id belongs to.
    pub fn field_type(&self, field: FieldId) -> Option<TypeId> {
        self.exists
            .get(&field)
            .copied()
            .or_else(|| self.fields.get(&field).map(|f| f.ty))
    }

    /// Whether a field id is a type's existence field.
    pub fn is_exists_field(&self, field: FieldId) -> bool {
        self.exists.contains_key(&field)
    }

    /// A field's name and decoded value.
    pub fn field(&self, field: FieldId, bytes: &[u8]) -> (String, Decoded) {
        match self.fields.get(&field) {
            Some(entry) => (entry.name.clone(), decode(entry.desc.as_ref(), bytes)),
            None => (
                format!("field#{}", field.0),
                raw(bytes, "unknown field".into()),
            ),
        }
    }

    /// The description of a type's field, by name.
    pub fn field_desc(&self, ty: &TypeInfo, name: &str) -> Option<&TypeDesc> {
        let f = ty.fields.iter().find(|f| f.name == name)?;
        self.fields.get(&f.id)?.desc.as_ref()
    }

    /// An index's name and decoded value: the tuple of its fields' values (one field: the
    /// value itself). `None` for a type's index of all objects.
    pub fn index(&self, index: IndexId, bytes: &[u8]) -> Option<(String, Decoded)> {
        let (ty, name, fields) = self.indices.get(&index)?;
        let info = &self.types.get(ty)?.1;
        let descs: Option<Vec<TypeDesc>> = fields
            .iter()
            .map(|f| self.field_desc(info, f).cloned())
            .collect();
        let desc = match descs {
            Some(mut one) if one.len() == 1 => one.pop(),
            Some(many) => Some(TypeDesc::Tuple(many)),
            None => None,
        };
        Some((name.clone(), decode(desc.as_ref(), bytes)))
    }

    /// Decodes an object's fields and index values.
    pub fn view(&self, object: &ObjectData) -> ObjectView {
        let type_name = self
            .type_of(object)
            .and_then(|t| self.type_name(t))
            .unwrap_or("?")
            .to_string();
        ObjectView {
            id: object.id.0,
            type_name,
            fields: object
                .fields
                .iter()
                .filter(|(f, _)| !self.is_exists_field(*f))
                .map(|(f, v)| self.field(*f, v))
                .collect(),
            indices: object
                .indices
                .iter()
                .filter_map(|(i, v)| self.index(*i, v))
                .collect(),
        }
    }
}

impl fmt::Display for Decoded {
    /// A decoded value as [`Value`] shows it; raw bytes in hex, followed by why they were not
    /// decoded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decoded::Value(v) => write!(f, "{v}"),
            Decoded::Raw { bytes, why } => {
                write!(f, "0x")?;
                for b in bytes {
                    write!(f, "{b:02x}")?;
                }
                write!(f, " ({why})")
            }
        }
    }
}

fn decode(desc: Option<&TypeDesc>, bytes: &[u8]) -> Decoded {
    match desc {
        None => raw(bytes, "no description".into()),
        Some(desc) => match decode_value(desc, bytes) {
            Ok(value) => Decoded::Value(value),
            Err(e) => raw(bytes, format!("does not decode as {desc}: {e}")),
        },
    }
}

fn raw(bytes: &[u8], why: String) -> Decoded {
    Decoded::Raw {
        bytes: bytes.to_vec(),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FieldInfo, IndexInfo, ObjectId};
    use bytes::Bytes;

    fn catalog() -> Catalog {
        let field = |name: &str, id, desc| FieldInfo {
            name: name.into(),
            id: FieldId(id),
            desc,
        };
        Catalog::new(vec![SchemaInfo {
            name: "shop".into(),
            types: vec![TypeInfo {
                name: "Item".into(),
                type_id: TypeId(1),
                exists_field: FieldId(10),
                all_index: IndexId(20),
                count: 1,
                fields: vec![
                    field("name", 11, Some(TypeDesc::String)),
                    field("count", 12, Some(TypeDesc::U64)),
                    field("blob", 13, None),
                ],
                indices: vec![IndexInfo {
                    name: "by_name".into(),
                    id: IndexId(21),
                    fields: vec!["name".into()],
                }],
            }],
        }])
    }

    fn bytes(value: &impl serde::Serialize) -> Bytes {
        crate::encode_exact(value).unwrap()
    }

    #[test]
    fn an_object_is_decoded_through_the_descriptions() {
        let catalog = catalog();
        let object = ObjectData {
            id: ObjectId(5),
            fields: vec![
                (FieldId(10), bytes(&true)),
                (FieldId(11), bytes(&"pen")),
                (FieldId(12), bytes(&3u64)),
                (FieldId(13), Bytes::from_static(&[0xab])),
            ],
            indices: vec![(IndexId(20), Bytes::new()), (IndexId(21), bytes(&"pen"))],
        };
        let view = catalog.view(&object);
        assert_eq!(view.type_name, "shop.Item");
        let shown: Vec<String> = view
            .fields
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        assert_eq!(
            shown,
            ["name=\"pen\"", "count=3", "blob=0xab (no description)"]
        );
        // The index of all objects is not an index value worth showing.
        assert_eq!(view.indices.len(), 1);
        assert_eq!(view.indices[0].0, "by_name");
        assert_eq!(catalog.all_index_type(IndexId(20)), Some(TypeId(1)));
        assert_eq!(catalog.all_index_type(IndexId(21)), None);
        assert!(catalog.type_named("shop.Item").is_some());
        assert!(catalog.type_named("shop.Nope").is_none());
    }

    #[test]
    fn bytes_that_do_not_fit_their_description_are_shown_raw() {
        let (name, value) = catalog().field(FieldId(12), &[0xff]);
        assert_eq!(name, "count");
        assert!(matches!(value, Decoded::Raw { .. }), "{value:?}");
        assert!(value
            .to_string()
            .starts_with("0xff (does not decode as u64"));
        let (name, _) = catalog().field(FieldId(99), &[]);
        assert_eq!(name, "field#99");
    }
}
