//! The message that pushes a commit to one connection: the parts of the commit its selection
//! holds.
//!
//! A large commit's push holds hundreds of thousands of entries. Rather than building its
//! `CommitData` (an allocation per entry, and tens of megabytes of fresh memory for a bulk
//! commit), [`encode_commit`] walks the selection and lets odb-wire's push encoder (the owner of
//! the byte format) write each entry, giving the same bytes as encoding `ServerMessage::Commit`
//! with the `CommitData` that `commit_data` (kept for the tests) builds.

use crate::subscriptions::{Current, Part, Selection};
use bytes::Bytes;
use odb_wire::{CodecError, FieldId, IndexId, ObjectId, PushEntry, Tid};
#[cfg(test)]
use odb_wire::{CommitData, FieldWrite, IndexWrite};

/// One entry of a push message.
enum Item<'a> {
    Field(ObjectId, FieldId, Option<&'a [u8]>),
    Index(ObjectId, IndexId, Option<&'a [u8]>),
    Delete(ObjectId),
}

/// The object of `current` with this id, looked for from `*at` on: a selection lists a
/// subsequence of `current`, in the same order, so the whole walk takes one pass.
fn find<'c, 'a>(
    current: &'c [Current<'a>],
    at: &mut usize,
    id: ObjectId,
) -> Option<&'c Current<'a>> {
    let rest = current.get(*at..).unwrap_or_default();
    let p = match rest.iter().position(|c| c.id == id) {
        Some(p) => *at + p,
        None => current.binary_search_by_key(&id, |c| c.id).ok()?,
    };
    *at = p + 1;
    current.get(p)
}

/// Calls `f` with every entry of the message for `selection` of the commit at `tid`, whose
/// touched objects are `current`, in message order.
fn items<'a>(
    selection: &Selection,
    current: &[Current<'a>],
    tid: Tid,
    mut f: impl FnMut(Item<'a>),
) {
    let mut at = 0;
    for &(id, part) in selection {
        let Some(object) = find(current, &mut at, id) else {
            continue;
        };
        match part {
            Part::Deleted => f(Item::Delete(id)),
            Part::Full => {
                let Some(record) = object.record else {
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
                let (Some(record), Some(old)) = (object.record, object.touched.before.as_ref())
                else {
                    continue;
                };
                for (field, v) in record.written_at(tid) {
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

/// Smallest estimate [`size_hint`] makes room for. A smaller push's buffer grows as it is
/// written, as it always did: a queued message keeps its whole allocation, and room reserved
/// for a small one is a large share of it (queues of stalled readers grew past their limits by
/// a third with every push sized this way).
const HINT_FROM: usize = 64 * 1024;

/// About how many bytes the push of `selection` takes, when that is at least [`HINT_FROM`]
/// (else 0): half again the size of the records it sends whole, more than most pushes need,
/// so that a large push's buffer (a bulk load's, made of new objects) is made once rather than
/// grown by doubling (copying it and touching fresh memory at each step). Objects sent as
/// changes count nothing: a small write to a large object would otherwise reserve room for all
/// of it.
fn size_hint(selection: &Selection, current: &[Current<'_>]) -> usize {
    let mut at = 0;
    let records: usize = selection
        .iter()
        .filter_map(|&(id, part)| match part {
            // A deletion is one object id: at most 9 bytes.
            Part::Deleted => Some(9),
            Part::Changes => None,
            Part::Full => find(current, &mut at, id)?.record.map(|r| r.size()),
        })
        .sum();
    let hint = records.saturating_add(records / 2);
    if hint >= HINT_FROM {
        hint
    } else {
        0
    }
}

/// Builds the message body for a selection. Its values are copied into one buffer, which they
/// share. [`encode_commit`] encodes the same message without building it.
#[cfg(test)]
pub(crate) fn commit_data(selection: &Selection, current: &[Current<'_>], tid: Tid) -> CommitData {
    let (mut writes, mut index_writes, mut deletes, mut len) = (0, 0, 0, 0);
    items(selection, current, tid, |item| match item {
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
    items(selection, current, tid, |item| {
        if let Item::Field(_, _, Some(v)) | Item::Index(_, _, Some(v)) = item {
            buffer.extend_from_slice(v);
        }
    });
    let buffer = Bytes::from(buffer);
    let mut data = CommitData {
        tid,
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
    items(selection, current, tid, |item| match item {
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

/// Encodes the push of the commit at `tid` for a selection of its touched objects `current`:
/// the same bytes as encoding `ServerMessage::Commit(commit_data(selection, current, tid))`,
/// written by odb-wire's push encoder straight from the store's records.
pub(crate) fn encode_commit(
    selection: &Selection,
    current: &[Current<'_>],
    tid: Tid,
) -> Result<Bytes, CodecError> {
    odb_wire::encode_commit_push(tid, size_hint(selection, current), |sink| {
        items(selection, current, tid, |item| {
            sink(match item {
                Item::Field(o, f, v) => PushEntry::Field(o, f, v),
                Item::Index(o, i, v) => PushEntry::Index(o, i, v),
                Item::Delete(o) => PushEntry::Delete(o),
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use crate::store::Store;
    use crate::subscriptions::current;
    use odb_wire::{CommitRequest, IndexDef, SchemaDef, ServerMessage, TypeDef};

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
        let current = current(&applied, &store);
        let tid = applied.tid;
        let later = selection[1..].to_vec();
        for selection in [
            selection.clone(),
            selection[..1].to_vec(),
            later,
            Vec::new(),
        ] {
            let data = commit_data(&selection, &current, tid);
            let expected = odb_wire::encode(&ServerMessage::Commit(data)).unwrap();
            let encoded = encode_commit(&selection, &current, tid).unwrap();
            assert_eq!(encoded, expected);
        }
        let data = commit_data(&selection, &current, tid);
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
