//! The physical anchor: one frame in flight between a minimal tokio client and server over
//! loopback TCP, with the same framing and codec as the ODB protocol and no database behind it.

use crate::report::{Measure, Samples};
use anyhow::{Context, Result};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

/// Roughly the encoded size of a small read-modify-write commit.
pub const FRAME_PAYLOAD: usize = 100;

/// Runs round trips for `budget`; each one encodes, frames, sends, receives, decodes and
/// answers the same way on the other side.
pub async fn run(budget: Duration) -> Result<Measure> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the pingpong listener")?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let mut framed = Framed::new(stream, odb_wire::framing(odb_wire::DEFAULT_MAX_FRAME));
        while let Some(frame) = framed.next().await {
            let payload: Vec<u8> = odb_wire::decode(&frame?)?;
            framed.send(odb_wire::encode(&payload)?).await?;
        }
        anyhow::Ok(())
    });

    let stream = TcpStream::connect(addr)
        .await
        .context("connecting to the pingpong server")?;
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, odb_wire::framing(odb_wire::DEFAULT_MAX_FRAME));
    let payload = vec![7u8; FRAME_PAYLOAD];
    let mut samples = Samples::with_capacity(1 << 16);
    let mut ops = 0u64;
    let started = Instant::now();
    while started.elapsed() < budget {
        let t = Instant::now();
        let frame: Bytes = odb_wire::encode(&payload)?;
        framed.send(frame).await.context("pingpong send")?;
        let reply = framed
            .next()
            .await
            .context("the pingpong server closed the connection")?
            .context("pingpong receive")?;
        let echoed: Vec<u8> = odb_wire::decode(&reply)?;
        anyhow::ensure!(
            echoed.len() == FRAME_PAYLOAD,
            "pingpong echoed a wrong frame"
        );
        samples.push(t.elapsed());
        ops += 1;
    }
    let elapsed = started.elapsed();
    drop(framed);
    server
        .await
        .context("the pingpong server task panicked")?
        .context("pingpong server")?;
    Ok(Measure::new(ops, elapsed, &mut samples))
}
