//! The benchmark suite: the `odb-server` binary in a process of its own (or, with
//! `--server embedded`, a server inside this process) with TCP clients in this process,
//! compared with a loopback round trip and, where it makes sense, with Redis.
//!
//! ```text
//! cargo run --release --example bench -- [--workload NAME] [--clients N] [--seconds S] [--json]
//! cargo run --release --example bench -- --server embedded
//! cargo run --release --example bench -- --scaling [--workload NAME] [--seconds S]
//! ```
//! Workloads: pingpong, commit-latency, crowd, counter, contended, aggregate, pipelined, fanout,
//! subscribe, bulk, reads, memory (default: all). The Redis baselines start a private
//! `redis-server`; without one the baseline is reported as unavailable and the workload still
//! runs.

mod commits;
mod data;
mod memory;
mod pingpong;
mod redis_base;
mod report;
mod resp;
mod server;

use anyhow::{Context, Result};
use clap::Parser;
use report::{CpuCost, CpuMeter, CpuReading, Measure, Row};
use server::{BenchServer, ServerMode};
use std::path::PathBuf;
use std::time::Duration;

/// Runs one of a workload's clients as a spawned task and waits for it. Every client runs on
/// the runtime's worker threads: the `main` future runs outside them, and each wake-up of it
/// would cost a cross-thread hand-off that no client of a real program pays (see
/// `pingpong.rs`). `what` names the client in the error if its task panics.
pub async fn as_client<T: Send + 'static>(
    what: &str,
    client: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(client)
        .await
        .with_context(|| format!("the {what} task panicked"))?
}

/// The same allocator as the `odb-server` binary, so that the embedded server measured here
/// allocates as the real one does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The benchmark's objects.
#[odb::schema]
pub mod bench_schema {
    /// A counter incremented by read-modify-write commits.
    #[derive(odb::Object, Debug, Clone)]
    pub struct Counter {
        /// Unique per counter.
        #[index]
        pub name: String,
        /// The count.
        pub value: u64,
    }

    /// A small object created by the aggregate workload.
    #[derive(odb::Object, Debug, Clone)]
    pub struct Event {
        /// Which client created it.
        pub client: u32,
        /// The client's sequence number.
        pub seq: u64,
    }

    /// The fan-out workload's timestamp.
    #[derive(odb::Object, Debug, Clone)]
    pub struct Clock {
        /// Nanoseconds since the workload's start when written.
        pub nanos: u64,
    }

    /// Three fields and one index: the bulk, reads and memory workloads' objects.
    #[derive(odb::Object, Debug, Clone)]
    pub struct Item {
        /// Unique per item.
        #[index]
        pub key: String,
        /// A number.
        pub a: u64,
        /// Another number.
        pub b: u64,
    }
}

const WORKLOADS: [&str; 12] = [
    "pingpong",
    "commit-latency",
    "crowd",
    "counter",
    "contended",
    "aggregate",
    "pipelined",
    "fanout",
    "subscribe",
    "bulk",
    "reads",
    "memory",
];

