//! A storage that fails, through a fault-injecting [`Storage`]: while it is down, clients still
//! connect, subscribe and read, and commits fail at once with `Error::StorageUnavailable`; once
//! it works again, commits succeed again without a restart. A write whose outcome the storage
//! cannot tell is stored again until it succeeds, and is reported as
//! `Error::CommitOutcomeUnknown`, never as failed, when it cannot be settled.

use odb::{Client, Error};
use odb_server::storage::{Batch, Loaded, MemoryStorage, Storage, StorageError, StorageFuture};
use odb_server::{Server, ServerConfig};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "storage-outage-test-token";

/// How long a test waits for a condition before failing.
const WAIT: Duration = Duration::from_secs(20);

#[odb::schema]
pub mod outage {
    /// A note committed by the tests.
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Note {
        /// Its number.
        pub seq: u64,
    }
}

use outage::Note;

/// How the fault-injecting storage behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Stores every batch.
    Healthy,
    /// Fails every batch, as a file database whose handle a failed write left unusable does
    /// until it is reopened on a disk with space again.
    Poisoned,
    /// Fails the next `n` batches, then stores again.
    FailNext(u32),
    /// Stores every batch but reports that it cannot tell whether it did, as Redis does when the
    /// link breaks while `EXEC` is applied.
    LandsButUnknown,
    /// Fails every batch with an unknown outcome, storing nothing.
    LostButUnknown,
    /// Fails the next `n` batches with an unknown outcome, storing nothing, then stores again,
    /// as a Redis master whose replica confirms a write only after `WAIT` gave up does.
    UnknownNext(u32),
}

/// A [`MemoryStorage`] with faults injected by the test.
#[derive(Clone)]
struct FaultyStorage {
    inner: MemoryStorage,
    mode: Arc<Mutex<Mode>>,
}

