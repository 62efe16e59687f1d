//! The `odb-server` binary: runs an ODB server on a TCP address.
//!
//! ```text
//! odb-server --service-token TOKEN --inmem 127.0.0.1 8000
//! odb-server --service-token-file token.txt 127.0.0.1 8000
//! odb-server --service-token TOKEN --data-dir ./odb-data 127.0.0.1 8000
//! odb-server --service-token TOKEN --redis redis://127.0.0.1:6379/0 127.0.0.1 8000
//! odb-server --service-token TOKEN --redis redis://10.0.0.5:6379/0 --standby 10.0.0.7 8000
//! odb-server --service-token-file token.txt 0.0.0.0 8000 --tls-cert c.pem --tls-key k.pem
//! odb-server --service-token TOKEN --tls-self-signed ./server-cert.pem 127.0.0.1 8000
//! odb-server --service-token TOKEN 127.0.0.1 0 --print-address   # prints e.g. 127.0.0.1:40613
//! odb-server --service-token TOKEN --metrics-addr 127.0.0.1:9100 127.0.0.1 8000
//! ```

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use odb_server::leader::{run_standby, StandbyConfig};
use odb_server::storage::{FileStorage, RedisStorage, RedisTarget, Storage, DEFAULT_REDIS_PREFIX};
use odb_server::{self_signed_names, Server, ServerConfig, TlsConfig};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// The server allocates and frees many small buffers per commit; mimalloc does that markedly
/// faster than the system allocator (see the book's performance chapter).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ODB server: an in-memory transactional object database.
#[derive(Parser, Debug)]
#[command(name = "odb-server", version)]
struct Args {
    /// The token every client must present (give this or --service-token-file).
    #[arg(long, value_name = "TOKEN")]
    service_token: Option<String>,
    /// A file holding the token; surrounding whitespace is ignored.
    #[arg(long, value_name = "PATH")]
    service_token_file: Option<PathBuf>,
    /// Keep the data in memory only: nothing survives a restart (the default).
    #[arg(long)]
    inmem: bool,
    /// Keep the data in an embedded database in DIR (created if missing); durable.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep the data in Redis, e.g. redis://127.0.0.1:6379/0 (rediss:// for TLS).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Verify a rediss:// server's certificate against the CA certificates in this PEM file
    /// instead of the system's trusted roots (with --redis).
    #[arg(long, value_name = "PATH", requires = "redis")]
    redis_ca_file: Option<PathBuf>,
    /// Prefix of every Redis key the server uses (with --redis).
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_REDIS_PREFIX)]
    redis_prefix: String,
    /// Timeout of every Redis request and connection attempt, in milliseconds (with --redis).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    redis_timeout_ms: u64,
    /// Acknowledge a commit only once this many Redis replicas have it (Redis's WAIT), so that
    /// it survives a failover (with --redis). 0: as soon as the master has it.
    #[arg(long, value_name = "N", default_value_t = 0)]
    redis_wait_replicas: usize,
    /// Join a group of standby servers sharing --redis and --redis-prefix: serve only while
    /// holding the leader lease, wait (not listening) otherwise. See the book's chapter on high
    /// availability.
    #[arg(long, requires = "redis")]
    standby: bool,
    /// Length of the leader lease in milliseconds (with --standby); a standby takes over within
    /// about twice this after the leader dies.
    #[arg(long, value_name = "MS", default_value_t = 3000, requires = "standby")]
    lease_ms: u64,
    /// Host name or address to listen on.
    host: String,
    /// TCP port to listen on (0 picks a free one).
    port: u16,
    /// How often heartbeats are sent, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    heartbeat_ms: u64,
    /// Largest frame accepted or sent, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = odb_wire::DEFAULT_MAX_FRAME)]
    max_frame_bytes: usize,
    /// TLS: the server's certificate chain, PEM (with --tls-key).
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert, PEM.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// TLS with a certificate generated at start for the listen address (and localhost on
    /// loopback); its PEM is written to PATH for clients to trust. The key stays in memory.
    #[arg(long, value_name = "PATH")]
    tls_self_signed: Option<PathBuf>,
    /// Allow plaintext TCP on an address other than loopback (without it that is refused).
    #[arg(long)]
    allow_plaintext: bool,
    /// Most writes (field writes, index writes, deletes) in one commit.
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().max_writes_per_commit)]
    max_writes_per_commit: usize,
    /// Most reads (field reads, index lookups) recorded by one commit.
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().max_reads_per_commit)]
    max_reads_per_commit: usize,
    /// Largest field or index value, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = ServerConfig::default().max_value_bytes)]
    max_value_bytes: usize,
    /// Most subscriptions (index values, single objects) one connection may hold.
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().max_subscriptions)]
    max_subscriptions: usize,
    /// Most bytes queued for one connection before it is disconnected as too slow a reader.
    #[arg(long, value_name = "BYTES", default_value_t = ServerConfig::default().outbound_limit_bytes)]
    max_outbound_bytes: usize,
    /// Most bytes queued for all connections together; past it the connection with the largest
    /// queue is disconnected first. Default: a quarter of the machine's memory (or of the
    /// cgroup's memory limit when lower), 1 GiB when neither can be read.
    #[arg(long, value_name = "BYTES")]
    max_outbound_total_bytes: Option<usize>,
    /// Most connections one address may hold before they have authenticated; more are refused
    /// without being read. Default: a tenth of --max-connections, at least 2.
    #[arg(long, value_name = "N")]
    max_hello_per_address: Option<usize>,
    /// Serve Prometheus metrics over HTTP at /metrics on HOST:PORT, and the web inspector
    /// (which needs the service token) at / (loopback only, unless --metrics-allow-remote).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// Allow --metrics-addr to be an address other than loopback.
    #[arg(long, requires = "metrics_addr")]
    metrics_allow_remote: bool,
    /// Most connections open at once; more are refused ("server full").
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().max_connections)]
    max_connections: usize,
    /// Most commit-id records kept (for exactly-once commits and commit queries).
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().commit_id_window_count)]
    commit_id_window_count: usize,
    /// Longest time a commit-id record is kept, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = ServerConfig::default().commit_id_window_time.as_secs())]
    commit_id_window_secs: u64,
    /// How many recent object changes are remembered so that a reconnecting client is sent only
    /// what changed while it was away (8 bytes each, plus 16 per commit).
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().resume_window_changes)]
    resume_window_changes: usize,
    /// Worker threads of the server's runtime (connection I/O and the sequencer). Default: one
    /// per CPU, or TOKIO_WORKER_THREADS when set.
    #[arg(long, value_name = "N")]
    worker_threads: Option<std::num::NonZeroUsize>,
    /// Print the address the server listens on as one line (`HOST:PORT`) on standard output
    /// once it accepts connections: with port 0, the way for a parent process to learn it.
    #[arg(long)]
    print_address: bool,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => return usage_error(e),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = args.worker_threads {
        builder.worker_threads(threads.get());
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("odb-server: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("odb-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version go to stdout as clap prints them; a command-line mistake is reported in the
/// style of every other error of the binary (`odb-server: error: ...`), followed by clap's
/// usage line and hint.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    let message = rendered.strip_prefix("error: ").unwrap_or(&rendered);
    eprintln!("odb-server: error: {}", message.trim_end());
    ExitCode::from(2)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let token = match (&args.service_token, &args.service_token_file) {
        (Some(token), None) => token.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read service token file {}: {e}", path.display()))?
            .trim()
            .to_string(),
        _ => bail!("give exactly one of --service-token TOKEN or --service-token-file PATH"),
    };
    if token.is_empty() {
        bail!("the service token is empty");
    }
    if args.heartbeat_ms == 0 {
        bail!("--heartbeat-ms must be at least 1");
    }
    if args.max_hello_per_address == Some(0) {
        bail!("--max-hello-per-address must be at least 1");
    }
    if args.max_outbound_total_bytes == Some(0) {
        bail!("--max-outbound-total-bytes must be at least 1");
    }
    let addr = resolve(&args.host, args.port).await?;
    let tls = match (&args.tls_cert, &args.tls_key, &args.tls_self_signed) {
        (Some(cert), Some(key), None) => Some(TlsConfig::from_pem_files(cert, key)?),
        (None, None, Some(path)) => {
            let tls = TlsConfig::self_signed(&self_signed_names(&args.host, addr.ip()))?;
            let pem = tls.certificate_pem().unwrap_or_default();
            std::fs::write(path, pem)
                .map_err(|e| anyhow!("cannot write the certificate to {}: {e}", path.display()))?;
            tracing::info!("self-signed certificate written to {}", path.display());
            Some(tls)
        }
        (None, None, None) => None,
        _ => bail!("give --tls-cert with --tls-key, or --tls-self-signed, not both"),
    };
    let tls_line = match (&tls, &args.tls_self_signed) {
        (None, _) => "TLS off".to_string(),
        (Some(_), Some(path)) => format!("TLS on (self-signed, certificate in {})", path.display()),
        (Some(_), None) => "TLS on".to_string(),
    };
    let metrics_addr = match &args.metrics_addr {
        Some(addr) => Some(resolve_host_port(addr).await?),
        None => None,
    };
    let config = ServerConfig {
        token,
        metrics_addr,
        metrics_allow_remote: args.metrics_allow_remote,
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
        max_frame: args.max_frame_bytes,
        max_writes_per_commit: args.max_writes_per_commit,
        max_reads_per_commit: args.max_reads_per_commit,
        max_value_bytes: args.max_value_bytes,
        max_subscriptions: args.max_subscriptions,
        outbound_limit_bytes: args.max_outbound_bytes,
        max_outbound_total_bytes: args.max_outbound_total_bytes,
        max_hello_connections_per_address: args.max_hello_per_address,
        max_connections: args.max_connections,
        commit_id_window_count: args.commit_id_window_count,
        commit_id_window_time: Duration::from_secs(args.commit_id_window_secs),
        resume_window_changes: args.resume_window_changes,
        tls,
        allow_plaintext: args.allow_plaintext,
        ..ServerConfig::default()
    };
    if args.standby {
        let standby = StandbyConfig {
            redis: redis_target(&args)?,
            prefix: args.redis_prefix.clone(),
            redis_timeout: Duration::from_millis(args.redis_timeout_ms.max(1)),
            lease: Duration::from_millis(args.lease_ms),
            owner: format!("{addr} pid {}", std::process::id()),
            wait_replicas: args.redis_wait_replicas,
        };
        tracing::info!(
            "odb-server standby for {addr}, redis {} (prefix {:?}), lease {} ms, {tls_line}",
            standby.redis.redacted_url(),
            standby.prefix,
            args.lease_ms
        );
        // Runs until the process is stopped: every acknowledged commit is already stored.
        return run_standby(config, addr, standby, CancellationToken::new())
            .await
            .map_err(|e| anyhow!("{e}"));
    }
    let storage = open_storage(&args).await?;
    let storage_line = storage
        .as_ref()
        .map_or_else(|| "in-memory".to_string(), |s| s.describe());
    let server = match storage {
        Some(storage) => Server::start_with_storage(config, Some(addr), storage).await,
        None => Server::start(config, Some(addr)).await,
    }
    .map_err(|e| anyhow!("{e}"))?;
    let listening = server.local_addr().unwrap_or(addr);
    tracing::info!("odb-server listening on {listening}, storage {storage_line}, {tls_line}");
    if let Some(metrics) = server.metrics_addr() {
        tracing::info!(
            "metrics at http://{metrics}/metrics, the web inspector at http://{metrics}/"
        );
    }
    // One line on standard output once the listener is bound, for scripts and tests that start
    // the server on port 0: the bare address with --print-address, else a sentence.
    {
        let mut stdout = std::io::stdout().lock();
        if args.print_address {
            writeln!(stdout, "{listening}")
        } else {
            writeln!(stdout, "odb-server listening on {listening}")
        }
        .and_then(|()| stdout.flush())
        .context("printing the listen address")?;
    }
    tokio::select! {
        signal = stopped() => {
            let signal = signal?;
            tracing::info!("{signal} received: shutting down");
            server.shutdown().await;
            tracing::info!("odb-server shut down");
            Ok(())
        }
        reason = server.failed() => {
            // Already logged; what is left is closing the connections.
            server.shutdown().await;
            Err(anyhow!("{}", odb_server::ServerError::Failed(reason)))
        }
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C) and names the one that came.
async fn stopped() -> anyhow::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            interrupted = tokio::signal::ctrl_c() => {
                interrupted.context("cannot watch for SIGINT")?;
                Ok("SIGINT")
            }
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("cannot watch for Ctrl-C")?;
        Ok("Ctrl-C")
    }
}

