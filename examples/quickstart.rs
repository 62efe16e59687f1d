//! The quick example in one process: an embedded server, a producer and a consumer.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::time::Duration;

const MESSAGES: u64 = 10;

#[tokio::main]
async fn main() {
    odb_examples::exit_on_error(run()).await
}

async fn run() -> anyhow::Result<()> {
    let server = odb::server::Server::in_memory().start().await?;
    let producer = server.client().await?;
    let consumer = server.client().await?;

    let consuming = tokio::spawn(async move {
        odb_examples::consume(&consumer, Some(MESSAGES as usize), |line| {
            println!("{line}")
        })
        .await
    });
    odb_examples::produce(&producer, Some(MESSAGES), Duration::from_millis(100)).await?;
    consuming.await??;
    server.shutdown().await;
    Ok(())
}
