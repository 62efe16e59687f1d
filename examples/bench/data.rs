//! Data workloads: fan-out to subscribers, subscribing to many objects, one bulk transaction,
//! local reads.

use crate::bench_schema::{self, Clock, Item};
use crate::report::{rate, round1, CpuMeter, Measure, Row, Samples};
use crate::{redis_base, Ctx};
use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Subscribers of the fan-out workload unless `--subscribers` says otherwise.
pub const SUBSCRIBERS: usize = 16;
/// How long anything may take to show up before the workload fails.
const PATIENCE: Duration = Duration::from_secs(120);
/// Objects per transaction when filling the database.
pub const BATCH: usize = 10_000;

/// An item of the bulk, reads and memory workloads: three fields, one index.
pub fn item(i: usize) -> Item {
    Item {
        key: format!("item-{i:08}"),
        a: i as u64,
        b: (i as u64).wrapping_mul(0x9e37_79b9),
    }
}

/// Creates `items` in transactions of [`BATCH`].
pub async fn fill(db: &odb::Client, items: std::ops::Range<usize>) -> Result<()> {
    let mut start = items.start;
    while start < items.end {
        let end = (start + BATCH).min(items.end);
        db.transaction(|tx| {
            for i in start..end {
                Item::create(tx, item(i))?;
            }
            Ok::<_, odb::Error>(())
        })
        .await
        .context("filling the database")?;
        start = end;
    }
    Ok(())
}

fn nanos_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
}

/// One writer stamps an object with the time; every subscriber measures how long it took until
/// the new stamp was visible in its replica. The next stamp is written once all have seen it.
pub async fn fanout(ctx: &mut Ctx) -> Result<Row> {
    ctx.fresh_server().await?;
    let writer = ctx
        .connect("bench-writer", odb::DEFAULT_MAX_RETRIES)
        .await?;
    let clock = writer
        .transaction(|tx| Clock::create(tx, Clock { nanos: 0 }))
        .await
        .context("creating the clock")?;
    let start = Instant::now();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<u64>();
    let count = ctx.subscribers;
    let mut subscribers = Vec::with_capacity(count);
    for i in 0..count {
        let db = ctx.connect(&format!("bench-subscriber-{i}"), 0).await?;
        db.subscribe(bench_schema::schema())
            .await
            .context("subscribing")?;
        let seen_tx = seen_tx.clone();
        subscribers.push(tokio::spawn(async move {
            let mut last = 0u64;
            loop {
                let mut stamp = last;
                db.wait_for(
                    |v| {
                        stamp = clock.nanos(v)?;
                        Ok(stamp != last)
                    },
                    PATIENCE,
                )
                .await
                .context("waiting for the next stamp")?;
                if stamp == u64::MAX {
                    return anyhow::Ok(());
                }
                let latency = nanos_since(start).saturating_sub(stamp);
                if seen_tx.send(latency).is_err() {
                    return Ok(());
                }
                last = stamp;
            }
        }));
    }
    drop(seen_tx);

    let meter = CpuMeter::start(ctx.cpu());
    let budget = ctx.budget;
    let stamping = writer.clone();
    let (mut samples, rounds, elapsed) = crate::as_client("writer", async move {
        let mut samples = Samples::with_capacity(1 << 16);
        let mut rounds = 0u64;
        let began = Instant::now();
        while began.elapsed() < budget {
            stamping
                .transaction(|tx| clock.set_nanos(tx, nanos_since(start).max(1)))
                .await
                .context("writing a stamp")?;
            for _ in 0..count {
                let latency = tokio::time::timeout(PATIENCE, seen_rx.recv())
                    .await
                    .context("a subscriber did not see the stamp in time")?
                    .context("a subscriber stopped")?;
                samples.push_nanos(latency);
            }
            rounds += 1;
        }
        anyhow::Ok((samples, rounds, began.elapsed()))
    })
    .await?;
    let cpu = meter.cost(ctx.cpu(), rounds);
    writer
        .transaction(|tx| clock.set_nanos(tx, u64::MAX))
        .await
        .context("writing the stop stamp")?;
    for s in subscribers {
        s.await.context("a subscriber task panicked")??;
    }
    let deliveries = samples.len() as u64;
    let ours = Measure::new(rounds, elapsed, &mut samples);
    let budget = ctx.budget;
    let (base, base_cpu) = ctx
        .redis_baseline(|url| async move { redis_base::pubsub(&url, count, budget).await })
        .await;
    Ok(Row::new("fanout", ours)
        .with_baseline("redis", base)
        .clients(count + 1)
        .extra("subscribers", count as u64)
        .extra("deliveries_per_sec", rate(deliveries, elapsed))
        .cpu(cpu)
        .baseline_cpu(base_cpu))
}

/// The two sizes of the subscribe workload, as in the original's measurement (11,000) and
/// as the targets ask (100,000).
const SUBSCRIBE_SIZES: [usize; 2] = [11_000, 100_000];

