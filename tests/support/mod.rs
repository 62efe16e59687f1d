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

/// A seeded pseudo-random generator (splitmix64): runs are reproducible from the seed, and
/// the tests need no extra dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for one seed; different seeds give unrelated sequences.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A random element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}
