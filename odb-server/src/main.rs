//! The `odb-server` binary: runs an ODB server on a TCP address.
//!
//! ```text
//! odb-server --service-token TOKEN --inmem 127.0.0.1 8000
//! odb-server --service-token-file token.txt 127.0.0.1 8000
//! ```

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use odb_server::{Server, ServerConfig};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

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
    /// Keep the data in memory only (the default, and for now the only storage).
    #[arg(long)]
    inmem: bool,
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
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
    let addr = resolve(&args.host, args.port).await?;
    let config = ServerConfig {
        token,
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
        max_frame: args.max_frame_bytes,
        ..ServerConfig::default()
    };
    let server = Server::start(config, Some(addr))
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let listening = server.local_addr().unwrap_or(addr);
    tracing::info!("odb-server listening on {listening}, storage in-memory, TLS off");
    // The in-memory server has nothing to save: it runs until the process is stopped.
    std::future::pending::<()>().await;
    server.shutdown().await;
    Ok(())
}

/// Resolves `host:port` to the first address it names.
async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve host {host:?}"))?
        .next()
        .ok_or_else(|| anyhow!("host {host:?} has no address"))
}
