//! Sessions that survive: a client whose connection breaks reconnects by itself, restores its
//! subscriptions, and settles the commit that was in flight exactly once. Connections are cut
//! by a TCP relay between the clients and an embedded server.

mod relay;
mod rng;

use odb::server::{RunningServer, Server, ServerBuilder};
use odb::{Client, ConnectionStatus, Error, ReconnectPolicy, Ref};
use odb_server::storage::MemoryStorage;
use relay::Relay;
use rng::Rng;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "sessions-test-token";
const WAIT: Duration = Duration::from_secs(20);

#[odb::schema]
pub mod sessions {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Entry {
        #[index]
        pub tag: String,
        pub n: u64,
    }

    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Account {
        pub name: String,
        pub balance: i64,
    }

    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Transfer {
        #[index]
        pub client: u32,
        pub seq: u32,
    }
}
use sessions::{Account, Entry, Transfer};

/// Starts a server with the tests' token, listening on a free loopback port.
async fn start(builder: ServerBuilder) -> RunningServer {
    builder
        .token(TOKEN)
        .listen("127.0.0.1:0".parse().expect("an address"))
        .start()
        .await
        .expect("the server starts")
}

/// A server keeping its data in `storage`, so that a restart continues where it stopped.
async fn durable(storage: &MemoryStorage) -> RunningServer {
    start(Server::with_storage(storage.clone())).await
}

async fn in_memory() -> RunningServer {
    start(Server::in_memory()).await
}

/// A relay in front of `server`, through which connections can be cut.
async fn relay_to(server: &RunningServer) -> Relay {
    Relay::start(addr(server)).await.expect("relay")
}

fn addr(server: &RunningServer) -> std::net::SocketAddr {
    server.local_addr().expect("a TCP listener")
}

/// Reconnects quickly, so that the tests do not wait for the default backoff.
fn quick() -> ReconnectPolicy {
    ReconnectPolicy::default()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(200))
}

async fn through(relay: &Relay) -> Client {
    Client::builder(relay.url())
        .token(TOKEN)
        .reconnect(quick())
        .connect()
        .await
        .expect("connects through the relay")
}

async fn direct(server: &RunningServer) -> Client {
    Client::builder(server.url().expect("a URL"))
        .token(TOKEN)
        .connect()
        .await
        .expect("connects")
}

fn entry(tag: &str, n: u64) -> Entry {
    Entry { tag: tag.into(), n }
}

async fn entries(db: &Client) -> usize {
    db.view(|v| Entry::lookup_all(v))
        .map(|e| e.len())
        .unwrap_or(0)
}

