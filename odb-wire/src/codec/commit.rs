//! A hand-written decoder for the largest messages: the pushed commit and the subscription data
//! a client receives ([`ServerMessage::Commit`], [`ServerMessage::SubscriptionData`]) and the
//! commit request a server receives ([`ClientMessage::Commit`]).
//!
//! It reads the same bytes the serde decoder does, without serde's per-value error plumbing and
//! with every vector allocated once at its final size. Given the frame as [`Bytes`], the values
//! it returns share the frame's buffer instead of being copied one allocation each. It accepts
//! nothing the serde decoder rejects: anything unexpected makes it give up, and the caller then
//! decodes with serde, which reports the error.

use super::object_list::ObjectList;
use crate::message::{
    ClientMessage, CommitData, CommitRequest, FieldWrite, IndexWrite, ServerMessage,
};
use crate::{CommitId, FieldId, IndexId, ObjectId, RequestId, Tid};
use bytes::Bytes;
use std::sync::OnceLock;

/// Varint markers of bincode's standard configuration: values up to 250 are one byte; these
/// announce a little-endian u16, u32 or u64.
pub(super) const U16_BYTE: u8 = 251;
pub(super) const U32_BYTE: u8 = 252;
pub(super) const U64_BYTE: u8 = 253;
const U128_BYTE: u8 = 254;

/// The smallest encoding of a field or index write: object, field or index, and `None`.
const MIN_WRITE: usize = 3;

/// Decodes `payload` if it is a [`ServerMessage::Commit`]; `None` otherwise, or when anything
/// about it is unexpected.
/// With `shared`, the frame `payload` is, values share its buffer.
pub(super) fn decode(payload: &[u8], shared: Option<&Bytes>) -> Option<ServerMessage> {
    let mut r = Reader {
        buf: payload,
        shared,
    };
    let tag = r.byte()?;
    if tag == subscription_data_tag()? {
        return r.subscription_data();
    }
    if tag != server_commit_tag()? {
        return None;
    }
    let tid = Tid(r.u64()?);
    let writes = r.writes()?;
    let index_writes = r.index_writes()?;
    let deletes = r.deletes()?;
    r.end()?;
    Some(ServerMessage::Commit(CommitData {
        tid,
        writes,
        index_writes,
        deletes,
    }))
}

/// Decodes `payload` if it is a [`ClientMessage::Commit`]; `None` otherwise, or when anything
/// about it is unexpected.
/// With `shared`, the frame `payload` is, values share its buffer.
pub(super) fn decode_request(payload: &[u8], shared: Option<&Bytes>) -> Option<ClientMessage> {
    let mut r = Reader {
        buf: payload,
        shared,
    };
    if r.byte()? != client_commit_tag()? {
        return None;
    }
    let request_id = RequestId(r.u64()?);
    let base_tid = Tid(r.u64()?);
    let writes = r.writes()?;
    let index_writes = r.index_writes()?;
    let deletes = r.deletes()?;
    let n = r.len(2)?;
    let mut reads = Vec::with_capacity(n);
    for _ in 0..n {
        reads.push((ObjectId(r.u64()?), FieldId(r.u32()?)));
    }
    let n = r.len(2)?;
    let mut index_reads = Vec::with_capacity(n);
    for _ in 0..n {
        index_reads.push((IndexId(r.u32()?), r.bytes()?));
    }
    let commit_id = r.commit_id()?;
    r.end()?;
    Some(ClientMessage::Commit {
        request_id,
        commit: CommitRequest {
            base_tid,
            writes,
            index_writes,
            deletes,
            reads,
            index_reads,
            commit_id,
        },
    })
}

/// The first byte of an encoded [`ServerMessage::Commit`] (its variant index), taken from the
/// serde encoding itself so that it follows the enum's declaration.
pub(super) fn server_commit_tag() -> Option<u8> {
    static TAG: OnceLock<Option<u8>> = OnceLock::new();
    *TAG.get_or_init(|| first_byte(&ServerMessage::Commit(CommitData::default())))
}

