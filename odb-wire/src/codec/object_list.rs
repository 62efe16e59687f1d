//! A subscription chunk's objects as they arrived ([`ObjectList`]): the bytes of the frame,
//! checked once when the frame is decoded and read in place afterwards.
//!
//! Decoding every object into an [`ObjectData`] costs two vectors and a shared-buffer handle
//! per value; a client that subscribes to a large type holds all of them until the
//! subscription completes, only to copy each object into its replica. Reading the objects
//! where they lie in the frame skips all of that.

use super::commit::Reader;
use super::objects::EncodedObjects;
use crate::{FieldId, IndexId, ObjectData, ObjectId};
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The objects of one `SubscriptionData` chunk, encoded one after the other as [`ObjectData`]
/// is. Built from a checked frame or from [`ObjectData`]s, so reading it cannot fail. Two lists
/// are equal when they hold the same objects, however their numbers were written (a peer may
/// use a longer form than needed, which the decoder accepts).
#[derive(Clone, Default)]
pub struct ObjectList {
    bytes: Bytes,
    len: usize,
}

impl ObjectList {
    /// How many objects the list holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list holds no object.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The objects, read in place.
    pub fn iter(&self) -> ObjectRefs<'_> {
        ObjectRefs {
            reader: Reader::new(&self.bytes),
            left: self.len,
        }
    }

    /// The objects as owned [`ObjectData`]; their values share the list's buffer.
    pub fn to_vec(&self) -> Vec<ObjectData> {
        let value = |v: &[u8]| self.bytes.slice_ref(v);
        self.iter()
            .map(|o| ObjectData {
                id: o.id,
                fields: o.fields().map(|(f, v)| (f, value(v))).collect(),
                indices: o.indices().map(|(i, v)| (i, value(v))).collect(),
            })
            .collect()
    }

    /// Reads the `len` objects at the start of `reader`'s bytes, checking each; `None` if they
    /// are malformed. With `shared`, the frame the bytes lie in, the list shares its buffer.
    pub(super) fn read(
        reader: &mut Reader<'_>,
        len: usize,
        shared: Option<&Bytes>,
    ) -> Option<ObjectList> {
        let start = reader.rest();
        for _ in 0..len {
            read_object(reader)?;
        }
        let used = start.get(..start.len() - reader.rest().len())?;
        let bytes = match shared {
            Some(frame) => frame.slice_ref(used),
            None => Bytes::copy_from_slice(used),
        };
        Some(ObjectList { bytes, len })
    }
}

impl From<Vec<ObjectData>> for ObjectList {
    fn from(objects: Vec<ObjectData>) -> ObjectList {
        let encoded = EncodedObjects::from(objects);
        ObjectList {
            len: encoded.len(),
            bytes: Bytes::from(encoded.into_bytes()),
        }
    }
}

impl FromIterator<ObjectData> for ObjectList {
    fn from_iter<I: IntoIterator<Item = ObjectData>>(objects: I) -> ObjectList {
        objects.into_iter().collect::<Vec<_>>().into()
    }
}

impl IntoIterator for ObjectList {
    type Item = ObjectData;
    type IntoIter = std::vec::IntoIter<ObjectData>;

    fn into_iter(self) -> Self::IntoIter {
        self.to_vec().into_iter()
    }
}

impl<'a> IntoIterator for &'a ObjectList {
    type Item = ObjectRef<'a>;
    type IntoIter = ObjectRefs<'a>;

    fn into_iter(self) -> ObjectRefs<'a> {
        self.iter()
    }
}

impl PartialEq for ObjectList {
    fn eq(&self, other: &ObjectList) -> bool {
        self.len == other.len
            && self.iter().zip(other.iter()).all(|(a, b)| {
                a.id == b.id && a.fields().eq(b.fields()) && a.indices().eq(b.indices())
            })
    }
}

impl Eq for ObjectList {}

impl fmt::Debug for ObjectList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_vec()).finish()
    }
}

/// Encoded exactly as the `Vec<ObjectData>` it stands for.
impl Serialize for ObjectList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_vec().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ObjectList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ObjectList, D::Error> {
        Vec::<ObjectData>::deserialize(deserializer).map(ObjectList::from)
    }
}

/// The objects of an [`ObjectList`], in order.
#[derive(Clone)]
pub struct ObjectRefs<'a> {
    reader: Reader<'a>,
    left: usize,
}

impl<'a> Iterator for ObjectRefs<'a> {
    type Item = ObjectRef<'a>;

