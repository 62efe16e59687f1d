//! Memory per object, of the server and of a client replica. The server runs in a process of
//! its own: the `odb-server` binary, or with `--server embedded` this same program in probe
//! mode. The objects are written by another child (writer mode), since a client keeps the
//! objects it creates in its own replica and would otherwise be counted with the server, and
//! then read by a third (reader mode), which subscribes to them all: its growth is what a
//! client replica costs.

use crate::data::fill;
use crate::report::{rate, Measure, Row};
use crate::server::{rss_bytes_of, settled_rss, BenchServer, ChildGuard, ServerMode};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable passing the service token to the writer process.
pub const TOKEN_ENV: &str = "ODB_BENCH_TOKEN";
/// Objects written by default, and with a short time budget (`--seconds` below 3).
const DEFAULT_OBJECTS: usize = 1_000_000;
const SMALL_OBJECTS: usize = 100_000;

/// How long the server's resident size may take to settle after the last commit.
const SETTLE: Duration = Duration::from_secs(2);

/// This process's resident set size in bytes.
fn rss_bytes() -> Result<u64> {
    rss_bytes_of("self")
}

/// Runs this program again with `args` (and `env`), waits for it and returns its output.
async fn run_child(args: &[&str], env: Option<(&str, &str)>) -> Result<String> {
    let exe = std::env::current_exe().context("locating the benchmark executable")?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some((k, v)) = env {
        command.env(k, v);
    }
    // mimalloc returns freed pages to the system a second after they were freed, and only when
    // the process calls the allocator again: the resident size measured right after a burst
    // would count the buffers the burst freed. Returning them at once makes it count what the
    // process holds.
    command.env("MIMALLOC_PURGE_DELAY", "0");
    let mut guard = ChildGuard(command.spawn().context("starting a child process")?);
    let mut stdout = guard.0.stdout.take().context("the child has no output")?;
    // Read the whole output on a blocking thread: the child may print more than a pipe holds.
    let reading = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let out = match tokio::time::timeout(Duration::from_secs(900), reading).await {
        Ok(joined) => joined.context("the child's reader panicked")??,
        Err(_) => bail!("the child process {args:?} did not finish within 15 minutes"),
    };
    let status = guard.0.wait()?;
    if !status.success() {
        bail!("the child process {args:?} failed ({status})");
    }
    Ok(out)
}

/// Parses a child's last line: two resident sizes, before and after.
fn two_sizes(out: &str, who: &str) -> Result<(u64, u64)> {
    let sizes: Vec<u64> = out
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match sizes[..] {
        [before, after] => Ok((before, after)),
        _ => bail!("the {who} process printed {out:?}, expected two sizes"),
    }
}

/// Fills the server at `url` with `objects` items from a writer process, then subscribes a
/// reader process to them all; `server_rss` reads the server's resident size. Returns the
/// sizes as a JSON object.
async fn measure(
    url: &str,
    token: &str,
    objects: usize,
    server_rss: impl Fn() -> Result<u64>,
) -> Result<Value> {
    let before = settled_rss(&server_rss, SETTLE).await?;
    let started = Instant::now();
    let n = objects.to_string();
    let out = run_child(
        &["--memory-writer", url, "--objects", &n],
        Some((TOKEN_ENV, token)),
    )
    .await?;
    let write_seconds = started.elapsed().as_secs_f64();
    let (w_before, w_after) = two_sizes(&out, "writer")?;
    let after = settled_rss(&server_rss, SETTLE).await?;
    let out = run_child(
        &["--memory-reader", url, "--objects", &n],
        Some((TOKEN_ENV, token)),
    )
    .await?;
    let (r_before, r_after) = two_sizes(&out, "reader")?;
    Ok(json!({
        "server_rss_before": before,
        "server_rss_after": after,
        "writer_rss_before": w_before,
        "writer_rss_after": w_after,
        "reader_rss_before": r_before,
        "reader_rss_after": r_after,
        "write_seconds": write_seconds,
    }))
}

