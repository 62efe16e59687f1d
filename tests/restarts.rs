//! The quick example survives server crashes: the `odb-server` binary, on a data directory and
//! on Redis, is killed with SIGKILL again and again while the example's producer and consumer
//! run (in this process, through a relay that keeps their URL while the server's port
//! changes). The consumer must print every message exactly once, in order.

mod processes;
mod relay;
mod rng;

use odb::{Client, ReconnectPolicy};
use processes::{Redis, ServerProcess, TempDir};
use relay::Relay;
use rng::Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "restarts-test-token";
/// Server crashes per backend.
const ROUNDS: usize = 20;
/// Messages the producer writes.
const MESSAGES: u64 = 400;

async fn client(relay: &Relay) -> Client {
    let db = Client::builder(relay.url())
        .token(TOKEN)
        .reconnect(
            ReconnectPolicy::default()
                .initial_delay(Duration::from_millis(10))
                .max_delay(Duration::from_millis(200)),
        )
        .connect()
        .await
        .expect("connects through the relay");
    odb_examples::report_reconnects(&db);
    db
}

/// Runs the producer and the consumer while the server is killed `ROUNDS` times.
async fn survive_crashes(storage: Vec<String>) {
    let mut rng = Rng::for_test(&format!("survive_crashes {storage:?}"));
    let mut server = ServerProcess::start(TOKEN, &storage).await;
    let relay = Relay::start(server.addr()).await.expect("relay");
    let producer = client(&relay).await;
    let consumer = client(&relay).await;
    let printed = Arc::new(Mutex::new(Vec::<String>::new()));
    let consuming = {
        let printed = printed.clone();
        tokio::spawn(async move {
            odb_examples::consume(&consumer, Some(MESSAGES as usize), |line| {
                if let Ok(mut p) = printed.lock() {
                    p.push(line.to_string());
                }
            })
            .await
        })
    };
    let producing = tokio::spawn(async move {
        odb_examples::produce(&producer, Some(MESSAGES), Duration::from_millis(5)).await
    });
    for round in 0..ROUNDS {
        // A random moment for the kill, not a wait for anything.
        tokio::time::sleep(Duration::from_millis(rng.between(20, 100))).await;
        server.kill();
        server = ServerProcess::start(TOKEN, &storage).await;
        relay.set_upstream(server.addr());
        relay.cut();
        eprintln!("round {round}: restarted on {}", server.addr());
    }
    tokio::time::timeout(Duration::from_secs(120), producing)
        .await
        .expect("the producer finishes")
        .expect("the producer task ends")
        .expect("every message is committed");
    tokio::time::timeout(Duration::from_secs(120), consuming)
        .await
        .expect("the consumer finishes")
        .expect("the consumer task ends")
        .expect("the consumer reads every message");
    let printed = printed.lock().expect("the lines").clone();
    let names: Vec<String> = printed
        .iter()
        .map(|line| line.split('"').nth(1).unwrap_or_default().to_string())
        .collect();
    let expected: Vec<String> = (0..MESSAGES).map(|n| format!("message_{n}")).collect();
    assert_eq!(names, expected, "every message once, in order");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_example_survives_crashes_of_a_file_store_server() {
    let dir = TempDir::new("data");
    survive_crashes(vec![
        "--data-dir".into(),
        dir.path().to_string_lossy().into_owned(),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_example_survives_crashes_of_a_redis_server() {
    let redis = Redis::start().await;
    survive_crashes(vec!["--redis".into(), redis.url()]).await;
}
