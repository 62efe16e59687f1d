//! Helpers shared by the server's end-to-end tests, which speak raw protocol frames.

use bytes::Bytes;
use odb_server::{Server, ServerConfig};
use odb_wire::{CommitRequest, FieldWrite, IndexWrite, ObjectId, Tid, TypeIds};
use std::time::Duration;
use tokio::time::timeout;

/// How long a test waits for the server before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Starts a server listening on a free loopback port.
pub async fn start(config: ServerConfig) -> Server {
    Server::start(config, Some("127.0.0.1:0".parse().unwrap()))
        .await
        .expect("server starts")
}

/// The bytes of `s`.
pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The commit, on top of `base`, that creates object `o` of type `t` with its first field and
/// its first index set to `a`.
pub fn create(t: &TypeIds, o: u64, a: &str, base: Tid) -> CommitRequest {
    CommitRequest {
        base_tid: base,
        writes: vec![
            FieldWrite {
                object: ObjectId(o),
                field: t.exists_field,
                value: Some(Bytes::new()),
            },
            FieldWrite {
                object: ObjectId(o),
                field: t.fields[0],
                value: Some(b(a)),
            },
        ],
        index_writes: vec![IndexWrite {
            object: ObjectId(o),
            index: t.indices[0],
            value: Some(b(a)),
        }],
        ..CommitRequest::default()
    }
}

/// Waits, without sleeping as synchronisation, until a condition on the server holds.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let wait = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}
