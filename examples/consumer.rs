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
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let (url, token) = odb_examples::url_and_token_from_env();
    let db = odb::Client::builder(&url).token(token).connect().await?;
    odb_examples::consume(&db, args.count, |line| println!("{line}")).await?;
    Ok(())
}
