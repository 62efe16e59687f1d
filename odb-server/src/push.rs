//! The message that pushes a commit to one connection: the parts of the commit its selection
//! holds.
//!
//! A large commit's push holds hundreds of thousands of entries. Rather than building its
//! `CommitData` (an allocation per entry, and tens of megabytes of fresh memory for a bulk
//! commit), [`encode_commit`] serializes a view that walks the selection, giving the same bytes
//! as encoding `ServerMessage::Commit` with the `CommitData` that `commit_data` (kept for the tests) builds.

use crate::store::{Applied, Store};
use crate::subscriptions::{Part, Selection};
use bytes::Bytes;
use odb_wire::{CodecError, CommitData, FieldId, IndexId, ObjectId, ServerMessage};
#[cfg(test)]
use odb_wire::{FieldWrite, IndexWrite};
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};
use std::sync::OnceLock;

/// One entry of a push message.
enum Item<'a> {
    Field(ObjectId, FieldId, Option<&'a [u8]>),
    Index(ObjectId, IndexId, Option<&'a [u8]>),
    Delete(ObjectId),
}

/// Calls `f` with every entry of the message for `selection`, in message order.
fn items<'a>(
    selection: &Selection,
    applied: &'a Applied,
    store: &'a Store,
    mut f: impl FnMut(Item<'a>),
) {
    for &(id, part) in selection {
        match part {
            Part::Deleted => f(Item::Delete(id)),
            Part::Full => {
                let Some(record) = store.record(id) else {
                    continue;
                };
                for (field, v) in record.fields() {
                    f(Item::Field(id, field, Some(v)));
                }
                for (i, v) in record.indices() {
                    f(Item::Index(id, i, Some(v)));
                }
            }
            Part::Changes => {
                let (Some(record), Some(old)) = (
                    store.record(id),
                    applied.get(id).and_then(|t| t.before.as_ref()),
                ) else {
                    continue;
                };
                for (field, v) in record.written_at(applied.tid) {
                    f(Item::Field(id, field, v));
                }
                let (old, new) = (old.indices(), record.indices());
                for (i, v) in new.clone() {
                    if !old.clone().any(|m| m == (i, v)) {
                        f(Item::Index(id, i, Some(v)));
                    }
                }
                for (i, _) in old {
                    if !new.clone().any(|(ni, _)| ni == i) {
                        f(Item::Index(id, i, None));
                    }
                }
            }
        }
    }
}

/// Builds the message body for a selection. Its values are copied into one buffer, which they
/// share. [`encode_commit`] encodes the same message without building it.
#[cfg(test)]
pub(crate) fn commit_data(selection: &Selection, applied: &Applied, store: &Store) -> CommitData {
    let (mut writes, mut index_writes, mut deletes, mut len) = (0, 0, 0, 0);
    items(selection, applied, store, |item| match item {
        Item::Field(_, _, v) => {
            writes += 1;
            len += v.map_or(0, <[u8]>::len);
        }
        Item::Index(_, _, v) => {
            index_writes += 1;
            len += v.map_or(0, <[u8]>::len);
        }
        Item::Delete(_) => deletes += 1,
    });
    let mut buffer = Vec::with_capacity(len);
    items(selection, applied, store, |item| {
        if let Item::Field(_, _, Some(v)) | Item::Index(_, _, Some(v)) = item {
            buffer.extend_from_slice(v);
        }
    });
    let buffer = Bytes::from(buffer);
    let mut data = CommitData {
        tid: applied.tid,
        writes: Vec::with_capacity(writes),
        index_writes: Vec::with_capacity(index_writes),
        deletes: Vec::with_capacity(deletes),
    };
    let mut at = 0;
    let mut value = |v: Option<&[u8]>| {
        let v = v?;
        let end = (at + v.len()).min(buffer.len());
        let slice = buffer.slice(at.min(end)..end);
        at = end;
        Some(slice)
    };
    items(selection, applied, store, |item| match item {
        Item::Field(object, field, v) => data.writes.push(FieldWrite {
            object,
            field,
            value: value(v),
        }),
        Item::Index(object, index, v) => data.index_writes.push(IndexWrite {
            object,
            index,
            value: value(v),
        }),
        Item::Delete(object) => data.deletes.push(object),
    });
    data
}

/// How many entries of each kind a selection's message has.
#[derive(Clone, Copy, Default)]
struct Counts {
    writes: usize,
    index_writes: usize,
    deletes: usize,
}

/// The message body for a selection, serialized as `CommitData` is.
struct View<'a> {
    selection: &'a Selection,
    applied: &'a Applied,
    store: &'a Store,
    counts: Counts,
}

