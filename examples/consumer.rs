//! The quick example's consumer: prints every message as `("message_N", timestamp)`, in order.
//!
//! ```text
//! cargo run --example consumer -- [--count N]
//! ```
//! Connects to `ODB_URL` (default `odb://127.0.0.1:8000`) with `ODB_TOKEN` (default `TOKEN`).

use clap::Parser;

#[derive(Parser)]
#[command(about = "Prints the messages of an ODB server as they arrive")]
struct Args {
    /// Exit after printing this many messages (default: run forever).
    #[arg(long)]
    count: Option<usize>,
}

#[tokio::main]
async fn main() {
    odb_examples::exit_on_error(run()).await
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = odb_examples::connect_from_env().await?;
    odb_examples::consume(&db, args.count, |line| println!("{line}")).await?;
    Ok(())
}