/// A fresh client subscribes to the schema of a server holding 11,000 and then 100,000
/// items; measured from the subscribe call until it returns, i.e. until all objects are
/// visible in the client's replica (the count is then checked).
pub async fn subscribe(ctx: &mut Ctx) -> Result<Row> {
    ctx.fresh_server().await?;
    let writer = ctx
        .connect("bench-subscribe-writer", odb::DEFAULT_MAX_RETRIES)
        .await?;
    writer.define_schema(bench_schema::schema()).await?;
    let mut filled = 0;
    let mut times_ms = Vec::with_capacity(SUBSCRIBE_SIZES.len());
    let mut last = Duration::ZERO;
    for (i, &n) in SUBSCRIBE_SIZES.iter().enumerate() {
        fill(&writer, filled..n).await?;
        filled = n;
        let db = ctx.connect(&format!("bench-subscriber-{i}"), 0).await?;
        let subscriber = db.clone();
        last = crate::as_client("subscriber", async move {
            let started = Instant::now();
            subscriber
                .subscribe(bench_schema::schema())
                .await
                .context("subscribing")?;
            anyhow::Ok(started.elapsed())
        })
        .await?;
        let count = db.view(|v| Ok::<_, odb::Error>(Item::lookup_all(v)?.len()))?;
        anyhow::ensure!(count == n, "the subscriber sees {count} of {n} objects");
        times_ms.push(round1(last.as_secs_f64() * 1000.0));
    }
    let ours = Measure {
        ops_per_sec: rate(filled as u64, last),
        p50_us: None,
        p99_us: None,
    };
    Ok(Row::new("subscribe", ours)
        .clients(1 + SUBSCRIBE_SIZES.len())
        .extra("ms_11k", times_ms.first().copied())
        .extra("ms_100k", times_ms.get(1).copied()))
}

/// One transaction creates all objects; measured until they are visible in another client.
pub async fn bulk(ctx: &mut Ctx) -> Result<Row> {
    let n = ctx.objects.unwrap_or(100_000).max(1);
    ctx.fresh_server().await?;
    let writer = ctx.connect("bench-bulk-writer", 0).await?;
    writer.define_schema(bench_schema::schema()).await?;
    let reader = ctx.connect("bench-bulk-reader", 0).await?;
    reader.subscribe(bench_schema::schema()).await?;
    let last_key = item(n - 1).key;

    // The writer and the reader are spawned tasks (see `as_client`). The reader waits from
    // before the commit starts, so that it takes the time at which the objects
    // became visible to it, whether or not the writer's own transaction has returned by then.
    let watching = reader.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let seen = tokio::spawn(async move {
        let mut first = Some(ready_tx);
        watching
            .wait_for(
                |v| {
                    if let Some(ready) = first.take() {
                        let _ = ready.send(());
                    }
                    Ok(Item::lookup_any_by_key(v, &last_key)?.is_some())
                },
                PATIENCE,
            )
            .await
            .context("waiting for the bulk commit in the reader")?;
        anyhow::Ok(Instant::now())
    });
    ready_rx
        .await
        .context("the reader stopped before it began to wait")?;
    let committing = writer.clone();
    let started = Instant::now();
    let (committed, runs) = crate::as_client("writer", async move {
        let mut runs = 0u32;
        committing
            .transaction(|tx| {
                runs += 1;
                for i in 0..n {
                    Item::create(tx, item(i))?;
                }
                Ok::<_, odb::Error>(())
            })
            .await
            .context("the bulk commit")?;
        anyhow::Ok((started.elapsed(), runs))
    })
    .await?;
    let visible = seen
        .await
        .context("the reader task panicked")??
        .saturating_duration_since(started);
    let count = reader.view(|v| Ok::<_, odb::Error>(Item::lookup_all(v)?.len()))?;
    anyhow::ensure!(count == n, "the reader sees {count} of {n} objects");
    let ours = Measure {
        ops_per_sec: rate(n as u64, visible),
        p50_us: None,
        p99_us: None,
    };
    Ok(Row::new("bulk", ours)
        .clients(2)
        .extra("objects", n as u64)
        .extra("commit_ms", round1(committed.as_secs_f64() * 1000.0))
        .extra("visible_ms", round1(visible.as_secs_f64() * 1000.0))
        .extra("closure_runs", runs))
}

/// Field reads and index lookups inside one view of the local replica.
pub async fn reads(ctx: &mut Ctx) -> Result<Row> {
    let n = ctx.objects.unwrap_or(100_000).max(1);
    ctx.fresh_server().await?;
    let db = ctx.connect("bench-reads", 0).await?;
    fill(&db, 0..n).await?;
    let keys: Vec<String> = (0..n).map(|i| item(i).key).collect();
    let phase = ctx.budget / 2;
    let (reads, read_time, lookups, lookup_time) = db.view(|v| {
        let handles = Item::lookup_all(v)?;
        if handles.len() != n {
            return Err(odb::Error::abort(format!(
                "the view holds {} of {n} objects",
                handles.len()
            )));
        }
        let mut sum = 0u64;
        let mut reads = 0u64;
        let t = Instant::now();
        'reads: loop {
            for chunk in handles.chunks(1024) {
                for h in chunk {
                    sum = sum.wrapping_add(h.a(v)?);
                }
                reads += chunk.len() as u64;
                if t.elapsed() >= phase {
                    break 'reads;
                }
            }
        }
        let read_time = t.elapsed();
        let mut lookups = 0u64;
        let t = Instant::now();
        'lookups: loop {
            for chunk in keys.chunks(1024) {
                for key in chunk {
                    if Item::lookup_any_by_key(v, key)?.is_none() {
                        return Err(odb::Error::abort(format!("no item with key {key}")));
                    }
                }
                lookups += chunk.len() as u64;
                if t.elapsed() >= phase {
                    break 'lookups;
                }
            }
        }
        std::hint::black_box(sum);
        Ok((reads, read_time, lookups, t.elapsed()))
    })?;
    let ours = Measure {
        ops_per_sec: rate(reads, read_time),
        p50_us: None,
        p99_us: None,
    };
    Ok(Row::new("reads", ours)
        .clients(1)
        .extra("objects", n as u64)
        .extra("field_reads_per_sec", rate(reads, read_time))
        .extra("index_lookups_per_sec", rate(lookups, lookup_time)))
}
