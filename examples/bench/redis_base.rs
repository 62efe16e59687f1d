//! The Redis baseline: a private `redis-server` process and optimistic increments with
//! WATCH / GET / MULTI / SET / EXEC.

use crate::report::{Measure, Samples};
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
        let client = redis::Client::open(self.url.as_str())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = async {
                let mut con = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut con).await
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
    let client = redis::Client::open(url)?;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for i in 0..clients {
        // A connection of its own per task, never shared: WATCH state belongs to the
        // connection, and this task is its only user, one command after the other.
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .context("connecting to redis-server")?;
        let key = if shared {
            "bench:shared".to_string()
        } else {
            format!("bench:counter:{i}")
        };
        redis::cmd("SET")
            .arg(&key)
            .arg(0u64)
            .query_async::<()>(&mut con)
            .await?;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let (mut committed, mut aborted) = (0u64, 0u64);
            let mut samples = Samples::with_capacity(1 << 14);
            while started.elapsed() < budget {
                let t = Instant::now();
                loop {
                    let (value,): (Option<u64>,) = redis::pipe()
                        .cmd("WATCH")
                        .arg(&key)
                        .ignore()
                        .get(&key)
                        .query_async(&mut con)
                        .await?;
                    let done: Option<(String,)> = redis::pipe()
                        .atomic()
                        .set(&key, value.unwrap_or(0) + 1)
                        .query_async(&mut con)
                        .await?;
                    if done.is_some() {
                        break;
                    }
                    aborted += 1;
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
        let mut con = client.get_multiplexed_async_connection().await?;
        let total: u64 = redis::cmd("GET")
            .arg("bench:shared")
            .query_async(&mut con)
            .await?;
        anyhow::ensure!(
            total == committed,
            "redis shared counter is {total} after {committed} increments"
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
    let client = redis::Client::open(url)?;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .context("connecting to redis-server")?;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let mut seq = 0u64;
            let mut samples = Samples::with_capacity(1 << 12);
            while started.elapsed() < budget {
                let t = Instant::now();
                redis::cmd("SET")
                    .arg(format!("bench:event:{i}:{seq}"))
                    .arg(seq)
                    .query_async::<()>(&mut con)
                    .await?;
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
    let client = redis::Client::open(url)?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to redis-server")?;
    crate::as_client("pipelining client", async move {
        let started = Instant::now();
        let mut ops = 0u64;
        let mut samples = Samples::with_capacity(1 << 14);
        while started.elapsed() < budget {
            let t = Instant::now();
            let mut pipe = redis::pipe();
            for _ in 0..depth {
                pipe.set(format!("bench:pipelined:{ops}"), ops).ignore();
                ops += 1;
            }
            pipe.query_async::<()>(&mut con).await?;
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
    use futures::StreamExt;
    const CHANNEL: &str = "bench:clock";
    let client = redis::Client::open(url)?;
    let start = Instant::now();
    let nanos = move || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut tasks = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .context("connecting a subscriber to redis-server")?;
        pubsub
            .subscribe(CHANNEL)
            .await
            .context("subscribing to the channel")?;
        let seen_tx = seen_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let stamp: u64 = msg.get_payload()?;
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
    let mut publisher = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting the publisher to redis-server")?;
    let (mut samples, rounds, elapsed, mut publisher) = crate::as_client("publisher", async move {
        let mut samples = Samples::with_capacity(1 << 16);
        let mut rounds = 0u64;
        let began = Instant::now();
        while began.elapsed() < budget {
            let receivers: usize = redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(nanos().max(1))
                .query_async(&mut publisher)
                .await?;
            anyhow::ensure!(
                receivers == subscribers,
                "PUBLISH reached {receivers} of {subscribers} subscribers"
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
    redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(u64::MAX)
        .query_async::<usize>(&mut publisher)
        .await?;
    for task in tasks {
        task.await.context("a redis subscriber task panicked")??;
    }
    Ok(Measure::new(rounds, elapsed, &mut samples))
}