#[derive(Parser)]
#[command(about = "Measures ODB against a loopback round trip and Redis")]
struct Args {
    /// Run only this workload (repeatable): pingpong, commit-latency, crowd, counter,
    /// contended, aggregate, pipelined, fanout, subscribe, bulk, reads, memory.
    #[arg(long)]
    workload: Vec<String>,
    /// Where the server runs: the `odb-server` binary in a child process (built first with
    /// the benchmark's profile), or embedded in the benchmark process.
    #[arg(long, value_enum, default_value_t = ServerMode::Process)]
    server: ServerMode,
    /// The `odb-server` binary to run instead of building the workspace's.
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Clients of the counter and contended workloads.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Time budget of each timed workload, in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Objects of the bulk and reads workloads (default 100,000) and of memory (default
    /// 1,000,000, or 100,000 when --seconds is below 3).
    #[arg(long)]
    objects: Option<usize>,
    /// Clients of the aggregate workload.
    #[arg(long, default_value_t = commits::AGGREGATE_CLIENTS)]
    aggregate_clients: usize,
    /// Subscribers of the fanout workload.
    #[arg(long, default_value_t = data::SUBSCRIBERS)]
    subscribers: usize,
    /// Commits (and Redis SETs) in flight in the pipelined workload.
    #[arg(long, default_value_t = commits::IN_FLIGHT)]
    in_flight: usize,
    /// Idle clients connected during the crowd workload.
    #[arg(long, default_value_t = commits::CROWD)]
    idle: usize,
    /// Instead of one run per workload, run each workload that has a size (clients,
    /// subscribers or objects) at the three sizes of its sweep; see `SCALING`.
    #[arg(long)]
    scaling: bool,
    /// Print one JSON object per workload and line instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: run as the memory workload's writer process against this server URL.
    #[arg(long, hide = true)]
    memory_writer: Option<String>,
    /// Internal: run as the memory workload's reader process against this server URL.
    #[arg(long, hide = true)]
    memory_reader: Option<String>,
    /// Internal: run as the memory workload's measuring process (server, writer, reader).
    #[arg(long, hide = true)]
    memory_probe: bool,
    /// Internal: run as the pingpong workload's echo server.
    #[arg(long, hide = true)]
    echo_server: bool,
}

/// What a workload's size is.
#[derive(Clone, Copy)]
enum Knob {
    Clients,
    AggregateClients,
    Subscribers,
    Objects,
}

/// The sweeps of `--scaling`: each workload with the size it varies and three sizes.
const SCALING: [(&str, Knob, [usize; 3]); 7] = [
    ("counter", Knob::Clients, [1, 4, 16]),
    ("contended", Knob::Clients, [2, 8, 16]),
    ("aggregate", Knob::AggregateClients, [8, 64, 256]),
    ("fanout", Knob::Subscribers, [1, 4, 16]),
    ("bulk", Knob::Objects, [10_000, 50_000, 150_000]),
    ("reads", Knob::Objects, [10_000, 100_000, 1_000_000]),
    ("memory", Knob::Objects, [100_000, 300_000, 1_000_000]),
];

/// What the workloads share: settings, the current server, the baselines.
pub struct Ctx {
    pub budget: Duration,
    pub seconds: f64,
    pub clients: usize,
    pub aggregate_clients: usize,
    pub subscribers: usize,
    pub in_flight: usize,
    pub idle: usize,
    pub objects: Option<usize>,
    pub mode: ServerMode,
    /// The `odb-server` binary in process mode.
    pub server_bin: Option<PathBuf>,
    server: Option<BenchServer>,
    pingpong: Option<Result<Measure, String>>,
    redis: Option<Result<redis_base::RedisGuard, String>>,
}

impl Ctx {
    /// Sets the size a sweep varies.
    fn set(&mut self, knob: Knob, size: usize) {
        match knob {
            Knob::Clients => self.clients = size,
            Knob::AggregateClients => self.aggregate_clients = size,
            Knob::Subscribers => self.subscribers = size,
            Knob::Objects => self.objects = Some(size),
        }
    }

    /// Replaces the server with a new, empty one listening on a free loopback port.
    pub async fn fresh_server(&mut self) -> Result<()> {
        if let Some(old) = self.server.take() {
            old.shutdown().await;
        }
        let server = BenchServer::start(self.mode, self.server_bin.as_deref()).await?;
        self.server = Some(server);
        Ok(())
    }

    pub fn server(&self) -> Result<&BenchServer> {
        self.server.as_ref().context("no server is running")
    }

    pub fn url(&self) -> Result<String> {
        self.server()?.url()
    }

    /// CPU time used so far by the benchmark process and, in process mode, by the server's:
    /// together, all the work of a workload but Redis'.
    pub fn cpu(&self) -> Option<CpuReading> {
        let server = match self.server.as_ref().and_then(BenchServer::pid) {
            Some(pid) => Some(report::process_cpu(&pid.to_string())?),
            None => None,
        };
        Some(CpuReading {
            clients: report::process_cpu("self")?,
            server,
        })
    }

