//! The client API beyond plain views and transactions: waiting on conditions, the stream of
//! applied commits, transaction options and asynchronous commits, marking reads, historical
//! views, per-type tids, reactors, non-blocking subscriptions and unsubscribing.

use futures::StreamExt;
use odb::server::{RunningServer, Server};
use odb::{Client, Error, Ref, Tid, TxOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "T";
const WAIT: Duration = Duration::from_secs(10);

#[odb::schema]
pub mod api_test {
    #[derive(odb::Object, Debug, Clone)]
    pub struct Counter {
        #[index]
        pub name: String,
        pub value: u64,
    }

    #[derive(odb::Object, Debug, Clone)]
    pub struct Summary {
        #[index]
        pub name: String,
        pub total: u64,
    }
}

use api_test::{Counter, Summary};

fn counter(name: &str, value: u64) -> Counter {
    Counter {
        name: name.to_string(),
        value,
    }
}

async fn start() -> anyhow::Result<RunningServer> {
    Ok(Server::in_memory()
        .listen("127.0.0.1:0".parse()?)
        .token(TOKEN)
        .start()
        .await?)
}

/// A client over TCP, subscribed to the test schema.
async fn tcp_client(server: &RunningServer) -> anyhow::Result<Client> {
    let url = server
        .url()
        .ok_or_else(|| anyhow::anyhow!("no TCP listener"))?;
    let db = Client::builder(url).token(TOKEN).connect().await?;
    db.subscribe(api_test::schema()).await?;
    Ok(db)
}

/// An in-process client, subscribed to the test schema.
async fn local_client(server: &RunningServer) -> anyhow::Result<Client> {
    let db = server.client().await?;
    db.subscribe(api_test::schema()).await?;
    Ok(db)
}

/// Waits until the evaluation counter published on `evals` reaches `n`.
async fn evaluations_reach(
    evals: &mut tokio::sync::watch::Receiver<usize>,
    n: usize,
) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, evals.wait_for(|&e| e >= n)).await??;
    Ok(())
}

#[tokio::test]
async fn wait_for_reevaluates_only_when_something_it_read_changes() -> anyhow::Result<()> {
    let server = start().await?;
    let a = local_client(&server).await?;
    let b = tcp_client(&server).await?;
    let other = b
        .transaction(|tx| Counter::create(tx, counter("other", 0)))
        .await?;
    a.flush().await?;

    let count = AtomicUsize::new(0);
    let (evals_tx, mut evals) = tokio::sync::watch::channel(0usize);
    let condition = |v: &odb::View<'_>| {
        evals_tx.send_replace(count.fetch_add(1, Ordering::SeqCst) + 1);
        match Counter::lookup_any_by_name(v, "watched")? {
            Some(w) => Ok(w.value(v)? >= 3),
            None => Ok(false),
        }
    };
    let waiter = a.wait_for(condition, WAIT);
    let driver = async {
        evaluations_reach(&mut evals, 1).await?;
        let mut watched: Option<Ref<Counter>> = None;
        for round in 0..=3u64 {
            // Commits to an object the condition never read do not wake it...
            for i in 0..5 {
                b.transaction(|tx| other.set_value(tx, round * 10 + i))
                    .await?;
            }
            // ...and neither does the index value it looked up gaining an unrelated name.
            b.transaction(|tx| Counter::create(tx, counter("unwatched", round)))
                .await?;
            // A commit to what it read does, exactly once.
            match watched {
                None => {
                    watched = Some(
                        b.transaction(|tx| Counter::create(tx, counter("watched", 0)))
                            .await?,
                    )
                }
                Some(w) => b.transaction(|tx| w.set_value(tx, round)).await?,
            }
            evaluations_reach(&mut evals, 2 + round as usize).await?;
            assert_eq!(count.load(Ordering::SeqCst), 2 + round as usize);
        }
        anyhow::Ok(())
    };
    let (waited, driven) = tokio::join!(waiter, driver);
    driven?;
    waited?;
    // One evaluation at the start, one per relevant commit (creation, then values 1, 2, 3).
    assert_eq!(count.load(Ordering::SeqCst), 5);
    Ok(())
}

