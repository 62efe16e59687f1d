//! The Redis baseline: a private `redis-server` process and optimistic increments with
//! WATCH / GET / MULTI / SET / EXEC.

use crate::report::{Measure, Samples};
use crate::resp::{Reply, Resp};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// A `redis-server` started by the benchmark; killed and its directory removed on drop.
pub struct RedisGuard {
    child: Child,
    dir: PathBuf,
    pub url: String,
}

impl RedisGuard {
    /// Starts `redis-server` on a free loopback port without persistence, in a fresh temporary
    /// directory, and waits until it answers PING.
    pub async fn start() -> Result<RedisGuard> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for redis-server")?
            .port();
        let dir =
            std::env::temp_dir().join(format!("odb-bench-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                if e.kind() == std::io::ErrorKind::NotFound {
                    bail!("redis-server is not installed (not found on PATH)");
                }
                return Err(e).context("starting redis-server");
            }
        };
        let guard = RedisGuard {
            child,
            dir,
            url: format!("redis://127.0.0.1:{port}/"),
        };
        guard.wait_ready().await?;
        Ok(guard)
    }

    /// The process id of `redis-server`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = async {
                let mut con = Resp::connect(&self.url).await?;
                con.command(&[&"PING"]);
                con.roundtrip().await
            };
            match attempt.await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e).context("redis-server did not answer within 10 s")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for RedisGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a Redis increment run did.
pub struct Increments {
    pub measure: Measure,
    pub committed: u64,
    pub aborted: u64,
}

/// `clients` tasks increment counters for `budget`, each with its own connection: on its own key
/// (`shared == false`) or all on one key. Each increment takes two round trips: WATCH k and
/// GET k sent together, then MULTI, SET k v+1, EXEC sent together. An EXEC answered with nil
/// (the key changed since WATCH) is counted as aborted and the increment starts over.
pub async fn increments(
    url: &str,
    clients: usize,
    shared: bool,
    budget: Duration,
) -> Result<Increments> {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for i in 0..clients {
        // A connection of its own per task, never shared: WATCH state belongs to the
        // connection, and this task is its only user, one command after the other.
        let mut con = Resp::connect(url).await?;
        let key = if shared {
            "bench:shared".to_string()
        } else {
            format!("bench:counter:{i}")
        };
        con.command(&[&"SET", &key, &0]);
        ensure_ok(con.roundtrip().await?)?;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let (mut committed, mut aborted) = (0u64, 0u64);
            let mut samples = Samples::with_capacity(1 << 14);
            while started.elapsed() < budget {
                let t = Instant::now();
                loop {
                    con.command(&[&"WATCH", &key]);
                    con.command(&[&"GET", &key]);
                    con.send().await?;
                    ensure_ok(con.reply().await?)?;
                    let value = con.reply().await?.number()?.unwrap_or(0);
                    con.command(&[&"MULTI"]);
                    con.command(&[&"SET", &key, &(value + 1)]);
                    con.command(&[&"EXEC"]);
                    con.send().await?;
                    ensure_ok(con.reply().await?)?;
                    let queued = con.reply().await?;
                    anyhow::ensure!(
                        queued == Reply::Simple(b"QUEUED".to_vec()),
                        "SET in MULTI answered {queued:?}"
                    );
                    match con.reply().await? {
                        Reply::Array(Some(_)) => break,
                        Reply::Array(None) => aborted += 1,
                        other => anyhow::bail!("EXEC answered {other:?}"),
                    }
                }
                committed += 1;
                samples.push(t.elapsed());
            }
            anyhow::Ok((committed, aborted, samples, started.elapsed()))
        }));
    }
    barrier.wait().await;
    let (mut committed, mut aborted) = (0, 0);
    let mut samples = Samples::default();
    let mut elapsed = Duration::ZERO;
    for task in tasks {
        let (c, a, s, e) = task.await.context("a redis client task panicked")??;
        committed += c;
        aborted += a;
        samples.extend(s);
        elapsed = elapsed.max(e);
    }
    if shared {
        let mut con = Resp::connect(url).await?;
        con.command(&[&"GET", &"bench:shared"]);
        let total = con.roundtrip().await?.number()?;
        anyhow::ensure!(
            total == Some(committed),
            "redis shared counter is {total:?} after {committed} increments"
        );
    }
    Ok(Increments {
        measure: Measure::new(committed, elapsed, &mut samples),
        committed,
        aborted,
    })
}

