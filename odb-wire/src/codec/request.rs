//! A hand-written encoder for the largest message a client sends, the commit request
//! ([`ClientMessage::Commit`](crate::ClientMessage::Commit)), the counterpart of the decoder in
//! `commit.rs`.
//!
//! A bulk commit holds hundreds of thousands of writes. This writes them into one buffer sized
//! up front, instead of going through serde into a vector that doubles as it grows. The bytes
//! are exactly those of encoding the message with serde, which a property test checks.

use super::commit::{client_commit_tag, U128_BYTE};
use super::push::{option_bytes, varint};
use super::CodecError;
use crate::{CommitRequest, RequestId};
use bytes::Bytes;

/// Encodes `ClientMessage::Commit { request_id, commit }`.
pub fn encode_commit_request(
    request_id: RequestId,
    commit: &CommitRequest,
) -> Result<Bytes, CodecError> {
    let tag = client_commit_tag()
        .ok_or_else(|| CodecError::Encode("cannot find how a commit request is encoded".into()))?;
    let value = |v: &Option<Bytes>| v.as_ref().map_or(1, |v| 10 + v.len());
    let size = 64
        + commit
            .writes
            .iter()
            .map(|w| 14 + value(&w.value))
            .sum::<usize>()
        + commit
            .index_writes
            .iter()
            .map(|w| 14 + value(&w.value))
            .sum::<usize>()
        + commit.deletes.len() * 9
        + commit.reads.len() * 14
        + commit
            .index_reads
            .iter()
            .map(|(_, v)| 14 + v.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(tag);
    varint(&mut out, request_id.0);
    varint(&mut out, commit.base_tid.0);
    varint(&mut out, commit.writes.len() as u64);
    for w in &commit.writes {
        varint(&mut out, w.object.0);
        varint(&mut out, u64::from(w.field.0));
        option_bytes(&mut out, w.value.as_deref());
    }
    varint(&mut out, commit.index_writes.len() as u64);
    for w in &commit.index_writes {
        varint(&mut out, w.object.0);
        varint(&mut out, u64::from(w.index.0));
        option_bytes(&mut out, w.value.as_deref());
    }
    varint(&mut out, commit.deletes.len() as u64);
    for d in &commit.deletes {
        varint(&mut out, d.0);
    }
    varint(&mut out, commit.reads.len() as u64);
    for (object, field) in &commit.reads {
        varint(&mut out, object.0);
        varint(&mut out, u64::from(field.0));
    }
    varint(&mut out, commit.index_reads.len() as u64);
    for (index, value) in &commit.index_reads {
        varint(&mut out, u64::from(index.0));
        varint(&mut out, value.len() as u64);
        out.extend_from_slice(value);
    }
    match &commit.commit_id {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            match u64::try_from(id.session) {
                Ok(small) => varint(&mut out, small),
                Err(_) => {
                    out.push(U128_BYTE);
                    out.extend_from_slice(&id.session.to_le_bytes());
                }
            }
            varint(&mut out, id.seq);
        }
    }
    Ok(Bytes::from(out))
}
