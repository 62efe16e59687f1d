//! Commit workloads: sequential latency, private counters, one contended counter, many small
//! creates.

use crate::bench_schema::{Counter, Event};
use crate::report::{CpuCost, CpuMeter, Measure, Row, Samples};
use crate::{redis_base, Ctx};
use anyhow::{Context, Result};
use futures::stream::{FuturesUnordered, StreamExt};
use odb::Client;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// Clients that never give up on a conflict, for the contended counter.
const PATIENT_RETRIES: u32 = 1_000_000;

/// What an ODB increment run did.
pub struct Increments {
    pub measure: Measure,
    pub committed: u64,
    pub attempts: u64,
    /// What each committed increment cost in CPU, server and clients.
    pub cpu: Option<CpuCost>,
}

/// A run-unique name, so workloads sharing the server do not meet each other's objects.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Increments `counter` once in a transaction, counting how often the closure ran.
async fn increment(db: &Client, counter: odb::Ref<Counter>, attempts: &mut u64) -> Result<()> {
    db.transaction(|tx| {
        *attempts += 1;
        let value = counter.value(tx)?;
        counter.set_value(tx, value + 1)
    })
    .await
    .context("increment commit")
}

async fn create_counter(db: &Client, name: String) -> Result<odb::Ref<Counter>> {
    db.transaction(|tx| {
        Counter::create(
            tx,
            Counter {
                name: name.clone(),
                value: 0,
            },
        )
    })
    .await
    .context("creating a counter")
}

/// `clients` TCP clients increment for `budget`: each its own counter, or all the same one.
pub async fn odb_increments(
    ctx: &Ctx,
    clients: usize,
    shared: bool,
    budget: Duration,
) -> Result<Increments> {
    let mut dbs = Vec::with_capacity(clients);
    for i in 0..clients {
        dbs.push(
            ctx.connect(&format!("bench-counter-{i}"), PATIENT_RETRIES)
                .await?,
        );
    }
    let shared_counter = match (shared, dbs.first()) {
        (true, Some(first)) => Some(create_counter(first, unique("shared")).await?),
        _ => None,
    };
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for db in dbs {
        let counter = match shared_counter {
            Some(c) => {
                db.subscribe_object(c)
                    .await
                    .context("subscribing to the counter")?;
                c
            }
            None => create_counter(&db, unique("own")).await?,
        };
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let (mut committed, mut attempts) = (0u64, 0u64);
            let mut samples = Samples::with_capacity(1 << 14);
            while started.elapsed() < budget {
                let t = Instant::now();
                increment(&db, counter, &mut attempts).await?;
                samples.push(t.elapsed());
                committed += 1;
            }
            anyhow::Ok((committed, attempts, samples, started.elapsed(), db))
        }));
    }
    barrier.wait().await;
    let meter = CpuMeter::start(ctx.cpu());
    let (mut committed, mut attempts) = (0, 0);
    let mut samples = Samples::default();
    let mut elapsed = Duration::ZERO;
    let mut last_db = None;
    for task in tasks {
        let (c, a, s, e, db) = task.await.context("a client task panicked")??;
        committed += c;
        attempts += a;
        samples.extend(s);
        elapsed = elapsed.max(e);
        last_db = Some(db);
    }
    let cpu = meter.cost(ctx.cpu(), committed);
    if let (Some(counter), Some(db)) = (shared_counter, last_db) {
        db.flush().await?;
        let total = db.view(|v| counter.value(v))?;
        anyhow::ensure!(
            total == committed,
            "shared counter is {total} after {committed} increments"
        );
    }
    Ok(Increments {
        measure: Measure::new(committed, elapsed, &mut samples),
        committed,
        attempts,
        cpu,
    })
}

/// One client, one read-modify-write commit at a time.
pub async fn commit_latency(ctx: &mut Ctx) -> Result<Row> {
    let ours = odb_increments(ctx, 1, false, ctx.budget).await?;
    let base = ctx.pingpong().await;
    Ok(Row::new("commit-latency", ours.measure)
        .with_baseline("pingpong", base)
        .clients(1)
        .extra("commits", ours.committed)
        .cpu(ours.cpu))
}

/// Idle connections of the crowd workload.
pub const CROWD: usize = 1000;

/// One client's sequential commits while `ctx.idle` other clients stay connected, each with an
/// object of its own and a subscription to a type the committer never writes; the baseline is
/// the same client alone on a fresh server. What the crowd costs each commit is the difference.
pub async fn crowd(ctx: &mut Ctx) -> Result<Row> {
    ctx.fresh_server().await?;
    let alone = odb_increments(ctx, 1, false, ctx.budget).await?;
    ctx.fresh_server().await?;
    let mut crowd = Vec::with_capacity(ctx.idle);
    for i in 0..ctx.idle {
        let db = ctx.connect(&format!("bench-idle-{i}"), 0).await?;
        create_counter(&db, unique("idle")).await?;
        db.subscribe_type::<Event>()
            .await
            .context("subscribing an idle client")?;
        crowd.push(db);
    }
    let ours = odb_increments(ctx, 1, false, ctx.budget).await?;
    drop(crowd);
    Ok(Row::new("crowd", ours.measure)
        .with_baseline("alone", Ok(alone.measure))
        .clients(ctx.idle + 1)
        .extra("idle", ctx.idle as u64)
        .cpu(ours.cpu)
        .baseline_cpu(alone.cpu))
}

/// Every client increments its own counter.
pub async fn counter(ctx: &mut Ctx) -> Result<Row> {
    let ours = odb_increments(ctx, ctx.clients, false, ctx.budget).await?;
    let (base, base_cpu) = match ctx.redis_increments(ctx.clients, false).await {
        Ok((r, cost)) => (Ok(r.measure), cost),
        Err(e) => (Err(e), None),
    };
    Ok(Row::new("counter", ours.measure)
        .with_baseline("redis", base)
        .clients(ctx.clients)
        .cpu(ours.cpu)
        .baseline_cpu(base_cpu))
}