/// A value, serialized as `Bytes` is.
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// One field write, serialized as `FieldWrite` is.
struct FieldEntry<'a>(ObjectId, FieldId, Option<&'a [u8]>);

impl Serialize for FieldEntry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("FieldWrite", 3)?;
        st.serialize_field("object", &self.0)?;
        st.serialize_field("field", &self.1)?;
        st.serialize_field("value", &self.2.map(Raw))?;
        st.end()
    }
}

/// One index write, serialized as `IndexWrite` is.
struct IndexEntry<'a>(ObjectId, IndexId, Option<&'a [u8]>);

impl Serialize for IndexEntry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("IndexWrite", 3)?;
        st.serialize_field("object", &self.0)?;
        st.serialize_field("index", &self.1)?;
        st.serialize_field("value", &self.2.map(Raw))?;
        st.end()
    }
}

/// Which entries of the message a [`Seq`] serializes.
#[derive(Clone, Copy)]
enum Kind {
    Writes,
    IndexWrites,
    Deletes,
}

/// One of the message's lists, serialized as a `Vec` is.
struct Seq<'a> {
    view: &'a View<'a>,
    kind: Kind,
}

impl Serialize for Seq<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let View {
            selection,
            applied,
            store,
            counts,
        } = self.view;
        let len = match self.kind {
            Kind::Writes => counts.writes,
            Kind::IndexWrites => counts.index_writes,
            Kind::Deletes => counts.deletes,
        };
        let mut seq = s.serialize_seq(Some(len))?;
        // The first error stops the walk and is returned.
        let mut failed = None;
        items(selection, applied, store, |item| {
            if failed.is_some() {
                return;
            }
            let done = match (self.kind, item) {
                (Kind::Writes, Item::Field(o, f, v)) => seq.serialize_element(&FieldEntry(o, f, v)),
                (Kind::IndexWrites, Item::Index(o, i, v)) => {
                    seq.serialize_element(&IndexEntry(o, i, v))
                }
                (Kind::Deletes, Item::Delete(o)) => seq.serialize_element(&o),
                _ => Ok(()),
            };
            failed = done.err();
        });
        match failed {
            Some(e) => Err(e),
            None => seq.end(),
        }
    }
}

impl Serialize for View<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("CommitData", 4)?;
        st.serialize_field("tid", &self.applied.tid)?;
        for (name, kind) in [
            ("writes", Kind::Writes),
            ("index_writes", Kind::IndexWrites),
            ("deletes", Kind::Deletes),
        ] {
            st.serialize_field(name, &Seq { view: self, kind })?;
        }
        st.end()
    }
}

/// The push message: the view as the content of `ServerMessage::Commit`.
struct Message<'a> {
    variant: u32,
    view: View<'a>,
}

impl Serialize for Message<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_variant("ServerMessage", self.variant, "Commit", &self.view)
    }
}

/// The variant index of `ServerMessage::Commit`, found once by comparing encodings.
static VARIANT: OnceLock<Option<u32>> = OnceLock::new();

/// Empty `CommitData`, as the content of variant `variant` of `ServerMessage`.
struct Probe(u32);

impl Serialize for Probe {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_variant("ServerMessage", self.0, "Commit", &CommitData::default())
    }
}

fn commit_variant() -> Result<u32, CodecError> {
    let variant = VARIANT.get_or_init(|| {
        let expected = odb_wire::encode(&ServerMessage::Commit(CommitData::default())).ok()?;
        (0..256).find(|&v| odb_wire::encode(&Probe(v)).ok().as_ref() == Some(&expected))
    });
    variant.ok_or_else(|| CodecError::Encode("cannot find how a commit message is encoded".into()))
}

