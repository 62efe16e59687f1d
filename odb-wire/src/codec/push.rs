//! A hand-written encoder for the message that pushes a commit to a client
//! ([`ServerMessage::Commit`](crate::ServerMessage::Commit)), the counterpart of the decoder in
//! `commit.rs`.
//!
//! A bulk commit's push holds hundreds of thousands of entries. The server walks what a
//! connection sees of a commit and writes each entry straight into the payload, instead of
//! building a [`CommitData`](crate::CommitData) first (an allocation per entry). The bytes are
//! exactly those of encoding the `CommitData` with serde, which a property test checks.

use super::commit::{server_commit_tag, U16_BYTE, U32_BYTE, U64_BYTE};
use super::CodecError;
use crate::{FieldId, IndexId, ObjectId, Tid};
use bytes::Bytes;

/// One entry of a pushed commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushEntry<'a> {
    /// A field write (`None`: the field was removed).
    Field(ObjectId, FieldId, Option<&'a [u8]>),
    /// An index change (`None`: the object left the index).
    Index(ObjectId, IndexId, Option<&'a [u8]>),
    /// A deleted object.
    Delete(ObjectId),
}

/// Encodes `ServerMessage::Commit` for the commit at `tid` whose entries `walk` yields, in a
/// buffer made with room for `capacity` bytes (a guess: it grows as needed, and the spare room
/// goes at the end).
///
/// `walk` is called once: field writes come out in the order walked, and so do index changes
/// and deletions. The field writes are written into the message's own buffer, after a gap for
/// the header (the tag, the tid and their count, whose sizes are known only at the end); the
/// index changes and deletions go into buffers of their own, appended after them. The result
/// holds no spare capacity.
pub fn encode_commit_push<W>(tid: Tid, capacity: usize, walk: W) -> Result<Bytes, CodecError>
where
    W: FnOnce(&mut dyn FnMut(PushEntry<'_>)),
{
    let tag = server_commit_tag()
        .ok_or_else(|| CodecError::Encode("cannot find how a commit message is encoded".into()))?;
    let (mut writes, mut index_writes, mut deletes) = (0u64, 0u64, 0u64);
    let mut out = Vec::with_capacity(HEADER_GAP + capacity);
    out.resize(HEADER_GAP, 0);
    let (mut indices, mut deleted) = (Vec::new(), Vec::new());
    walk(&mut |entry| match entry {
        PushEntry::Field(object, field, value) => {
            writes += 1;
            write_entry(&mut out, object, field.0, value);
        }
        PushEntry::Index(object, index, value) => {
            index_writes += 1;
            write_entry(&mut indices, object, index.0, value);
        }
        PushEntry::Delete(object) => {
            deletes += 1;
            varint(&mut deleted, object.0);
        }
    });
    let mut header = Vec::with_capacity(HEADER_GAP);
    header.push(tag);
    varint(&mut header, tid.0);
    varint(&mut header, writes);
    let start = HEADER_GAP
        .checked_sub(header.len())
        .ok_or_else(|| CodecError::Encode("a commit message's header outgrew its room".into()))?;
    if let Some(gap) = out.get_mut(start..HEADER_GAP) {
        gap.copy_from_slice(&header);
    }
    out.reserve_exact(18 + indices.len() + deleted.len());
    varint(&mut out, index_writes);
    out.extend_from_slice(&indices);
    varint(&mut out, deletes);
    out.extend_from_slice(&deleted);
    // The buffer grew by doubling while the walk wrote into it. A queued message holds its
    // whole allocation, and the server's limits on unsent data count message lengths, so the
    // spare room goes.
    out.shrink_to_fit();
    Ok(Bytes::from(out).slice(start..))
}

/// Room for a pushed commit's header: the tag (1 byte), the tid and the count of field writes
/// (at most 9 bytes each).
const HEADER_GAP: usize = 19;

/// An unsigned integer as bincode's standard configuration writes it (the rule is
/// [`Head::varint`]'s).
pub(super) fn varint(out: &mut Vec<u8>, v: u64) {
    let mut head = Head::default();
    head.varint(v);
    out.extend_from_slice(head.bytes());
}

/// A field write or an index change (`FieldWrite`, `IndexWrite`): the object, the field or
/// index, and the value: 0, or 1 and the length-prefixed bytes (bincode's `Option<Bytes>`).
///
/// Everything but the value is put together on the stack and appended at once, the value with a
/// second copy: a bulk commit has hundreds of thousands of these, and appending each number on
/// its own checked the buffer's capacity up to six times per entry.
#[inline]
pub(super) fn write_entry(out: &mut Vec<u8>, object: ObjectId, id: u32, value: Option<&[u8]>) {
    let mut head = Head::default();
    head.varint(object.0);
    head.varint(u64::from(id));
    match value {
        None => head.put(&[0]),
        Some(v) => {
            head.put(&[1]);
            head.varint(v.len() as u64);
        }
    }
    out.extend_from_slice(head.bytes());
    if let Some(v) = value {
        out.extend_from_slice(v);
    }
}

/// The numbers of one entry, encoded on the stack: at most 9 + 5 + 1 + 9 bytes.
#[derive(Default)]
struct Head {
    buf: [u8; 24],
    len: usize,
}

impl Head {
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if let Some(room) = self.buf.get_mut(self.len..end) {
            room.copy_from_slice(bytes);
            self.len = end;
        } else {
            debug_assert!(false, "an entry's head outgrew its room");
        }
    }

    /// An unsigned integer as bincode's standard configuration writes it: below 251 in one
    /// byte, else a marker byte and the number in the narrowest of 2, 4 or 8 bytes.
    #[inline(always)]
    fn varint(&mut self, v: u64) {
        if v < u64::from(U16_BYTE) {
            self.put(&[v as u8]);
        } else if let Ok(v) = u16::try_from(v) {
            let [a, b] = v.to_le_bytes();
            self.put(&[U16_BYTE, a, b]);
        } else if let Ok(v) = u32::try_from(v) {
            let [a, b, c, d] = v.to_le_bytes();
            self.put(&[U32_BYTE, a, b, c, d]);
        } else {
            self.put(&[U64_BYTE]);
            self.put(&v.to_le_bytes());
        }
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}
