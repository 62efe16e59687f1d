//! A server that closes a connection says why first. The client must hear that reason even when
//! it arrives in the same read as the end of the stream: the client hands everything that has
//! arrived to its core before it reports the end.

use futures::StreamExt;
use odb::{Client, ConnectionStatus};
use odb_wire::{DatabaseId, IdBlock, ObjectId, Refusal, ServerMessage, Tid, PROTOCOL_VERSION};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::codec::{Encoder, FramedRead};

const WAIT: Duration = Duration::from_secs(30);

/// The frames of `messages`, length-prefixed as on the wire, in one buffer.
fn frames(messages: &[ServerMessage]) -> anyhow::Result<bytes::BytesMut> {
    let mut codec = odb_wire::framing(odb_wire::DEFAULT_MAX_FRAME);
    let mut out = bytes::BytesMut::new();
    for message in messages {
        codec.encode(odb_wire::encode(message)?, &mut out)?;
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reason_sent_with_the_end_of_the_stream_is_heard() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // A fake server: it welcomes the client, then in one write says the client broke the
    // protocol and closes the connection.
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let hello = {
            let mut read =
                FramedRead::new(&mut stream, odb_wire::framing(odb_wire::DEFAULT_MAX_FRAME));
            read.next()
                .await
                .ok_or_else(|| anyhow::anyhow!("no hello"))??
        };
        anyhow::ensure!(!hello.is_empty(), "an empty hello");
        let welcome = ServerMessage::Welcome {
            protocol_version: PROTOCOL_VERSION,
            connection: ObjectId(1),
            ids: IdBlock {
                start: 1_000,
                len: 1_000,
            },
            tid: Tid(1),
            heartbeat_interval_ms: 60_000,
            max_frame: odb_wire::DEFAULT_MAX_FRAME as u64,
            database: DatabaseId(7),
        };
        stream.write_all(&frames(&[welcome])?).await?;
        let closing = ServerMessage::Closing {
            reason: Refusal::ProtocolViolation {
                detail: "the fake server's own reason".into(),
            },
        };
        stream
            .write_all(&frames(&[ServerMessage::Heartbeat, closing])?)
            .await?;
        stream.shutdown().await?;
        // Keep the socket until the client has gone, so nothing resets it.
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest).await;
        anyhow::Ok(())
    });
    // The client may still be connecting when the reason arrives (then `connect` fails with
    // it), or already connected (then the client closes with it).
    let reason = match Client::builder(format!("odb://{addr}"))
        .token("any-token")
        .connect()
        .await
    {
        Err(e) => e.to_string(),
        Ok(db) => {
            let mut status = db.status();
            tokio::time::timeout(WAIT, async {
                loop {
                    if let ConnectionStatus::Closed { reason } = &*status.borrow_and_update() {
                        return reason.clone();
                    }
                    if status.changed().await.is_err() {
                        return "the status channel closed".to_string();
                    }
                }
            })
            .await?
        }
    };
    assert!(
        reason.contains("the server said: protocol violation: the fake server's own reason"),
        "the client ended with {reason:?}"
    );
    tokio::time::timeout(WAIT, server).await???;
    Ok(())
}