/// The first byte of an encoded [`ServerMessage::SubscriptionData`], as [`server_commit_tag`].
pub(super) fn subscription_data_tag() -> Option<u8> {
    static TAG: OnceLock<Option<u8>> = OnceLock::new();
    *TAG.get_or_init(|| {
        first_byte(&ServerMessage::SubscriptionData {
            request_id: RequestId(0),
            objects: ObjectList::default(),
        })
    })
}

/// The first byte of an encoded [`ClientMessage::Commit`], as [`server_commit_tag`].
pub(super) fn client_commit_tag() -> Option<u8> {
    static TAG: OnceLock<Option<u8>> = OnceLock::new();
    *TAG.get_or_init(|| {
        first_byte(&ClientMessage::Commit {
            request_id: RequestId(0),
            commit: CommitRequest::default(),
        })
    })
}

/// The first byte of a message's encoding, when it is a one-byte variant index.
fn first_byte<T: serde::Serialize>(msg: &T) -> Option<u8> {
    let bytes = super::encode(msg).ok()?;
    bytes.first().copied().filter(|&tag| tag < U16_BYTE)
}

/// The unread part of a payload.
#[derive(Clone)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    /// The whole frame `buf` lies in, when values may share it.
    shared: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    /// Reads `buf`, whose values are copied out when taken as [`Bytes`].
    pub(super) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, shared: None }
    }

    /// What is left to read.
    pub(super) fn rest(&self) -> &'a [u8] {
        self.buf
    }

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

    pub(super) fn u64(&mut self) -> Option<u64> {
        self.varint(U64_BYTE)
    }

    fn u128(&mut self) -> Option<u128> {
        if self.buf.first() == Some(&U128_BYTE) {
            self.byte()?;
            return Some(u128::from_le_bytes(self.array()?));
        }
        self.varint(U64_BYTE).map(u128::from)
    }

    /// An optional commit id: `None` is one zero byte, `Some` a one and the id.
    fn commit_id(&mut self) -> Option<Option<CommitId>> {
        match self.byte()? {
            0 => Some(None),
            1 => Some(Some(CommitId {
                session: self.u128()?,
                seq: self.u64()?,
            })),
            _ => None,
        }
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.varint(U32_BYTE).and_then(|v| u32::try_from(v).ok())
    }

    /// A sequence length, refused when the rest of the payload cannot hold that many items of
    /// at least `min_item` bytes (so nothing is allocated for a hostile length).
    pub(super) fn len(&mut self, min_item: usize) -> Option<usize> {
        let len = usize::try_from(self.u64()?).ok()?;
        (len <= self.buf.len() / min_item).then_some(len)
    }

    /// A length-prefixed value, in place.
    pub(super) fn value(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u64()?).ok()?;
        self.take(len)
    }

    fn bytes(&mut self) -> Option<Bytes> {
        let value = self.value()?;
        Some(match self.shared {
            Some(frame) => frame.slice_ref(value),
            None => Bytes::copy_from_slice(value),
        })
    }

    /// The rest of a [`ServerMessage::SubscriptionData`] after its tag. The objects are
    /// checked here and read in place later (see [`ObjectList`]).
    fn subscription_data(&mut self) -> Option<ServerMessage> {
        let request_id = RequestId(self.u64()?);
        // An object is at least its id and two empty lists.
        let n = self.len(3)?;
        let shared = self.shared;
        let objects = ObjectList::read(self, n, shared)?;
        self.end()?;
        Some(ServerMessage::SubscriptionData {
            request_id,
            objects,
        })
    }

    fn option_bytes(&mut self) -> Option<Option<Bytes>> {
        match self.byte()? {
            0 => Some(None),
            1 => Some(Some(self.bytes()?)),
            _ => None,
        }
    }

    fn writes(&mut self) -> Option<Vec<FieldWrite>> {
        let n = self.len(MIN_WRITE)?;
        let mut writes = Vec::with_capacity(n);
        for _ in 0..n {
            writes.push(FieldWrite {
                object: ObjectId(self.u64()?),
                field: FieldId(self.u32()?),
                value: self.option_bytes()?,
            });
        }
        Some(writes)
    }

    fn index_writes(&mut self) -> Option<Vec<IndexWrite>> {
        let n = self.len(MIN_WRITE)?;
        let mut writes = Vec::with_capacity(n);
        for _ in 0..n {
            writes.push(IndexWrite {
                object: ObjectId(self.u64()?),
                index: IndexId(self.u32()?),
                value: self.option_bytes()?,
            });
        }
        Some(writes)
    }

    fn deletes(&mut self) -> Option<Vec<ObjectId>> {
        let n = self.len(1)?;
        let mut deletes = Vec::with_capacity(n);
        for _ in 0..n {
            deletes.push(ObjectId(self.u64()?));
        }
        Some(deletes)
    }

    /// Succeeds when the whole payload was read.
    fn end(&self) -> Option<()> {
        self.buf.is_empty().then_some(())
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
        assert_eq!(decode(&payload, None), Some(msg));
    }

    #[test]
    fn decodes_the_commit_requests_serde_encodes() {
        let ServerMessage::Commit(data) = sample() else {
            unreachable!()
        };
        let msg = ClientMessage::Commit {
            request_id: RequestId(1 << 33),
            commit: CommitRequest {
                base_tid: Tid(251),
                writes: data.writes,
                index_writes: data.index_writes,
                deletes: data.deletes,
                reads: vec![(ObjectId(9), FieldId(70_000))],
                index_reads: vec![
                    (IndexId(1), Bytes::new()),
                    (IndexId(2), Bytes::from_static(b"x")),
                ],
                commit_id: Some(CommitId {
                    session: u128::MAX - 7,
                    seq: 1 << 40,
                }),
            },
        };
        let payload = super::super::encode(&msg).unwrap();
        assert_eq!(decode_request(&payload, None), Some(msg));
        for cut in 0..payload.len() {
            assert_eq!(decode_request(&payload[..cut], None), None);
        }
        assert_eq!(decode(&payload, None), None);
    }

    #[test]
    fn gives_up_on_other_messages_and_on_damaged_ones() {
        let other = ServerMessage::Heartbeat;
        assert_eq!(decode(&super::super::encode(&other).unwrap(), None), None);
        let payload = super::super::encode(&sample()).unwrap();
        for cut in 0..payload.len() {
            assert_eq!(decode(&payload[..cut], None), None);
        }
        let mut trailing = payload.to_vec();
        trailing.push(0);
        assert_eq!(decode(&trailing, None), None);
    }

    #[test]
    fn a_field_id_wider_than_u32_is_refused() {
        let tag = server_commit_tag().unwrap();
        // Commit, tid 0, one write: object 1, field as a u64 varint.
        let mut payload = vec![tag, 0, 1, 1, U64_BYTE];
        payload.extend_from_slice(&(1u64 << 40).to_le_bytes());
        payload.extend_from_slice(&[0, 0, 0]);
        assert_eq!(decode(&payload, None), None);
        assert!(super::super::decode::<ServerMessage>(&payload).is_err());
    }

    #[test]
    fn decodes_subscription_data_sharing_the_frame() {
        let msg = ServerMessage::SubscriptionData {
            request_id: RequestId(300),
            objects: ObjectList::from(super::super::object_list::tests::sample()),
        };
        let frame = super::super::encode(&msg).unwrap();
        assert_eq!(decode(&frame, None), Some(msg.clone()));
        let Some(ServerMessage::SubscriptionData { objects, .. }) = decode(&frame, Some(&frame))
        else {
            panic!("not decoded");
        };
        let first = objects.iter().next().and_then(|o| o.fields().nth(1));
        let Some((FieldId(70_000), value)) = first else {
            panic!("no second field: {first:?}");
        };
        assert_eq!(value, &vec![3u8; 300][..]);
        // The value points into the frame rather than into a copy.
        let inside = frame.as_ptr_range();
        assert!(inside.contains(&value.as_ptr()));
        for cut in 0..frame.len() {
            assert_eq!(decode(&frame[..cut], None), None);
        }
    }
}
