//! Shared schema and helpers of the end-to-end tests: an embedded server listening on a free
//! loopback port, clients over TCP or in-process pipes, and a deterministic way to make another
//! client commit while a transaction is in the middle of its closure.
#![allow(dead_code)]

use odb::server::{RunningServer, Server};
use odb::{Client, Handle, Ref, Tid, Transaction, View};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The service token of every test server.
pub const TOKEN: &str = "e2e-test-token";

/// How long a test waits for a condition before failing.
pub const WAIT: Duration = Duration::from_secs(10);

#[odb::schema]
pub mod bank {
    #[derive(odb::Object, Debug, Clone, PartialEq)]
    pub struct Account {
        #[index]
        pub owner: String,
        pub balance: i64,
        pub note: String,
    }

    #[derive(odb::Object, Debug, Clone, PartialEq)]
    #[odb(index(user_day = (user, day)))]
    pub struct Visit {
        pub user: String,
        pub day: u32,
        pub count: u64,
    }
}

pub use bank::{Account, Visit};

/// An account value.
pub fn account(owner: &str, balance: i64) -> Account {
    Account {
        owner: owner.to_string(),
        balance,
        note: String::new(),
    }
}

/// A visit value.
pub fn visit(user: &str, day: u32, count: u64) -> Visit {
    Visit {
        user: user.to_string(),
        day,
        count,
    }
}

/// Every account a view sees, by id.
pub fn accounts_by_id(v: &View<'_>) -> odb::Result<BTreeMap<u64, Account>> {
    let mut accounts = BTreeMap::new();
    for a in Account::lookup_all(v)? {
        accounts.insert(a.id().0, a.get(v)?);
    }
    Ok(accounts)
}

/// The ids of `refs`, sorted: what an index lookup found, comparable across clients.
pub fn sorted_ids<H: Handle>(refs: Vec<H>) -> Vec<u64> {
    let mut ids: Vec<u64> = refs.iter().map(|r| r.id().0).collect();
    ids.sort_unstable();
    ids
}

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A real TCP connection to the server's loopback listener.
    Tcp,
    /// An in-process pipe to the embedded server.
    InProcess,
}

/// Starts an embedded in-memory server that also listens on a free loopback port.
pub async fn start_server() -> anyhow::Result<RunningServer> {
    let server = Server::in_memory()
        .listen("127.0.0.1:0".parse()?)
        .token(TOKEN)
        .start()
        .await?;
    Ok(server)
}

/// Connects a client with the default retry policy.
pub async fn connect(server: &RunningServer, transport: Transport) -> anyhow::Result<Client> {
    connect_with(server, transport, None, TOKEN).await
}

/// Connects a client that returns conflicts instead of retrying them.
pub async fn connect_no_retry(
    server: &RunningServer,
    transport: Transport,
) -> anyhow::Result<Client> {
    connect_with(server, transport, Some(0), TOKEN).await
}

/// Connects a client with an optional retry limit and an explicit token.
pub async fn connect_with(
    server: &RunningServer,
    transport: Transport,
    max_retries: Option<u32>,
    token: &str,
) -> anyhow::Result<Client> {
    Ok(try_connect(server, transport, max_retries, token).await?)
}

/// Like [`connect_with`], but returns the client's own error unchanged.
pub async fn try_connect(
    server: &RunningServer,
    transport: Transport,
    max_retries: Option<u32>,
    token: &str,
) -> odb::Result<Client> {
    let url = match transport {
        Transport::Tcp => server.url().expect("the test server listens on TCP"),
        Transport::InProcess => "odb://in-process".to_string(),
    };
    let mut builder = Client::builder(url).token(token).name("e2e-test");
    if let Some(retries) = max_retries {
        builder = builder.max_retries(retries);
    }
    match transport {
        Transport::Tcp => builder.connect().await,
        Transport::InProcess => {
            let stream = server
                .inner()
                .connect_in_process()
                .map_err(|e| odb::Error::Disconnected(e.to_string()))?;
            builder.connect_stream(stream).await
        }
    }
}

/// A server and two clients of one transport, both subscribed to the whole test schema.
/// `a` returns conflicts instead of retrying them; `b` retries as usual.
pub struct Pair {
    pub server: RunningServer,
    pub a: Client,
    pub b: Client,
}

impl Pair {
    pub async fn new(transport: Transport) -> anyhow::Result<Pair> {
        let server = start_server().await?;
        let a = connect_no_retry(&server, transport).await?;
        let b = connect(&server, transport).await?;
        a.subscribe(bank::schema()).await?;
        b.subscribe(bank::schema()).await?;
        Ok(Pair { server, a, b })
    }

    /// Commits `f` on `b`, then makes sure `a` has applied that commit too.
    pub async fn setup<T>(
        &self,
        f: impl FnMut(&mut Transaction<'_>) -> odb::Result<T>,
    ) -> anyhow::Result<T> {
        let out = self.b.transaction(f).await?;
        self.a.flush().await?;
        Ok(out)
    }

    /// The tid of the server's newest commit.
    pub fn server_tid(&self) -> Tid {
        self.server.inner().current_tid()
    }
}

/// Runs `fut` to completion from inside a synchronous view or transaction closure that is
/// itself running on a multi-thread tokio runtime.
///
/// The worker thread running the closure is handed over to the blocking pool first, so the
/// runtime's other tasks (connection tasks, the server's sequencer) keep running meanwhile.
pub fn run_now<T>(fut: impl Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(fut))
}

