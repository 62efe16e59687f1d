//! Durability end to end: the `odb-server` binary on a data directory or on Redis, killed with
//! SIGKILL at a random moment while a client commits, then restarted. Every acknowledged commit
//! must be there after the restart, no commit may be there in part, and tids continue. Also: a
//! Redis outage fails commits within the timeout and they succeed again once Redis is back, and a
//! storage failure undoes the failed commits in the running server.

mod processes;
mod rng;

use odb::{Client, Tid};
use odb_server::storage::MemoryStorage;
use processes::{free_port, server_binary, Redis, ServerProcess, TempDir};
use rng::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "durability-test-token";

/// Restarts per backend and run.
const ROUNDS: usize = 5;

#[odb::schema]
pub mod durable {
    /// One of the two objects every test commit creates.
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Half {
        /// The commit's sequence number.
        pub seq: u64,
        /// 0 or 1.
        pub part: u8,
    }
}

use durable::Half;

#[tokio::test]
async fn an_embedded_server_on_a_directory_keeps_its_data_across_restarts() -> anyhow::Result<()> {
    let dir = TempDir::new("embedded");
    let first = odb::server::Server::in_dir(dir.path())?.start().await?;
    let db = first.client().await?;
    let half = db
        .transaction(|tx| Half::create(tx, Half { seq: 7, part: 1 }))
        .await?;
    let tid = db.current_tid();
    assert!(
        odb::server::Server::in_dir(dir.path()).is_err(),
        "a second server on a directory in use is refused"
    );
    drop(db);
    first.shutdown().await;

    let second = odb::server::Server::in_dir(dir.path())?.start().await?;
    let db = second.client().await?;
    db.subscribe_type::<Half>().await?;
    assert_eq!(db.view(|v| half.get(v))?, Half { seq: 7, part: 1 });
    assert!(db.current_tid() > tid, "tids continue after the restart");
    Ok(())
}

/// A client of the server process, which stops with it rather than reconnecting.
async fn connect(server: &ServerProcess) -> Client {
    Client::builder(format!("odb://127.0.0.1:{}", server.port()))
        .token(TOKEN)
        .name("durability-test")
        .max_retries(0)
        // Each round kills the server and starts a new client: this one must stop with it
        // rather than reconnect (reconnecting is what tests/sessions.rs checks).
        .reconnect(odb::ReconnectPolicy::disabled())
        .connect()
        .await
        .expect("connect to odb-server")
}

/// Commits the two halves of commit `seq`.
async fn commit_pair(client: &Client, seq: u64) -> odb::Result<Tid> {
    client
        .transaction(|tx| {
            Half::create(tx, Half { seq, part: 0 })?;
            Half::create(tx, Half { seq, part: 1 })?;
            Ok::<_, odb::Error>(())
        })
        .await?;
    Ok(client.current_tid())
}

/// Every commit visible to a fresh client: sequence number -> parts.
async fn visible(client: &Client) -> BTreeMap<u64, Vec<u8>> {
    client
        .subscribe(durable::schema())
        .await
        .expect("subscribe");
    client
        .view(|v| {
            let mut seen: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            for half in Half::lookup_all(v)? {
                let value = half.get(v)?;
                seen.entry(value.seq).or_default().push(value.part);
            }
            Ok::<_, odb::Error>(seen)
        })
        .expect("read the commits")
}

/// Checks that every acknowledged commit is visible and that no commit is visible in part.
fn check(seen: &BTreeMap<u64, Vec<u8>>, acked: &BTreeSet<u64>) {
    for (seq, parts) in seen {
        let mut parts = parts.clone();
        parts.sort();
        assert_eq!(parts, vec![0, 1], "commit {seq} is visible in part");
    }
    for seq in acked {
        assert!(seen.contains_key(seq), "acknowledged commit {seq} is lost");
    }
}

