//! The compact form in which the store keeps a live object: one heap buffer holding its id and
//! type, every field value with the tid of the field's last write, and every index value.
//!
//! The buffer starts with the object id, the type id, the length in bytes of the field slots and
//! the object's stamp, the newest tid of its fields' last writes (all LEB128 varints), followed
//! by the slots, fields first, each sorted by id; the index slots run to the end of the buffer.
//! The length lets index lookups, the most frequent reads of a record in a commit, start at the
//! first index slot without decoding the fields, and takes no more room than the two slot
//! counts it replaced would. A field slot is its id and a tag, then the tid
//! of its last write if that is not the object's stamp, then its value. The tag is twice the
//! value length plus one (zero: the field has no value, but its last write, a removal, is still
//! remembered), plus one if the tid follows. Most fields were last written with the object's
//! newest write (all of them, after the object is created), so most take no tid. An index
//! slot is its id and a tag: an even tag is twice the value's length, and the value follows; an
//! odd tag is twice the length plus one, and the value is the same bytes as a field value, whose
//! offset from the first slot follows. A single-field index has the field's bytes as its value,
//! so it takes two bytes instead of a second copy. Objects are small, so reading a field is a
//! short linear scan, and a commit rebuilds each object it touches once.

use bytes::Bytes;
use odb_wire::leb128::{get, put, put_len};
use odb_wire::{FieldId, IndexId, ObjectId, Tid, TypeId};

/// One live object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Obj {
    data: Box<[u8]>,
}

/// Buffers reused while building objects.
#[derive(Default)]
pub(super) struct Scratch {
    slots: Vec<u8>,
    values: Vec<(usize, usize)>,
}

impl Scratch {
    /// Bytes the buffers hold allocated.
    pub(super) fn capacity_bytes(&self) -> usize {
        self.slots.capacity() + self.values.capacity() * std::mem::size_of::<(usize, usize)>()
    }
}

/// Where a value being assembled into an [`Obj`] comes from.
#[derive(Clone, Copy, Debug)]
pub(super) enum Src<'a> {
    /// No value (a field that was removed).
    Absent,
    /// A value.
    Value(&'a [u8]),
}

/// One field slot of an object.
#[derive(Clone, Copy, Debug)]
pub(super) struct FieldSlot<'a> {
    pub id: FieldId,
    pub stamp: Tid,
    pub value: Option<&'a [u8]>,
}

/// Iterates the slots of an object: fields first, then indices.
#[derive(Clone)]
struct Slots<'a> {
    data: &'a [u8],
    /// Where the slots start: offsets of index values count from here.
    base: usize,
    /// The stamp of the fields that do not have their own.
    stamp: Tid,
    /// Where the field slots end and the index slots begin.
    fields_end: usize,
    /// Where the iteration ends: the end of the buffer, or `fields_end` for fields only.
    end: usize,
    pos: usize,
}

enum Slot<'a> {
    Field(FieldSlot<'a>),
    Index(IndexId, &'a [u8]),
}

impl<'a> Slots<'a> {
    /// The `len` bytes at `start`.
    fn bytes(&self, start: usize, len: usize) -> &'a [u8] {
        self.data
            .get(start..start.saturating_add(len))
            .unwrap_or_default()
    }
}

impl<'a> Iterator for Slots<'a> {
    type Item = Slot<'a>;

    fn next(&mut self) -> Option<Slot<'a>> {
        if self.pos >= self.end {
            return None;
        }
        if self.pos < self.fields_end {
            let id = FieldId(get(self.data, &mut self.pos) as u32);
            let tag = get(self.data, &mut self.pos);
            let stamp = if tag % 2 == 1 {
                Tid(get(self.data, &mut self.pos))
            } else {
                self.stamp
            };
            let len = (tag / 2) as usize;
            let value = if len == 0 {
                None
            } else {
                let value = self.bytes(self.pos, len - 1);
                self.pos += len - 1;
                Some(value)
            };
            return Some(Slot::Field(FieldSlot { id, stamp, value }));
        }
        let id = IndexId(get(self.data, &mut self.pos) as u32);
        let tag = get(self.data, &mut self.pos) as usize;
        let len = tag / 2;
        let value = if tag % 2 == 1 {
            let at = get(self.data, &mut self.pos) as usize;
            self.bytes(self.base.saturating_add(at), len)
        } else {
            let value = self.bytes(self.pos, len);
            self.pos += len;
            value
        };
        Some(Slot::Index(id, value))
    }
}

