//! Views and transactions whose closures return the program's own error type: `?` works on the
//! program's errors as on ODB's, the program's error comes back unchanged and commits nothing,
//! and the transaction still runs again when it must (a conflict, a schema or ids the client
//! had to obtain first), whatever the closure made of ODB's error.

use odb::server::{RunningServer, Server, ServerConfig};
use odb::{Client, Error, Ref, Transaction, TxOptions};
use std::num::ParseIntError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[odb::schema]
pub mod user_errors {
    #[derive(odb::Object, Debug, Clone)]
    pub struct Counter {
        #[index]
        pub name: String,
        pub value: u64,
    }
}

use user_errors::Counter;

/// An application's error type: ODB's errors and its own, kept apart.
#[derive(Debug)]
enum AppError {
    Db(Error),
    BadNumber(ParseIntError),
    Rule(&'static str),
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Db(e)
    }
}

impl From<ParseIntError> for AppError {
    fn from(e: ParseIntError) -> Self {
        AppError::BadNumber(e)
    }
}

fn counter(name: &str, value: u64) -> Counter {
    Counter {
        name: name.to_string(),
        value,
    }
}

async fn start() -> anyhow::Result<RunningServer> {
    Ok(Server::in_memory().start().await?)
}

async fn subscribed(server: &RunningServer) -> anyhow::Result<Client> {
    let db = server.client().await?;
    db.subscribe(user_errors::schema()).await?;
    Ok(db)
}

/// Every counter's name, in id order, as `db` sees it.
fn names(db: &Client) -> odb::Result<Vec<String>> {
    db.view(|v| Counter::lookup_all(v)?.iter().map(|c| c.name(v)).collect())
}

/// Sets the counter's value from text, the way a form handler would.
fn set_from_text(tx: &mut Transaction<'_>, c: Ref<Counter>, text: &str) -> Result<u64, AppError> {
    let value: u64 = text.parse()?;
    if value > 1000 {
        return Err(AppError::Rule("at most 1000"));
    }
    c.set_value(tx, value)?;
    Ok(value)
}