/// Commits, kills the server at a random moment, restarts it and checks, `ROUNDS` times.
async fn kill_and_restart(storage: Vec<String>) {
    let mut rng = Rng::for_test(&format!("kill_and_restart {storage:?}"));
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut last_acked_tid = Tid(0);
    for round in 0..ROUNDS as u64 {
        let mut server = ServerProcess::start(TOKEN, &storage).await;
        let client = connect(&server).await;
        let seen = visible(&client).await;
        check(&seen, &acked);
        // The previous run's connection objects were deleted, and that deletion was stored.
        client
            .subscribe_type::<odb::system::Connection>()
            .await
            .expect("subscribe to connections");
        let connections = client
            .view(|v| odb::system::Connection::lookup_all(v))
            .expect("read connections");
        assert_eq!(
            connections.len(),
            1,
            "round {round}: only this client's connection is live"
        );
        assert!(
            client.current_tid() > last_acked_tid,
            "round {round}: tid {} after the restart is not past the last acknowledged tid {}",
            client.current_tid(),
            last_acked_tid
        );
        let done = Arc::new(Mutex::new((Vec::new(), Tid(0))));
        let first = Arc::new(tokio::sync::Notify::new());
        let writer = {
            let done = done.clone();
            let first = first.clone();
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let seq = round * 1_000_000 + i;
                    match commit_pair(&client, seq).await {
                        Ok(tid) => {
                            let mut done = done.lock().expect("lock");
                            done.0.push(seq);
                            done.1 = tid;
                            first.notify_one();
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        // A random moment for the kill (not a wait for anything), after the first commit was
        // acknowledged: on a busy machine that alone may take longer than the shortest delay.
        tokio::time::timeout(Duration::from_secs(30), first.notified())
            .await
            .unwrap_or_else(|_| panic!("round {round}: no commit was acknowledged in 30 s"));
        tokio::time::sleep(Duration::from_millis(rng.between(50, 400))).await;
        server.kill();
        tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("the writer notices the killed server")
            .expect("the writer does not panic");
        let done = done.lock().expect("lock");
        assert!(
            !done.0.is_empty(),
            "round {round}: no commit was acknowledged"
        );
        acked.extend(done.0.iter().copied());
        last_acked_tid = last_acked_tid.max(done.1);
    }
    let server = ServerProcess::start(TOKEN, &storage).await;
    let client = connect(&server).await;
    check(&visible(&client).await, &acked);
    assert!(client.current_tid() > last_acked_tid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backend_survives_sigkill() {
    let dir = TempDir::new("file");
    let storage = vec!["--data-dir".to_string(), dir.path().display().to_string()];
    kill_and_restart(storage).await;
}

/// SIGTERM: the server answers what it received, stores it, tells clients it is shutting down
/// and exits with success; everything acknowledged is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully() {
    let dir = TempDir::new("sigterm");
    let storage = vec!["--data-dir".to_string(), dir.path().display().to_string()];
    let mut server = ServerProcess::start(TOKEN, &storage).await;
    let client = connect(&server).await;
    let mut acked = BTreeSet::new();
    for seq in 1..=20 {
        commit_pair(&client, seq).await.expect("commit");
        acked.insert(seq);
    }
    let status = server.terminate().await;
    assert!(status.success(), "odb-server exited with {status}");
    let reason = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Err(e) = client.flush().await {
                return e.to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the client notices the shutdown");
    assert!(reason.contains("shutting down"), "{reason}");
    let server = ServerProcess::start(TOKEN, &storage).await;
    let fresh = connect(&server).await;
    let seen = visible(&fresh).await;
    check(&seen, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_survives_sigkill() {
    let redis = Redis::start().await;
    let storage = vec![
        "--redis".to_string(),
        redis.url(),
        "--redis-prefix".to_string(),
        "test:".to_string(),
    ];
    kill_and_restart(storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_commits_until_redis_is_back() {
    let mut redis = Redis::start().await;
    let storage = vec![
        "--redis".to_string(),
        redis.url(),
        "--redis-timeout-ms".to_string(),
        "1000".to_string(),
    ];
    let mut server = ServerProcess::start(TOKEN, &storage).await;
    let client = connect(&server).await;
    commit_pair(&client, 1)
        .await
        .expect("commit before the outage");

    redis.stop();
    let failed = tokio::time::timeout(Duration::from_secs(30), commit_pair(&client, 2))
        .await
        .expect("a commit during the outage fails instead of hanging");
    // Whether the server's write reached Redis before the link broke is not known to it, so
    // the commit fails either for certain or with an unknown outcome, never as a success.
    let error = failed.expect_err("a commit during the outage fails");
    assert!(
        matches!(
            error,
            odb::Error::StorageUnavailable(_) | odb::Error::CommitOutcomeUnknown { .. }
        ),
        "unexpected error: {error}"
    );

    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match commit_pair(&client, 3).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    matches!(e, odb::Error::StorageUnavailable(_)),
                    "unexpected error: {e}"
                );
                assert!(Instant::now() < deadline, "commits still fail: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    // The server and a fresh client agree: 1 and 3 are stored, 2 is not.
    let other = connect(&server).await;
    let seen = visible(&other).await;
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
    server.kill();
    let server = ServerProcess::start(TOKEN, &storage).await;
    let client = connect(&server).await;
    let seen = visible(&client).await;
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
    check(&seen, &BTreeSet::from([1, 3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refuses_another_format_version() {
    let redis = Redis::start().await;
    let output = {
        let url = redis.url();
        let client = redis_client(&url).await;
        set_key(client, "odb:format", "999").await;
        Command::new(server_binary())
            .args(["--service-token", TOKEN, "--redis", &url, "127.0.0.1", "0"])
            .output()
            .expect("run odb-server")
    };
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("format version 999"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_a_one_line_error() {
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let output = Command::new(server_binary())
        .args(["--service-token", TOKEN, "--redis", &url, "127.0.0.1", "0"])
        .args(["--redis-timeout-ms", "1000"])
        .output()
        .expect("run odb-server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("odb-server: error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"));
    assert!(line.contains("cannot connect to Redis"), "{line}");
}

async fn redis_client(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis")
}

async fn set_key(mut conn: redis::aio::MultiplexedConnection, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(&mut conn)
        .await
        .expect("SET");
}

/// How many `core.Connection` objects the storage holds.
async fn stored_connections(storage: &MemoryStorage) -> usize {
    use odb_server::storage::Storage;
    let loaded = storage.clone().load().await.expect("load the stored image");
    let Some(connection_type) = loaded
        .registry
        .schemas
        .iter()
        .filter(|s| s.name == "core")
        .flat_map(|s| s.types.iter())
        .find(|t| t.name == "Connection")
        .map(|t| t.id)
    else {
        return 0;
    };
    loaded
        .objects
        .iter()
        .filter(|(_, o)| o.ty == connection_type)
        .count()
}

/// With an in-process server on a storage that fails: the failed commit is undone (another
/// client never sees it, and neither does the server), and commits succeed again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batches_are_undone() {
    let storage = MemoryStorage::new();
    let server = odb_server::Server::start_with_storage(
        odb_server::ServerConfig::new(TOKEN),
        None,
        Box::new(storage.clone()),
    )
    .await
    .expect("start");
    let connect = || async {
        let stream = server.connect_in_process().expect("connect in process");
        Client::builder("odb://in-process")
            .token(TOKEN)
            .max_retries(0)
            .connect_stream(stream)
            .await
            .expect("handshake")
    };
    let writer = connect().await;
    let watcher = connect().await;
    watcher
        .subscribe(durable::schema())
        .await
        .expect("subscribe");
    commit_pair(&writer, 1).await.expect("first commit");

    storage.set_failing(true);
    let error = commit_pair(&writer, 2)
        .await
        .expect_err("a commit fails while the storage fails");
    assert!(
        matches!(error, odb::Error::StorageUnavailable(_)),
        "{error}"
    );
    // The server finds out by itself that the storage works again (it probes it about once a
    // second) and then accepts commits.
    storage.set_failing(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match commit_pair(&writer, 3).await {
            Ok(_) => break,
            Err(odb::Error::StorageUnavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("commits still fail: {e}"),
        }
    }
    watcher.flush().await.expect("flush");
    let seen = watcher
        .view(|v| {
            let mut seen: BTreeSet<u64> = BTreeSet::new();
            for half in Half::lookup_all(v)? {
                seen.insert(half.get(v)?.seq);
            }
            Ok::<_, odb::Error>(seen)
        })
        .expect("view");
    assert_eq!(seen, BTreeSet::from([1, 3]));
    let fresh = connect().await;
    assert_eq!(
        visible(&fresh).await.keys().copied().collect::<Vec<_>>(),
        vec![1, 3]
    );
    server.shutdown().await;

    // A server started on the same storage continues where this one stopped. Whether the
    // clients' Connection objects were deleted during the shutdown depends on which stopped
    // first, so count what was left rather than assume.
    let stored_tid = storage.tid();
    let stale = stored_connections(&storage).await;
    let server = odb_server::Server::start_with_storage(
        odb_server::ServerConfig::new(TOKEN),
        None,
        Box::new(storage.clone()),
    )
    .await
    .expect("restart");
    assert_eq!(
        stored_connections(&storage).await,
        0,
        "the start-up deletion of the previous connections' objects is stored"
    );
    if stale > 0 {
        assert!(
            storage.tid() > stored_tid,
            "the start-up deletion took a tid"
        );
    }
    let stream = server.connect_in_process().expect("connect in process");
    let client = Client::builder("odb://in-process")
        .token(TOKEN)
        .connect_stream(stream)
        .await
        .expect("handshake");
    assert!(client.current_tid() > stored_tid);
    assert_eq!(
        visible(&client).await.keys().copied().collect::<Vec<_>>(),
        vec![1, 3]
    );
    server.shutdown().await;
}