    fn next(&mut self) -> Option<ObjectRef<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let object = read_object(&mut self.reader);
        if object.is_none() {
            // Not reached: the list was checked when it was built.
            self.left = 0;
        }
        object
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for ObjectRefs<'_> {}

/// One object of an [`ObjectList`]: its id, fields with a value and index memberships.
#[derive(Clone, Copy, Debug)]
pub struct ObjectRef<'a> {
    /// The object.
    pub id: ObjectId,
    fields: Pairs<'a>,
    indices: Pairs<'a>,
}

impl<'a> ObjectRef<'a> {
    /// Every field that has a value (including the existence field).
    pub fn fields(&self) -> impl Iterator<Item = (FieldId, &'a [u8])> + Clone + 'a {
        self.fields.map(|(f, v)| (FieldId(f), v))
    }

    /// Every index the object is a member of, with its value.
    pub fn indices(&self) -> impl Iterator<Item = (IndexId, &'a [u8])> + Clone + 'a {
        self.indices.map(|(i, v)| (IndexId(i), v))
    }
}

/// A checked list of `(id, value)` pairs.
#[derive(Clone, Copy, Debug)]
struct Pairs<'a> {
    buf: &'a [u8],
    left: usize,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (u32, &'a [u8]);

    fn next(&mut self) -> Option<(u32, &'a [u8])> {
        if self.left == 0 {
            return None;
        }
        let mut reader = Reader::new(self.buf);
        let pair = read_pair(&mut reader);
        self.buf = reader.rest();
        self.left = if pair.is_some() { self.left - 1 } else { 0 };
        pair
    }
}

fn read_pair<'a>(reader: &mut Reader<'a>) -> Option<(u32, &'a [u8])> {
    Some((reader.u32()?, reader.value()?))
}

/// Reads a list of pairs, checking each.
fn read_pairs<'a>(reader: &mut Reader<'a>) -> Option<Pairs<'a>> {
    let left = reader.len(2)?;
    let buf = reader.rest();
    for _ in 0..left {
        read_pair(reader)?;
    }
    Some(Pairs { buf, left })
}

fn read_object<'a>(reader: &mut Reader<'a>) -> Option<ObjectRef<'a>> {
    let id = ObjectId(reader.u64()?);
    let fields = read_pairs(reader)?;
    let indices = read_pairs(reader)?;
    Some(ObjectRef {
        id,
        fields,
        indices,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Two objects with wide ids, an empty and a long value, and an empty index value.
    pub(in crate::codec) fn sample() -> Vec<ObjectData> {
        vec![
            ObjectData {
                id: ObjectId(1 << 40),
                fields: vec![
                    (FieldId(0), Bytes::new()),
                    (FieldId(70_000), Bytes::from(vec![3u8; 300])),
                ],
                indices: vec![(IndexId(2), Bytes::from_static(b"item-1"))],
            },
            ObjectData {
                id: ObjectId(2),
                fields: vec![],
                indices: vec![(IndexId(u32::MAX), Bytes::new())],
            },
        ]
    }

    #[test]
    fn reads_back_what_it_was_built_from() {
        let list = ObjectList::from(sample());
        assert_eq!(list.len(), 2);
        assert_eq!(list.to_vec(), sample());
        let ids: Vec<_> = list.iter().map(|o| o.id).collect();
        assert_eq!(ids, [ObjectId(1 << 40), ObjectId(2)]);
        let second = list.iter().nth(1).map(|o| o.indices().collect::<Vec<_>>());
        assert_eq!(second, Some(vec![(IndexId(u32::MAX), &b""[..])]));
        assert!(ObjectList::default().iter().next().is_none());
    }

    #[test]
    fn lists_are_equal_by_their_objects_not_their_bytes() {
        // Object 5 with no fields and no indices, its id written as a u16 and then as one byte.
        let mut reader = Reader::new(&[251, 5, 0, 0, 0]);
        let long = ObjectList::read(&mut reader, 1, None);
        let short = ObjectList::from(vec![ObjectData {
            id: ObjectId(5),
            fields: vec![],
            indices: vec![],
        }]);
        assert_eq!(long.as_ref(), Some(&short));
        assert_ne!(short, ObjectList::default());
    }

    #[test]
    fn encodes_as_the_vector_it_stands_for() {
        let list = ObjectList::from(sample());
        let ours = crate::codec::encode(&list).unwrap();
        assert_eq!(ours, crate::codec::encode(&sample()).unwrap());
        let back: ObjectList = crate::codec::decode(&ours).unwrap();
        assert_eq!(back, list);
    }
}