/// Every client increments the same counter; conflicts are retried.
pub async fn contended(ctx: &mut Ctx) -> Result<Row> {
    let ours = odb_increments(ctx, ctx.clients, true, ctx.budget).await?;
    let retries = ours.attempts.saturating_sub(ours.committed);
    let mut row = Row::new("contended", ours.measure)
        .clients(ctx.clients)
        .extra("committed", ours.committed)
        .extra("retries", retries)
        .extra("conflict_rate", conflict_rate(retries, ours.attempts));
    match ctx.redis_increments(ctx.clients, true).await {
        Ok((r, _)) => {
            let attempts = r.committed + r.aborted;
            row = row
                .with_baseline("redis", Ok(r.measure))
                .extra("baseline_aborted", r.aborted)
                .extra("baseline_conflict_rate", conflict_rate(r.aborted, attempts));
        }
        Err(e) => row = row.with_baseline("redis", Err(e)),
    }
    Ok(row)
}

/// Failed attempts over all attempts, to three decimals.
fn conflict_rate(failed: u64, attempts: u64) -> Option<f64> {
    (attempts > 0).then(|| (failed as f64 / attempts as f64 * 1000.0).round() / 1000.0)
}

/// Clients of the aggregate workload unless `--aggregate-clients` says otherwise.
pub const AGGREGATE_CLIENTS: usize = 64;

/// `ctx.aggregate_clients` clients each create small objects, one per commit, as fast as they
/// can.
pub async fn aggregate(ctx: &mut Ctx) -> Result<Row> {
    let clients = ctx.aggregate_clients;
    let mut dbs = Vec::with_capacity(clients);
    for i in 0..clients {
        let db = ctx
            .connect(&format!("bench-aggregate-{i}"), odb::DEFAULT_MAX_RETRIES)
            .await?;
        db.define_schema(crate::bench_schema::schema()).await?;
        dbs.push(db);
    }
    let barrier = Arc::new(Barrier::new(clients + 1));
    let budget = ctx.budget;
    let mut tasks = Vec::with_capacity(clients);
    for (client, db) in dbs.into_iter().enumerate() {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let mut seq = 0u64;
            let mut samples = Samples::with_capacity(1 << 12);
            while started.elapsed() < budget {
                let t = Instant::now();
                let event = Event {
                    client: client as u32,
                    seq,
                };
                db.transaction(|tx| Event::create(tx, event.clone()))
                    .await
                    .context("create commit")?;
                samples.push(t.elapsed());
                seq += 1;
            }
            anyhow::Ok((seq, samples, started.elapsed()))
        }));
    }
    barrier.wait().await;
    let meter = CpuMeter::start(ctx.cpu());
    let mut commits = 0;
    let mut samples = Samples::default();
    let mut elapsed = Duration::ZERO;
    for task in tasks {
        let (c, s, e) = task.await.context("a client task panicked")??;
        commits += c;
        samples.extend(s);
        elapsed = elapsed.max(e);
    }
    let cpu = meter.cost(ctx.cpu(), commits);
    let (base, base_cpu) = ctx
        .redis_baseline(|url| async move { redis_base::sets(&url, clients, budget).await })
        .await;
    Ok(
        Row::new("aggregate", Measure::new(commits, elapsed, &mut samples))
            .with_baseline("redis", base)
            .clients(clients)
            .extra("commits", commits)
            .cpu(cpu)
            .baseline_cpu(base_cpu),
    )
}

/// Commits in flight in the pipelined workload unless `--in-flight` says otherwise.
pub const IN_FLIGHT: usize = 64;

/// One client keeps `ctx.in_flight` commits in flight with `transaction_async`, each creating
/// one small object; against one Redis connection sending SETs in pipelines of as many.
pub async fn pipelined(ctx: &mut Ctx) -> Result<Row> {
    let depth = ctx.in_flight;
    let db = ctx
        .connect("bench-pipelined", odb::DEFAULT_MAX_RETRIES)
        .await?;
    db.define_schema(crate::bench_schema::schema()).await?;
    let meter = CpuMeter::start(ctx.cpu());
    let budget = ctx.budget;
    let (mut samples, committed, elapsed) = crate::as_client("pipelined client", async move {
        let mut in_flight = FuturesUnordered::new();
        let mut samples = Samples::with_capacity(1 << 16);
        let mut seq = 0u64;
        let mut committed = 0u64;
        let started = Instant::now();
        loop {
            let sending = started.elapsed() < budget;
            while sending && in_flight.len() < depth {
                let event = Event { client: 0, seq };
                let t = Instant::now();
                let pending = db
                    .transaction_async(|tx| Event::create(tx, event.clone()))
                    .await
                    .context("sending a create commit")?;
                in_flight.push(async move { pending.await.map(|_| t.elapsed()) });
                seq += 1;
            }
            match in_flight.next().await {
                Some(done) => {
                    samples.push(done.context("a pipelined commit")?);
                    committed += 1;
                }
                None => break,
            }
        }
        anyhow::Ok((samples, committed, started.elapsed()))
    })
    .await?;
    let cpu = meter.cost(ctx.cpu(), committed);
    let (base, base_cpu) = ctx
        .redis_baseline(|url| async move { redis_base::pipelined_sets(&url, depth, budget).await })
        .await;
    Ok(
        Row::new("pipelined", Measure::new(committed, elapsed, &mut samples))
            .with_baseline("redis", base)
            .clients(1)
            .extra("in_flight", depth as u64)
            .cpu(cpu)
            .baseline_cpu(base_cpu),
    )
}
