//! The ODB wire protocol: identifiers, the messages a client and a server exchange, and how they
//! are framed and encoded. This crate does no I/O; values stored in the database are opaque bytes
//! to it.

#![warn(missing_docs)]
// Library code answers bad input with errors, never panics: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod catalog;
pub mod codec;
pub mod describe;
pub mod hash;
mod ids;
pub mod leb128;
pub mod limits;
mod message;
mod refusal;

pub use codec::{
    decode, decode_client_frame, decode_client_message, decode_server_frame, decode_server_message,
    encode, encode_client_message, encode_commit_push, encode_commit_request, encode_exact,
    framing, hello_version, CodecError, EncodedObjects, ObjectList, ObjectRef, ObjectRefs,
    PushEntry, DEFAULT_MAX_FRAME, MAX_FRAME_CAP,
};
pub use describe::TypeDesc;
pub use ids::{
    bytes_eq, CommitId, DatabaseId, FieldId, IdBlock, IndexId, Key, ObjectId, RequestId, Tid,
    TypeId,
};
pub use message::*;
pub use refusal::Refusal;
