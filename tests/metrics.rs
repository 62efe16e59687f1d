//! The metrics endpoint: scraped over HTTP while clients work, its counters and gauges follow
//! what happened.

mod support;

use odb::server::{RunningServer, Server, ServerConfig};
use odb::Client;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[odb::schema(name = "metrics_test")]
pub mod metered {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Item {
        #[index]
        pub name: String,
        pub count: u64,
    }
}

use metered::Item;

async fn start() -> anyhow::Result<RunningServer> {
    Ok(Server::in_memory()
        .listen("127.0.0.1:0".parse()?)
        .metrics("127.0.0.1:0".parse()?)
        .token(TOKEN)
        .start()
        .await?)
}

/// One HTTP/1.0 GET; returns the status line and the body.
async fn get(server: &RunningServer, path: &str) -> anyhow::Result<(String, String)> {
    let addr = server
        .metrics_addr()
        .ok_or_else(|| anyhow::anyhow!("no metrics address"))?;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no header end in {response:?}"))?;
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, body.to_string()))
}

/// The value of the sample named exactly `name` (labels included), 0 if absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

async fn scrape(server: &RunningServer) -> anyhow::Result<String> {
    let (status, body) = get(server, "/metrics").await?;
    anyhow::ensure!(status.contains("200"), "status {status}: {body}");
    Ok(body)
}

/// Scrapes until `check` holds (gauges follow the sequencer, which answers asynchronously).
async fn scrape_until(
    server: &RunningServer,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(server).await?;
        if check(&text) {
            return Ok(text);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn counters_follow_commits_conflicts_subscriptions_and_refusals() -> anyhow::Result<()> {
    bounded(async {
        let server = start().await?;
        let before = scrape(&server).await?;
        assert_eq!(
            sample(&before, "odb_commits_total{outcome=\"committed\"}"),
            0.0
        );

        let db = client(&server).await?;
        let items = db
            .transaction(|tx| {
                (0..5)
                    .map(|i| {
                        let name = format!("item-{i}");
                        Item::create(tx, Item { name, count: 0 })
                    })
                    .collect::<odb::Result<Vec<_>>>()
            })
            .await?;
        for item in &items {
            db.transaction(|tx| item.set_count(tx, 1)).await?;
        }
        // Two clients write the same field from the same snapshot: whichever arrives second
        // conflicts. Both commits are sent before either answer can reach the other client.
        let other = client_with_retries(&server, 0).await?;
        other.subscribe_type::<Item>().await?;
        let first = items[0];
        // One commit created the items, five more set their counts.
        let (mut committed, mut conflicts) = (1 + 5, 0);
        for round in 0..50u64 {
            let (a, b) = tokio::join!(
                db.transaction_async(|tx| first.set_count(tx, first.count(tx)? + round)),
                other.transaction_async(|tx| first.set_count(tx, first.count(tx)? + round)),
            );
            for outcome in [a?.await, b?.await] {
                match outcome {
                    Ok(()) => committed += 1,
                    Err(odb::Error::Conflict { .. }) => conflicts += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            if conflicts > 0 {
                break;
            }
            db.flush().await?;
            other.flush().await?;
        }
        anyhow::ensure!(conflicts > 0, "no round conflicted");

        let text = scrape_until(&server, "the committed count", |t| {
            sample(t, "odb_commits_total{outcome=\"committed\"}") >= committed as f64
        })
        .await?;
        // Connection objects are created by the server itself, not by commit requests.
        assert_eq!(
            sample(&text, "odb_commits_total{outcome=\"committed\"}"),
            committed as f64
        );
        assert_eq!(
            sample(&text, "odb_commits_total{outcome=\"conflict\"}"),
            conflicts as f64
        );
        // Both clients saw everything they wrote, so none of their commits was pushed back.
        assert_eq!(sample(&text, "odb_commits_as_sent_total"), committed as f64);
        assert_eq!(sample(&text, "odb_connections"), 2.0);
        assert_eq!(sample(&text, "odb_connections_accepted_total"), 2.0);
        // Five items and two connection objects.
        assert_eq!(sample(&text, "odb_objects"), 7.0);
        assert!(sample(&text, "odb_store_bytes") > 0.0);
        assert!(sample(&text, "odb_index_values") >= 5.0);
        let answered = (committed + conflicts) as f64;
        assert_eq!(sample(&text, "odb_commit_apply_seconds_count"), answered);
        assert_eq!(
            sample(&text, "odb_commit_queue_wait_seconds_count"),
            answered
        );
        assert_eq!(sample(&text, "odb_commit_seconds_count"), answered);
        assert!(sample(&text, "odb_sequencer_batch_requests_count") >= 1.0);
        assert!(sample(&text, "odb_subscriptions{kind=\"type\"}") >= 1.0);
        assert!(sample(&text, "odb_tid") >= committed as f64);

        // A wrong token is an auth failure and a refusal.
        let url = server.url().unwrap_or_default();
        let refused = Client::builder(url).token("wrong").connect().await;
        assert!(refused.is_err());
        let text = scrape_until(&server, "the auth failure", |t| {
            sample(t, "odb_auth_failures_total") >= 1.0
        })
        .await?;
        assert_eq!(
            sample(
                &text,
                "odb_connections_refused_total{reason=\"unauthorized\"}"
            ),
            1.0
        );

        drop(other);
        scrape_until(&server, "the closed connection", |t| {
            sample(t, "odb_connections") == 1.0 && sample(t, "odb_objects") == 6.0
        })
        .await?;
        let (status, _) = get(&server, "/nope").await?;
        assert!(status.contains("404"), "{status}");
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_metrics_address_must_be_loopback_unless_allowed() -> anyhow::Result<()> {
    let config = ServerConfig {
        metrics_addr: Some("0.0.0.0:0".parse()?),
        ..ServerConfig::new(TOKEN)
    };
    let refused = Server::in_memory().config(config.clone()).start().await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("--metrics-allow-remote"), "{message}");

    let allowed = ServerConfig {
        metrics_allow_remote: true,
        ..config
    };
    let server = Server::in_memory().config(allowed).start().await?;
    assert!(server.metrics_addr().is_some());
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn persist_latency_and_failures_are_counted() -> anyhow::Result<()> {
    bounded(async {
        let storage = odb::server::storage::MemoryStorage::new();
        let server = Server::with_storage(storage.clone())
            .listen("127.0.0.1:0".parse()?)
            .metrics("127.0.0.1:0".parse()?)
            .token(TOKEN)
            .start()
            .await?;
        let db = client(&server).await?;
        db.transaction(|tx| {
            let name = "stored".to_string();
            Item::create(tx, Item { name, count: 0 })
        })
        .await?;
        let stored = storage.batches() as f64;
        let text = scrape_until(&server, "the persisted batches", |t| {
            sample(t, "odb_storage_persist_seconds_count") >= stored
        })
        .await?;
        assert_eq!(sample(&text, "odb_storage_persist_failures_total"), 0.0);

        storage.set_failing(true);
        let failed = db
            .transaction(|tx| {
                let name = "lost".to_string();
                Item::create(tx, Item { name, count: 0 })
            })
            .await;
        assert!(failed.is_err(), "the storage refuses the batch");
        let text = scrape_until(&server, "the failed batch", |t| {
            sample(t, "odb_storage_persist_failures_total") >= 1.0
        })
        .await?;
        assert!(
            sample(
                &text,
                "odb_commits_refused_total{reason=\"storage_unavailable\"}"
            ) >= 1.0
        );
        storage.set_failing(false);
        server.shutdown().await;
        Ok(())
    })
    .await
}
