//! A server whose sequencer fails (here: a storage backend that panics while storing a batch)
//! stops instead of staying up and deaf: it reports the failure, tells every client why, stops
//! listening, and a new server on the same storage has every commit acknowledged before.

use odb::server::Server;
use odb::{Client, ConnectionStatus, ReconnectPolicy, TxOptions};
use odb_server::storage::{Batch, Loaded, MemoryStorage, Storage, StorageFuture};
use odb_server::ServerError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "fault-test-token";
const WAIT: Duration = Duration::from_secs(30);
const BROKE: &str = "the storage backend broke";

#[odb::schema]
pub mod faults {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Note {
        pub text: String,
    }
}
use faults::Note;

/// Memory storage that panics on every batch once broken.
struct Fragile {
    inner: MemoryStorage,
    broken: Arc<AtomicBool>,
}

impl Storage for Fragile {
    fn describe(&self) -> String {
        "fragile memory".into()
    }

    fn load(&mut self) -> StorageFuture<'_, Loaded> {
        self.inner.load()
    }

    fn persist(&mut self, batch: Batch) -> StorageFuture<'_, ()> {
        if self.broken.load(Ordering::SeqCst) {
            panic!("{BROKE}");
        }
        self.inner.persist(batch)
    }
}

/// A client that closes, rather than reconnects, when its connection ends.
async fn client(url: &str, name: &str) -> anyhow::Result<Client> {
    Ok(Client::builder(url)
        .token(TOKEN)
        .name(name)
        .reconnect(ReconnectPolicy::disabled())
        .connect()
        .await?)
}

/// Waits until `db` is closed and returns why.
async fn closed_reason(db: &Client) -> anyhow::Result<String> {
    let mut status = db.status();
    Ok(tokio::time::timeout(WAIT, async {
        loop {
            if let ConnectionStatus::Closed { reason } = &*status.borrow_and_update() {
                return reason.clone();
            }
            if status.changed().await.is_err() {
                return "the status channel closed".to_string();
            }
        }
    })
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sequencer_stops_the_server_and_every_client_is_told_why() -> anyhow::Result<()> {
    let storage = MemoryStorage::new();
    let broken = Arc::new(AtomicBool::new(false));
    let fragile = Fragile {
        inner: storage.clone(),
        broken: broken.clone(),
    };
    let server = Server::with_storage(fragile)
        .token(TOKEN)
        .listen("127.0.0.1:0".parse()?)
        .start()
        .await?;
    let addr = server
        .local_addr()
        .ok_or_else(|| anyhow::anyhow!("no address"))?;
    let url = server.url().ok_or_else(|| anyhow::anyhow!("no URL"))?;
    let writer = client(&url, "writer").await?;
    let watcher = client(&url, "watcher").await?;
    watcher.subscribe_type::<Note>().await?;
    let kept = writer
        .transaction(|tx| {
            Note::create(
                tx,
                Note {
                    text: "stored".into(),
                },
            )
        })
        .await?;
    assert_eq!(server.inner().failure(), None);

    broken.store(true, Ordering::SeqCst);
    let lost = writer
        .transaction_with(TxOptions::default().timeout(WAIT), |tx| {
            Note::create(
                tx,
                Note {
                    text: "never stored".into(),
                },
            )
        })
        .await;
    assert!(
        lost.is_err(),
        "a commit the server could not store is not acknowledged: {lost:?}"
    );

    let reason = tokio::time::timeout(WAIT, server.inner().failed()).await?;
    assert!(
        reason.contains(&format!("the sequencer panicked: {BROKE}")),
        "the failure says why: {reason:?}"
    );
    assert_eq!(server.inner().failure(), Some(reason));
    // Every client hears why, the one that was only watching too.
    for db in [&writer, &watcher] {
        let said = closed_reason(db).await?;
        assert!(said.contains(BROKE), "the client was told {said:?}");
    }
    assert!(
        matches!(
            server.inner().connect_in_process(),
            Err(ServerError::Stopped)
        ),
        "a failed server takes no new connection"
    );
    tokio::time::timeout(WAIT, server.shutdown()).await?;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "a failed server no longer listens"
    );

    // A new server on the same storage has the acknowledged commit, and only it.
    let again = Server::with_storage(storage).token(TOKEN).start().await?;
    let db = again.client().await?;
    db.subscribe_type::<Note>().await?;
    let notes = db.view(|v| Note::lookup_all(v))?;
    assert_eq!(notes, vec![kept]);
    assert_eq!(db.view(|v| kept.get(v))?.text, "stored");
    again.shutdown().await;
    Ok(())
}
