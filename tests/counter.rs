//! Counters incremented by many TCP clients at once: a shared counter ends at exactly the
//! number of acknowledged increments, and counters that are each written by one client never
//! conflict.

mod support;

use odb::{Client, Ref};
use support::*;

#[odb::schema(name = "counter_concurrency")]
pub mod counting {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Counter {
        #[index]
        pub name: String,
        pub value: u64,
    }
}

use counting::Counter;

const CLIENTS: usize = 16;
const INCREMENTS: u64 = 500;

/// How one client's increments went.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    acknowledged: u64,
    conflicted: u64,
    runs: u64,
}

/// Increments `counter` `INCREMENTS` times, one transaction each, counting the outcomes.
async fn increment(db: Client, counter: Ref<Counter>) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    for _ in 0..INCREMENTS {
        let runs = &mut tally.runs;
        let result = db
            .transaction(|tx| {
                *runs += 1;
                let value = counter.value(tx)?;
                counter.set_value(tx, value + 1)
            })
            .await;
        match result {
            Ok(()) => tally.acknowledged += 1,
            Err(odb::Error::Conflict { .. }) => tally.conflicted += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(tally)
}

async fn create_counters(db: &Client, count: usize) -> anyhow::Result<Vec<Ref<Counter>>> {
    Ok(db
        .transaction(|tx| {
            (0..count)
                .map(|i| {
                    Counter::create(
                        tx,
                        Counter {
                            name: format!("counter-{i}"),
                            value: 0,
                        },
                    )
                })
                .collect()
        })
        .await?)
}

/// Reads the counters from a client that took no part, after it has seen every commit.
async fn final_values(
    server: &odb::server::RunningServer,
    counters: &[Ref<Counter>],
) -> anyhow::Result<Vec<u64>> {
    let fresh = client(server).await?;
    fresh.subscribe(counting::schema()).await?;
    fresh.flush().await?;
    Ok(fresh.view(|v| counters.iter().map(|c| c.value(v)).collect())?)
}

/// `CLIENTS` clients with this retry limit increment the counters `pick(client)` concurrently.
async fn run_clients(
    server: &odb::server::RunningServer,
    retries: u32,
    counters: &[Ref<Counter>],
    pick: impl Fn(usize) -> Ref<Counter>,
) -> anyhow::Result<Vec<Tally>> {
    // Everyone connects first, so that all clients start incrementing together.
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let db = client_with_retries(server, retries).await?;
        db.subscribe(counting::schema()).await?;
        db.wait_for(
            |v| Ok(counters.iter().all(|c| c.exists(v).unwrap_or(false))),
            WAIT,
        )
        .await?;
        clients.push(db);
    }
    let tasks = clients
        .into_iter()
        .enumerate()
        .map(|(c, db)| tokio::spawn(increment(db, pick(c))))
        .collect();
    join_all(tasks).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_counter_counts_every_increment_when_clients_retry_conflicts() -> anyhow::Result<()>
{
    bounded(async {
        let server = start_server().await?;
        let counters = create_counters(&client(&server).await?, 1).await?;
        let shared = counters[0];
        // Enough retries that every increment eventually wins its race.
        let tallies = run_clients(&server, 100_000, &counters, |_| shared).await?;

        let acknowledged: u64 = tallies.iter().map(|t| t.acknowledged).sum();
        let runs: u64 = tallies.iter().map(|t| t.runs).sum();
        assert_eq!(acknowledged, CLIENTS as u64 * INCREMENTS, "{tallies:?}");
        assert!(
            runs > acknowledged,
            "no increment ever conflicted, so the clients did not really race: {tallies:?}"
        );
        assert_eq!(final_values(&server, &counters).await?, vec![acknowledged]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_counter_equals_acknowledged_increments_when_conflicts_are_returned(
) -> anyhow::Result<()> {
    bounded(async {
        let server = start_server().await?;
        let counters = create_counters(&client(&server).await?, 1).await?;
        let shared = counters[0];
        // No retries: every lost race is reported to the caller, and must leave no trace.
        let tallies = run_clients(&server, 0, &counters, |_| shared).await?;

        let acknowledged: u64 = tallies.iter().map(|t| t.acknowledged).sum();
        let conflicted: u64 = tallies.iter().map(|t| t.conflicted).sum();
        assert_eq!(acknowledged + conflicted, CLIENTS as u64 * INCREMENTS);
        assert!(
            conflicted > 0,
            "no increment ever conflicted, so the clients did not really race: {tallies:?}"
        );
        assert!(acknowledged > 0, "{tallies:?}");
        assert_eq!(
            final_values(&server, &counters).await?,
            vec![acknowledged],
            "the counter differs from the number of acknowledged increments ({conflicted} \
             increments were reported as conflicts)"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_counters_incremented_concurrently_never_conflict() -> anyhow::Result<()> {
    bounded(async {
        let server = start_server().await?;
        let counters = create_counters(&client(&server).await?, CLIENTS).await?;
        // Every client sees every counter change while it works, but reads and writes only its
        // own counter's field, so no commit may fail.
        let tallies = run_clients(&server, 0, &counters, |c| counters[c]).await?;

        for (c, t) in tallies.iter().enumerate() {
            assert_eq!(t.conflicted, 0, "client {c} conflicted: {t:?}");
            assert_eq!(t.runs, INCREMENTS, "client {c} re-ran a transaction: {t:?}");
            assert_eq!(t.acknowledged, INCREMENTS, "client {c}: {t:?}");
        }
        assert_eq!(
            final_values(&server, &counters).await?,
            vec![INCREMENTS; CLIENTS]
        );
        Ok(())
    })
    .await
}
