//! A hand-written decoder for the largest message a client receives, a pushed commit
//! ([`ServerMessage::Commit`]).
//!
//! It reads the same bytes the serde decoder does, without serde's per-value error plumbing and
//! with every vector allocated once at its final size. It accepts nothing the serde decoder
//! rejects: anything unexpected makes it give up, and the caller then decodes with serde, which
//! reports the error.

use crate::message::{CommitData, FieldWrite, IndexWrite, ServerMessage};
use crate::{FieldId, IndexId, ObjectId, Tid};
use bytes::Bytes;
use std::sync::OnceLock;

/// Varint markers of bincode's standard configuration: values up to 250 are one byte; these
/// announce a little-endian u16, u32 or u64.
const U16_BYTE: u8 = 251;
const U32_BYTE: u8 = 252;
const U64_BYTE: u8 = 253;

/// The smallest encoding of a field or index write: object, field or index, and `None`.
const MIN_WRITE: usize = 3;

/// Decodes `payload` if it is a [`ServerMessage::Commit`]; `None` otherwise, or when anything
/// about it is unexpected.
pub(super) fn decode(payload: &[u8]) -> Option<ServerMessage> {
    let mut r = Reader { buf: payload };
    if r.byte()? != commit_tag()? {
        return None;
    }
    let tid = Tid(r.u64()?);
    let n = r.len(MIN_WRITE)?;
    let mut writes = Vec::with_capacity(n);
    for _ in 0..n {
        writes.push(FieldWrite {
            object: ObjectId(r.u64()?),
            field: FieldId(r.u32()?),
            value: r.option_bytes()?,
        });
    }
    let n = r.len(MIN_WRITE)?;
    let mut index_writes = Vec::with_capacity(n);
    for _ in 0..n {
        index_writes.push(IndexWrite {
            object: ObjectId(r.u64()?),
            index: IndexId(r.u32()?),
            value: r.option_bytes()?,
        });
    }
    let n = r.len(1)?;
    let mut deletes = Vec::with_capacity(n);
    for _ in 0..n {
        deletes.push(ObjectId(r.u64()?));
    }
    if !r.buf.is_empty() {
        return None;
    }
    Some(ServerMessage::Commit(CommitData {
        tid,
        writes,
        index_writes,
        deletes,
    }))
}

/// The first byte of an encoded [`ServerMessage::Commit`] (its variant index), taken from the
/// serde encoding itself so that it follows the enum's declaration.
fn commit_tag() -> Option<u8> {
    static TAG: OnceLock<Option<u8>> = OnceLock::new();
    *TAG.get_or_init(|| {
        let empty = super::encode(&ServerMessage::Commit(CommitData::default())).ok()?;
        empty.first().copied().filter(|&tag| tag < U16_BYTE)
    })
}

/// The unread part of a payload.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(first)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// A varint of at most `max` (the marker of the widest encoding the type allows).
    fn varint(&mut self, max: u8) -> Option<u64> {
        let first = self.byte()?;
        if first < U16_BYTE {
            return Some(u64::from(first));
        }
        if first > max {
            return None;
        }
        match first {
            U16_BYTE => Some(u64::from(u16::from_le_bytes(self.array()?))),
            U32_BYTE => Some(u64::from(u32::from_le_bytes(self.array()?))),
            U64_BYTE => Some(u64::from_le_bytes(self.array()?)),
            _ => None,
        }
    }

    fn u64(&mut self) -> Option<u64> {
        self.varint(U64_BYTE)
    }

    fn u32(&mut self) -> Option<u32> {
        self.varint(U32_BYTE).and_then(|v| u32::try_from(v).ok())
    }

    /// A sequence length, refused when the rest of the payload cannot hold that many items of
    /// at least `min_item` bytes (so nothing is allocated for a hostile length).
    fn len(&mut self, min_item: usize) -> Option<usize> {
        let len = usize::try_from(self.u64()?).ok()?;
        (len <= self.buf.len() / min_item).then_some(len)
    }

    fn option_bytes(&mut self) -> Option<Option<Bytes>> {
        match self.byte()? {
            0 => Some(None),
            1 => {
                let len = usize::try_from(self.u64()?).ok()?;
                Some(Some(Bytes::copy_from_slice(self.take(len)?)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ServerMessage {
        let big = Bytes::from(vec![7u8; 70_000]);
        ServerMessage::Commit(CommitData {
            tid: Tid(u64::MAX),
            writes: vec![
                FieldWrite {
                    object: ObjectId(1),
                    field: FieldId(u32::MAX),
                    value: Some(Bytes::new()),
                },
                FieldWrite {
                    object: ObjectId(300),
                    field: FieldId(70_000),
                    value: None,
                },
                FieldWrite {
                    object: ObjectId(1 << 40),
                    field: FieldId(2),
                    value: Some(big),
                },
            ],
            index_writes: vec![IndexWrite {
                object: ObjectId(250),
                index: IndexId(251),
                value: Some(Bytes::from_static(b"item-1")),
            }],
            deletes: vec![ObjectId(0), ObjectId(u64::MAX)],
        })
    }

    #[test]
    fn decodes_what_serde_encodes() {
        let msg = sample();
        let payload = super::super::encode(&msg).unwrap();
        assert_eq!(decode(&payload), Some(msg));
    }

    #[test]
    fn gives_up_on_other_messages_and_on_damaged_ones() {
        let other = ServerMessage::Heartbeat;
        assert_eq!(decode(&super::super::encode(&other).unwrap()), None);
        let payload = super::super::encode(&sample()).unwrap();
        for cut in 0..payload.len() {
            assert_eq!(decode(&payload[..cut]), None);
        }
        let mut trailing = payload.to_vec();
        trailing.push(0);
        assert_eq!(decode(&trailing), None);
    }

    #[test]
    fn a_field_id_wider_than_u32_is_refused() {
        let tag = commit_tag().unwrap();
        // Commit, tid 0, one write: object 1, field as a u64 varint.
        let mut payload = vec![tag, 0, 1, 1, U64_BYTE];
        payload.extend_from_slice(&(1u64 << 40).to_le_bytes());
        payload.extend_from_slice(&[0, 0, 0]);
        assert_eq!(decode(&payload), None);
        assert!(super::super::decode::<ServerMessage>(&payload).is_err());
    }
}