    /// CPU time used so far by the benchmark process and by the private `redis-server`.
    fn redis_cpu(&self) -> Option<CpuReading> {
        let pid = match &self.redis {
            Some(Ok(guard)) => guard.pid(),
            _ => return None,
        };
        Some(CpuReading {
            clients: report::process_cpu("self")?,
            server: Some(report::process_cpu(&pid.to_string())?),
        })
    }

    /// Runs a Redis baseline on the private `redis-server` (started on first use) and measures
    /// what its operations cost, at the rate it reports.
    pub async fn redis_baseline<F, Fut>(
        &mut self,
        run: F,
    ) -> (Result<Measure, String>, Option<CpuCost>)
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<Measure>>,
    {
        let url = match self.redis_url().await {
            Ok(url) => url,
            Err(e) => return (Err(e), None),
        };
        let meter = CpuMeter::start(self.redis_cpu());
        let result = run(url).await.map_err(|e| format!("{e:#}"));
        let cost = result
            .as_ref()
            .ok()
            .and_then(|m| meter.cost_at_rate(self.redis_cpu(), m.ops_per_sec));
        (result, cost)
    }

    pub fn token(&self) -> Result<String> {
        Ok(self.server()?.token().to_string())
    }

    /// A new TCP client of the current server.
    pub async fn connect(&self, name: &str, max_retries: u32) -> Result<odb::Client> {
        odb::Client::builder(self.url()?)
            .token(self.token()?)
            .name(name)
            .max_retries(max_retries)
            .connect()
            .await
            .with_context(|| format!("connecting {name}"))
    }

    /// The loopback round trip, measured once per run.
    pub async fn pingpong(&mut self) -> Result<Measure, String> {
        if self.pingpong.is_none() {
            let measured = pingpong::run(self.mode, self.budget).await;
            self.pingpong = Some(measured.map_err(|e| format!("{e:#}")));
        }
        self.pingpong
            .clone()
            .unwrap_or_else(|| Err("not run".into()))
    }

    /// The URL of the private `redis-server`, started on first use.
    pub async fn redis_url(&mut self) -> Result<String, String> {
        if self.redis.is_none() {
            let started = redis_base::RedisGuard::start().await;
            self.redis = Some(started.map_err(|e| format!("{e:#}")));
        }
        match &self.redis {
            Some(Ok(guard)) => Ok(guard.url.clone()),
            Some(Err(e)) => Err(e.clone()),
            None => Err("redis-server was not started".into()),
        }
    }

    /// Redis increments on the private `redis-server`, with what each committed one cost.
    pub async fn redis_increments(
        &mut self,
        clients: usize,
        shared: bool,
    ) -> Result<(redis_base::Increments, Option<CpuCost>), String> {
        let url = self.redis_url().await?;
        let meter = CpuMeter::start(self.redis_cpu());
        let increments = redis_base::increments(&url, clients, shared, self.budget)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let cost = meter.cost(self.redis_cpu(), increments.committed);
        Ok((increments, cost))
    }
}

async fn run_workload(ctx: &mut Ctx, name: &str) -> Result<Row> {
    match name {
        "pingpong" => {
            let m = ctx.pingpong().await.map_err(anyhow::Error::msg)?;
            Ok(Row::new("pingpong", m)
                .clients(1)
                .extra("frame_payload_bytes", pingpong::FRAME_PAYLOAD))
        }
        "commit-latency" => {
            ctx.fresh_server().await?;
            commits::commit_latency(ctx).await
        }
        "crowd" => commits::crowd(ctx).await,
        "counter" => {
            ctx.fresh_server().await?;
            commits::counter(ctx).await
        }
        "contended" => {
            ctx.fresh_server().await?;
            commits::contended(ctx).await
        }
        "aggregate" => {
            ctx.fresh_server().await?;
            commits::aggregate(ctx).await
        }
        "pipelined" => {
            ctx.fresh_server().await?;
            commits::pipelined(ctx).await
        }
        "fanout" => data::fanout(ctx).await,
        "subscribe" => data::subscribe(ctx).await,
        "bulk" => data::bulk(ctx).await,
        "reads" => data::reads(ctx).await,
        "memory" => memory::memory(ctx).await,
        other => anyhow::bail!("unknown workload {other:?}"),
    }
}

fn static_name(name: &str) -> &'static str {
    WORKLOADS
        .iter()
        .find(|w| **w == name)
        .copied()
        .unwrap_or("unknown")
}