/// Encodes the push of `applied` for a selection: the same bytes as encoding
/// `ServerMessage::Commit(commit_data(selection, applied, store))`.
pub(crate) fn encode_commit(
    selection: &Selection,
    applied: &Applied,
    store: &Store,
) -> Result<Bytes, CodecError> {
    let mut counts = Counts::default();
    items(selection, applied, store, |item| match item {
        Item::Field(..) => counts.writes += 1,
        Item::Index(..) => counts.index_writes += 1,
        Item::Delete(_) => counts.deletes += 1,
    });
    odb_wire::encode(&Message {
        variant: commit_variant()?,
        view: View {
            selection,
            applied,
            store,
            counts,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use odb_wire::{CommitRequest, IndexDef, SchemaDef, Tid, TypeDef};

    fn b(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn encodes_the_same_bytes_as_the_built_message() {
        let mut registry = Registry::default();
        let ids = registry
            .define(&SchemaDef {
                name: "s".into(),
                types: vec![TypeDef {
                    name: "T".into(),
                    fields: vec!["a".into(), "b".into()],
                    indices: vec![IndexDef {
                        name: "by_a".into(),
                        fields: vec!["a".into()],
                    }],
                }],
            })
            .unwrap();
        let t = &ids.types[0];
        let (a, bf, by_a) = (t.fields[0], t.fields[1], t.indices[0]);
        let create = |o: u64, v: &str| {
            let o = ObjectId(o);
            (
                vec![
                    FieldWrite {
                        object: o,
                        field: t.exists_field,
                        value: b(""),
                    },
                    FieldWrite {
                        object: o,
                        field: a,
                        value: b(v),
                    },
                ],
                IndexWrite {
                    object: o,
                    index: by_a,
                    value: b(v),
                },
            )
        };
        let mut store = Store::default();
        let mut first = CommitRequest::default();
        for o in 1..=3 {
            let (writes, index) = create(o, &format!("v{o}"));
            first.writes.extend(writes);
            first.index_writes.push(index);
        }
        store.commit(&registry, &first).unwrap();
        let (writes, index) = create(4, "four");
        let mut second = CommitRequest {
            base_tid: Tid(1),
            writes,
            index_writes: vec![index],
            deletes: vec![ObjectId(2)],
            ..CommitRequest::default()
        };
        second.writes.push(FieldWrite {
            object: ObjectId(1),
            field: bf,
            value: b("new"),
        });
        second.writes.push(FieldWrite {
            object: ObjectId(1),
            field: a,
            value: None,
        });
        second.index_writes.push(IndexWrite {
            object: ObjectId(1),
            index: by_a,
            value: None,
        });
        let applied = store.commit(&registry, &second).unwrap();
        let selection = vec![
            (ObjectId(1), Part::Changes),
            (ObjectId(2), Part::Deleted),
            (ObjectId(4), Part::Full),
        ];
        for selection in [selection.clone(), selection[..1].to_vec(), Vec::new()] {
            let data = commit_data(&selection, &applied, &store);
            let expected = odb_wire::encode(&ServerMessage::Commit(data)).unwrap();
            let encoded = encode_commit(&selection, &applied, &store).unwrap();
            assert_eq!(encoded, expected);
        }
        let data = commit_data(&selection, &applied, &store);
        assert_eq!(data.deletes, [ObjectId(2)]);
        assert!(data.writes.contains(&FieldWrite {
            object: ObjectId(1),
            field: a,
            value: None
        }));
        assert!(data.writes.contains(&FieldWrite {
            object: ObjectId(1),
            field: bf,
            value: b("new")
        }));
        assert!(data.index_writes.contains(&IndexWrite {
            object: ObjectId(1),
            index: by_a,
            value: None
        }));
        assert!(data.index_writes.contains(&IndexWrite {
            object: ObjectId(4),
            index: by_a,
            value: b("four")
        }));
    }
}