impl FaultyStorage {
    fn new() -> Self {
        FaultyStorage {
            inner: MemoryStorage::new(),
            mode: Arc::new(Mutex::new(Mode::Healthy)),
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

impl Storage for FaultyStorage {
    fn describe(&self) -> String {
        "fault-injecting".into()
    }

    fn load(&mut self) -> StorageFuture<'_, Loaded> {
        self.inner.load()
    }

    fn persist(&mut self, batch: Batch) -> StorageFuture<'_, ()> {
        let mode = {
            let mut mode = self.mode.lock().unwrap();
            let now = *mode;
            match now {
                Mode::FailNext(n) | Mode::UnknownNext(n) if n <= 1 => *mode = Mode::Healthy,
                Mode::FailNext(n) => *mode = Mode::FailNext(n - 1),
                Mode::UnknownNext(n) => *mode = Mode::UnknownNext(n - 1),
                _ => {}
            }
            now
        };
        let unavailable = |what: &str| StorageError::Unavailable(format!("injected: {what}"));
        match mode {
            Mode::Healthy => self.inner.persist(batch),
            Mode::Poisoned => Box::pin(std::future::ready(Err(unavailable(
                "Previous I/O error occurred. Please close and re-open the database.",
            )))),
            Mode::FailNext(_) => Box::pin(std::future::ready(Err(unavailable(
                "No space left on device",
            )))),
            Mode::LandsButUnknown => {
                let inner = self.inner.persist(batch);
                Box::pin(async move {
                    inner.await?;
                    Err(StorageError::OutcomeUnknown("injected: broken pipe".into()))
                })
            }
            Mode::LostButUnknown | Mode::UnknownNext(_) => Box::pin(std::future::ready(Err(
                StorageError::OutcomeUnknown("injected: broken pipe".into()),
            ))),
        }
    }
}

async fn start(storage: &FaultyStorage) -> Server {
    Server::start_with_storage(ServerConfig::new(TOKEN), None, Box::new(storage.clone()))
        .await
        .expect("start the server")
}

async fn connect(server: &Server) -> odb::Result<Client> {
    let stream = server
        .connect_in_process()
        .map_err(|e| Error::Disconnected(e.to_string()))?;
    Client::builder("odb://in-process")
        .token(TOKEN)
        .max_retries(0)
        .connect_stream(stream)
        .await
}

async fn commit(client: &Client, seq: u64) -> odb::Result<()> {
    client
        .transaction(|tx| {
            Note::create(tx, Note { seq })?;
            Ok(())
        })
        .await
}

/// The note numbers `client` sees after subscribing.
async fn notes(client: &Client) -> BTreeSet<u64> {
    client.subscribe(outage::schema()).await.expect("subscribe");
    client.flush().await.expect("flush");
    client
        .view(|v| {
            Note::lookup_all(v)?
                .into_iter()
                .map(|n| Ok::<_, odb::Error>(n.get(v)?.seq))
                .collect()
        })
        .expect("read the notes")
}

/// Commits `seq` until it succeeds, failing the test if it still fails after [`WAIT`]. Each
/// failure must be the typed storage error.
async fn commit_once_healed(client: &Client, seq: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match commit(client, seq).await {
            Ok(()) => return,
            Err(Error::StorageUnavailable(_)) if tokio::time::Instant::now() < deadline => {
                // The server probes the storage about once a second.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("commits still fail: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_storage_is_down_clients_read_and_commits_fail_fast_then_it_heals() {
    let storage = FaultyStorage::new();
    let server = start(&storage).await;
    let writer = connect(&server).await.expect("connect");
    commit(&writer, 1).await.expect("commit before the outage");

    storage.set(Mode::Poisoned);
    match commit(&writer, 2).await {
        Err(Error::StorageUnavailable(reason)) => assert!(reason.contains("I/O"), "{reason}"),
        other => panic!("expected StorageUnavailable, got {other:?}"),
    }
    // New clients still connect, subscribe and read while the storage is down.
    let reader = connect(&server)
        .await
        .expect("a client connects while the storage is down");
    assert_eq!(notes(&reader).await, BTreeSet::from([1]));
    match commit(&reader, 4).await {
        Err(Error::StorageUnavailable(_)) => {}
        other => panic!("expected StorageUnavailable, got {other:?}"),
    }

    // Space is back: commits work again, with no restart.
    storage.set(Mode::Healthy);
    commit_once_healed(&writer, 3).await;
    assert_eq!(notes(&reader).await, BTreeSet::from([1, 3]));
    server.shutdown().await;

    let restarted = start(&storage).await;
    let client = connect(&restarted).await.expect("connect after restart");
    assert_eq!(notes(&client).await, BTreeSet::from([1, 3]));
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_failed_batches_fail_their_commits_and_nothing_else() {
    let storage = FaultyStorage::new();
    let server = start(&storage).await;
    let client = connect(&server).await.expect("connect");
    storage.set(Mode::FailNext(3));
    match commit(&client, 1).await {
        Err(Error::StorageUnavailable(_)) => {}
        other => panic!("expected StorageUnavailable, got {other:?}"),
    }
    commit_once_healed(&client, 2).await;
    assert_eq!(notes(&client).await, BTreeSet::from([2]));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_of_unknown_outcome_is_stored_again_and_acknowledged() {
    let storage = FaultyStorage::new();
    let server = start(&storage).await;
    let client = connect(&server).await.expect("connect");
    // Writes report an unknown outcome until the test heals the storage; the server stores the
    // batch again meanwhile, and the first success settles it.
    let before = storage.inner.batches();
    storage.set(Mode::LandsButUnknown);
    let pending = tokio::spawn({
        let client = client.clone();
        async move { commit(&client, 1).await }
    });
    // The server keeps the commit unanswered while its outcome is unknown; heal once it has
    // been tried.
    let deadline = tokio::time::Instant::now() + WAIT;
    while storage.inner.batches() == before {
        assert!(tokio::time::Instant::now() < deadline, "no write was tried");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    storage.set(Mode::Healthy);
    pending
        .await
        .expect("the commit task")
        .expect("the commit is acknowledged once stored again");
    server.shutdown().await;
    let restarted = start(&storage).await;
    let fresh = connect(&restarted).await.expect("connect after restart");
    assert_eq!(notes(&fresh).await, BTreeSet::from([1]));
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_outcome_stays_unknown_is_never_reported_as_failed() {
    for mode in [Mode::LandsButUnknown, Mode::LostButUnknown] {
        let storage = FaultyStorage::new();
        let server = start(&storage).await;
        let client = connect(&server).await.expect("connect");
        commit(&client, 1).await.expect("first commit");
        storage.set(mode);
        match commit(&client, 2).await {
            Err(Error::CommitOutcomeUnknown { reason }) => {
                assert!(reason.contains("broken pipe"), "{reason}")
            }
            other => panic!("{mode:?}: expected CommitOutcomeUnknown, got {other:?}"),
        }
        // Once the storage works again, it agrees with the running server, whichever way the
        // unknown write went.
        storage.set(Mode::Healthy);
        commit_once_healed(&client, 3).await;
        let live = notes(&client).await;
        assert_eq!(live, BTreeSet::from([1, 3]), "{mode:?}");
        server.shutdown().await;
        let restarted = start(&storage).await;
        let fresh = connect(&restarted).await.expect("connect after restart");
        assert_eq!(notes(&fresh).await, live, "{mode:?}");
        restarted.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connecting_while_a_write_is_retried_gets_in_once_it_lands() {
    let heartbeat = Duration::from_millis(200);
    let storage = FaultyStorage::new();
    let config = ServerConfig {
        heartbeat_interval: heartbeat,
        ..ServerConfig::new(TOKEN)
    };
    let server = Server::start_with_storage(config, None, Box::new(storage.clone()))
        .await
        .expect("start the server");
    let writer = connect(&server).await.expect("connect");
    storage.set(Mode::LostButUnknown);
    // The server stores this commit's batch again and again, and holds every answer meanwhile,
    // the next client's welcome included.
    let held = tokio::spawn({
        let writer = writer.clone();
        async move { commit(&writer, 1).await }
    });
    let server = Arc::new(server);
    let joining = tokio::spawn({
        let server = server.clone();
        async move { connect(&server).await }
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.stats().connections < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client never registered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Several heartbeat intervals pass before the welcome can go out: the server must not send
    // a heartbeat first, which the client would take for a broken hello.
    tokio::time::sleep(heartbeat * 4).await;
    storage.set(Mode::Healthy);
    held.await
        .expect("the commit's task")
        .expect("the commit lands once the storage works");
    let joined = joining
        .await
        .expect("the connecting task")
        .expect("the client gets in once its connection is stored");
    commit(&joined, 2).await.expect("and commits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_stores_again_a_write_of_unknown_outcome() {
    let storage = FaultyStorage::new();
    // The start-up changes' first two writes report an unknown outcome; the third lands.
    storage.set(Mode::UnknownNext(2));
    let server = start(&storage).await;
    assert_eq!(*storage.mode.lock().unwrap(), Mode::Healthy);
    let client = connect(&server).await.expect("connect");
    commit(&client, 1).await.expect("commit");
    server.shutdown().await;

    // One whose outcome stays unknown fails the start once the in-doubt window has passed,
    // saying why; nothing is lost, and the next start succeeds.
    storage.set(Mode::LostButUnknown);
    let error =
        Server::start_with_storage(ServerConfig::new(TOKEN), None, Box::new(storage.clone()))
            .await
            .expect_err("the start fails");
    assert!(error.to_string().contains("broken pipe"), "{error}");
    storage.set(Mode::Healthy);
    let restarted = start(&storage).await;
    let fresh = connect(&restarted).await.expect("connect after restart");
    assert_eq!(notes(&fresh).await, BTreeSet::from([1]));
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_fails_at_once_when_the_storage_refuses_writes() {
    let storage = FaultyStorage::new();
    storage.set(Mode::Poisoned);
    let error =
        Server::start_with_storage(ServerConfig::new(TOKEN), None, Box::new(storage.clone()))
            .await
            .expect_err("the start fails");
    let message = error.to_string();
    assert!(message.contains("fault-injecting"), "{message}");
    assert!(message.contains("I/O"), "{message}");
}