/// The memory workload. The server is fresh and in a process of its own, so that memory an
/// allocator kept from earlier workloads does not hide the growth.
pub async fn memory(ctx: &mut Ctx) -> Result<Row> {
    let (n, note) = match ctx.objects {
        Some(n) => (n.max(1), "--objects"),
        None if ctx.seconds < 3.0 => (SMALL_OBJECTS, "scaled down because --seconds < 3"),
        None => (DEFAULT_OBJECTS, "default"),
    };
    let probe = match ctx.mode {
        ServerMode::Process => {
            let server = BenchServer::start(ctx.mode, ctx.server_bin.as_deref()).await?;
            let probe = measure(&server.url()?, server.token(), n, || server.rss_bytes()).await;
            server.shutdown().await;
            probe?
        }
        ServerMode::Embedded => {
            let out = run_child(&["--memory-probe", "--objects", &n.to_string()], None).await?;
            let line = out
                .lines()
                .last()
                .context("the memory probe printed nothing")?;
            serde_json::from_str(line).context("the memory probe printed malformed JSON")?
        }
    };
    let field = |k: &str| {
        probe[k]
            .as_u64()
            .with_context(|| format!("the memory probe did not report {k}"))
    };
    let (before, after) = (field("server_rss_before")?, field("server_rss_after")?);
    let (w_before, w_after) = (field("writer_rss_before")?, field("writer_rss_after")?);
    let (r_before, r_after) = (field("reader_rss_before")?, field("reader_rss_after")?);
    let per_object = |b: u64, a: u64| (a.saturating_sub(b) as f64 / n as f64).round();
    let write_secs = probe["write_seconds"].as_f64().unwrap_or(0.0);
    let ours = Measure {
        ops_per_sec: rate(n as u64, Duration::from_secs_f64(write_secs)),
        p50_us: None,
        p99_us: None,
    };
    Ok(Row::new("memory", ours)
        .clients(2)
        .extra("objects", n as u64)
        .extra("objects_note", note)
        .extra("server_bytes_per_object", per_object(before, after))
        .extra("client_bytes_per_object", per_object(r_before, r_after))
        .extra(
            "writer_client_bytes_per_object",
            per_object(w_before, w_after),
        )
        .extra("server_rss_before", before)
        .extra("server_rss_after", after))
}

/// The probe process of `--server embedded`: starts an empty embedded server, measures
/// against it and prints the sizes as one JSON line.
pub async fn probe(objects: usize) -> Result<()> {
    let server = BenchServer::start(ServerMode::Embedded, None).await?;
    let probe = measure(&server.url()?, server.token(), objects, rss_bytes).await?;
    println!("{probe}");
    server.shutdown().await;
    Ok(())
}

/// The writer process: creates `objects` items in transactions of 10,000 over TCP, then
/// prints its own resident size before and after.
pub async fn writer(url: &str, objects: usize) -> Result<()> {
    let db = connect(url, "bench-memory-writer").await?;
    db.define_schema(crate::bench_schema::schema()).await?;
    let before = rss_bytes()?;
    fill(&db, 0..objects).await?;
    let after = rss_bytes()?;
    println!("{before} {after}");
    Ok(())
}

/// The reader process: subscribes to the schema, checks that it sees `objects` items, then
/// prints its own resident size before and after subscribing.
pub async fn reader(url: &str, objects: usize) -> Result<()> {
    let db = connect(url, "bench-memory-reader").await?;
    db.define_schema(crate::bench_schema::schema()).await?;
    let before = rss_bytes()?;
    db.subscribe(crate::bench_schema::schema()).await?;
    // Measured before the check, whose list of handles would be counted otherwise.
    let after = rss_bytes()?;
    let seen = db.view(|v| Ok::<_, odb::Error>(crate::bench_schema::Item::lookup_all(v)?.len()))?;
    anyhow::ensure!(seen == objects, "the reader sees {seen} of {objects} items");
    println!("{before} {after}");
    Ok(())
}

async fn connect(url: &str, name: &str) -> Result<odb::Client> {
    let token = std::env::var(TOKEN_ENV).with_context(|| format!("{TOKEN_ENV} is not set"))?;
    odb::Client::builder(url)
        .token(token)
        .name(name)
        .connect()
        .await
        .with_context(|| format!("connecting {name}"))
}