impl Obj {
    /// Builds an object from its field slots and index values, each sorted by id.
    pub(super) fn build<'a>(
        id: ObjectId,
        ty: TypeId,
        fields: impl Iterator<Item = (FieldId, Tid, Src<'a>)> + Clone,
        indices: impl Iterator<Item = (IndexId, &'a [u8])>,
    ) -> Obj {
        let newest = fields.clone().map(|(_, stamp, _)| stamp).max();
        let newest = newest.unwrap_or_default();
        Obj::build_in(&mut Scratch::default(), id, ty, newest, fields, indices)
    }

    /// [`Obj::build`] with reused buffers and the object's stamp given: the fields whose last
    /// write is `newest` take no tid of their own (any tid is correct; the newest one makes the
    /// record smallest). The slots are written once, into `scratch`, and the object's buffer
    /// is allocated once, at its exact size.
    pub(super) fn build_in<'a>(
        scratch: &mut Scratch,
        id: ObjectId,
        ty: TypeId,
        newest: Tid,
        fields: impl Iterator<Item = (FieldId, Tid, Src<'a>)>,
        indices: impl Iterator<Item = (IndexId, &'a [u8])>,
    ) -> Obj {
        let Scratch { slots, values } = scratch;
        slots.clear();
        values.clear();
        // Field values as (offset in `slots`, length), for index values to point at.
        for (id, stamp, src) in fields {
            put(slots, u64::from(id.0));
            let len = match src {
                Src::Absent => 0,
                Src::Value(v) => v.len() as u64 + 1,
            };
            let own = stamp != newest;
            put(slots, 2 * len + u64::from(own));
            if own {
                put(slots, stamp.0);
            }
            if let Src::Value(v) = src {
                values.push((slots.len(), v.len()));
                slots.extend_from_slice(v);
            }
        }
        let fields_len = slots.len() as u64;
        for (id, v) in indices {
            put(slots, u64::from(id.0));
            let tag = 2 * v.len() as u64;
            let same = values
                .iter()
                .find(|&&(at, len)| len == v.len() && slots.get(at..at + len) == Some(v));
            match same {
                Some(&(at, _)) if put_len(at as u64) < v.len() => {
                    put(slots, tag + 1);
                    put(slots, at as u64);
                }
                _ => {
                    put(slots, tag);
                    slots.extend_from_slice(v);
                }
            }
        }
        let mut data = Vec::with_capacity(
            put_len(id.0)
                + put_len(u64::from(ty.0))
                + put_len(fields_len)
                + put_len(newest.0)
                + slots.len(),
        );
        put(&mut data, id.0);
        put(&mut data, u64::from(ty.0));
        put(&mut data, fields_len);
        put(&mut data, newest.0);
        data.extend_from_slice(slots);
        Obj {
            data: data.into_boxed_slice(),
        }
    }

    /// A plain object: every field written at `stamp`.
    pub(crate) fn from_plain(
        id: ObjectId,
        ty: TypeId,
        fields: &[(FieldId, Bytes)],
        indices: &[(IndexId, Bytes)],
        stamp: Tid,
    ) -> Obj {
        let mut fields: Vec<(FieldId, &[u8])> = fields.iter().map(|(f, v)| (*f, &v[..])).collect();
        fields.sort_by_key(|(f, _)| *f);
        fields.dedup_by_key(|(f, _)| *f);
        let mut indices: Vec<(IndexId, &[u8])> =
            indices.iter().map(|(i, v)| (*i, &v[..])).collect();
        indices.sort_by_key(|(i, _)| *i);
        indices.dedup_by_key(|(i, _)| *i);
        Obj::build(
            id,
            ty,
            fields.iter().map(|(f, v)| (*f, stamp, Src::Value(v))),
            indices.iter().copied(),
        )
    }

    /// Bytes of the record's buffer.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// Its id.
    pub fn id(&self) -> ObjectId {
        ObjectId(get(&self.data, &mut 0))
    }

    /// Its type.
    pub fn ty(&self) -> TypeId {
        let mut pos = 0;
        get(&self.data, &mut pos);
        TypeId(get(&self.data, &mut pos) as u32)
    }

    /// The object's stamp: the newest tid of its fields' last writes when it was built.
    pub(super) fn stamp(&self) -> Tid {
        self.slots().stamp
    }

    /// Every slot, fields first.
    #[inline]
    fn slots(&self) -> Slots<'_> {
        let mut pos = 0;
        get(&self.data, &mut pos);
        get(&self.data, &mut pos);
        let fields_len = get(&self.data, &mut pos) as usize;
        let stamp = Tid(get(&self.data, &mut pos));
        Slots {
            data: &self.data,
            base: pos,
            stamp,
            fields_end: pos.saturating_add(fields_len),
            end: self.data.len(),
            pos,
        }
    }

    /// Every field slot, including removed fields whose last write is remembered.
    pub(super) fn field_slots(&self) -> impl Iterator<Item = FieldSlot<'_>> + Clone + '_ {
        let mut slots = self.slots();
        slots.end = slots.fields_end;
        slots.map_while(|s| match s {
            Slot::Field(f) => Some(f),
            Slot::Index(..) => None,
        })
    }

    /// The fields that have a value, sorted by field id.
    pub fn fields(&self) -> impl Iterator<Item = (FieldId, &[u8])> + '_ {
        self.field_slots()
            .filter_map(|s| s.value.map(|v| (s.id, v)))
    }

