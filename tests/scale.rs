//! Resource use at scale: many connections opened and closed leave nothing behind on the
//! server, and long create/delete churn keeps client replicas and the server's store bounded.

mod support;

use odb::server::{Server, ServerConfig};
use odb::system::Connection;
use odb::{Client, Ref};
use std::time::Duration;
use support::*;

/// How long the server may take to notice that closed connections are gone.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

const CONNECTIONS: usize = 1_000;
const CONCURRENT: usize = 50;

/// The ids of the `core.Connection` objects a client sees.
fn connection_objects(v: &odb::View<'_>) -> odb::Result<Vec<odb::ObjectId>> {
    Ok(Connection::lookup_all(v)?
        .into_iter()
        .map(|c| c.id())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_connections_opened_and_closed_leave_no_connection_behind() -> anyhow::Result<()> {
    bounded(async {
        let server = start_server().await?;
        let watcher = builder(&server, "watcher").connect().await?;
        watcher.subscribe_type::<Connection>().await?;
        let me = watcher.connection_id();

        for batch in 0..CONNECTIONS / CONCURRENT {
            let clients: Vec<Client> = futures::future::try_join_all(
                (0..CONCURRENT)
                    .map(|i| builder(&server, &format!("batch-{batch}-client-{i}")).connect()),
            )
            .await?;
            // Each connection is fully registered: the watcher sees all of them at once.
            let mut expected: Vec<odb::ObjectId> =
                clients.iter().map(Client::connection_id).collect();
            expected.push(me);
            expected.sort();
            watcher
                .wait_for(|v| Ok(connection_objects(v)? == expected), WAIT)
                .await
                .map_err(|e| anyhow::anyhow!("batch {batch}: not all connections seen: {e}"))?;
            drop(clients);
        }

        // Every Connection object but the watcher's own is deleted...
        watcher
            .wait_for(|v| Ok(connection_objects(v)? == vec![me]), CLOSE_WAIT)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "connection objects left behind: {:?}: {e}",
                    watcher.view(connection_objects).map(|c| c.len())
                )
            })?;
        poll_until("only the watcher is connected", CLOSE_WAIT, || {
            server.inner().connection_count() == 1
        })
        .await?;
        poll_until(
            "the server holds only the watcher's Connection object",
            CLOSE_WAIT,
            || server.inner().stats().objects == 1,
        )
        .await
        .map_err(|e| e.context(format!("{:?}", server.inner().stats())))?;

        // ...and once the watcher leaves too, nothing is left.
        drop(watcher);
        poll_until("no connection is left", CLOSE_WAIT, || {
            server.inner().connection_count() == 0
        })
        .await
        .map_err(|e| e.context(format!("{:?}", server.inner().stats())))?;
        poll_until("no object is left", CLOSE_WAIT, || {
            server.inner().stats().objects == 0
        })
        .await
        .map_err(|e| e.context(format!("{:?}", server.inner().stats())))?;
        Ok(())
    })
    .await
}

#[odb::schema(name = "scale_churn")]
pub mod churn {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Blob {
        #[index]
        pub generation: u64,
        pub data: String,
    }
}

use churn::Blob;

const BATCH: usize = 100;
const ROUNDS: u64 = 1_000;
/// Objects a replica may hold besides the blobs: the client's own Connection object.
const OTHER_OBJECTS: usize = 1;
/// Tids of conflict history the churn server keeps.
const HISTORY: u64 = 20;
/// Generous count of conflict keys one created or deleted object stamps.
const KEYS_PER_OBJECT: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_delete_churn_keeps_replicas_and_server_bounded() -> anyhow::Result<()> {
    bounded(async {
        // The server keeps the keys written in its last `conflict_history` tids to validate
        // commits; the default (a million tids) would legitimately grow through this whole
        // test, so a short history makes the server's memory flat and checkable.
        let mut config = ServerConfig::new(TOKEN);
        config.conflict_history = HISTORY;
        let server = Server::in_memory()
            .config(config)
            .listen("127.0.0.1:0".parse()?)
            .start()
            .await?;
        let writer = client(&server).await?;
        let watcher = client(&server).await?;
        watcher.subscribe_type::<Blob>().await?;
        let bound = 2 * BATCH + OTHER_OBJECTS;
        // A round stamps a few keys (existence, fields, index memberships) per object it
        // creates or deletes.
        let stamp_bound = (HISTORY as usize + 1) * 2 * BATCH * KEYS_PER_OBJECT;

        // Each round deletes the previous round's objects and creates as many new ones, so at
        // most two rounds' worth are alive in any snapshot.
        let mut previous: Vec<Ref<Blob>> = Vec::new();
        let mut peak = (0, 0, 0);
        for round in 0..ROUNDS {
            previous = writer
                .transaction(|tx| {
                    for b in &previous {
                        b.delete(tx)?;
                    }
                    (0..BATCH)
                        .map(|i| {
                            Blob::create(
                                tx,
                                Blob {
                                    generation: round,
                                    data: format!("round {round} blob {i}"),
                                },
                            )
                        })
                        .collect()
                })
                .await?;
            let held = (
                writer.stats().replica_objects,
                watcher.stats().replica_objects,
                server.inner().stats().objects,
            );
            peak = (peak.0.max(held.0), peak.1.max(held.1), peak.2.max(held.2));
            assert!(
                held.0 <= bound && held.1 <= bound,
                "round {round}: replicas hold {} (writer) and {} (watcher) objects, more than {bound}",
                held.0,
                held.1
            );
            // The blobs plus the two clients' Connection objects.
            assert!(
                held.2 <= BATCH + 2,
                "round {round}: the server holds {} objects, more than {}",
                held.2,
                BATCH + 2
            );
            let stamps = server.inner().stats().conflict_stamps;
            assert!(
                stamps <= stamp_bound,
                "round {round}: the server keeps {stamps} conflict stamps, more than \
                 {stamp_bound} for {HISTORY} tids of history"
            );
        }

        watcher.flush().await?;
        let alive = watcher.view(|v| Blob::lookup_all(v))?;
        assert_eq!(alive, previous, "the watcher does not see the last round");
        assert_eq!(
            watcher.stats().replica_objects,
            BATCH + OTHER_OBJECTS,
            "deleted objects stay in the watcher's replica with no view open (peaks {peak:?})"
        );
        assert_eq!(
            writer.stats().replica_objects,
            BATCH + OTHER_OBJECTS,
            "deleted objects stay in the writer's replica with no view open (peaks {peak:?})"
        );
        let fresh = client(&server).await?;
        fresh.subscribe(churn::schema()).await?;
        assert_eq!(fresh.view(|v| Blob::lookup_all(v))?.len(), BATCH);
        Ok(())
    })
    .await
}
