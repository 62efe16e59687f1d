//! Objects' complete data encoded once, back to back, for the chunks of a subscription's initial
//! data ([`ServerMessage::SubscriptionData`](crate::ServerMessage::SubscriptionData)).
//!
//! The server writes each object straight from its store into one buffer, instead of building
//! an [`ObjectData`] per object (two vectors and an allocation per value), and a chunk's frame is
//! then the message's header followed by a slice of that buffer. The bytes are exactly those of
//! encoding the message with serde, which a property test checks.

use super::commit::{subscription_data_tag, U16_BYTE};
use super::push::varint;
use super::CodecError;
use crate::{FieldId, IndexId, ObjectData, ObjectId, RequestId};
use bytes::Bytes;
use std::ops::Range;

/// Objects' data, each encoded as an [`ObjectData`] is, one after the other.
#[derive(Debug, Default, Clone)]
pub struct EncodedObjects {
    buf: Vec<u8>,
    /// Where each object's encoding ends in `buf`.
    ends: Vec<usize>,
}

impl EncodedObjects {
    /// An empty list.
    pub fn new() -> EncodedObjects {
        EncodedObjects::default()
    }

    /// Appends one object: its id, fields with a value, and index memberships.
    pub fn push<'v>(
        &mut self,
        id: ObjectId,
        fields: impl IntoIterator<Item = (FieldId, &'v [u8])>,
        indices: impl IntoIterator<Item = (IndexId, &'v [u8])>,
    ) {
        varint(&mut self.buf, id.0);
        self.list(fields.into_iter().map(|(f, v)| (f.0, v)));
        self.list(indices.into_iter().map(|(i, v)| (i.0, v)));
        self.ends.push(self.buf.len());
    }

    /// Appends one object given as [`ObjectData`].
    pub fn push_data(&mut self, data: &ObjectData) {
        let fields = data.fields.iter().map(|(f, v)| (*f, &v[..]));
        let indices = data.indices.iter().map(|(i, v)| (*i, &v[..]));
        self.push(data.id, fields, indices);
    }

    /// A length-prefixed list of `(id, value)` pairs, its length written once it is known.
    fn list<'v>(&mut self, items: impl Iterator<Item = (u32, &'v [u8])>) {
        let at = self.buf.len();
        self.buf.push(0);
        let mut count = 0u64;
        for (id, value) in items {
            varint(&mut self.buf, u64::from(id));
            varint(&mut self.buf, value.len() as u64);
            self.buf.extend_from_slice(value);
            count += 1;
        }
        match u8::try_from(count) {
            Ok(small) if small < U16_BYTE => self.buf[at] = small,
            _ => {
                let mut wide = Vec::with_capacity(9);
                varint(&mut wide, count);
                self.buf.splice(at..=at, wide);
            }
        }
    }

    /// The encodings, back to back.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// How many objects the list holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the list holds no object.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Where the encodings of the objects of `range` lie in the buffer.
    fn span(&self, range: Range<usize>) -> Option<Range<usize>> {
        let offset = |i: usize| match i {
            0 => Some(0),
            i => self.ends.get(i - 1).copied(),
        };
        let (start, end) = (offset(range.start)?, offset(range.end)?);
        (start <= end).then_some(start..end)
    }

    /// The encoded size of object `i`, in bytes (0 when there is no such object).
    pub fn size(&self, i: usize) -> usize {
        self.span(i..i + 1).map_or(0, |span| span.len())
    }

    /// The `SubscriptionData` message answering `request_id` with the objects of `range`.
    pub fn chunk(&self, request_id: RequestId, range: Range<usize>) -> Result<Bytes, CodecError> {
        let tag = subscription_data_tag().ok_or_else(|| {
            CodecError::Encode("cannot find how subscription data is encoded".into())
        })?;
        let span = self
            .span(range.clone())
            .ok_or_else(|| CodecError::Encode(format!("no objects {range:?} to encode")))?;
        let mut out = Vec::with_capacity(20 + span.len());
        out.push(tag);
        varint(&mut out, request_id.0);
        varint(&mut out, range.len() as u64);
        out.extend_from_slice(&self.buf[span]);
        Ok(Bytes::from(out))
    }
}

impl FromIterator<ObjectData> for EncodedObjects {
    fn from_iter<I: IntoIterator<Item = ObjectData>>(objects: I) -> EncodedObjects {
        let mut encoded = EncodedObjects::new();
        for data in objects {
            encoded.push_data(&data);
        }
        encoded
    }
}

impl From<Vec<ObjectData>> for EncodedObjects {
    fn from(objects: Vec<ObjectData>) -> EncodedObjects {
        objects.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServerMessage;

    #[test]
    fn chunks_are_what_serde_encodes() {
        let many: Vec<(FieldId, Bytes)> = (0..300)
            .map(|f| (FieldId(f * 1000), Bytes::from(vec![f as u8; f as usize])))
            .collect();
        let objects = vec![
            ObjectData {
                id: ObjectId(1 << 40),
                fields: many,
                indices: vec![(IndexId(1), Bytes::new())],
            },
            ObjectData {
                id: ObjectId(7),
                fields: vec![(FieldId(0), Bytes::new())],
                indices: vec![],
            },
            ObjectData {
                id: ObjectId(250),
                fields: vec![],
                indices: vec![(IndexId(u32::MAX), Bytes::from(vec![9; 70_000]))],
            },
        ];
        let mut encoded = EncodedObjects::new();
        for data in &objects {
            encoded.push_data(data);
        }
        assert_eq!(encoded.len(), 3);
        for range in [0..3, 0..1, 1..3, 2..3, 1..1] {
            let expected = ServerMessage::SubscriptionData {
                request_id: RequestId(1 << 20),
                objects: objects[range.clone()].to_vec().into(),
            };
            let chunk = encoded.chunk(RequestId(1 << 20), range).unwrap();
            assert_eq!(chunk, super::super::encode(&expected).unwrap());
        }
        let sizes: usize = (0..3).map(|i| encoded.size(i)).sum();
        assert_eq!(sizes, encoded.buf.len());
        assert!(encoded.chunk(RequestId(1), 2..4).is_err());
        assert_eq!(encoded.size(3), 0);
    }
}
