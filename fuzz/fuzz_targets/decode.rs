//! Feeds arbitrary bytes to the wire decoder, both as one payload and as a stream of
//! length-prefixed frames: decoding must never panic, whatever the bytes, and whatever decodes
//! must encode again to a payload that decodes to the same message. The decoders with a fast
//! path for commits must agree with the generic one.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use odb_wire::{ClientMessage, ServerMessage};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = odb_wire::decode::<ClientMessage>(data) {
        let again = odb_wire::encode(&message).expect("a decoded message encodes");
        assert_eq!(
            odb_wire::decode::<ClientMessage>(&again).ok(),
            Some(message)
        );
    }
    assert_eq!(
        odb_wire::decode_client_message(data).ok(),
        odb_wire::decode::<ClientMessage>(data).ok()
    );
    assert_eq!(
        odb_wire::decode_server_message(data).ok(),
        odb_wire::decode::<ServerMessage>(data).ok()
    );

    let mut framing = odb_wire::framing(64 << 10);
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(frame)) = framing.decode(&mut buffer) {
        let _ = odb_wire::decode::<ClientMessage>(&frame);
    }
});
