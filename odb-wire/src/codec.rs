//! Payload encoding and framing. The only module that knows the byte format: swapping the
//! encoding means changing this file alone.
//!
//! Frames are a 4-byte big-endian length followed by the payload, handled by
//! [`tokio_util::codec::LengthDelimitedCodec`]. Payloads are messages encoded with serde and
//! bincode's standard configuration, with a decode limit so that a hostile length prefix inside a
//! payload cannot make the decoder allocate without bound.

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

/// Default largest frame accepted or sent: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// Largest frame size that can be configured: 1 GiB.
pub const MAX_FRAME_CAP: usize = 1 << 30;

mod commit;
mod object_list;
mod objects;
mod push;
mod request;

pub use object_list::{ObjectList, ObjectRef, ObjectRefs};
pub use objects::EncodedObjects;
pub use push::{encode_commit_push, PushEntry};
pub use request::{encode_client_message, encode_commit_request};

type Config<const LIMIT: usize> = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<LIMIT>,
>;

const fn config<const LIMIT: usize>() -> Config<LIMIT> {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Decode(String),
    /// The payload decoded, but bytes were left over after the message.
    #[error("malformed message: {0} trailing bytes after the message")]
    Trailing(usize),
    /// The value could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Builds the length-delimited framing codec with the given maximum frame size, clamped to
/// [`MAX_FRAME_CAP`]. A peer announcing a longer frame gets an I/O error of kind `InvalidData`.
pub fn framing(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame.min(MAX_FRAME_CAP))
        .new_codec()
}

/// Encodes a message (or any serde value) into a payload.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CodecError> {
    bincode::serde::encode_to_vec(value, config::<MAX_FRAME_CAP>())
        .map(Bytes::from)
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Encodes a value into a buffer of exactly its size, for values that are usually small (stored
/// field and index values): those up to 256 bytes are encoded on the stack first and copied
/// once, rather than into a growing vector whose spare capacity the result would keep.
pub fn encode_exact<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CodecError> {
    let mut buf = [0u8; 256];
    match bincode::serde::encode_into_slice(value, &mut buf, config::<MAX_FRAME_CAP>()) {
        Ok(len) => Ok(Bytes::copy_from_slice(&buf[..len])),
        Err(bincode::error::EncodeError::UnexpectedEnd) => {
            let mut vec = bincode::serde::encode_to_vec(value, config::<MAX_FRAME_CAP>())
                .map_err(|e| CodecError::Encode(e.to_string()))?;
            vec.shrink_to_fit();
            Ok(Bytes::from(vec))
        }
        Err(e) => Err(CodecError::Encode(e.to_string())),
    }
}

/// Decodes a payload into a server message: like [`decode`], with a faster path for the
/// largest messages a client receives, a pushed commit and subscription data.
pub fn decode_server_message(payload: &[u8]) -> Result<crate::ServerMessage, CodecError> {
    match commit::decode(payload, None) {
        Some(msg) => Ok(msg),
        None => decode(payload),
    }
}

/// Decodes a frame into a server message like [`decode_server_message`]; the values of a pushed
/// commit or of subscription data share the frame's buffer rather than being copied, so the
/// frame stays allocated while any of them is held.
pub fn decode_server_frame(frame: &Bytes) -> Result<crate::ServerMessage, CodecError> {
    match commit::decode(frame, Some(frame)) {
        Some(msg) => Ok(msg),
        None => decode(frame),
    }
}

/// Decodes a payload into a client message: like [`decode`], with a faster path for the
/// largest message a server receives, a commit request.
pub fn decode_client_message(payload: &[u8]) -> Result<crate::ClientMessage, CodecError> {
    match commit::decode_request(payload, None) {
        Some(msg) => Ok(msg),
        None => decode(payload),
    }
}

/// Decodes a frame into a client message like [`decode_client_message`]; the values of a
/// commit request share the frame's buffer rather than being copied, so the frame stays
/// allocated while any of them is held: a receiver that keeps a value past the commit copies it.
pub fn decode_client_frame(frame: &Bytes) -> Result<crate::ClientMessage, CodecError> {
    match commit::decode_request(frame, Some(frame)) {
        Some(msg) => Ok(msg),
        None => decode(frame),
    }
}

/// Decodes a payload into a message (or any serde value). Never panics, whatever the bytes.
///
/// The decoder pre-allocates a container from the length written before it, so the total it
/// may claim is bounded in proportion to the payload's size: a small frame announcing a huge
/// string or byte array is refused before anything is allocated.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    let decoded = match payload.len() {
        0..=0xFFFF => bincode::serde::decode_from_slice(payload, config::<{ 1 << 20 }>()),
        0x1_0000..=0xF_FFFF => bincode::serde::decode_from_slice(payload, config::<{ 16 << 20 }>()),
        0x10_0000..=0xFF_FFFF => {
            bincode::serde::decode_from_slice(payload, config::<{ 256 << 20 }>())
        }
        _ => bincode::serde::decode_from_slice(payload, config::<MAX_FRAME_CAP>()),
    };
    let (value, read) = decoded.map_err(|e| CodecError::Decode(e.to_string()))?;
    if read != payload.len() {
        return Err(CodecError::Trailing(payload.len() - read));
    }
    Ok(value)
}

/// The protocol version a hello announces, read from its first bytes only: the variant index of
/// [`ClientMessage::Hello`](crate::ClientMessage::Hello) followed by its leading `protocol_version`. Works on a hello of any
/// protocol version, even one whose other fields this version cannot decode. `None` when the
/// frame does not start like a hello.
pub fn hello_version(frame: &[u8]) -> Option<u32> {
    let hello_tag = encode(&crate::ClientMessage::Hello {
        protocol_version: 0,
        token: String::new(),
        client_name: String::new(),
        oldest_protocol_version: 0,
    })
    .ok()?;
    let (&tag, rest) = frame.split_first()?;
    if Some(&tag) != hello_tag.first() {
        return None;
    }
    let config = bincode::config::standard().with_limit::<16>();
    let (version, _): (u32, usize) = bincode::serde::decode_from_slice(rest, config).ok()?;
    Some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_encoding_matches_the_plain_one() {
        let long = "x".repeat(1000);
        for value in ["", "item-00000001", long.as_str()] {
            let exact = encode_exact(value).unwrap();
            assert_eq!(exact, encode(value).unwrap());
        }
        assert_eq!(
            encode_exact(&(7u64, "k")).unwrap(),
            encode(&(7u64, "k")).unwrap()
        );
    }
}
