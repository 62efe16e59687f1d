//! A hand-written encoder for the commit request a client sends
//! ([`ClientMessage::Commit`](crate::ClientMessage::Commit)), the counterpart of the request
//! decoder in `commit.rs`.
//!
//! A bulk transaction's request holds hundreds of thousands of writes. Encoding it with serde
//! grows the payload by doubling, copying it several times into fresh memory; here its size is
//! counted first and every entry written once. The bytes are exactly those serde writes, which
//! a property test checks.

use super::commit::client_commit_tag;
use super::push::{varint, write_entry};
use super::CodecError;
use crate::{ClientMessage, CommitId, CommitRequest, RequestId};
use bytes::Bytes;

/// bincode's marker of a little-endian u128.
const U128_BYTE: u8 = 254;

/// Encodes a client message: a commit with the encoder below, anything else with serde.
pub fn encode_client_message(message: &ClientMessage) -> Result<Bytes, CodecError> {
    match message {
        ClientMessage::Commit { request_id, commit } => encode_commit_request(*request_id, commit),
        other => super::encode(other),
    }
}

/// Encodes `ClientMessage::Commit { request_id, commit }`.
pub fn encode_commit_request(
    request_id: RequestId,
    commit: &CommitRequest,
) -> Result<Bytes, CodecError> {
    let tag = client_commit_tag()
        .ok_or_else(|| CodecError::Encode("cannot find how a commit request is encoded".into()))?;
    let value = |v: Option<&Bytes>| 1 + v.map_or(0, |v| 9 + v.len());
    // The tag, the request id, the base tid, five counts and a commit id take at most 91
    // bytes.
    let size = 96
        + commit
            .writes
            .iter()
            .map(|w| 14 + value(w.value.as_ref()))
            .sum::<usize>()
        + commit
            .index_writes
            .iter()
            .map(|w| 14 + value(w.value.as_ref()))
            .sum::<usize>()
        + 9 * commit.deletes.len()
        + 14 * commit.reads.len()
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
        write_entry(&mut out, w.object, w.field.0, w.value.as_deref());
    }
    varint(&mut out, commit.index_writes.len() as u64);
    for w in &commit.index_writes {
        write_entry(&mut out, w.object, w.index.0, w.value.as_deref());
    }
    varint(&mut out, commit.deletes.len() as u64);
    for o in &commit.deletes {
        varint(&mut out, o.0);
    }
    varint(&mut out, commit.reads.len() as u64);
    for (o, f) in &commit.reads {
        varint(&mut out, o.0);
        varint(&mut out, u64::from(f.0));
    }
    varint(&mut out, commit.index_reads.len() as u64);
    for (i, v) in &commit.index_reads {
        varint(&mut out, u64::from(i.0));
        varint(&mut out, v.len() as u64);
        out.extend_from_slice(v);
    }
    match commit.commit_id {
        None => out.push(0),
        Some(CommitId { session, seq }) => {
            out.push(1);
            match u64::try_from(session) {
                Ok(small) => varint(&mut out, small),
                Err(_) => {
                    out.push(U128_BYTE);
                    out.extend_from_slice(&session.to_le_bytes());
                }
            }
            varint(&mut out, seq);
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FieldId, FieldWrite, IndexId, IndexWrite, ObjectId, Tid};

    #[test]
    fn wide_numbers_and_long_values_encode_as_serde_does() {
        let commit = CommitRequest {
            base_tid: Tid(u64::MAX),
            writes: vec![
                FieldWrite {
                    object: ObjectId(1 << 40),
                    field: FieldId(u32::MAX),
                    value: Some(Bytes::from(vec![7u8; 70_000])),
                },
                FieldWrite {
                    object: ObjectId(250),
                    field: FieldId(251),
                    value: None,
                },
            ],
            index_writes: vec![IndexWrite {
                object: ObjectId(65_536),
                index: IndexId(300),
                value: Some(Bytes::from_static(b"key")),
            }],
            deletes: vec![ObjectId(u64::MAX)],
            reads: vec![(ObjectId(3), FieldId(70_000))],
            index_reads: vec![(IndexId(1), Bytes::new())],
            commit_id: Some(CommitId {
                session: u128::MAX - 5,
                seq: 1 << 33,
            }),
        };
        for commit in [commit.clone(), CommitRequest::default()] {
            let message = ClientMessage::Commit {
                request_id: RequestId(1 << 20),
                commit,
            };
            let ours = encode_client_message(&message).unwrap();
            assert_eq!(ours, super::super::encode(&message).unwrap());
        }
    }
}