    /// The fields last written at `tid`, with their values (`None`: removed), sorted by field
    /// id.
    pub fn written_at(&self, tid: Tid) -> impl Iterator<Item = (FieldId, Option<&[u8]>)> + '_ {
        self.field_slots()
            .filter(move |s| s.stamp == tid)
            .map(|s| (s.id, s.value))
    }

    /// The value of one field.
    pub fn field(&self, field: FieldId) -> Option<&[u8]> {
        self.field_slots()
            .find(|s| s.id == field)
            .and_then(|s| s.value)
    }

    /// The tid of the last write of a field still remembered by the object.
    pub(super) fn field_stamp(&self, field: FieldId) -> Option<Tid> {
        self.field_slots().find(|s| s.id == field).map(|s| s.stamp)
    }

    /// Index memberships with their values, sorted by index id.
    pub fn indices(&self) -> impl Iterator<Item = (IndexId, &[u8])> + Clone + '_ {
        let mut slots = self.slots();
        slots.pos = slots.fields_end;
        slots.filter_map(|s| match s {
            Slot::Field(_) => None,
            Slot::Index(i, v) => Some((i, v)),
        })
    }

    /// The value of one index membership.
    pub fn index(&self, index: IndexId) -> Option<&[u8]> {
        self.indices().find(|(i, _)| *i == index).map(|(_, v)| v)
    }

    /// Index memberships as owned values, sorted by index id.
    pub fn index_list(&self) -> Vec<(IndexId, Bytes)> {
        self.indices()
            .map(|(i, v)| (i, Bytes::copy_from_slice(v)))
            .collect()
    }

    /// Fields with a value as owned values, sorted by field id.
    pub fn field_list(&self) -> Vec<(FieldId, Bytes)> {
        self.fields()
            .map(|(f, v)| (f, Bytes::copy_from_slice(v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let fields = [
            (FieldId(1), Tid(5), Src::Value(b"")),
            (FieldId(2), Tid(300), Src::Absent),
            (FieldId(700), Tid(u64::MAX), Src::Value(b"hello")),
        ];
        let indices: [(IndexId, &[u8]); 2] = [(IndexId(1), b""), (IndexId(9), b"key")];
        let o = Obj::build(
            ObjectId(1),
            TypeId(3),
            fields.iter().copied(),
            indices.iter().copied(),
        );
        assert_eq!(
            o.fields().collect::<Vec<_>>(),
            vec![(FieldId(1), &b""[..]), (FieldId(700), &b"hello"[..])]
        );
        assert_eq!(o.field_stamp(FieldId(2)), Some(Tid(300)));
        assert_eq!(o.field(FieldId(2)), None);
        assert_eq!(o.field_stamp(FieldId(700)), Some(Tid(u64::MAX)));
        assert_eq!(o.index(IndexId(9)), Some(&b"key"[..]));
        assert_eq!(o.indices().count(), 2);
        assert_eq!((o.id(), o.ty()), (ObjectId(1), TypeId(3)));
        let big = Obj::build(
            ObjectId(1),
            TypeId(u32::MAX),
            fields.iter().copied(),
            [].into_iter(),
        );
        assert_eq!(big.ty(), TypeId(u32::MAX));
        assert_eq!(big.field(FieldId(700)), Some(&b"hello"[..]));
    }

    #[test]
    fn fields_written_with_the_newest_write_take_no_tid() {
        let newest = Tid(1_000_000);
        let fields = |t2: Tid| {
            [
                (FieldId(1), newest, Src::Value(&b"a"[..])),
                (FieldId(2), t2, Src::Value(&b"b"[..])),
                (FieldId(3), newest, Src::Absent),
            ]
        };
        let same = Obj::build(
            ObjectId(1),
            TypeId(1),
            fields(newest).into_iter(),
            [].into_iter(),
        );
        let older = Obj::build(
            ObjectId(1),
            TypeId(1),
            fields(Tid(7)).into_iter(),
            [].into_iter(),
        );
        // Id, type, the fields' length and the three-byte stamp; then id, tag and value of
        // each slot.
        assert_eq!(same.size(), 3 + 3 + (3 + 3 + 2));
        assert_eq!(older.size(), same.size() + 1, "one field keeps its own tid");
        assert_eq!(older.field_stamp(FieldId(2)), Some(Tid(7)));
        assert_eq!(older.field_stamp(FieldId(3)), Some(newest));
        assert_eq!(same.field_stamp(FieldId(2)), Some(newest));
        assert_eq!(older.field(FieldId(2)), Some(&b"b"[..]));
        assert_eq!(older.written_at(newest).count(), 2);
    }

    #[test]
    fn an_index_value_equal_to_a_field_value_points_at_it() {
        let key = b"item-00000001";
        let fields = [
            (FieldId(1), Tid(5), Src::Value(&b""[..])),
            (FieldId(2), Tid(5), Src::Value(&key[..])),
            (FieldId(3), Tid(5), Src::Value(&b"x"[..])),
        ];
        let indices: [(IndexId, &[u8]); 4] = [
            (IndexId(1), b""),
            (IndexId(2), key),
            (IndexId(3), b"x"),
            (IndexId(4), b"item-00000002"),
        ];
        let o = Obj::build(
            ObjectId(1),
            TypeId(3),
            fields.iter().copied(),
            indices.iter().copied(),
        );
        assert_eq!(o.indices().collect::<Vec<_>>(), indices);
        assert_eq!(o.field(FieldId(2)), Some(&key[..]));
        let without = Obj::build(
            ObjectId(1),
            TypeId(3),
            fields.iter().copied(),
            indices[..1].iter().copied(),
        );
        // The copy takes its id, tag and offset; "x" is as short as an offset, and stays.
        assert_eq!(o.data.len(), without.data.len() + 3 + 3 + 15);
    }

    #[test]
    fn many_slots_and_long_values() {
        let long: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let values: Vec<Vec<u8>> = (0..300u32)
            .map(|i| {
                let mut v = long[..(i as usize * 7) % 1000].to_vec();
                v.push(i as u8);
                v
            })
            .collect();
        let fields: Vec<(FieldId, Tid, Src<'_>)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (FieldId(i as u32), Tid(i as u64 * 1000), Src::Value(&v[..])))
            .collect();
        let indices: Vec<(IndexId, &[u8])> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (IndexId(i as u32), &v[..]))
            .collect();
        let o = Obj::build(
            ObjectId(1),
            TypeId(9),
            fields.iter().copied(),
            indices.iter().copied(),
        );
        assert_eq!(o.ty(), TypeId(9));
        assert_eq!(o.indices().collect::<Vec<_>>(), indices);
        for (i, v) in values.iter().enumerate() {
            assert_eq!(o.field(FieldId(i as u32)), Some(&v[..]));
            assert_eq!(o.field_stamp(FieldId(i as u32)), Some(Tid(i as u64 * 1000)));
        }
    }
}
