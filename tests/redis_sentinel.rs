//! Redis failing over under a running `odb-server`: a master, a replica and a sentinel on
//! loopback; the server reaches Redis through the sentinel (`redis+sentinel://`). The master is
//! killed; after the sentinel promotes the replica, commits go on against the new master and
//! nothing acknowledged is lost. With `--redis-wait-replicas`, a commit is acknowledged only
//! once the replica has it.

mod processes;

use odb::{Client, TxOptions};
use processes::{
    accepts, free_port, quick_reconnect, server_binary, spawn_redis, Redis, ServerProcess, TempDir,
};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "sentinel-test-token";
const WAIT: Duration = Duration::from_secs(60);

#[odb::schema]
pub mod failover {
    /// One committed mark.
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Mark {
        /// Its sequence number.
        pub seq: u64,
    }
}

use failover::Mark;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn query<T: redis::FromRedisValue>(port: u16, cmd: &mut redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    cmd.query_async(&mut conn).await
}

/// Waits until `condition` holds, polling every 20 ms.
async fn until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The port of the master the sentinel names.
async fn master_port(sentinel: u16) -> Option<u16> {
    let addr: Vec<String> = query(
        sentinel,
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("main"),
    )
    .await
    .ok()?;
    addr.get(1)?.parse().ok()
}