/// What happened in [`interleave`].
pub struct Interleaved {
    /// The result of `a`'s transaction.
    pub result: odb::Result<()>,
    /// The server's tid right after `b`'s commit returned.
    pub b_tid: Tid,
    /// How many times `a`'s closure ran.
    pub attempts: usize,
}

/// Runs a transaction on `pair.a` in three steps: `first` (typically reads), then, on the first
/// attempt only, a whole transaction `other` committed by `pair.b`, then `then` (typically
/// writes). `a`'s snapshot is taken before `b` commits, so `a` commits on stale data exactly
/// when it read something `b` changed.
pub async fn interleave(
    pair: &Pair,
    first: impl Fn(&mut Transaction<'_>) -> odb::Result<()>,
    other: impl Fn(&mut Transaction<'_>) -> odb::Result<()>,
    then: impl Fn(&mut Transaction<'_>) -> odb::Result<()>,
) -> anyhow::Result<Interleaved> {
    interleave_on(&pair.a, pair, first, other, then).await
}

/// [`interleave`] with the transaction running on client `a` instead of `pair.a`.
pub async fn interleave_on(
    a: &Client,
    pair: &Pair,
    first: impl Fn(&mut Transaction<'_>) -> odb::Result<()>,
    other: impl Fn(&mut Transaction<'_>) -> odb::Result<()>,
    then: impl Fn(&mut Transaction<'_>) -> odb::Result<()>,
) -> anyhow::Result<Interleaved> {
    let attempts = AtomicUsize::new(0);
    let b_tid = std::sync::Mutex::new(None);
    let result = a
        .transaction(|tx| {
            first(tx)?;
            if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                let committed = run_now(pair.b.transaction(&other));
                committed.expect("the other client's commit succeeds");
                *b_tid.lock().unwrap() = Some(pair.server_tid());
            }
            then(tx)
        })
        .await;
    let b_tid = b_tid
        .into_inner()
        .unwrap()
        .expect("the other client committed during the transaction");
    Ok(Interleaved {
        result,
        b_tid,
        attempts: attempts.into_inner(),
    })
}

/// Asserts that `result` is a conflict reported at `written_at` whose key mentions `what`.
#[track_caller]
pub fn assert_conflict(result: &odb::Result<()>, written_at: Tid, what: &str) {
    match result {
        Err(odb::Error::Conflict {
            key,
            written_at: at,
            ..
        }) => {
            assert_eq!(
                *at, written_at,
                "conflict reported at the wrong tid ({key})"
            );
            assert!(
                key.contains(what),
                "conflict key {key:?} should mention {what:?}"
            );
        }
        other => panic!("expected a conflict on {what}, got {other:?}"),
    }
}

/// Runs an async test body `fn(Transport) -> anyhow::Result<()>` once per transport, as the
/// tests `NAME::tcp` and `NAME::in_process`.
macro_rules! both_transports {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp() -> anyhow::Result<()> {
                super::$body($crate::common::Transport::Tcp).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_process() -> anyhow::Result<()> {
                super::$body($crate::common::Transport::InProcess).await
            }
        }
    };
}

// The fixture of the conflict tests.

/// The objects every case starts from, committed by `b` and applied by `a`.
#[derive(Clone, Copy)]
pub struct Bank {
    pub ann: Ref<Account>,
    pub bob: Ref<Account>,
    /// An account only ever written by `a`, so that `a`'s transactions have something to commit.
    pub zed: Ref<Account>,
    pub visit: Ref<Visit>,
}

pub async fn bank(t: Transport) -> anyhow::Result<(Pair, Bank)> {
    let p = Pair::new(t).await?;
    let bank = p
        .setup(|tx| {
            Ok(Bank {
                ann: Account::create(tx, account("ann", 10))?,
                bob: Account::create(tx, account("bob", 20))?,
                zed: Account::create(tx, account("zed", 0))?,
                visit: Visit::create(tx, visit("ann", 3, 0))?,
            })
        })
        .await?;
    Ok((p, bank))
}

/// A write `a` can always commit on its own: a blind write of a field nobody else touches.
pub fn touch_zed(s: Bank) -> impl Fn(&mut Transaction<'_>) -> odb::Result<()> {
    move |tx| s.zed.set_note(tx, "written by a".into())
}

pub fn nothing(_: &mut Transaction<'_>) -> odb::Result<()> {
    Ok(())
}

/// Runs one case of a rule: `a` does `first`, `b` commits `other`, `a` touches `zed` and
/// commits. Returns the outcome after checking the tids.
pub async fn case(
    t: Transport,
    first: impl Fn(&mut Transaction<'_>, Bank) -> odb::Result<()>,
    other: impl Fn(&mut Transaction<'_>, Bank) -> odb::Result<()>,
) -> anyhow::Result<(Pair, Bank, Interleaved)> {
    let (p, s) = bank(t).await?;
    let before = p.server_tid();
    let out = interleave(&p, |tx| first(tx, s), |tx| other(tx, s), touch_zed(s)).await?;
    assert_eq!(
        out.attempts, 1,
        "a client without retries runs its closure once"
    );
    assert_eq!(out.b_tid, before.next(), "b's commit takes the next tid");
    let expected = if out.result.is_ok() {
        out.b_tid.next()
    } else {
        out.b_tid
    };
    assert_eq!(
        p.a.flush().await?,
        expected,
        "only successful commits take a tid"
    );
    Ok((p, s, out))
}

pub fn zed_note(c: &odb::Client, s: Bank) -> odb::Result<String> {
    c.view(|v| s.zed.note(v))
}
