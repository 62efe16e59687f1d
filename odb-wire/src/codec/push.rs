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

/// Encodes `ServerMessage::Commit` for the commit at `tid` whose entries `walk` yields.
///
/// `walk` is called twice and must yield the same entries, in the same order, each time: field
/// writes come out in the order walked, and so do index changes and deletions. The first walk
/// counts and sizes; the second writes the field writes in place and the index changes and
/// deletions into buffers of their own, appended after them.
pub fn encode_commit_push<W>(tid: Tid, walk: W) -> Result<Bytes, CodecError>
where
    W: Fn(&mut dyn FnMut(PushEntry<'_>)),
{
    let tag = server_commit_tag()
        .ok_or_else(|| CodecError::Encode("cannot find how a commit message is encoded".into()))?;
    // Counts, and upper bounds of the sizes: a varint takes at most 9 bytes, an id at most 5.
    let (mut writes, mut index_writes, mut deletes) = (0u64, 0u64, 0u64);
    let (mut fields_size, mut indices_size) = (0usize, 0usize);
    walk(&mut |entry| match entry {
        PushEntry::Field(_, _, v) => {
            writes += 1;
            fields_size += 9 + 5 + 1 + v.map_or(0, |v| 9 + v.len());
        }
        PushEntry::Index(_, _, v) => {
            index_writes += 1;
            indices_size += 9 + 5 + 1 + v.map_or(0, |v| 9 + v.len());
        }
        PushEntry::Delete(_) => deletes += 1,
    });
    let deletes_size = 9 * deletes as usize;
    // The tag, the tid and three counts take at most 37 bytes.
    let mut out = Vec::with_capacity(40 + fields_size + indices_size + deletes_size);
    let mut indices = Vec::with_capacity(indices_size);
    let mut deleted = Vec::with_capacity(deletes_size);
    out.push(tag);
    varint(&mut out, tid.0);
    varint(&mut out, writes);
    walk(&mut |entry| match entry {
        PushEntry::Field(object, field, value) => {
            varint(&mut out, object.0);
            varint(&mut out, u64::from(field.0));
            option_bytes(&mut out, value);
        }
        PushEntry::Index(object, index, value) => {
            varint(&mut indices, object.0);
            varint(&mut indices, u64::from(index.0));
            option_bytes(&mut indices, value);
        }
        PushEntry::Delete(object) => varint(&mut deleted, object.0),
    });
    varint(&mut out, index_writes);
    out.extend_from_slice(&indices);
    varint(&mut out, deletes);
    out.extend_from_slice(&deleted);
    Ok(Bytes::from(out))
}

/// An unsigned integer as bincode's standard configuration writes it.
pub(super) fn varint(out: &mut Vec<u8>, v: u64) {
    if v < u64::from(U16_BYTE) {
        out.push(v as u8);
    } else if let Ok(v) = u16::try_from(v) {
        out.push(U16_BYTE);
        out.extend_from_slice(&v.to_le_bytes());
    } else if let Ok(v) = u32::try_from(v) {
        out.push(U32_BYTE);
        out.extend_from_slice(&v.to_le_bytes());
    } else {
        out.push(U64_BYTE);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// An `Option<Bytes>`: 0, or 1 and the length-prefixed bytes.
pub(super) fn option_bytes(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            varint(out, v.len() as u64);
            out.extend_from_slice(v);
        }
    }
}
