//! Server memory per object. The server runs in a child process of its own (this same program
//! in probe mode) and the objects are written by a grandchild (writer mode): a client keeps the
//! objects it creates in its own replica, and would otherwise be counted with the server.

use crate::data::fill;
use crate::report::{rate, Measure, Row};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable passing the service token to the writer process.
pub const TOKEN_ENV: &str = "ODB_BENCH_TOKEN";
/// Objects written by default, and with a short time budget (`--seconds` below 3).
const DEFAULT_OBJECTS: usize = 1_000_000;
const SMALL_OBJECTS: usize = 100_000;

/// This process's resident set size in bytes, from `/proc/self/status`.
pub fn rss_bytes() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line in /proc/self/status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS line")?
        .parse()
        .context("malformed VmRSS value")?;
    Ok(kib * 1024)
}

/// Kills the writer process if the workload ends before it does.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
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
    let mut guard = ChildGuard(command.spawn().context("starting a child process")?);
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(status) = guard.0.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            bail!("the child process {args:?} did not finish within 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut out = String::new();
    if let Some(mut stdout) = guard.0.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    if !status.success() {
        bail!("the child process {args:?} failed ({status})");
    }
    Ok(out)
}

/// The memory workload. The measurement runs in a fresh process so that memory the allocator
/// kept from earlier workloads does not hide the growth.
pub async fn memory(ctx: &mut Ctx) -> Result<Row> {
    let (n, note) = match ctx.objects {
        Some(n) => (n.max(1), "--objects"),
        None if ctx.seconds < 3.0 => (SMALL_OBJECTS, "scaled down because --seconds < 3"),
        None => (DEFAULT_OBJECTS, "default"),
    };
    let out = run_child(&["--memory-probe", "--objects", &n.to_string()], None).await?;
    let line = out
        .lines()
        .last()
        .context("the memory probe printed nothing")?;
    let probe: serde_json::Value =
        serde_json::from_str(line).context("the memory probe printed malformed JSON")?;
    let field = |k: &str| {
        probe[k]
            .as_u64()
            .with_context(|| format!("the memory probe did not report {k}"))
    };
    let (before, after) = (field("server_rss_before")?, field("server_rss_after")?);
    let (w_before, w_after) = (field("writer_rss_before")?, field("writer_rss_after")?);
    let per_object = |b: u64, a: u64| (a.saturating_sub(b) as f64 / n as f64).round();
    let write_secs = probe["write_seconds"].as_f64().unwrap_or(0.0);
    let ours = Measure {
        ops_per_sec: rate(n as u64, Duration::from_secs_f64(write_secs)),
        p50_us: None,
        p99_us: None,
    };
    Ok(Row::new("memory", ours)
        .extra("objects", n as u64)
        .extra("objects_note", note)
        .extra("server_bytes_per_object", per_object(before, after))
        .extra("server_rss_before", before)
        .extra("server_rss_after", after)
        .extra(
            "writer_client_bytes_per_object",
            per_object(w_before, w_after),
        ))
}

/// The probe process: starts an empty server, has a writer process fill it, and prints the
/// server process's resident size before and after as one JSON line.
pub async fn probe(objects: usize) -> Result<()> {
    let server = odb::server::Server::in_memory()
        .listen(([127, 0, 0, 1], 0).into())
        .start()
        .await
        .context("starting the embedded server")?;
    let url = server.url().context("the server does not listen on TCP")?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes()?;
    let started = Instant::now();
    let n = objects.to_string();
    let out = run_child(
        &["--memory-writer", &url, "--objects", &n],
        Some((TOKEN_ENV, server.token())),
    )
    .await?;
    let write_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes()?;
    let writer: Vec<u64> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [w_before, w_after] = writer[..] else {
        bail!("the writer process printed {out:?}, expected two sizes");
    };
    println!(
        "{}",
        serde_json::json!({
            "server_rss_before": before,
            "server_rss_after": after,
            "writer_rss_before": w_before,
            "writer_rss_after": w_after,
            "write_seconds": write_seconds,
        })
    );
    server.shutdown().await;
    Ok(())
}

/// The writer process: creates `objects` items in transactions of 10,000 over TCP, then
/// prints its own resident size before and after.
pub async fn writer(url: &str, objects: usize) -> Result<()> {
    let token = std::env::var(TOKEN_ENV).with_context(|| format!("{TOKEN_ENV} is not set"))?;
    let db = odb::Client::builder(url)
        .token(token)
        .name("bench-memory-writer")
        .connect()
        .await
        .context("connecting the writer")?;
    db.define_schema(crate::bench_schema::schema()).await?;
    let before = rss_bytes()?;
    fill(&db, 0..objects).await?;
    let after = rss_bytes()?;
    println!("{before} {after}");
    Ok(())
}