#[tokio::test]
async fn a_parse_error_comes_back_unchanged_and_commits_nothing() -> anyhow::Result<()> {
    let server = start().await?;
    let db = subscribed(&server).await?;
    let before = server.current_tid();

    let failed = db
        .transaction(|tx| {
            let c = Counter::create(tx, counter("typed", 0))?;
            set_from_text(tx, c, "12x")
        })
        .await;
    let expected = "12x".parse::<u64>().unwrap_err();
    match failed {
        Err(AppError::BadNumber(e)) => assert_eq!(e, expected),
        other => panic!("expected the parse error, got {other:?}"),
    }
    let refused = db
        .transaction(|tx| {
            let c = Counter::create(tx, counter("typed", 0))?;
            set_from_text(tx, c, "5000")
        })
        .await;
    assert!(
        matches!(refused, Err(AppError::Rule("at most 1000"))),
        "{refused:?}"
    );
    // Neither closure's object was committed.
    assert_eq!(server.current_tid(), before);
    db.flush().await?;
    assert_eq!(names(&db)?, Vec::<String>::new());

    // The same closure commits once the text is a number.
    let value = db
        .transaction(|tx| {
            let c = Counter::create(tx, counter("typed", 0))?;
            set_from_text(tx, c, "42")
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(value, 42);
    let other = subscribed(&server).await?;
    other.flush().await?;
    assert_eq!(names(&other)?, vec!["typed".to_string()]);
    Ok(())
}

#[tokio::test]
async fn odb_errors_inside_the_closure_come_back_converted() -> anyhow::Result<()> {
    let server = start().await?;
    let db = subscribed(&server).await?;
    let missing = db
        .transaction(|tx| -> Result<u64, AppError> {
            let c = Counter::lookup_one_by_name(tx, "nobody")?;
            Ok(c.value(tx)?)
        })
        .await;
    match missing {
        Err(AppError::Db(Error::NotFound { value, .. })) => assert!(value.contains("nobody")),
        other => panic!("expected NotFound inside AppError::Db, got {other:?}"),
    }
    // Error::abort still works for a closure that keeps ODB's error type.
    let aborted = db
        .transaction(|_| Err::<(), _>(Error::abort("changed my mind")))
        .await;
    assert!(matches!(aborted, Err(Error::Aborted(_))), "{aborted:?}");
    Ok(())
}

// The conflict tests below rely on the current-thread runtime: nothing else runs until the
// test awaits something that is not ready, so the second transaction's snapshot cannot contain
// the pending commit.

/// An increment that reads the value, so that two increments on one snapshot conflict.
fn increment(
    c: Ref<Counter>,
    runs: &AtomicUsize,
) -> impl FnMut(&mut Transaction<'_>) -> Result<u64, AppError> + '_ {
    move |tx| {
        runs.fetch_add(1, Ordering::SeqCst);
        let v = c.value(tx)? + 1;
        c.set_value(tx, v)?;
        Ok(v)
    }
}

#[tokio::test]
async fn conflicts_are_retried_for_closures_with_their_own_error_type() -> anyhow::Result<()> {
    let server = start().await?;
    let db = subscribed(&server).await?;
    let c = db
        .transaction(|tx| Counter::create(tx, counter("c", 0)))
        .await?;

    let runs = AtomicUsize::new(0);
    let pending = db.transaction_async(|tx| c.set_value(tx, 10)).await?;
    let value = db
        .transaction(increment(c, &runs))
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    pending.await?;
    assert_eq!(value, 11);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one conflict, one retry");

    // Without retries, the conflict itself comes back, inside the program's error type.
    runs.store(0, Ordering::SeqCst);
    let pending = db.transaction_async(|tx| c.set_value(tx, 20)).await?;
    let conflict = db
        .transaction_with(TxOptions::default().max_retries(0), increment(c, &runs))
        .await;
    pending.await?;
    assert!(
        matches!(conflict, Err(AppError::Db(Error::Conflict { .. }))),
        "{conflict:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(db.view(|v| c.value(v))?, 20);

    // A commit cannot make its round trip in no time: the timeout comes back converted too.
    let late = db
        .transaction_with(
            TxOptions::default().timeout(Duration::ZERO),
            increment(c, &runs),
        )
        .await;
    assert!(
        matches!(late, Err(AppError::Db(Error::Timeout(..)))),
        "{late:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_closure_runs_again_after_the_schema_is_defined_whatever_it_made_of_the_error(
) -> anyhow::Result<()> {
    let server = start().await?;

    // The first run cannot create: this client has not defined the schema on the server yet.
    // The closure turns that error into its own type; the transaction still runs again.
    let db = server.client().await?;
    let runs = AtomicUsize::new(0);
    let created = db
        .transaction(|tx| -> Result<Ref<Counter>, AppError> {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(Counter::create(tx, counter("wrapped", 1))?)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(db.view(|v| created.value(v))?, 1);

    // A closure that drops the error and goes on is run again too, not committed half done.
    let db = server.client().await?;
    runs.store(0, Ordering::SeqCst);
    let outcome = db
        .transaction(|tx| -> Result<bool, AppError> {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(Counter::create(tx, counter("ignored", 2)).is_ok())
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(
        outcome,
        "the run whose value is returned created the object"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let reader = subscribed(&server).await?;
    reader.flush().await?;
    assert_eq!(
        names(&reader)?,
        vec!["wrapped".to_string(), "ignored".to_string()]
    );
    Ok(())
}

#[tokio::test]
async fn a_closure_runs_again_after_more_ids_are_granted() -> anyhow::Result<()> {
    let config = ServerConfig {
        id_block_size: 4,
        ..ServerConfig::default()
    };
    let server = Server::in_memory()
        .config(config)
        .token("T")
        .start()
        .await?;
    let db = subscribed(&server).await?;
    let runs = AtomicUsize::new(0);
    let created = db
        .transaction(|tx| -> Result<usize, AppError> {
            runs.fetch_add(1, Ordering::SeqCst);
            for i in 0..10 {
                Counter::create(tx, counter(&format!("n{i}"), i))?;
            }
            Ok(10)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(created, 10);
    assert!(
        runs.load(Ordering::SeqCst) >= 2,
        "the first run ran out of ids"
    );
    assert_eq!(names(&db)?.len(), 10);
    Ok(())
}

#[tokio::test]
async fn views_and_async_commits_return_the_programs_errors() -> anyhow::Result<()> {
    let server = start().await?;
    let db = subscribed(&server).await?;
    let c = db
        .transaction(|tx| Counter::create(tx, counter("7a", 0)))
        .await?;

    let parsed = db.view(|v| -> Result<u64, AppError> { Ok(c.name(v)?.parse()?) });
    assert!(matches!(parsed, Err(AppError::BadNumber(_))), "{parsed:?}");
    // view_at's own errors come back converted.
    let future = odb::Tid(db.current_tid().0 + 100);
    let at = db.view_at(future, |v| -> Result<u64, AppError> { Ok(c.value(v)?) });
    assert!(matches!(at, Err(AppError::Db(Error::Invalid(_)))), "{at:?}");

    // An asynchronous commit whose closure fails sends nothing.
    let before = server.current_tid();
    let failed = db
        .transaction_async(|tx| -> Result<(), AppError> {
            c.set_value(tx, 5)?;
            Err(AppError::Rule("no"))
        })
        .await;
    assert!(matches!(failed, Err(AppError::Rule("no"))), "{failed:?}");
    db.flush().await?;
    assert_eq!(server.current_tid(), before);
    assert_eq!(db.view(|v| c.value(v))?, 0);

    // anyhow's error converts from ODB's, so it works as the closure's error type as well.
    let text = db
        .transaction(|tx| -> anyhow::Result<String> {
            let name = c.name(tx)?;
            anyhow::ensure!(name.len() == 2, "unexpected name {name}");
            Ok(name)
        })
        .await?;
    assert_eq!(text, "7a");
    Ok(())
}