/// Opens the storage the flags ask for; `None` for in-memory.
async fn open_storage(args: &Args) -> anyhow::Result<Option<Box<dyn Storage>>> {
    let chosen = [args.inmem, args.data_dir.is_some(), args.redis.is_some()];
    if chosen.iter().filter(|c| **c).count() > 1 {
        bail!("give at most one of --inmem, --data-dir DIR and --redis URL");
    }
    if args.redis.is_none()
        && (args.redis_prefix != DEFAULT_REDIS_PREFIX
            || args.redis_timeout_ms != 5000
            || args.redis_wait_replicas != 0)
    {
        bail!("--redis-prefix, --redis-timeout-ms and --redis-wait-replicas need --redis URL");
    }
    if let Some(dir) = &args.data_dir {
        let storage = FileStorage::open(dir).map_err(|e| anyhow!("{}", e.detail()))?;
        return Ok(Some(Box::new(storage)));
    }
    if args.redis.is_some() {
        if args.redis_timeout_ms == 0 {
            bail!("--redis-timeout-ms must be at least 1");
        }
        let timeout = Duration::from_millis(args.redis_timeout_ms);
        let storage = RedisStorage::connect(redis_target(args)?, &args.redis_prefix, timeout)
            .await
            .map_err(|e| anyhow!("{}", e.detail()))?
            .wait_for_replicas(args.redis_wait_replicas);
        return Ok(Some(Box::new(storage)));
    }
    Ok(None)
}

/// The Redis database of --redis and --redis-ca-file.
fn redis_target(args: &Args) -> anyhow::Result<RedisTarget> {
    let target = RedisTarget::new(args.redis.clone().unwrap_or_default());
    match &args.redis_ca_file {
        Some(path) => target.ca_file(path).map_err(|e| anyhow!("{}", e.detail())),
        None => Ok(target),
    }
}

/// Resolves a `HOST:PORT` argument to the first address it names.
async fn resolve_host_port(addr: &str) -> anyhow::Result<SocketAddr> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("{addr:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("{addr:?}: {port:?} is not a port number"))?;
    resolve(host.trim_start_matches('[').trim_end_matches(']'), port).await
}

/// Resolves `host:port` to the first address it names.
async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve host {host:?}"))?
        .next()
        .ok_or_else(|| anyhow!("host {host:?} has no address"))
}
