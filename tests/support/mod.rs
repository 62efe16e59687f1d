//! Helpers of the concurrency, subscription and scale tests: an embedded server on a free
//! loopback port, TCP clients, a small seeded random generator, and bounded waiting.
#![allow(dead_code)]

use odb::server::{RunningServer, Server};
use odb::Client;
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The service token of every server these tests start.
pub const TOKEN: &str = "concurrency-test-token";

/// How long a test waits for one condition before failing.
pub const WAIT: Duration = Duration::from_secs(30);

/// The most a whole test body may take; a hang fails the test instead of blocking the suite.
pub const TEST_LIMIT: Duration = Duration::from_secs(180);

/// Starts an embedded in-memory server that accepts TCP clients on a free loopback port.
pub async fn start_server() -> anyhow::Result<RunningServer> {
    Ok(Server::in_memory()
        .listen("127.0.0.1:0".parse()?)
        .token(TOKEN)
        .start()
        .await?)
}

/// Connects a TCP client with the default retry policy.
pub async fn client(server: &RunningServer) -> anyhow::Result<Client> {
    Ok(builder(server, "concurrency-test").connect().await?)
}

/// Connects a TCP client that re-runs a conflicted transaction at most `retries` times.
pub async fn client_with_retries(server: &RunningServer, retries: u32) -> anyhow::Result<Client> {
    Ok(builder(server, "concurrency-test")
        .max_retries(retries)
        .connect()
        .await?)
}

/// A client builder for the server's TCP address.
pub fn builder(server: &RunningServer, name: &str) -> odb::ClientBuilder {
    let url = server.url().expect("the test server listens on TCP");
    Client::builder(url).token(TOKEN).name(name)
}

/// Runs a test body, failing it if it takes longer than [`TEST_LIMIT`].
pub async fn bounded<T>(body: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .map_err(|_| anyhow::anyhow!("the test did not finish within {TEST_LIMIT:?}"))?
}

/// Awaits every task and returns their results in order; the first failure or panic fails.
pub async fn join_all<T>(tasks: Vec<JoinHandle<anyhow::Result<T>>>) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::with_capacity(tasks.len());
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task
            .await
            .map_err(|e| anyhow::anyhow!("task {i} panicked or was cancelled: {e}"))?;
        out.push(result.map_err(|e| e.context(format!("task {i} failed")))?);
    }
    Ok(out)
}

/// Polls `condition` every millisecond until it holds, for at most `timeout`.
///
/// Only for server counters, which have no change notification; everything a client can see is
/// waited for with `Client::wait_for` instead.
pub async fn poll_until(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let poll = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(timeout, poll)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {timeout:?} waiting until {what}"))
}
