//! The compact form in which the store keeps a live object: one heap buffer holding its type,
//! every field value with the tid of the field's last write, and every index value.
//!
//! The buffer starts with the type id, the number of field slots, the number of index slots and
//! the length of the slot table (all LEB128 varints), followed by the slot table and then the
//! values, in slot order. A field slot is its id, the tid of its last write and its value length plus one (zero:
//! the field has no value, but its last write, a removal, is still remembered); an index slot is
//! its id and its value length. Slots are sorted by id. Objects are small, so reading a field is a
//! short linear scan, and a commit rebuilds each object it touches once.

use bytes::Bytes;
use odb_wire::{FieldId, IndexId, Tid, TypeId};

/// One live object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Obj {
    data: Box<[u8]>,
}

/// Buffers reused while building objects.
#[derive(Default)]
pub(super) struct Scratch {
    table: Vec<u8>,
    values: Vec<u8>,
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

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// How many bytes [`put`] writes for `v`.
fn put_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a varint; the buffers are written by [`put`] only, so a short read yields zero.
fn get(data: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    while let Some(&b) = data.get(*pos) {
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    v
}

/// Iterates the slots of an object: fields first, then indices.
#[derive(Clone)]
struct Slots<'a> {
    data: &'a [u8],
    fields_left: u64,
    indices_left: u64,
    slot: usize,
    value: usize,
}

enum Slot<'a> {
    Field(FieldSlot<'a>),
    Index(IndexId, &'a [u8]),
}

impl<'a> Iterator for Slots<'a> {
    type Item = Slot<'a>;

    fn next(&mut self) -> Option<Slot<'a>> {
        if self.fields_left > 0 {
            self.fields_left -= 1;
            let id = FieldId(get(self.data, &mut self.slot) as u32);
            let stamp = Tid(get(self.data, &mut self.slot));
            let len = get(self.data, &mut self.slot) as usize;
            let value = if len == 0 {
                None
            } else {
                let start = self.value;
                self.value += len - 1;
                Some(self.data.get(start..self.value).unwrap_or_default())
            };
            return Some(Slot::Field(FieldSlot { id, stamp, value }));
        }
        if self.indices_left > 0 {
            self.indices_left -= 1;
            let id = IndexId(get(self.data, &mut self.slot) as u32);
            let len = get(self.data, &mut self.slot) as usize;
            let start = self.value;
            self.value += len;
            return Some(Slot::Index(
                id,
                self.data.get(start..self.value).unwrap_or_default(),
            ));
        }
        None
    }
}

impl Obj {
    /// Builds an object from its field slots and index values, each sorted by id.
    pub(super) fn build<'a>(
        ty: TypeId,
        fields: impl Iterator<Item = (FieldId, Tid, Src<'a>)>,
        indices: impl Iterator<Item = (IndexId, &'a [u8])>,
    ) -> Obj {
        Obj::build_in(&mut Scratch::default(), ty, fields, indices)
    }

    /// [`Obj::build`] with reused buffers: the slots are read once, into `scratch`, and the
    /// object's buffer is allocated once, at its exact size.
    pub(super) fn build_in<'a>(
        scratch: &mut Scratch,
        ty: TypeId,
        fields: impl Iterator<Item = (FieldId, Tid, Src<'a>)>,
        indices: impl Iterator<Item = (IndexId, &'a [u8])>,
    ) -> Obj {
        let Scratch { table, values } = scratch;
        table.clear();
        values.clear();
        let (mut field_count, mut index_count) = (0u64, 0u64);
        for (id, stamp, src) in fields {
            field_count += 1;
            put(table, u64::from(id.0));
            put(table, stamp.0);
            match src {
                Src::Absent => put(table, 0),
                Src::Value(v) => {
                    put(table, v.len() as u64 + 1);
                    values.extend_from_slice(v);
                }
            }
        }
        for (id, v) in indices {
            index_count += 1;
            put(table, u64::from(id.0));
            put(table, v.len() as u64);
            values.extend_from_slice(v);
        }
        let total = put_len(u64::from(ty.0))
            + put_len(field_count)
            + put_len(index_count)
            + put_len(table.len() as u64)
            + table.len()
            + values.len();
        let mut data = Vec::with_capacity(total);
        put(&mut data, u64::from(ty.0));
        put(&mut data, field_count);
        put(&mut data, index_count);
        put(&mut data, table.len() as u64);
        data.extend_from_slice(table);
        data.extend_from_slice(values);
        debug_assert_eq!(data.len(), total);
        Obj {
            data: data.into_boxed_slice(),
        }
    }

    /// A plain object: every field written at `stamp`.
    pub(crate) fn from_plain(
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
            ty,
            fields.iter().map(|(f, v)| (*f, stamp, Src::Value(v))),
            indices.iter().copied(),
        )
    }

    /// Its type.
    pub fn ty(&self) -> TypeId {
        TypeId(get(&self.data, &mut 0) as u32)
    }

    fn slots(&self) -> Slots<'_> {
        let mut pos = 0;
        get(&self.data, &mut pos);
        let fields_left = get(&self.data, &mut pos);
        let indices_left = get(&self.data, &mut pos);
        let table = get(&self.data, &mut pos) as usize;
        Slots {
            data: &self.data,
            fields_left,
            indices_left,
            slot: pos,
            value: pos + table,
        }
    }

    /// Every field slot, including removed fields whose last write is remembered.
    pub(super) fn field_slots(&self) -> impl Iterator<Item = FieldSlot<'_>> + Clone + '_ {
        self.slots().map_while(|s| match s {
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
        self.slots().filter_map(|s| match s {
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
        let o = Obj::build(TypeId(3), fields.iter().copied(), indices.iter().copied());
        assert_eq!(
            o.fields().collect::<Vec<_>>(),
            vec![(FieldId(1), &b""[..]), (FieldId(700), &b"hello"[..])]
        );
        assert_eq!(o.field_stamp(FieldId(2)), Some(Tid(300)));
        assert_eq!(o.field(FieldId(2)), None);
        assert_eq!(o.field_stamp(FieldId(700)), Some(Tid(u64::MAX)));
        assert_eq!(o.index(IndexId(9)), Some(&b"key"[..]));
        assert_eq!(o.indices().count(), 2);
        assert_eq!(o.ty(), TypeId(3));
        let big = Obj::build(TypeId(u32::MAX), fields.iter().copied(), [].into_iter());
        assert_eq!(big.ty(), TypeId(u32::MAX));
        assert_eq!(big.field(FieldId(700)), Some(&b"hello"[..]));
    }

    #[test]
    fn put_len_matches_put() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put(&mut out, v);
            assert_eq!(put_len(v), out.len(), "{v}");
        }
    }
}
