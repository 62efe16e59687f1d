//! High availability end to end, with real `odb-server` processes in standby mode on a real
//! `redis-server`: the leader is SIGKILLed under producer/consumer load and a standby takes
//! over with nothing lost or repeated; a leader paused past its lease is fenced (its writes are
//! refused) and steps down; and the fence itself, at the storage level.
//!
//! The lease is 1000 ms unless `ODB_HA_LEASE_MS` says otherwise; the takeover times are printed
//! (run with `--nocapture` to see them).

mod processes;
mod rng;

use odb::{Client, ReconnectPolicy, TxOptions};
use odb_server::storage::{Batch, Lease, RedisStorage, Storage};
use processes::{accepts, free_port, quick_reconnect, server_binary, Redis};
use rng::Rng;
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "ha-test-token";

/// How long a test waits for one condition before failing.
const WAIT: Duration = Duration::from_secs(60);

/// Leader kills in the load test.
const ROUNDS: usize = 10;

#[odb::schema]
pub mod ha {
    /// One produced item; the consumer deletes it once it has taken it.
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Item {
        /// The producer's sequence number.
        #[index]
        pub seq: u64,
    }
}

use ha::Item;

fn lease_ms() -> u64 {
    std::env::var("ODB_HA_LEASE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// One `odb-server --standby` process.
struct Standby {
    child: Child,
    port: u16,
}

impl Standby {
    /// Starts one; `heartbeat_ms` also sets how long a client waits on a silent server (four
    /// heartbeats).
    fn start(redis: &Redis, port: u16, heartbeat_ms: u64) -> Standby {
        let child = Command::new(server_binary())
            .args(["--service-token", TOKEN])
            .args(["--redis", &redis.url(), "--standby"])
            .args(["--lease-ms", &lease_ms().to_string()])
            .args(["--heartbeat-ms", &heartbeat_ms.to_string()])
            .args(["127.0.0.1", &port.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start odb-server");
        Standby { child, port }
    }

    fn url(&self) -> String {
        format!("odb://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`STOP`, `CONT`).
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("odb-server on port {} exited with {status}", self.port);
        }
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly on some systems.
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        self.kill();
    }
}

/// Waits until `condition` holds, polling every 10 ms, for at most `limit`.
async fn until<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The index of the one server that accepts connections (standbys do not listen).
async fn leader(servers: &mut [Standby]) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        for (i, server) in servers.iter_mut().enumerate() {
            if accepts(server.port).await {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no server leads");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client of every server, reconnecting quickly.
async fn connect(urls: &[String], name: &str) -> Client {
    Client::builder(urls.join(","))
        .token(TOKEN)
        .name(name)
        .reconnect(quick_reconnect())
        .connect()
        .await
        .expect("connect to the leader")
}

fn tx_options() -> TxOptions {
    TxOptions::default().timeout(WAIT)
}

/// What the producer and the consumer did.
#[derive(Default)]
struct Log {
    /// Acknowledged items, in order, with when they were begun and acknowledged.
    produced: Vec<(u64, Instant, Instant)>,
    /// Items the consumer took, in order.
    consumed: Vec<u64>,
    /// Errors (a test failure).
    errors: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_without_losing_or_repeating_commits() {
    let mut rng = Rng::for_test("a_killed_leader_is_replaced");
    let redis = Redis::start().await;
    let mut servers: Vec<Standby> = (0..3)
        .map(|_| Standby::start(&redis, free_port(), 250))
        .collect();
    leader(&mut servers).await;
    let urls: Vec<String> = servers.iter().map(Standby::url).collect();
    let producer = connect(&urls, "producer").await;
    let consumer = connect(&urls, "consumer").await;
    consumer
        .subscribe_type::<Item>()
        .await
        .expect("the consumer subscribes");
    let log = Arc::new(Mutex::new(Log::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    // Cancelled once the producer has returned: only then is its last item in the log.
    let produced_all = tokio_util::sync::CancellationToken::new();

    let producing = tokio::spawn({
        let (log, stop) = (log.clone(), stop.clone());
        async move {
            let mut seq = 0;
            while !stop.is_cancelled() {
                let begun = Instant::now();
                let done = producer
                    .transaction_with(tx_options(), |tx| Item::create(tx, Item { seq }))
                    .await;
                let mut log = log.lock().expect("lock");
                match done {
                    Ok(_) => log.produced.push((seq, begun, Instant::now())),
                    Err(e) => {
                        log.errors.push(format!("producing {seq}: {e}"));
                        return;
                    }
                }
                seq += 1;
            }
        }
    });
    let consuming = tokio::spawn({
        let (log, produced_all) = (log.clone(), produced_all.clone());
        async move {
            let mut next = 0;
            loop {
                let done = produced_all.is_cancelled();
                let produced = log.lock().expect("lock").produced.len() as u64;
                if done && next >= produced {
                    return;
                }
                // The producer may stop before making item `next`: look again then.
                let present = tokio::select! {
                    present = consumer
                        .wait_for(|v| Ok(Item::lookup_any_by_seq(v, next)?.is_some()), WAIT) => present,
                    _ = produced_all.cancelled(), if !done => continue,
                };
                if let Err(e) = present {
                    log.lock()
                        .expect("lock")
                        .errors
                        .push(format!("waiting for {next}: {e}"));
                    return;
                }
                let taken: odb::Result<bool> = consumer
                    .transaction_with(tx_options(), |tx| {
                        match Item::lookup_any_by_seq(tx, next)? {
                            Some(item) => {
                                item.delete(tx)?;
                                Ok(true)
                            }
                            None => Ok(false),
                        }
                    })
                    .await;
                let mut log = log.lock().expect("lock");
                match taken {
                    Ok(true) => log.consumed.push(next),
                    Ok(false) => log.errors.push(format!("item {next} vanished")),
                    Err(e) => log.errors.push(format!("consuming {next}: {e}")),
                }
                if !log.errors.is_empty() {
                    return;
                }
                next += 1;
            }
        }
    });

    let mut takeovers = Vec::new();
    for round in 0..ROUNDS {
        let old = leader(&mut servers).await;
        // Takeover is measured to the first acknowledgement of a commit begun after the kill:
        // the producer is sequential, so that commit waits for the one in flight to be settled.
        // Let the load run for a random number of commits before the kill.
        let before = log.lock().expect("lock").produced.len();
        let more = rng.between(3, 40) as usize;
        until("commits before the kill", WAIT, || {
            let log = log.clone();
            async move {
                let log = log.lock().expect("lock");
                log.produced.len() >= before + more || !log.errors.is_empty()
            }
        })
        .await;
        let killed_at = Instant::now();
        servers[old].kill();
        until("a commit after the kill", WAIT, || {
            let log = log.clone();
            async move {
                let log = log.lock().expect("lock");
                log.produced
                    .last()
                    .is_some_and(|(_, begun, _)| *begun > killed_at)
                    || !log.errors.is_empty()
            }
        })
        .await;
        let first_ack = log
            .lock()
            .expect("lock")
            .produced
            .iter()
            .find(|(_, begun, _)| *begun > killed_at)
            .map(|(_, _, acked)| *acked - killed_at);
        let errors = log.lock().expect("lock").errors.clone();
        assert!(errors.is_empty(), "round {round}: {errors:?}");
        let new = leader(&mut servers).await;
        assert_ne!(new, old, "round {round}: a killed server cannot lead");
        if let Some(takeover) = first_ack {
            println!(
                "round {round}: leader on port {} killed; first commit acknowledged by the new leader after {} ms",
                servers[old].port,
                takeover.as_millis()
            );
            takeovers.push(takeover);
        }
        let port = servers[old].port;
        servers[old] = Standby::start(&redis, port, 250);
    }
    stop.cancel();
    tokio::time::timeout(WAIT, producing)
        .await
        .expect("the producer stops")
        .expect("the producer does not panic");
    produced_all.cancel();
    tokio::time::timeout(WAIT, consuming)
        .await
        .expect("the consumer catches up")
        .expect("the consumer does not panic");

    let produced: Vec<u64> = {
        let log = log.lock().expect("lock");
        assert!(log.errors.is_empty(), "{:?}", log.errors);
        let produced: Vec<u64> = log.produced.iter().map(|(seq, _, _)| *seq).collect();
        let expected: Vec<u64> = (0..produced.len() as u64).collect();
        assert_eq!(produced, expected, "every item acknowledged once, in order");
        assert_eq!(
            log.consumed, expected,
            "the consumer took every acknowledged item once, without gaps"
        );
        produced
    };
    // Nothing the consumer took is left, nothing unacknowledged appeared.
    let checker = connect(&urls, "checker").await;
    checker.subscribe_type::<Item>().await.expect("subscribes");
    let left = checker
        .view(|v| Item::lookup_all(v))
        .expect("reads the items");
    assert!(left.is_empty(), "{} items left over", left.len());

    takeovers.sort();
    println!(
        "takeover with a {} ms lease over {} kills: min {} ms, median {} ms, max {} ms ({} commits)",
        lease_ms(),
        takeovers.len(),
        takeovers.first().map_or(0, |d| d.as_millis()),
        takeovers
            .get(takeovers.len() / 2)
            .map_or(0, |d| d.as_millis()),
        takeovers.last().map_or(0, |d| d.as_millis()),
        produced.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_fenced_and_steps_down() {
    let redis = Redis::start().await;
    // Clients wait four heartbeats (10 s) on a silent server, far longer than the pause below
    // (about one lease, plus the takeover on a busy machine): they are still connected to the
    // old leader when it is continued.
    let mut old = Standby::start(&redis, free_port(), 2500);
    until("the first server to lead", WAIT, || accepts(old.port)).await;
    let new = Standby::start(&redis, free_port(), 2500);
    old.assert_running();
    let urls = vec![old.url(), new.url()];
    let db = connect(&urls, "follower").await;
    db.subscribe_type::<Item>().await.expect("subscribes");
    db.transaction(|tx| Item::create(tx, Item { seq: 0 }))
        .await
        .expect("commits on the first leader");
    // A client that stays with the old leader.
    let pinned = Client::builder(old.url())
        .token(TOKEN)
        .name("pinned")
        .reconnect(ReconnectPolicy::disabled())
        .connect()
        .await
        .expect("connects to the old leader");

    old.signal("STOP");
    // Both sent while the old leader is paused: it reads them only after it is continued.
    let stale = tokio::spawn({
        let pinned = pinned.clone();
        async move {
            pinned
                .transaction(|tx| Item::create(tx, Item { seq: 999 }))
                .await
        }
    });
    let following = tokio::spawn({
        let db = db.clone();
        async move {
            db.transaction_with(tx_options(), |tx| Item::create(tx, Item { seq: 1 }))
                .await
        }
    });
    until("the standby to take over", WAIT, || accepts(new.port)).await;
    old.signal("CONT");

    let stale = tokio::time::timeout(WAIT, stale)
        .await
        .expect("the stale commit ends")
        .expect("the task does not panic");
    let reason = match &stale {
        Ok(_) => panic!("a deposed leader acknowledged a commit"),
        Err(e) => format!("{e} / {}", pinned.closed_reason().unwrap_or_default()),
    };
    assert!(
        reason.contains("not the leader"),
        "the refusal says why: {reason}"
    );
    // The follower's commit was sent to the old leader, which refused it or stepped down; the
    // client settles it with the new leader.
    tokio::time::timeout(WAIT, following)
        .await
        .expect("the follower's commit ends")
        .expect("the task does not panic")
        .expect("commits on the new leader");
    until("the old leader to step down", WAIT, || async {
        !accepts(old.port).await
    })
    .await;
    old.assert_running();

    let mut conn = redis.connection().await;
    let lease: String = redis::cmd("GET")
        .arg("odb:leader")
        .query_async(&mut conn)
        .await
        .expect("reads the lease");
    assert!(
        lease.contains(&format!(":{} pid", new.port)),
        "the new leader keeps the lease: {lease}"
    );
    db.flush().await.expect("flushes");
    let seqs = db
        .view(|v| {
            let mut seqs = Vec::new();
            for item in Item::lookup_all(v)? {
                seqs.push(item.get(v)?.seq);
            }
            Ok::<_, odb::Error>(seqs)
        })
        .expect("reads");
    let mut seqs = seqs;
    seqs.sort();
    assert_eq!(seqs, vec![0, 1], "the deposed leader wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_storage_cannot_write_once_the_lease_is_lost() {
    let redis = Redis::start().await;
    let timeout = Duration::from_secs(5);
    let ttl = Duration::from_secs(60);
    let mut first = Lease::new(redis.url(), "ha:", ttl, timeout).expect("a lease");
    let held = first
        .try_acquire("first")
        .await
        .expect("asks")
        .expect("takes the free lease");
    let mut second = Lease::new(redis.url(), "ha:", ttl, timeout).expect("a lease");
    assert_eq!(
        second.try_acquire("second").await.expect("asks"),
        None,
        "a held lease cannot be taken"
    );
    let fence = first.fence(&held);
    let mut storage = RedisStorage::connect(redis.url(), "ha:", timeout)
        .await
        .expect("connects")
        .with_fence(fence.clone());
    let batch = |tid: u64| Batch {
        tid: odb::Tid(tid),
        next_id: tid,
        ..Batch::default()
    };
    storage.persist(batch(1)).await.expect("the leader writes");

    // The lease is lost (here given up; in production it ran out) and another server takes it.
    first.release(&held).await.expect("gives the lease up");
    let taken = second
        .try_acquire("second")
        .await
        .expect("asks")
        .expect("takes the released lease");
    assert!(taken.epoch > held.epoch, "epochs only grow");
    assert!(
        !first.renew(&held).await.expect("asks"),
        "a lost lease cannot be renewed"
    );

    let refused = storage.persist(batch(2)).await;
    let error = refused.expect_err("a deposed leader cannot write");
    assert!(error.to_string().contains("not the leader"), "{error}");
    assert!(fence.deposed.is_cancelled(), "the refusal is signalled");
    let loaded = storage.load().await.expect("loads");
    assert_eq!(
        loaded.tid,
        odb::Tid(1),
        "nothing of the refused batch landed"
    );
}
