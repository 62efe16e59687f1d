//! The physical anchor: one frame in flight between a minimal tokio client and server over
//! loopback TCP, with the same framing and codec as the ODB protocol and no database behind it.
//!
//! Both ends run as spawned tasks on the benchmark's runtime, exactly like the embedded server's
//! connection tasks and the ODB clients (the `main` future itself runs outside the worker
//! threads, and every wake-up of it would cost a cross-thread hand-off that no ODB client
//! pays). Both sockets have `TCP_NODELAY`, and a warm-up precedes the measurement so that the
//! connection set-up and cold caches are not counted.

use crate::report::{Measure, Samples};
use anyhow::{Context, Result};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Roughly the encoded size of a small read-modify-write commit.
pub const FRAME_PAYLOAD: usize = 100;

/// Round trips made before measuring.
const WARM_UP: Duration = Duration::from_millis(200);

/// Runs round trips for `budget` after a warm-up; each one encodes, frames, sends, receives,
/// decodes and answers the same way on the other side.
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
            let payload: Bytes = odb_wire::decode(&frame?)?;
            framed.send(odb_wire::encode(&payload)?).await?;
        }
        anyhow::Ok(())
    });
    let client = tokio::spawn(async move {
        let stream = TcpStream::connect(addr)
            .await
            .context("connecting to the pingpong server")?;
        stream.set_nodelay(true)?;
        let mut framed = Framed::new(stream, odb_wire::framing(odb_wire::DEFAULT_MAX_FRAME));
        // `Bytes`, which is how ODB messages carry values: one length and a copy, not a
        // sequence decoded element by element.
        let payload = Bytes::from(vec![7u8; FRAME_PAYLOAD]);
        let warm_up = Instant::now();
        while warm_up.elapsed() < WARM_UP {
            round_trip(&mut framed, &payload).await?;
        }
        let mut samples = Samples::with_capacity(1 << 16);
        let mut ops = 0u64;
        let started = Instant::now();
        while started.elapsed() < budget {
            let t = Instant::now();
            round_trip(&mut framed, &payload).await?;
            samples.push(t.elapsed());
            ops += 1;
        }
        let elapsed = started.elapsed();
        anyhow::Ok(Measure::new(ops, elapsed, &mut samples))
    });
    let measured = client.await.context("the pingpong client task panicked")?;
    // The client's connection is closed by now, which ends the server task.
    server
        .await
        .context("the pingpong server task panicked")?
        .context("pingpong server")?;
    measured
}

async fn round_trip(
    framed: &mut Framed<TcpStream, LengthDelimitedCodec>,
    payload: &Bytes,
) -> Result<()> {
    let frame: Bytes = odb_wire::encode(payload)?;
    framed.send(frame).await.context("pingpong send")?;
    let reply = framed
        .next()
        .await
        .context("the pingpong server closed the connection")?
        .context("pingpong receive")?;
    let echoed: Bytes = odb_wire::decode(&reply)?;
    anyhow::ensure!(
        echoed.len() == FRAME_PAYLOAD,
        "pingpong echoed a wrong frame"
    );
    Ok(())
}