#[tokio::test]
async fn wait_for_times_out_and_returns_condition_errors() -> anyhow::Result<()> {
    let server = start().await?;
    let a = local_client(&server).await?;
    let never = a
        .wait_for(|v| Ok(Counter::lookup_all(v)?.len() > 5), Duration::ZERO)
        .await;
    assert!(matches!(never, Err(Error::Timeout(..))), "{never:?}");
    let failing = a
        .wait_for(|_| Err(Error::abort("no")), Duration::from_secs(1))
        .await;
    assert!(matches!(failing, Err(Error::Aborted(_))), "{failing:?}");
    Ok(())
}

/// The next item of a commits stream, failing if it ended or nothing came.
async fn next(commits: &mut odb::Commits) -> anyhow::Result<odb::AppliedCommit> {
    tokio::time::timeout(WAIT, commits.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the stream ended"))
}

#[tokio::test]
async fn commits_stream_delivers_each_applied_commit_in_tid_order() -> anyhow::Result<()> {
    let server = start().await?;
    let a = local_client(&server).await?;
    let b = tcp_client(&server).await?;
    let before = b
        .transaction(|tx| Counter::create(tx, counter("before", 1)))
        .await?;
    a.flush().await?;

    let mut commits = a.commits();
    let c = b
        .transaction(|tx| Counter::create(tx, counter("c", 1)))
        .await?;
    let created_at = b.current_tid();
    b.transaction(|tx| {
        c.set_value(tx, 2)?;
        before.delete(tx)
    })
    .await?;
    let changed_at = b.current_tid();
    b.transaction(|tx| c.delete(tx)).await?;
    let deleted_at = b.current_tid();

    let first = next(&mut commits).await?;
    assert_eq!(first.tid, created_at);
    assert_eq!(first.changed, vec![c.id()]);
    assert!(first.deleted.is_empty());
    let second = next(&mut commits).await?;
    assert_eq!(second.tid, changed_at);
    assert_eq!(second.changed, vec![c.id()]);
    assert_eq!(second.deleted, vec![before.id()]);
    let third = next(&mut commits).await?;
    assert_eq!(third.tid, deleted_at);
    assert!(third.changed.is_empty());
    assert_eq!(third.deleted, vec![c.id()]);
    assert!(!commits.lagged());
    Ok(())
}

#[tokio::test]
async fn a_commits_stream_that_falls_too_far_behind_ends_and_says_so() -> anyhow::Result<()> {
    let server = start().await?;
    let a = local_client(&server).await?;
    let c = a
        .transaction(|tx| Counter::create(tx, counter("busy", 0)))
        .await?;
    let mut commits = a.commits();
    // Far more commits than the stream buffers, none consumed meanwhile.
    let mut pending = Vec::new();
    for i in 1..=5000u64 {
        pending.push(a.transaction_async(|tx| c.set_value(tx, i)).await?);
    }
    for p in pending {
        p.await?;
    }
    let first = tokio::time::timeout(WAIT, commits.next()).await?;
    assert!(first.is_none(), "{first:?}");
    assert!(commits.lagged());
    // A new stream starts from now and works.
    let mut fresh = a.commits();
    a.transaction(|tx| c.set_value(tx, 0)).await?;
    let next = tokio::time::timeout(WAIT, fresh.next()).await?;
    assert_eq!(next.map(|n| n.changed), Some(vec![c.id()]));
    Ok(())
}

/// An increment that reads the value, so that two increments on one snapshot conflict.
fn increment(c: Ref<Counter>) -> impl FnMut(&mut odb::Transaction<'_>) -> odb::Result<u64> {
    move |tx| {
        let v = c.value(tx)? + 1;
        c.set_value(tx, v)?;
        Ok(v)
    }
}

// The tests below that make two commits on one snapshot rely on the current-thread runtime:
// nothing else (neither the connection task nor the embedded server) runs until the test
// awaits something that is not ready, so the second transaction's snapshot cannot contain the
// first one's commit.

#[tokio::test]
async fn async_commits_resolve_when_confirmed_and_conflicts_are_not_retried() -> anyhow::Result<()>
{
    let server = start().await?;
    let a = local_client(&server).await?;
    let c = a
        .transaction(|tx| Counter::create(tx, counter("c", 0)))
        .await?;
    let first = a.transaction_async(increment(c)).await?;
    let second = a.transaction_async(increment(c)).await?;
    assert_eq!(first.await?, 1);
    // The commit is visible locally once its future resolved.
    assert_eq!(a.view(|v| c.value(v))?, 1);
    let conflict = second.await;
    assert!(
        matches!(conflict, Err(Error::Conflict { .. })),
        "{conflict:?}"
    );
    assert_eq!(a.view(|v| c.value(v))?, 1);
    // A read-only closure resolves at once; a failing closure sends nothing.
    assert_eq!(a.transaction_async(|tx| c.value(tx)).await?.await?, 1);
    let failed = a
        .transaction_async(|_| Err::<(), _>(Error::abort("no")))
        .await;
    assert!(matches!(failed, Err(Error::Aborted(_))));
    Ok(())
}

#[tokio::test]
async fn transaction_options_limit_retries_and_time() -> anyhow::Result<()> {
    let server = start().await?;
    let a = local_client(&server).await?;
    let c = a
        .transaction(|tx| Counter::create(tx, counter("c", 0)))
        .await?;

    // No retry: the conflict with the pending commit is returned after one run.
    let runs = AtomicUsize::new(0);
    let pending = a.transaction_async(increment(c)).await?;
    let mut inc = increment(c);
    let once = a
        .transaction_with(TxOptions::default().max_retries(0), |tx| {
            runs.fetch_add(1, Ordering::SeqCst);
            inc(tx)
        })
        .await;
    assert!(matches!(once, Err(Error::Conflict { .. })), "{once:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(pending.await?, 1);

    // One retry is enough for the same situation.
    runs.store(0, Ordering::SeqCst);
    let pending = a.transaction_async(increment(c)).await?;
    let mut inc = increment(c);
    let retried = a
        .transaction_with(TxOptions::default().max_retries(1), |tx| {
            runs.fetch_add(1, Ordering::SeqCst);
            inc(tx)
        })
        .await?;
    assert_eq!(pending.await?, 2);
    assert_eq!(retried, 3);
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // A commit cannot make a round trip in no time; a read-only transaction needs none.
    let late = a
        .transaction_with(TxOptions::default().timeout(Duration::ZERO), increment(c))
        .await;
    assert!(matches!(late, Err(Error::Timeout(..))), "{late:?}");
    let read = a
        .transaction_with(TxOptions::default().timeout(Duration::ZERO), |tx| {
            c.exists(tx)
        })
        .await?;
    assert!(read);
    let in_time = a
        .transaction_with(TxOptions::default().timeout(WAIT), |tx| c.set_value(tx, 7))
        .await;
    assert!(in_time.is_ok(), "{in_time:?}");
    Ok(())
}

#[tokio::test]
async fn marked_reads_make_commits_conflict() -> anyhow::Result<()> {
    let server = start().await?;
    let a = local_client(&server).await?;
    let (c, d) = a
        .transaction(|tx| {
            Ok::<_, odb::Error>((
                Counter::create(tx, counter("c", 0))?,
                Counter::create(tx, counter("d", 0))?,
            ))
        })
        .await?;
    let no_retry = TxOptions::default().max_retries(0);

    // Without a mark, writing d does not depend on c.
    let pending = a.transaction_async(|tx| c.set_value(tx, 1)).await?;
    a.transaction_with(no_retry, |tx| d.set_value(tx, 1))
        .await?;
    pending.await?;

    // A marked field read does.
    let pending = a.transaction_async(|tx| c.set_value(tx, 2)).await?;
    let marked = a
        .transaction_with(no_retry, |tx| {
            tx.mark_read(c, "value")?;
            d.set_value(tx, 2)
        })
        .await;
    assert!(matches!(marked, Err(Error::Conflict { .. })), "{marked:?}");
    pending.await?;

    // A marked index value read conflicts with an object gaining that value.
    let pending = a
        .transaction_async(|tx| Counter::create(tx, counter("x", 0)))
        .await?;
    let marked = a
        .transaction_with(no_retry, |tx| {
            tx.mark_index_read(&Counter::name_index("x"))?;
            d.set_value(tx, 3)
        })
        .await;
    assert!(matches!(marked, Err(Error::Conflict { .. })), "{marked:?}");
    pending.await?;

    // A marked read of the whole type conflicts with any creation.
    let pending = a
        .transaction_async(|tx| Counter::create(tx, counter("y", 0)))
        .await?;
    let marked = a
        .transaction_with(no_retry, |tx| {
            tx.mark_type_read::<Counter>()?;
            d.set_value(tx, 4)
        })
        .await;
    assert!(matches!(marked, Err(Error::Conflict { .. })), "{marked:?}");
    pending.await?;

    let unknown = a.transaction(|tx| tx.mark_read(c, "no_such_field")).await;
    assert!(matches!(unknown, Err(Error::Invalid(_))), "{unknown:?}");
    Ok(())
}

#[tokio::test]
async fn historical_views_read_retained_states() -> anyhow::Result<()> {
    let server = start().await?;
    let url = server
        .url()
        .ok_or_else(|| anyhow::anyhow!("no TCP listener"))?;
    let a = Client::builder(url)
        .token(TOKEN)
        .retain_history(3)
        .connect()
        .await?;
    a.subscribe(api_test::schema()).await?;
    let c = a
        .transaction(|tx| Counter::create(tx, counter("c", 0)))
        .await?;
    let mut tids = vec![a.current_tid()];
    for value in 1..=5u64 {
        a.transaction(|tx| c.set_value(tx, value)).await?;
        tids.push(a.current_tid());
    }
    // The current state and the three before it are retained.
    for value in 2..=5u64 {
        let tid = tids[value as usize];
        assert_eq!(a.view_at(tid, |v| c.value(v))?, value);
        assert_eq!(
            a.view_at(tid, |v| Ok::<_, odb::Error>(odb::Read::tid(v)))?,
            tid
        );
    }
    // A view opened earlier keeps reading its snapshot while history moves on.
    a.view_at(tids[2], |old| {
        assert_eq!(c.value(old)?, 2);
        Ok::<_, odb::Error>(())
    })?;
    let too_old = a.view_at(tids[1], |v| c.value(v));
    match too_old {
        Err(Error::HistoryUnavailable { tid, oldest }) => {
            assert_eq!(tid, tids[1]);
            assert_eq!(oldest, tids[2]);
        }
        other => panic!("expected HistoryUnavailable, got {other:?}"),
    }
    let future = a.view_at(Tid(a.current_tid().0 + 1), |v| c.value(v));
    assert!(matches!(future, Err(Error::Invalid(_))), "{future:?}");

    // Without retained history only the current state is readable.
    let b = local_client(&server).await?;
    b.flush().await?;
    let now = b.current_tid();
    assert_eq!(b.view_at(now, |v| c.value(v))?, 5);
    let past = b.view_at(tids[4], |v| c.value(v));
    assert!(
        matches!(past, Err(Error::HistoryUnavailable { .. })),
        "{past:?}"
    );
    Ok(())
}

#[tokio::test]
async fn type_tids_follow_the_commits_that_changed_each_type() -> anyhow::Result<()> {
    let server = start().await?;
    let a = local_client(&server).await?;
    let b = tcp_client(&server).await?;
    assert_eq!(a.type_tid::<Counter>(), Tid(0));
    assert_eq!(a.type_tid::<Summary>(), Tid(0));

    let c = b
        .transaction(|tx| Counter::create(tx, counter("c", 0)))
        .await?;
    let created = b.current_tid();
    a.flush().await?;
    assert_eq!(a.type_tid::<Counter>(), created);
    assert_eq!(a.type_tid::<Summary>(), Tid(0));

    b.transaction(|tx| {
        Summary::create(
            tx,
            Summary {
                name: "s".into(),
                total: 0,
            },
        )
    })
    .await?;
    let summarised = b.current_tid();
    a.flush().await?;
    assert_eq!(a.type_tid::<Counter>(), created);
    assert_eq!(a.type_tid::<Summary>(), summarised);

    b.transaction(|tx| c.delete(tx)).await?;
    let deleted = b.current_tid();
    a.flush().await?;
    assert_eq!(a.type_tid::<Counter>(), deleted);
    assert_eq!(a.type_tid::<Summary>(), summarised);
    Ok(())
}

/// Keeps the summary's total equal to the sum of all counters.
fn summing(summary: Ref<Summary>) -> impl FnMut(&mut odb::Transaction<'_>) -> odb::Result<()> {
    move |tx| {
        let mut total = 0;
        for c in Counter::lookup_all(tx)? {
            total += c.value(tx)?;
        }
        if summary.total(tx)? != total {
            summary.set_total(tx, total)?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_keeps_a_summary_up_to_date() -> anyhow::Result<()> {
    let server = start().await?;
    let a = local_client(&server).await?;
    let b = tcp_client(&server).await?;
    let summary = a
        .transaction(|tx| {
            Summary::create(
                tx,
                Summary {
                    name: "all".into(),
                    total: 99,
                },
            )
        })
        .await?;
    let runs = Arc::new(AtomicUsize::new(0));
    let mut sum = summing(summary);
    let counted = runs.clone();
    let reactor = a.reactor(move |tx| {
        counted.fetch_add(1, Ordering::SeqCst);
        sum(tx)
    });
    reactor.wait_idle(WAIT).await?;
    assert_eq!(a.view(|v| summary.total(v))?, 0);

    let total_is = |expected: u64| {
        let b = b.clone();
        async move {
            b.wait_for(|v| Ok(summary.total(v)? == expected), WAIT)
                .await
        }
    };
    let (x, y) = b
        .transaction(|tx| {
            Ok::<_, odb::Error>((
                Counter::create(tx, counter("x", 5))?,
                Counter::create(tx, counter("y", 7))?,
            ))
        })
        .await?;
    total_is(12).await?;
    b.transaction(|tx| x.set_value(tx, 10)).await?;
    total_is(17).await?;
    b.transaction(|tx| y.delete(tx)).await?;
    total_is(10).await?;
    // Someone overwriting the total is corrected.
    b.transaction(|tx| summary.set_total(tx, 0)).await?;
    total_is(10).await?;
    reactor.wait_idle(WAIT).await?;

    // A commit the reactor never read does not run it.
    let before = runs.load(Ordering::SeqCst);
    let other = b
        .transaction(|tx| {
            Summary::create(
                tx,
                Summary {
                    name: "unrelated".into(),
                    total: 1,
                },
            )
        })
        .await?;
    b.transaction(|tx| other.set_total(tx, 2)).await?;
    a.flush().await?;
    reactor.wait_idle(WAIT).await?;
    assert_eq!(runs.load(Ordering::SeqCst), before);
    assert!(reactor.is_running());
    assert_eq!(reactor.error(), None);
    reactor.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_reactor_stops_at_the_first_error_and_reports_it() -> anyhow::Result<()> {
    let server = start().await?;
    let a = local_client(&server).await?;
    let reactor = a.reactor(|tx| {
        if Counter::lookup_any_by_name(tx, "poison")?.is_some() {
            return Err(Error::abort("poisoned"));
        }
        Ok(())
    });
    reactor.wait_idle(WAIT).await?;
    a.transaction(|tx| Counter::create(tx, counter("poison", 0)))
        .await?;
    let idle = reactor.wait_idle(WAIT).await;
    assert!(matches!(idle, Err(Error::Invalid(_))), "{idle:?}");
    assert!(!reactor.is_running());
    assert!(reactor.error().is_some_and(|e| e.contains("poisoned")));
    let stopped = reactor.stop().await;
    assert!(matches!(stopped, Err(Error::Aborted(_))), "{stopped:?}");
    Ok(())
}

#[tokio::test]
async fn pending_subscriptions_complete_when_awaited_later() -> anyhow::Result<()> {
    let server = start().await?;
    let b = tcp_client(&server).await?;
    b.transaction(|tx| {
        Counter::create(tx, counter("c", 1))?;
        Summary::create(
            tx,
            Summary {
                name: "main".into(),
                total: 2,
            },
        )?;
        Summary::create(
            tx,
            Summary {
                name: "other".into(),
                total: 3,
            },
        )
    })
    .await?;

    let a = server.client().await?;
    a.define_schema(api_test::schema()).await?;
    // Both requests are sent now; on this current-thread runtime nothing is answered or
    // applied until the test awaits.
    let counters = a.subscribe_type_nowait::<Counter>();
    let main = a.subscribe_index_nowait(Summary::name_index("main"));
    let not_yet = a.view(|v| Counter::lookup_all(v));
    assert!(
        matches!(not_yet, Err(Error::NotSubscribed { .. })),
        "{not_yet:?}"
    );
    let main_tid = main.await?;
    let counters_tid = counters.await?;
    assert!(main_tid > Tid(0) && counters_tid > Tid(0));
    let (cs, ss) =
        a.view(|v| Ok::<_, odb::Error>((Counter::lookup_all(v)?, Summary::lookup_all(v)?)))?;
    assert_eq!(cs.len(), 1);
    assert_eq!(ss.len(), 1);
    assert_eq!(a.view(|v| ss[0].total(v))?, 2);

    // Without the schema defined first, the definition and the request run on their own.
    let c = server.client().await?;
    let whole = c.subscribe_nowait(api_test::schema());
    let one = c.subscribe_object_nowait(ss[0]);
    one.await?;
    whole.await?;
    assert_eq!(c.view(|v| Summary::lookup_all(v))?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn unsubscribing_removes_what_was_only_visible_through_the_subscription() -> anyhow::Result<()>
{
    let server = start().await?;
    let b = tcp_client(&server).await?;
    let (c, s) = b
        .transaction(|tx| {
            Ok::<_, odb::Error>((
                Counter::create(tx, counter("c", 1))?,
                Summary::create(
                    tx,
                    Summary {
                        name: "main".into(),
                        total: 2,
                    },
                )?,
            ))
        })
        .await?;

    // A whole schema.
    let a = local_client(&server).await?;
    assert!(a.view(|v| c.exists(v))?);
    a.unsubscribe(api_test::schema()).await?;
    assert!(!a.view(|v| c.exists(v))?);
    assert!(a.view(|v| Summary::lookup_all(v))?.is_empty());

    // An index value.
    let a = server.client().await?;
    a.subscribe_index(Summary::name_index("main")).await?;
    assert!(a.view(|v| s.exists(v))?);
    a.unsubscribe_index(Summary::name_index("main")).await?;
    assert!(!a.view(|v| s.exists(v))?);

    // One object, which then receives no more commits.
    let a = server.client().await?;
    a.subscribe_object(c).await?;
    assert_eq!(a.view(|v| c.value(v))?, 1);
    a.unsubscribe_object(c).await?;
    assert!(!a.view(|v| c.exists(v))?);
    b.transaction(|tx| c.set_value(tx, 5)).await?;
    a.flush().await?;
    assert!(!a.view(|v| c.exists(v))?);
    Ok(())
}