async fn run(args: Args) -> Result<bool> {
    if let Some(url) = &args.memory_writer {
        memory::writer(url, args.objects.unwrap_or(100_000)).await?;
        return Ok(true);
    }
    if let Some(url) = &args.memory_reader {
        memory::reader(url, args.objects.unwrap_or(100_000)).await?;
        return Ok(true);
    }
    if args.memory_probe {
        memory::probe(args.objects.unwrap_or(100_000)).await?;
        return Ok(true);
    }
    if args.echo_server {
        pingpong::echo_server().await?;
        return Ok(true);
    }
    for w in &args.workload {
        anyhow::ensure!(
            WORKLOADS.contains(&w.as_str()),
            "unknown workload {w:?}; expected one of {}",
            WORKLOADS.join(", ")
        );
    }
    anyhow::ensure!(
        args.clients > 0
            && args.aggregate_clients > 0
            && args.subscribers > 0
            && args.in_flight > 0,
        "--clients, --aggregate-clients, --subscribers and --in-flight must be at least 1"
    );
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds > 0.0,
        "--seconds must be positive"
    );
    let selected: Vec<&str> = if args.workload.is_empty() {
        WORKLOADS.to_vec()
    } else {
        args.workload.iter().map(|w| static_name(w)).collect()
    };
    let server_bin = match args.server {
        ServerMode::Process => Some(server::server_binary(args.server_bin.as_deref())?),
        ServerMode::Embedded => None,
    };
    let mut ctx = Ctx {
        budget: Duration::from_secs_f64(args.seconds),
        seconds: args.seconds,
        clients: args.clients,
        aggregate_clients: args.aggregate_clients,
        subscribers: args.subscribers,
        in_flight: args.in_flight,
        idle: args.idle,
        objects: args.objects,
        mode: args.server,
        server_bin,
        server: None,
        pingpong: None,
        redis: None,
    };
    if !args.json {
        report::print_header();
    }
    let mut runs: Vec<(&str, Option<(Knob, usize)>)> = Vec::new();
    for name in selected {
        match SCALING.iter().find(|(w, _, _)| *w == name) {
            Some(&(_, knob, sizes)) if args.scaling => {
                runs.extend(sizes.iter().map(|&size| (name, Some((knob, size)))));
            }
            _ if args.scaling => {}
            _ => runs.push((name, None)),
        }
    }
    let mut all_ok = true;
    for (name, size) in runs {
        if let Some((knob, size)) = size {
            ctx.set(knob, size);
        }
        let row = match run_workload(&mut ctx, name).await {
            Ok(row) => row,
            Err(e) => {
                all_ok = false;
                Row::failed(static_name(name), &e)
            }
        };
        if args.json {
            println!("{}", row.json(ctx.mode.name(), args.seconds));
        } else {
            report::print_row(&row);
        }
        if let Some(e) = &row.baseline_error {
            eprintln!("{}: baseline unavailable: {e}", row.workload);
        }
        if let Some(e) = &row.error {
            eprintln!("{}: failed: {e}", row.workload);
        }
    }
    if let Some(server) = ctx.server.take() {
        server.shutdown().await;
    }
    // Dropping the context stops redis-server.
    drop(ctx);
    Ok(all_ok)
}

#[tokio::main]
async fn main() {
    match run(Args::parse()).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
