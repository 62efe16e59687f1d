//! The server under test and the other processes the benchmark starts.
//!
//! By default the server is the release `odb-server` binary in a child process of its own, as it
//! is deployed and as `redis-server` runs in the baselines: a round trip then crosses two
//! processes, which costs several times what one inside a process does. `--server embedded`
//! runs it inside the benchmark process instead, on the clients' runtime.

use anyhow::{bail, Context, Result};
use odb::server::{RunningServer, Server};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the server under test runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerMode {
    /// The `odb-server` binary as a child process; clients in the benchmark process.
    Process,
    /// An embedded server on the benchmark's own runtime, with its clients.
    Embedded,
}

impl ServerMode {
    /// The name reported in the JSON's `server` field.
    pub fn name(self) -> &'static str {
        match self {
            ServerMode::Process => "process",
            ServerMode::Embedded => "embedded",
        }
    }
}

/// How long a child process may take to say where it listens.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// A child process, killed when dropped, so that no server outlives a failed workload.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `command` with its standard output piped and waits for its first line, which must
/// be the `HOST:PORT` it listens on. Killing the child on a timeout closes the pipe, which
/// ends the blocked read.
pub async fn spawn_listening(mut command: Command, what: &str) -> Result<(ChildGuard, String)> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = ChildGuard(
        command
            .spawn()
            .with_context(|| format!("starting {what}"))?,
    );
    let stdout = child
        .0
        .stdout
        .take()
        .with_context(|| format!("{what} has no standard output"))?;
    let reading = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = match tokio::time::timeout(START_PATIENCE, reading).await {
        Ok(joined) => joined
            .context("the reader of the child's output panicked")?
            .with_context(|| format!("reading the address {what} listens on"))?,
        Err(_) => bail!("{what} did not print its address within {START_PATIENCE:?}"),
    };
    let address = line.trim().to_string();
    if address.is_empty() {
        let status = child.0.try_wait().ok().flatten();
        bail!("{what} ended without printing its address (exit status {status:?})");
    }
    Ok((child, address))
}

/// The `odb-server` binary next to the benchmark's own executable (`target/<profile>/`).
///
/// Unless `explicit` names one, cargo is asked to build it first with the benchmark's profile
/// (a no-op when it is up to date), so that the process-mode figures always come from the
/// current source.
pub fn server_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(
            path.exists(),
            "--server-bin {} does not exist",
            path.display()
        );
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating the benchmark executable")?;
    // The benchmark is an example: target/<profile>/examples/bench.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the benchmark executable does not lie in target/<profile>/examples")?;
    let target_dir = profile_dir
        .parent()
        .context("target/<profile> has no parent")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => "release".to_string(),
    };
    let binary = profile_dir.join(format!("odb-server{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .args(["build", "-q", "-p", "odb-server", "--bin", "odb-server"])
        .arg("--profile")
        .arg(&profile)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status();
    match built {
        Ok(status) if status.success() => {}
        Ok(status) => bail!(
            "`cargo build --profile {profile} -p odb-server` failed ({status}); build the \
             server first or pass --server-bin PATH (or run with --server embedded)"
        ),
        Err(e) if binary.exists() => {
            eprintln!(
                "could not run {cargo} to rebuild odb-server ({e}); using {}",
                binary.display()
            );
        }
        Err(e) => bail!(
            "{} is missing and {cargo} could not be run to build it ({e}); run `cargo build \
             --release -p odb-server` first or pass --server-bin PATH",
            binary.display()
        ),
    }
    anyhow::ensure!(binary.exists(), "{} is missing", binary.display());
    Ok(binary)
}

/// A service token unique to this run.
fn fresh_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("bench-{}-{nanos}", std::process::id())
}

/// A running server under test.
pub enum BenchServer {
    /// Inside this process.
    Embedded(RunningServer),
    /// The `odb-server` binary in a child process.
    Process {
        child: ChildGuard,
        url: String,
        token: String,
    },
}

impl BenchServer {
    /// Starts an empty in-memory server on a free loopback port.
    pub async fn start(mode: ServerMode, binary: Option<&Path>) -> Result<BenchServer> {
        match mode {
            ServerMode::Embedded => {
                let server = Server::in_memory()
                    .listen(([127, 0, 0, 1], 0).into())
                    .start()
                    .await
                    .context("starting the embedded server")?;
                Ok(BenchServer::Embedded(server))
            }
            ServerMode::Process => {
                let binary = binary.context("no odb-server binary was located")?;
                let token = fresh_token();
                let mut command = Command::new(binary);
                command
                    .args(["--service-token", &token, "--inmem", "--print-address"])
                    .args(["127.0.0.1", "0"])
                    // One line per connection at `info` would interleave with the report.
                    .env("RUST_LOG", "warn");
                let (child, address) = spawn_listening(command, "odb-server").await?;
                Ok(BenchServer::Process {
                    child,
                    url: format!("odb://{address}"),
                    token,
                })
            }
        }
    }

    /// The URL clients connect to.
    pub fn url(&self) -> Result<String> {
        match self {
            BenchServer::Embedded(server) => server
                .url()
                .context("the embedded server does not listen on TCP"),
            BenchServer::Process { url, .. } => Ok(url.clone()),
        }
    }

    /// The service token.
    pub fn token(&self) -> &str {
        match self {
            BenchServer::Embedded(server) => server.token(),
            BenchServer::Process { token, .. } => token,
        }
    }

    /// The server process's id (`None` when embedded).
    pub fn pid(&self) -> Option<u32> {
        match self {
            BenchServer::Embedded(_) => None,
            BenchServer::Process { child, .. } => Some(child.pid()),
        }
    }

    /// The server's resident set size in bytes (of this process when embedded).
    pub fn rss_bytes(&self) -> Result<u64> {
        match self {
            BenchServer::Embedded(_) => rss_bytes_of("self"),
            BenchServer::Process { child, .. } => rss_bytes_of(&child.pid().to_string()),
        }
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        match self {
            BenchServer::Embedded(server) => server.shutdown().await,
            BenchServer::Process { child, .. } => drop(child),
        }
    }
}

/// The resident set size in bytes of process `pid` (`"self"` for this one), from
/// `/proc/<pid>/status`.
pub fn rss_bytes_of(pid: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .with_context(|| format!("no VmRSS line in {path}"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS line")?
        .parse()
        .context("malformed VmRSS value")?;
    Ok(kib * 1024)
}

/// Waits until the resident size of a process has not grown for a while (the server may
/// still be freeing or touching memory right after the last commit), at most `patience`.
pub async fn settled_rss(read: impl Fn() -> Result<u64>, patience: Duration) -> Result<u64> {
    let deadline = Instant::now() + patience;
    let mut last = read()?;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = read()?;
        if now <= last || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}
