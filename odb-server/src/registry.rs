//! The schema registry: assigns type, field and index ids by name and remembers which type each
//! field and index belongs to.
//!
//! Identity is by name (schema, type, field or index name), so two clients declaring the same
//! schema share ids, and a client declaring an extra field simply adds it. Ids are never reused.

mod by_id;

use crate::storage::StoredDescription;
use crate::storage::{StoredIndex, StoredRegistry, StoredSchema, StoredType};
use by_id::ById;
use odb_wire::hash::FastMap;
use odb_wire::{FieldId, IndexId, SchemaDef, SchemaIds, TypeDesc, TypeId, TypeIds};
use std::collections::HashMap;

/// What the registry knows about one type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TypeInfo {
    /// The implicit field present on every live object of the type.
    pub exists_field: FieldId,
    /// The implicit index of all live objects of the type (every member has the empty value).
    pub all_index: IndexId,
}

#[derive(Clone, Default)]
struct TypeEntry {
    id: TypeId,
    fields: HashMap<String, FieldId>,
    indices: HashMap<String, (IndexId, Vec<String>)>,
}

/// All schemas defined so far.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    /// schema name -> type name -> type entry.
    schemas: HashMap<String, HashMap<String, TypeEntry>>,
    // Looked up for every write of every commit: indexed by the ids the registry assigns.
    types: ById<TypeId, TypeInfo>,
    field_type: ById<FieldId, TypeId>,
    index_type: ById<IndexId, TypeId>,
    next_type: u32,
    next_field: u32,
    next_index: u32,
    /// The latest description of each described field.
    descriptions: FastMap<FieldId, TypeDesc>,
    /// How many times a description was added or replaced, for [`Registry::generation`].
    description_changes: u32,
}

impl Registry {
    /// Merges a schema into the registry and returns its ids in request order.
    ///
    /// Fails, changing nothing, when an index is re-declared with another field list or covers a
    /// field its type does not have.
    pub fn define(&mut self, def: &SchemaDef) -> Result<SchemaIds, String> {
        self.check(def)?;
        let mut ids = SchemaIds {
            name: def.name.clone(),
            types: Vec::with_capacity(def.types.len()),
        };
        for ty in &def.types {
            let exists = self
                .schemas
                .get(&def.name)
                .is_some_and(|s| s.contains_key(&ty.name));
            if !exists {
                let id = TypeId(bump(&mut self.next_type));
                let info = TypeInfo {
                    exists_field: FieldId(bump(&mut self.next_field)),
                    all_index: IndexId(bump(&mut self.next_index)),
                };
                self.types.insert(id, info);
                self.field_type.insert(info.exists_field, id);
                self.index_type.insert(info.all_index, id);
                self.schemas.entry(def.name.clone()).or_default().insert(
                    ty.name.clone(),
                    TypeEntry {
                        id,
                        ..TypeEntry::default()
                    },
                );
            }
            let Some(entry) = self
                .schemas
                .get_mut(&def.name)
                .and_then(|s| s.get_mut(&ty.name))
            else {
                return Err(format!(
                    "type {}.{} vanished while being defined",
                    def.name, ty.name
                ));
            };
            let type_id = entry.id;
            let mut fields = Vec::with_capacity(ty.fields.len());
            for name in &ty.fields {
                let id = *entry.fields.entry(name.clone()).or_insert_with(|| {
                    let id = FieldId(bump(&mut self.next_field));
                    self.field_type.insert(id, type_id);
                    id
                });
                fields.push(id);
            }
            let mut indices = Vec::with_capacity(ty.indices.len());
            for index in &ty.indices {
                let (id, _) = entry.indices.entry(index.name.clone()).or_insert_with(|| {
                    let id = IndexId(bump(&mut self.next_index));
                    self.index_type.insert(id, type_id);
                    (id, index.fields.clone())
                });
                indices.push(*id);
            }
            let Some(info) = self.types.get(type_id) else {
                return Err(format!("type {}.{} has no ids", def.name, ty.name));
            };
            ids.types.push(TypeIds {
                type_id,
                exists_field: info.exists_field,
                all_index: info.all_index,
                fields,
                indices,
            });
        }
        Ok(ids)
    }