/// Waits until the client's status satisfies `want`.
async fn status_becomes(db: &Client, want: impl Fn(&ConnectionStatus) -> bool) {
    let mut status = db.status();
    tokio::time::timeout(WAIT, async {
        while !want(&status.borrow_and_update()) {
            if status.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .expect("the status changes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_comes_back_with_its_subscriptions() {
    let storage = MemoryStorage::new();
    let server = durable(&storage).await;
    let relay = relay_to(&server).await;
    let writer = direct(&server).await;
    writer.subscribe_type::<Entry>().await.expect("subscribes");
    let reader = through(&relay).await;
    reader.subscribe_type::<Entry>().await.expect("subscribes");
    let first_connection = reader.connection_id();

    writer
        .transaction(|tx| Entry::create(tx, entry("a", 1)))
        .await
        .expect("commits");
    reader
        .wait_for(|v| Ok(Entry::lookup_all(v)?.len() == 1), WAIT)
        .await
        .expect("the reader sees the first entry");

    let mut status = reader.status();
    relay.refuse(true);
    relay.cut();
    status_becomes(&reader, |s| {
        matches!(s, ConnectionStatus::Reconnecting { .. })
    })
    .await;
    assert!(!reader.is_connected());
    // While the client reconnects, views read the replica as it was, and say it may be stale.
    assert_eq!(entries(&reader).await, 1);
    assert!(reader
        .view(|v| Ok::<_, odb::Error>(v.may_be_stale()))
        .expect("reads"));
    writer
        .transaction(|tx| Entry::create(tx, entry("a", 2)))
        .await
        .expect("commits while the reader is away");
    relay.refuse(false);
    reader
        .wait_for(|v| Ok(Entry::lookup_all(v)?.len() == 2), WAIT)
        .await
        .expect("the reader catches up after reconnecting");
    assert!(matches!(
        *status.borrow_and_update(),
        ConnectionStatus::Connected
    ));
    assert_ne!(reader.connection_id(), first_connection, "a new connection");
    assert!(!reader
        .view(|v| Ok::<_, odb::Error>(v.may_be_stale()))
        .expect("reads"));
    // The reader can write again, with ids granted on its new connection.
    reader
        .transaction(|tx| Entry::create(tx, entry("b", 3)))
        .await
        .expect("the reader commits after reconnecting");
    writer
        .wait_for(|v| Ok(Entry::lookup_all(v)?.len() == 3), WAIT)
        .await
        .expect("the writer sees the reader's entry");
    server.shutdown().await;
}

async fn new_account(db: &Client) -> Ref<Account> {
    db.transaction(|tx| {
        Account::create(
            tx,
            Account {
                name: "a".into(),
                balance: 0,
            },
        )
    })
    .await
    .expect("creates")
}

/// Adds 10 to the account's balance in a transaction on a task; returns the task, how many
/// times the closure ran, and a notice of its first run.
fn add_ten(
    db: &Client,
    account: Ref<Account>,
) -> (
    tokio::task::JoinHandle<odb::Result<()>>,
    Arc<AtomicU32>,
    Arc<tokio::sync::Notify>,
) {
    let runs = Arc::new(AtomicU32::new(0));
    let ran = Arc::new(tokio::sync::Notify::new());
    let task = {
        let (db, runs, ran) = (db.clone(), runs.clone(), ran.clone());
        tokio::spawn(async move {
            db.transaction(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                ran.notify_one();
                let balance = account.balance(tx)?;
                account.set_balance(tx, balance + 10)
            })
            .await
        })
    };
    (task, runs, ran)
}

/// The server's count of resumed sessions of one kind ("delta" or "full"), from its metrics.
async fn resumes(server: &RunningServer, kind: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.metrics_addr().expect("a metrics address");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects to the metrics address");
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("asks");
    let mut text = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut text))
        .await
        .expect("answers in time")
        .expect("reads");
    let name = format!("odb_resumes_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&name))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_cut_is_resumed_with_only_what_changed() {
    let server =
        start(Server::in_memory().metrics("127.0.0.1:0".parse().expect("an address"))).await;
    let relay = relay_to(&server).await;
    let writer = direct(&server).await;
    let reader = through(&relay).await;
    reader
        .subscribe_index(Entry::tag_index("x"))
        .await
        .expect("subscribes to one tag");
    let made = writer
        .transaction(|tx| (0..4).map(|n| Entry::create(tx, entry("x", n))).collect())
        .await
        .expect("creates");
    let made: Vec<Ref<Entry>> = made;
    reader
        .wait_for(|v| Ok(Entry::lookup_all_by_tag(v, "x")?.len() == 4), WAIT)
        .await
        .expect("the reader sees the entries");

    relay.refuse(true);
    relay.cut();
    status_becomes(&reader, |s| {
        matches!(s, ConnectionStatus::Reconnecting { .. })
    })
    .await;
    // While the reader is away: one entry changes, one is deleted, one leaves the tag, one
    // joins it, and one stays as it was.
    writer
        .transaction(|tx| {
            made[0].set_n(tx, 10)?;
            made[1].delete(tx)?;
            made[2].set_tag(tx, "z".to_string())?;
            Entry::create(tx, entry("x", 20))
        })
        .await
        .expect("commits while the reader is away");
    relay.refuse(false);
    status_becomes(&reader, |s| matches!(s, ConnectionStatus::Connected)).await;
    reader
        .wait_for(
            |v| {
                let mut ns: Vec<u64> = Entry::lookup_all_by_tag(v, "x")?
                    .iter()
                    .map(|e| e.n(v))
                    .collect::<odb::Result<_>>()?;
                ns.sort_unstable();
                Ok(ns == [3, 10, 20])
            },
            WAIT,
        )
        .await
        .expect("the reader holds what the server holds");
    let gone = reader
        .view(|v| Ok::<_, Error>((made[1].exists(v)?, made[2].exists(v)?)))
        .expect("reads");
    assert_eq!(gone, (false, false), "deleted, and no longer subscribed");
    assert_eq!(resumes(&server, "delta").await, 1, "sent only what changed");
    assert_eq!(resumes(&server, "full").await, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_applied_once() {
    let storage = MemoryStorage::new();
    let server = durable(&storage).await;
    let relay = relay_to(&server).await;
    let observer = direct(&server).await;
    observer
        .subscribe_type::<Account>()
        .await
        .expect("subscribes");
    let db = through(&relay).await;
    db.subscribe_type::<Account>().await.expect("subscribes");
    let account = new_account(&db).await;

    relay.hold_answers(true);
    let (commit, runs, _) = add_ten(&db, account);
    // The server applied it; its answer is stuck in the relay. The observer may not have the
    // account's creation yet.
    observer
        .wait_for(
            |v| Ok(account.exists(v)? && account.balance(v)? == 10),
            WAIT,
        )
        .await
        .expect("the server applies the commit");
    relay.hold_answers(false);
    relay.cut();
    commit
        .await
        .expect("the task ends")
        .expect("the commit is reported applied");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the closure ran once");
    assert_eq!(db.view(|v| account.balance(v)).expect("reads"), 10);
    observer.flush().await.expect("flushes");
    assert_eq!(
        observer.view(|v| account.balance(v)).expect("reads"),
        10,
        "applied exactly once"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_never_arrived_runs_again() {
    let storage = MemoryStorage::new();
    let server = durable(&storage).await;
    let relay = relay_to(&server).await;
    let db = through(&relay).await;
    db.subscribe_type::<Account>().await.expect("subscribes");
    let account = new_account(&db).await;

    relay.hold_requests(true);
    let (commit, runs, ran) = add_ten(&db, account);
    // Wait until the closure ran and its commit went into the relay.
    tokio::time::timeout(WAIT, ran.notified())
        .await
        .expect("the closure runs");
    relay.cut();
    relay.hold_requests(false);
    commit
        .await
        .expect("the task ends")
        .expect("the commit is applied after reconnecting");
    assert!(runs.load(Ordering::SeqCst) >= 1);
    let observer = direct(&server).await;
    observer
        .subscribe_type::<Account>()
        .await
        .expect("subscribes");
    assert_eq!(
        observer.view(|v| account.balance(v)).expect("reads"),
        10,
        "applied exactly once"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_wait_for_the_connection_up_to_their_timeout() {
    let server = in_memory().await;
    let relay = relay_to(&server).await;
    let db = through(&relay).await;
    db.subscribe_type::<Entry>().await.expect("subscribes");
    relay.refuse(true);
    relay.cut();
    status_becomes(&db, |s| matches!(s, ConnectionStatus::Reconnecting { .. })).await;
    let options = odb::TxOptions::default().timeout(Duration::from_millis(300));
    let err = db
        .transaction_with(options, |tx| Entry::create(tx, entry("late", 1)))
        .await
        .expect_err("no connection within the timeout");
    assert!(matches!(err, Error::Timeout(..)), "{err}");
    let pending = {
        let db = db.clone();
        tokio::spawn(async move {
            db.transaction(|tx| Entry::create(tx, entry("later", 2)))
                .await
        })
    };
    relay.refuse(false);
    pending
        .await
        .expect("the task ends")
        .expect("commits once reconnected");
    assert_eq!(
        entries(&db).await,
        1,
        "only the second transaction committed"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_server_restart_is_resumed() {
    let storage = MemoryStorage::new();
    let server = durable(&storage).await;
    let relay = relay_to(&server).await;
    let db = through(&relay).await;
    db.subscribe_index(Entry::tag_index("x"))
        .await
        .expect("subscribes to one tag");
    let mine = db
        .transaction(|tx| Entry::create(tx, entry("mine", 1)))
        .await
        .expect("creates an object outside the subscription");
    db.transaction(|tx| Entry::create(tx, entry("x", 2)))
        .await
        .expect("creates");
    server.shutdown().await;

    let server = durable(&storage).await;
    relay.set_upstream(addr(&server));
    relay.cut();
    let other = direct(&server).await;
    other
        .transaction(|tx| {
            Entry::create(tx, entry("x", 3))?;
            Entry::create(tx, entry("y", 4))
        })
        .await
        .expect("commits on the restarted server");
    db.wait_for(|v| Ok(Entry::lookup_all_by_tag(v, "x")?.len() == 2), WAIT)
        .await
        .expect("the client resumes its index subscription");
    // Its own creation is still visible; what it never subscribed to is not.
    assert_eq!(db.view(|v| mine.n(v)).expect("reads its own object"), 1);
    assert_eq!(
        db.view(|v| Entry::lookup_all_by_tag(v, "y"))
            .expect("looks up")
            .len(),
        0
    );
    let again: Ref<Entry> = db
        .transaction(|tx| Entry::create(tx, entry("x", 5)))
        .await
        .expect("creates after the restart");
    assert_ne!(again.id(), mine.id());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_server_restart_is_a_new_database() {
    let server = in_memory().await;
    let relay = relay_to(&server).await;
    let db = through(&relay).await;
    db.subscribe_type::<Entry>().await.expect("subscribes");
    db.transaction(|tx| Entry::create(tx, entry("old", 1)))
        .await
        .expect("creates");
    server.shutdown().await;

    let server = in_memory().await;
    relay.set_upstream(addr(&server));
    relay.cut();
    let other = direct(&server).await;
    other.subscribe_type::<Entry>().await.expect("subscribes");
    other
        .transaction(|tx| Entry::create(tx, entry("new", 2)))
        .await
        .expect("commits on the new server");
    db.wait_for(
        |v| {
            let all = Entry::lookup_all(v)?;
            Ok(all.len() == 1 && all[0].tag(v)? == "new")
        },
        WAIT,
    )
    .await
    .expect("the client drops the old database's objects and fetches the new ones");
    db.transaction(|tx| Entry::create(tx, entry("mine", 3)))
        .await
        .expect("the client defines its schema again and commits");
    other
        .wait_for(|v| Ok(Entry::lookup_all(v)?.len() == 2), WAIT)
        .await
        .expect("the other client sees it");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reconnecting_a_break_closes_the_client() {
    let server = in_memory().await;
    let relay = relay_to(&server).await;
    let db = Client::builder(relay.url())
        .token(TOKEN)
        .reconnect(ReconnectPolicy::disabled())
        .connect()
        .await
        .expect("connects");
    db.subscribe_type::<Entry>().await.expect("subscribes");
    relay.cut();
    status_becomes(&db, |s| matches!(s, ConnectionStatus::Closed { .. })).await;
    assert!(db.closed_reason().is_some());
    let err = db
        .transaction(|tx| Entry::create(tx, entry("x", 1)))
        .await
        .expect_err("a closed client cannot commit");
    assert!(matches!(err, Error::Disconnected(_)), "{err}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_urls_are_tried_in_turn() {
    let server = in_memory().await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.local_addr().expect("an address")
    };
    let db = Client::builder(format!("odb://{dead},{}", server.url().expect("a URL")))
        .token(TOKEN)
        .connect()
        .await
        .expect("the second URL answers");
    db.transaction(|tx| Entry::create(tx, entry("x", 1)))
        .await
        .expect("commits");
    db.close();
    assert!(matches!(
        *db.status().borrow(),
        ConnectionStatus::Closed { .. }
    ));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_survive_random_cuts() {
    const ACCOUNTS: usize = 6;
    const CLIENTS: u32 = 4;
    const TRANSFERS: u32 = 40;
    let mut rng = Rng::for_test("bank_transfers_survive_random_cuts");
    let storage = MemoryStorage::new();
    let server = durable(&storage).await;
    let relay = Arc::new(relay_to(&server).await);
    let setup = direct(&server).await;
    let accounts: Vec<Ref<Account>> = setup
        .transaction(|tx| {
            (0..ACCOUNTS)
                .map(|i| {
                    Account::create(
                        tx,
                        Account {
                            name: format!("acct{i}"),
                            balance: 100,
                        },
                    )
                })
                .collect()
        })
        .await
        .expect("creates the accounts");

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let db = through(&relay).await;
        db.subscribe_type::<Account>().await.expect("subscribes");
        clients.push(db);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cutter = {
        let relay = relay.clone();
        let stop = stop.clone();
        let mut rng = rng.fork(u64::MAX);
        tokio::spawn(async move {
            let mut cuts = 0;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(rng.between(5, 45))).await;
                relay.cut();
                cuts += 1;
            }
            cuts
        })
    };
    let mut workers = Vec::new();
    for (client, db) in (0..CLIENTS).zip(clients) {
        let accounts = accounts.clone();
        let mut rng = rng.fork(u64::from(client));
        workers.push(tokio::spawn(async move {
            let mut done = 0u32;
            for seq in 0..TRANSFERS {
                let from = accounts[rng.below(ACCOUNTS)];
                let to = accounts[rng.below(ACCOUNTS)];
                let amount = rng.between(1, 21) as i64;
                db.transaction(|tx| {
                    let a = from.balance(tx)?;
                    from.set_balance(tx, a - amount)?;
                    let b = to.balance(tx)?;
                    to.set_balance(tx, b + amount)?;
                    Transfer::create(tx, Transfer { client, seq })?;
                    Ok::<_, odb::Error>(())
                })
                .await
                .unwrap_or_else(|e| panic!("transfer {client}/{seq} failed: {e}"));
                done += 1;
            }
            done
        }));
    }
    let mut acknowledged = 0;
    for w in workers {
        acknowledged += tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("the transfers finish")
            .expect("no worker panicked");
    }
    stop.store(true, Ordering::SeqCst);
    let cuts = cutter.await.expect("the cutter ends");
    eprintln!("{acknowledged} transfers acknowledged across {cuts} cuts");

    let check = direct(&server).await;
    check
        .subscribe(sessions::schema())
        .await
        .expect("subscribes");
    let (total, records) = check
        .view(|v| {
            let total: i64 = accounts
                .iter()
                .map(|a| a.balance(v))
                .sum::<odb::Result<i64>>()?;
            let mut records: Vec<(u32, u32)> = Transfer::lookup_all(v)?
                .into_iter()
                .map(|t| Ok((t.client(v)?, t.seq(v)?)))
                .collect::<odb::Result<_>>()?;
            records.sort();
            Ok::<_, odb::Error>((total, records))
        })
        .expect("reads");
    assert_eq!(total, 100 * ACCOUNTS as i64, "money is conserved");
    let mut unique = records.clone();
    unique.dedup();
    assert_eq!(unique.len(), records.len(), "no transfer recorded twice");
    assert_eq!(
        records.len() as u32,
        acknowledged,
        "every acknowledged transfer recorded once"
    );
    server.shutdown().await;
}