/// `clients` tasks, each with its own connection, SET a new key each, one command after the
/// other, for `budget`: what the aggregate workload's creations are compared with.
pub async fn sets(url: &str, clients: usize, budget: Duration) -> Result<Measure> {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut con = Resp::connect(url).await?;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let mut seq = 0u64;
            let mut samples = Samples::with_capacity(1 << 12);
            while started.elapsed() < budget {
                let t = Instant::now();
                con.command(&[&"SET", &format_args!("bench:event:{i}:{seq}"), &seq]);
                ensure_ok(con.roundtrip().await?)?;
                samples.push(t.elapsed());
                seq += 1;
            }
            anyhow::Ok((seq, samples, started.elapsed()))
        }));
    }
    barrier.wait().await;
    let mut ops = 0;
    let mut samples = Samples::default();
    let mut elapsed = Duration::ZERO;
    for task in tasks {
        let (n, s, e) = task.await.context("a redis client task panicked")??;
        ops += n;
        samples.extend(s);
        elapsed = elapsed.max(e);
    }
    Ok(Measure::new(ops, elapsed, &mut samples))
}

/// One connection sends SETs of new keys in pipelines of `depth` commands, one pipeline at a
/// time, for `budget` (`redis-benchmark -P depth`). Latencies are per pipeline.
pub async fn pipelined_sets(url: &str, depth: usize, budget: Duration) -> Result<Measure> {
    let mut con = Resp::connect(url).await?;
    crate::as_client("pipelining client", async move {
        let started = Instant::now();
        let mut ops = 0u64;
        let mut samples = Samples::with_capacity(1 << 14);
        while started.elapsed() < budget {
            let t = Instant::now();
            for _ in 0..depth {
                con.command(&[&"SET", &format_args!("bench:pipelined:{ops}"), &ops]);
                ops += 1;
            }
            con.send().await?;
            for _ in 0..depth {
                ensure_ok(con.reply().await?)?;
            }
            samples.push(t.elapsed());
        }
        Ok(Measure::new(ops, started.elapsed(), &mut samples))
    })
    .await
}

/// Redis pub/sub fan-out: `subscribers` connections subscribed to one channel; one publisher
/// PUBLISHes the time (nanoseconds since the start) and waits until every subscriber has
/// received it before the next. Latency is receipt time minus the published time, per
/// subscriber and message; `ops_per_sec` is messages per second.
pub async fn pubsub(url: &str, subscribers: usize, budget: Duration) -> Result<Measure> {
    const CHANNEL: &str = "bench:clock";
    let start = Instant::now();
    let nanos = move || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut tasks = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let mut con = Resp::connect(url).await?;
        con.command(&[&"SUBSCRIBE", &CHANNEL]);
        let confirmed = con.roundtrip().await?;
        anyhow::ensure!(
            matches!(&confirmed, Reply::Array(Some(items)) if items.len() == 3),
            "SUBSCRIBE answered {confirmed:?}"
        );
        let seen_tx = seen_tx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                // A message is ["message", channel, payload].
                let stamp = match con.reply().await? {
                    Reply::Array(Some(mut items)) if items.len() == 3 => {
                        items.pop().map(|payload| payload.number())
                    }
                    other => anyhow::bail!("a subscriber received {other:?}"),
                };
                let Some(Some(stamp)) = stamp.transpose()? else {
                    anyhow::bail!("a message without a stamp");
                };
                if stamp == u64::MAX {
                    break;
                }
                if seen_tx.send(nanos().saturating_sub(stamp)).is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        }));
    }
    drop(seen_tx);
    let mut publisher = Resp::connect(url).await?;
    let (mut samples, rounds, elapsed, mut publisher) = crate::as_client("publisher", async move {
        let mut samples = Samples::with_capacity(1 << 16);
        let mut rounds = 0u64;
        let began = Instant::now();
        while began.elapsed() < budget {
            publisher.command(&[&"PUBLISH", &CHANNEL, &nanos().max(1)]);
            let receivers = publisher.roundtrip().await?.number()?;
            anyhow::ensure!(
                receivers == Some(subscribers as u64),
                "PUBLISH reached {receivers:?} of {subscribers} subscribers"
            );
            for _ in 0..subscribers {
                let latency = tokio::time::timeout(Duration::from_secs(60), seen_rx.recv())
                    .await
                    .context("a redis subscriber did not receive the message in time")?
                    .context("a redis subscriber stopped")?;
                samples.push_nanos(latency);
            }
            rounds += 1;
        }
        anyhow::Ok((samples, rounds, began.elapsed(), publisher))
    })
    .await?;
    publisher.command(&[&"PUBLISH", &CHANNEL, &u64::MAX]);
    publisher.roundtrip().await?;
    for task in tasks {
        task.await.context("a redis subscriber task panicked")??;
    }
    Ok(Measure::new(rounds, elapsed, &mut samples))
}

/// Fails unless `reply` is `+OK`.
fn ensure_ok(reply: Reply) -> Result<()> {
    anyhow::ensure!(reply.is_ok(), "redis-server answered {reply:?}");
    Ok(())
}
