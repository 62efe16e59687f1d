//! The physical anchor: one frame in flight between a minimal tokio client and server over
//! loopback TCP, with the same framing and codec as the ODB protocol and no database behind it.
//!
//! The echo server runs where the server under test runs: in a child process of its own (this
//! program again, with `--echo-server`, on a default multi-threaded runtime as `odb-server`
//! has) or as a task on the benchmark's runtime. The client is a spawned task, like the ODB
//! clients (the `main` future itself runs outside the worker threads, and every wake-up of it
//! would cost a cross-thread hand-off that no ODB client pays). Both sockets have
//! `TCP_NODELAY`, and a warm-up precedes the measurement so that the connection set-up and
//! cold caches are not counted.

use crate::report::{Measure, Samples};
use crate::server::{spawn_listening, ServerMode};
use anyhow::{Context, Result};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Roughly the encoded size of a small read-modify-write commit.
pub const FRAME_PAYLOAD: usize = 100;

/// Round trips made before measuring.
const WARM_UP: Duration = Duration::from_millis(200);

/// Answers every frame on one connection with the same payload until the peer closes it.
async fn echo(stream: TcpStream) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, odb_wire::framing(odb_wire::DEFAULT_MAX_FRAME));
    while let Some(frame) = framed.next().await {
        let payload: Bytes = odb_wire::decode(&frame?)?;
        framed.send(odb_wire::encode(&payload)?).await?;
    }
    Ok(())
}

/// The echo server process (`--echo-server`): listens on a free loopback port, prints its
/// address as one line and echoes on every connection until the process is killed.
pub async fn echo_server() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the echo listener")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = echo(stream).await {
                eprintln!("echo server: {e:#}");
            }
        });
    }
}

/// Runs round trips for `budget` after a warm-up against an echo server placed as `mode`
/// says; each one encodes, frames, sends, receives, decodes and answers the same way on the
/// other side.
pub async fn run(mode: ServerMode, budget: Duration) -> Result<Measure> {
    match mode {
        ServerMode::Embedded => {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding the pingpong listener")?;
            let addr = listener.local_addr()?.to_string();
            let server = tokio::spawn(async move {
                let (stream, _) = listener.accept().await?;
                echo(stream).await
            });
            let measured = measure(addr, budget).await;
            // The client's connection is closed by now, which ends the server task.
            server
                .await
                .context("the pingpong server task panicked")?
                .context("pingpong server")?;
            measured
        }
        ServerMode::Process => {
            let exe = std::env::current_exe().context("locating the benchmark executable")?;
            let mut command = Command::new(exe);
            command.arg("--echo-server");
            let (_child, addr) = spawn_listening(command, "the echo server").await?;
            measure(addr, budget).await
        }
    }
}

/// The client side: a spawned task making round trips to `addr`.
async fn measure(addr: String, budget: Duration) -> Result<Measure> {
    let client = tokio::spawn(async move {
        let stream = TcpStream::connect(&addr)
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
    client.await.context("the pingpong client task panicked")?
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
