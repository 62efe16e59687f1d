//! The quick example's producer: creates `message_0`, `message_1`, … one per transaction.
//!
//! ```text
//! cargo run --example producer -- [--count N] [--interval-ms M]
//! ```
//! Connects to `ODB_URL` (default `odb://127.0.0.1:8000`) with `ODB_TOKEN` (default `TOKEN`).

use clap::Parser;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Writes message_0, message_1, ... to an ODB server")]
struct Args {
    /// Stop after this many messages (default: run forever).
    #[arg(long)]
    count: Option<u64>,
    /// Milliseconds between messages.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

#[tokio::main]
async fn main() {
    odb_examples::exit_on_error(run()).await
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = odb_examples::connect_from_env().await?;
    odb_examples::produce(&db, args.count, Duration::from_millis(args.interval_ms)).await?;
    Ok(())
}