    /// Like [`Registry::define`], and records the descriptions of the fields' values:
    /// `descriptions[t][f]` describes field `f` of type `t` of `def`. A field keeps its latest
    /// description; fields without one in this request keep the one they have.
    pub fn define_described(
        &mut self,
        def: &SchemaDef,
        descriptions: &[Vec<TypeDesc>],
    ) -> Result<SchemaIds, String> {
        let ids = self.define(def)?;
        for (ty, described) in ids.types.iter().zip(descriptions) {
            for (field, desc) in ty.fields.iter().zip(described) {
                if self.descriptions.get(field) != Some(desc) {
                    self.descriptions.insert(*field, desc.clone());
                    self.description_changes = self.description_changes.wrapping_add(1);
                }
            }
        }
        Ok(ids)
    }

    /// The latest description of a field's values, if one was given.
    pub fn description(&self, field: FieldId) -> Option<&TypeDesc> {
        self.descriptions.get(&field)
    }

    /// Every schema with its types, fields (and their descriptions) and indices, sorted by
    /// name and ids; `count` gives the number of live objects of a type's "all" index.
    pub fn schema_infos(&self, count: impl Fn(IndexId) -> usize) -> Vec<odb_wire::SchemaInfo> {
        self.to_stored()
            .schemas
            .into_iter()
            .map(|schema| odb_wire::SchemaInfo {
                name: schema.name,
                types: schema
                    .types
                    .into_iter()
                    .map(|ty| odb_wire::TypeInfo {
                        count: count(ty.all_index) as u64,
                        name: ty.name,
                        type_id: ty.id,
                        exists_field: ty.exists_field,
                        all_index: ty.all_index,
                        fields: ty
                            .fields
                            .into_iter()
                            .map(|(name, id)| odb_wire::FieldInfo {
                                desc: self.description(id).cloned(),
                                name,
                                id,
                            })
                            .collect(),
                        indices: ty
                            .indices
                            .into_iter()
                            .map(|i| odb_wire::IndexInfo {
                                name: i.name,
                                id: i.id,
                                fields: i.fields,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The checks of [`Registry::define`], done before anything is changed.
    fn check(&self, def: &SchemaDef) -> Result<(), String> {
        // (type name, index name) -> fields, for indices declared twice in one request.
        let mut declared: HashMap<(&str, &str), &[String]> = HashMap::new();
        for ty in &def.types {
            let known = self.schemas.get(&def.name).and_then(|s| s.get(&ty.name));
            for index in &ty.indices {
                let previous = known
                    .and_then(|t| t.indices.get(&index.name))
                    .map(|(_, fields)| fields.as_slice())
                    .or_else(|| {
                        declared
                            .get(&(ty.name.as_str(), index.name.as_str()))
                            .copied()
                    });
                if let Some(previous) = previous {
                    if previous != index.fields.as_slice() {
                        return Err(format!(
                            "index {}.{}.{} is already defined on fields {:?}, not {:?}; \
                             give the new index another name",
                            def.name, ty.name, index.name, previous, index.fields
                        ));
                    }
                }
                declared.insert((ty.name.as_str(), index.name.as_str()), &index.fields);
                for field in &index.fields {
                    let has_field = ty.fields.contains(field)
                        || known.is_some_and(|t| t.fields.contains_key(field));
                    if !has_field {
                        return Err(format!(
                            "index {}.{}.{} covers field {field:?}, which type {} does not have",
                            def.name, ty.name, index.name, ty.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The registry as it is stored, in a stable order.
    pub fn to_stored(&self) -> StoredRegistry {
        let mut schemas: Vec<StoredSchema> = self
            .schemas
            .iter()
            .map(|(name, types)| {
                let mut types: Vec<StoredType> = types
                    .iter()
                    .filter_map(|(type_name, entry)| {
                        let info = self.types.get(entry.id)?;
                        let mut fields: Vec<(String, FieldId)> = entry
                            .fields
                            .iter()
                            .map(|(n, id)| (n.clone(), *id))
                            .collect();
                        fields.sort_by_key(|(_, id)| *id);
                        let mut indices: Vec<StoredIndex> = entry
                            .indices
                            .iter()
                            .map(|(n, (id, fields))| StoredIndex {
                                name: n.clone(),
                                id: *id,
                                fields: fields.clone(),
                            })
                            .collect();
                        indices.sort_by_key(|i| i.id);
                        Some(StoredType {
                            name: type_name.clone(),
                            id: entry.id,
                            exists_field: info.exists_field,
                            all_index: info.all_index,
                            fields,
                            indices,
                        })
                    })
                    .collect();
                types.sort_by_key(|t| t.id);
                StoredSchema {
                    name: name.clone(),
                    types,
                }
            })
            .collect();
        schemas.sort_by(|a, b| a.name.cmp(&b.name));
        let mut descriptions: Vec<StoredDescription> = self
            .descriptions
            .iter()
            .map(|(field, desc)| StoredDescription {
                field: *field,
                desc: desc.clone(),
            })
            .collect();
        descriptions.sort_by_key(|d| d.field);
        StoredRegistry {
            schemas,
            last_type: self.next_type,
            last_field: self.next_field,
            last_index: self.next_index,
            descriptions,
        }
    }

    /// Rebuilds a registry from its stored form. Fails if an id is used twice or a counter is
    /// behind an id it assigned.
    pub fn from_stored(stored: &StoredRegistry) -> Result<Registry, String> {
        let mut registry = Registry {
            next_type: stored.last_type,
            next_field: stored.last_field,
            next_index: stored.last_index,
            ..Registry::default()
        };
        for schema in &stored.schemas {
            for ty in &schema.types {
                let info = TypeInfo {
                    exists_field: ty.exists_field,
                    all_index: ty.all_index,
                };
                if ty.id.0 > stored.last_type || registry.types.insert(ty.id, info).is_some() {
                    return Err(format!(
                        "type id {} of {}.{} is invalid or used twice",
                        ty.id, schema.name, ty.name
                    ));
                }
                let mut entry = TypeEntry {
                    id: ty.id,
                    ..TypeEntry::default()
                };
                let fields =
                    std::iter::once(ty.exists_field).chain(ty.fields.iter().map(|(_, id)| *id));
                for id in fields {
                    if id.0 > stored.last_field || registry.field_type.insert(id, ty.id).is_some() {
                        return Err(format!(
                            "field id {id} of {}.{} is invalid or used twice",
                            schema.name, ty.name
                        ));
                    }
                }
                let indices = std::iter::once(ty.all_index).chain(ty.indices.iter().map(|i| i.id));
                for id in indices {
                    if id.0 > stored.last_index || registry.index_type.insert(id, ty.id).is_some() {
                        return Err(format!(
                            "index id {id} of {}.{} is invalid or used twice",
                            schema.name, ty.name
                        ));
                    }
                }
                entry.fields = ty.fields.iter().cloned().collect();
                entry.indices = ty
                    .indices
                    .iter()
                    .map(|i| (i.name.clone(), (i.id, i.fields.clone())))
                    .collect();
                registry
                    .schemas
                    .entry(schema.name.clone())
                    .or_default()
                    .insert(ty.name.clone(), entry);
            }
        }
        for d in &stored.descriptions {
            if registry.field_type.contains(d.field) {
                registry.descriptions.insert(d.field, d.desc.clone());
            }
        }
        Ok(registry)
    }

    /// A value that changes whenever the registry assigns a new id or a field's description
    /// changes.
    pub fn generation(&self) -> (u32, u32, u32, u32) {
        (
            self.next_type,
            self.next_field,
            self.next_index,
            self.description_changes,
        )
    }

    /// The type's implicit ids, if the type is known.
    pub fn type_info(&self, ty: TypeId) -> Option<TypeInfo> {
        self.types.get(ty)
    }

    /// The all-objects index of every type.
    pub fn all_indices(&self) -> impl Iterator<Item = IndexId> + '_ {
        self.types.values().map(|t| t.all_index)
    }

    /// The type a field belongs to, if the field is known.
    pub fn field_type(&self, field: FieldId) -> Option<TypeId> {
        self.field_type.get(field)
    }

    /// The type an index belongs to, if the index is known.
    pub fn index_type(&self, index: IndexId) -> Option<TypeId> {
        self.index_type.get(index)
    }

    /// The type whose existence field this is, if it is one.
    pub fn exists_field_type(&self, field: FieldId) -> Option<TypeId> {
        let ty = self.field_type(field)?;
        (self.types.get(ty)?.exists_field == field).then_some(ty)
    }
}

/// Returns the next id of a counter; ids start at 1 so that 0 is never a valid id.
fn bump(counter: &mut u32) -> u32 {
    *counter += 1;
    *counter
}

#[cfg(test)]
mod tests {
    use super::*;
    use odb_wire::{IndexDef, TypeDef};

    fn schema(fields: &[&str], indices: &[(&str, &[&str])]) -> SchemaDef {
        SchemaDef {
            name: "s".into(),
            types: vec![TypeDef {
                name: "T".into(),
                fields: fields.iter().map(|f| f.to_string()).collect(),
                indices: indices
                    .iter()
                    .map(|(n, fs)| IndexDef {
                        name: n.to_string(),
                        fields: fs.iter().map(|f| f.to_string()).collect(),
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn merges_by_name_and_adds_new_fields() {
        let mut reg = Registry::default();
        let a = reg
            .define(&schema(&["x", "y"], &[("by_x", &["x"])]))
            .unwrap();
        let b = reg
            .define(&schema(&["y", "z"], &[("by_x", &["x"])]))
            .unwrap();
        let (ta, tb) = (&a.types[0], &b.types[0]);
        assert_eq!(ta.type_id, tb.type_id);
        assert_eq!(ta.exists_field, tb.exists_field);
        assert_eq!(ta.all_index, tb.all_index);
        assert_eq!(ta.fields[1], tb.fields[0], "field y keeps its id");
        assert!(!ta.fields.contains(&tb.fields[1]), "field z is new");
        assert_eq!(ta.indices, tb.indices);
        assert_eq!(reg.field_type(tb.fields[1]), Some(tb.type_id));
        assert_eq!(reg.index_type(ta.indices[0]), Some(ta.type_id));
        assert_eq!(reg.exists_field_type(ta.exists_field), Some(ta.type_id));
        assert_eq!(reg.exists_field_type(ta.fields[0]), None);
    }

    #[test]
    fn index_redeclared_with_other_fields_fails_and_changes_nothing() {
        let mut reg = Registry::default();
        reg.define(&schema(&["x", "y"], &[("i", &["x"])])).unwrap();
        let err = reg
            .define(&schema(&["x", "y", "new"], &[("i", &["y"])]))
            .unwrap_err();
        assert!(err.contains("already defined"), "{err}");
        let again = reg.define(&schema(&["x", "y"], &[])).unwrap();
        assert_eq!(
            reg.field_type(FieldId(again.types[0].fields[1].0 + 1)),
            None
        );
    }

    #[test]
    fn stored_form_round_trips() {
        let mut reg = Registry::default();
        let a = reg
            .define(&schema(&["x", "y"], &[("by_x", &["x"])]))
            .unwrap();
        let stored = reg.to_stored();
        let mut back = Registry::from_stored(&stored).unwrap();
        assert_eq!(back.to_stored(), stored);
        let b = back
            .define(&schema(&["x", "y", "z"], &[("by_x", &["x"])]))
            .unwrap();
        assert_eq!(a.types[0].fields, b.types[0].fields[..2]);
        assert_eq!(a.types[0].indices, b.types[0].indices);
        assert!(back.field_type(b.types[0].fields[2]).is_some());
        assert!(reg.field_type(b.types[0].fields[2]).is_none());
    }

    #[test]
    fn descriptions_follow_the_latest_describing_definition() {
        let mut reg = Registry::default();
        let v1 = reg
            .define_described(&schema(&["x", "y"], &[]), &[vec![TypeDesc::U32]])
            .unwrap();
        let (x, y) = (v1.types[0].fields[0], v1.types[0].fields[1]);
        assert_eq!(reg.description(x), Some(&TypeDesc::U32));
        assert_eq!(reg.description(y), None, "no description given for y");
        let generation = reg.generation();

        // A client without descriptions changes nothing.
        reg.define(&schema(&["x", "y", "z"], &[])).unwrap();
        assert_eq!(reg.description(x), Some(&TypeDesc::U32));

        // A new version describes its fields; x keeps its id and takes the new description.
        let v2 = reg
            .define_described(
                &schema(&["x", "y"], &[]),
                &[vec![TypeDesc::U64, TypeDesc::String]],
            )
            .unwrap();
        assert_eq!(v2.types[0].fields[0], x);
        assert_eq!(reg.description(x), Some(&TypeDesc::U64));
        assert_eq!(reg.description(y), Some(&TypeDesc::String));
        assert_ne!(reg.generation(), generation, "the change is stored");

        let back = Registry::from_stored(&reg.to_stored()).unwrap();
        assert_eq!(back.description(y), Some(&TypeDesc::String));
        let infos = back.schema_infos(|_| 0);
        assert_eq!(infos[0].types[0].fields[1].desc, Some(TypeDesc::String));
    }

    #[test]
    fn index_over_unknown_field_fails() {
        let mut reg = Registry::default();
        let err = reg
            .define(&schema(&["x"], &[("i", &["nope"])]))
            .unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }
}