/// Commits mark `seq`, again while Redis is unavailable: such a commit failed without being
/// applied (its batch was not stored).
async fn commit(db: &Client, seq: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let done = db
            .transaction_with(TxOptions::default().timeout(WAIT), |tx| {
                Mark::create(tx, Mark { seq })
            })
            .await;
        match done {
            Ok(_) => return,
            Err(e) if e.to_string().contains("storage unavailable") => {
                assert!(Instant::now() < deadline, "commit {seq}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("commit {seq}: {e}"),
        }
    }
}

/// A Redis replicating `master`.
async fn replica_of(master: &Redis) -> Redis {
    Redis::start_with(&[
        "--replicaof".into(),
        "127.0.0.1".into(),
        master.port().to_string(),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_continue_after_sentinel_promotes_the_replica() {
    let mut master = Redis::start().await;
    let replica = replica_of(&master).await;
    let replica_port = replica.port();
    let sentinel_dir = TempDir::new("sentinel");
    let config = sentinel_dir.path().join("sentinel.conf");
    let master_port_now = master.port();
    // A sentinel rewrites its configuration file, so each attempt writes it afresh.
    let (sentinel, sentinel_port) = spawn_redis(|port| {
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor main 127.0.0.1 {master_port_now} 1\n\
                 sentinel down-after-milliseconds main 1000\n\
                 sentinel failover-timeout main 10000\n",
                sentinel_dir.path().display(),
            ),
        )
        .expect("write the sentinel's configuration");
        vec![config.display().to_string(), "--sentinel".into()]
    })
    .await;
    let _sentinel = Proc(sentinel);
    until("the replica to sync", || async {
        let info: String = query(replica_port, redis::cmd("INFO").arg("replication"))
            .await
            .unwrap_or_default();
        info.contains("master_link_status:up")
    })
    .await;
    until("the sentinel to know the replica", || async {
        let replicas: Vec<redis::Value> = query(
            sentinel_port,
            redis::cmd("SENTINEL").arg("replicas").arg("main"),
        )
        .await
        .unwrap_or_default();
        !replicas.is_empty()
    })
    .await;

    println!("redis, replica and sentinel ready");
    let started = Instant::now();
    let server_port = free_port();
    let _server = Proc(
        Command::new(server_binary())
            .args(["--service-token", TOKEN])
            .args([
                "--redis",
                &format!("redis+sentinel://127.0.0.1:{sentinel_port}/main/0"),
                "--standby",
                "--lease-ms",
                "3000",
                "--redis-timeout-ms",
                "1000",
            ])
            .args(["127.0.0.1", &server_port.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start odb-server"),
    );
    until("the server to lead", || accepts(server_port)).await;
    let db = Client::builder(format!("odb://127.0.0.1:{server_port}"))
        .token(TOKEN)
        .reconnect(quick_reconnect())
        .connect()
        .await
        .expect("connects");
    // Includes building the server binary on the first run.
    println!("leading after {} ms", started.elapsed().as_millis());
    for seq in 0..20 {
        commit(&db, seq).await;
    }
    println!("20 commits after {} ms", started.elapsed().as_millis());
    // Everything acknowledged so far is on the replica before it is promoted (replication is
    // asynchronous: without this, the last writes could be lost, as Redis documents; the
    // server's --redis-wait-replicas does the same for every commit, tested below, but with
    // one replica it would stop every commit once that replica becomes the master).
    let _: i64 = query(master.port(), redis::cmd("WAIT").arg(1).arg(5000))
        .await
        .expect("WAIT for the replica");
    println!("20 commits; killing the master");
    let killed_at = Instant::now();
    master.stop();
    until("the sentinel to name the replica as master", || async {
        master_port(sentinel_port).await == Some(replica_port)
    })
    .await;
    commit(&db, 20).await;
    println!(
        "first commit after the master was killed: {} ms",
        killed_at.elapsed().as_millis()
    );
    for seq in 21..40 {
        commit(&db, seq).await;
    }

    let checker = Client::builder(format!("odb://127.0.0.1:{server_port}"))
        .token(TOKEN)
        .connect()
        .await
        .expect("connects");
    checker.subscribe_type::<Mark>().await.expect("subscribes");
    let mut seqs = checker
        .view(|v| {
            let mut seqs = Vec::new();
            for mark in Mark::lookup_all(v)? {
                seqs.push(mark.get(v)?.seq);
            }
            Ok::<_, odb::Error>(seqs)
        })
        .expect("reads");
    seqs.sort();
    assert_eq!(seqs, (0..40).collect::<Vec<u64>>(), "every commit once");
    // The commits after the failover are on the promoted replica.
    let tid: Option<u64> = query(replica_port, redis::cmd("GET").arg("odb:tid"))
        .await
        .expect("reads the promoted replica");
    let tid = tid.expect("the promoted replica holds the tid");
    assert!(
        tid >= checker.current_tid().0,
        "the new master holds tid {tid}, the server is at {}",
        checker.current_tid().0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_acknowledged_only_once_a_replica_has_them() {
    let master = Redis::start().await;
    // The replica's first sync starts at once, not after the default 5 s delay.
    let _: () = query(
        master.port(),
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-diskless-sync-delay")
            .arg(0),
    )
    .await
    .expect("configure the master");
    let replica = replica_of(&master).await;
    let replica_port = replica.port();
    until("the replica to sync", || async {
        let info: String = query(replica_port, redis::cmd("INFO").arg("replication"))
            .await
            .unwrap_or_default();
        info.contains("master_link_status:up")
    })
    .await;
    let redis_url = format!("redis://127.0.0.1:{}/0", master.port());
    let server = ServerProcess::start(
        TOKEN,
        &[
            "--redis",
            &redis_url,
            "--redis-timeout-ms",
            "1000",
            "--redis-wait-replicas",
            "1",
        ],
    )
    .await;
    let db = Client::builder(format!("odb://127.0.0.1:{}", server.port()))
        .token(TOKEN)
        .connect()
        .await
        .expect("connects");
    let replica_tid = || async {
        query::<Option<u64>>(replica_port, redis::cmd("GET").arg("odb:tid"))
            .await
            .expect("the replica answers")
    };
    for seq in 0..5 {
        db.transaction(|tx| Mark::create(tx, Mark { seq }))
            .await
            .expect("commits while the replica follows");
        assert_eq!(
            replica_tid().await,
            Some(db.current_tid().0),
            "an acknowledged commit is on the replica"
        );
    }

    // A replica that stops confirming: the commit is on the master only, so its outcome (after
    // a failover) is unknown, and it is never reported as stored.
    replica.signal("-STOP");
    let stalled = db.transaction(|tx| Mark::create(tx, Mark { seq: 5 })).await;
    assert!(
        matches!(stalled, Err(odb::Error::CommitOutcomeUnknown { .. })),
        "{stalled:?}"
    );
    replica.signal("-CONT");
    commit(&db, 6).await;
    assert_eq!(replica_tid().await, Some(db.current_tid().0));
}
