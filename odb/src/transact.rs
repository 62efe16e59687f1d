//! Transactions: running a closure on a snapshot, committing what it wrote, and running it
//! again when the commit conflicts or was not applied.

use crate::changes::ReadSet;
use crate::client::Client;
use crate::pending::PendingCommit;
use crate::replica::SnapshotAt;
use crate::schema::Schema;
use crate::session::{Origin, Reply};
use crate::transaction::{Finished, Need, Transaction};
use crate::{Error, Result};
use odb_wire::{CommitRequest, Tid};
use std::time::Duration;

/// How many times one transaction may need the same schema defined before giving up: a schema
/// is needed again only when the server lost it meanwhile (an in-memory server restarted).
const MAX_SAME_NEED: u32 = 3;

/// Options for one transaction, given to [`Client::transaction_with`].
///
/// ```
/// # use std::time::Duration;
/// let options = odb::TxOptions::default().max_retries(3).timeout(Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOptions {
    max_retries: Option<u32>,
    timeout: Option<Duration>,
}

impl TxOptions {
    /// How many times the closure is re-run after a conflict before the conflict is returned
    /// (default: the client's [`ClientBuilder::max_retries`](crate::ClientBuilder::max_retries)). `0` means no retry.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// The longest the whole transaction (every attempt, commit round trip and retry backoff)
    /// may take; after that it fails with [`Error::Timeout`] (default: no limit).
    ///
    /// The time includes waiting for the connection while the client reconnects. A commit
    /// already sent when the time runs out is not withdrawn: it may still be applied. Read the
    /// data again (or use [`Client::flush`]) to find out.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// How a transaction attempt ended.
enum Attempt<T, E> {
    /// The client must provide something before the closure can run to the end. This is
    /// decided by the transaction's own state, whatever the closure returned: a closure that
    /// turned the failed read into its own error type, or ignored it, still runs again.
    Need(Need),
    /// The closure returned a value; what its commit was made from.
    Done(T, Finished, Origin),
    /// The closure returned an error of its own.
    Failed(E),
}

/// How a successful transaction ended.
pub(crate) enum Outcome {
    /// Its writes were committed at this tid.
    Committed,
    /// It wrote nothing; it read these keys at this snapshot.
    ReadOnly(ReadSet, SnapshotAt),
}

impl Client {
    /// Runs `f` in a transaction and commits what it wrote.
    ///
    /// `f` runs synchronously on a snapshot of the local replica (no awaits inside: every read
    /// is local). If the commit conflicts, `f` runs again on a fresh snapshot, up to the
    /// configured number of retries. When this returns `Ok`, the commit is visible in this
    /// client's replica. A closure that writes nothing never contacts the server.
    ///
    /// `f` may return any error type `E` that ODB's [`Error`] converts into, so `?` works on
    /// the program's own errors as on ODB's. An `Err` returned by `f` is returned unchanged and
    /// nothing is committed; errors of the transaction itself (a conflict after the last retry,
    /// a lost connection) come back converted with `E::from`. When nothing else fixes `E`, name
    /// it: `Ok::<_, odb::Error>(value)` at the end of the closure.
    ///
    /// ```no_run
    /// #[derive(Debug)]
    /// enum AppError {
    ///     Db(odb::Error),
    ///     BadNumber(std::num::ParseIntError),
    /// }
    /// impl From<odb::Error> for AppError {
    ///     fn from(e: odb::Error) -> Self { AppError::Db(e) }
    /// }
    /// impl From<std::num::ParseIntError> for AppError {
    ///     fn from(e: std::num::ParseIntError) -> Self { AppError::BadNumber(e) }
    /// }
    ///
    /// # async fn demo(db: odb::Client) -> Result<(), AppError> {
    /// let n = db.transaction(|_tx| -> Result<u64, AppError> { Ok("42".parse::<u64>()?) }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: From<Error>,
        F: FnMut(&mut Transaction<'_>) -> Result<T, E>,
    {
        self.transaction_with(TxOptions::default(), f).await
    }

    /// Like [`Client::transaction`], with per-transaction [`TxOptions`] (retries, timeout).
    ///
    /// Fails with [`Error::Timeout`] when the options' timeout passes before the transaction
    /// committed; see [`TxOptions::timeout`] for what that means for a commit in flight.
    pub async fn transaction_with<T, E, F>(&self, options: TxOptions, f: F) -> Result<T, E>
    where
        E: From<Error>,
        F: FnMut(&mut Transaction<'_>) -> Result<T, E>,
    {
        let retries = options.max_retries.unwrap_or(self.inner.max_retries);
        let Some(timeout) = options.timeout else {
            return Ok(self.run_transaction(retries, None, f).await?.0);
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let run = self.run_transaction(retries, Some((deadline, timeout)), f);
        let (value, _) = tokio::time::timeout_at(deadline, run)
            .await
            .map_err(|_| E::from(transaction_timeout(timeout)))??;
        Ok(value)
    }

    /// Runs `f` once in a transaction and sends its commit without waiting for the answer.
    ///
    /// Returns once the commit is sent; the returned [`PendingCommit`] resolves to `f`'s value
    /// when the server confirms the commit (the commit is then visible locally), or to the
    /// error, [`Error::Conflict`] included: there is no retry. A closure that writes nothing
    /// gives a `PendingCommit` that is already resolved. `f` runs again only if the client
    /// must first define the schema on the server or obtain object ids, before anything is
    /// sent. An error returned by `f` is returned here unchanged and nothing is sent; as with
    /// [`Client::transaction`], `f`'s error type is any `E` that [`Error`] converts into.
    ///
    /// Several pending commits from one client are answered in the order they were sent. A
    /// commit whose `PendingCommit` is dropped is not withdrawn.
    pub async fn transaction_async<T, E, F>(&self, mut f: F) -> Result<PendingCommit<T>, E>
    where
        E: From<Error>,
        F: FnMut(&mut Transaction<'_>) -> Result<T, E>,
    {
        let mut needs = Needs::default();
        loop {
            self.inner.session.connected(None).await?;
            self.ensure_ids(1).await?;
            match self.attempt(&mut f) {
                Attempt::Need(need) => self.provide(need, &mut needs).await?,
                Attempt::Failed(e) => return Err(e),
                Attempt::Done(value, Finished::ReadOnly(..), _) => {
                    return Ok(PendingCommit::ready(value))
                }
                Attempt::Done(value, Finished::Commit(request), origin) => {
                    let answer = self
                        .inner
                        .session
                        .start(|core| core.commit(request, origin))?;
                    return Ok(PendingCommit::sent(self.clone(), answer, value));
                }
            }
        }
    }

    /// Runs a transaction with retries; says whether it committed or what it read. No commit
    /// is sent once the deadline (with the timeout it came from) has passed.
    ///
    /// Whether to run the closure again is decided on ODB's own errors (the transaction's
    /// needs, the commit's answer) before they are converted into `E`, so a program's error
    /// type that wraps [`Error`] can neither hide nor fake a retry.
    pub(crate) async fn run_transaction<T, E, F>(
        &self,
        max_retries: u32,
        deadline: Option<(tokio::time::Instant, Duration)>,
        mut f: F,
    ) -> Result<(T, Outcome), E>
    where
        E: From<Error>,
        F: FnMut(&mut Transaction<'_>) -> Result<T, E>,
    {
        let mut conflicts = 0u32;
        let mut needs = Needs::default();
        loop {
            // While the client reconnects, wait: a snapshot taken now may be stale, and the
            // commit could not be sent anyway.
            self.inner
                .session
                .connected(deadline.map(|(at, _)| at))
                .await
                .map_err(|e| match (e, deadline) {
                    (Error::Timeout(..), Some((_, timeout))) => transaction_timeout(timeout),
                    (e, _) => e,
                })?;
            self.ensure_ids(1).await?;
            let (value, request, origin) = match self.attempt(&mut f) {
                Attempt::Need(need) => {
                    self.provide(need, &mut needs).await?;
                    continue;
                }
                Attempt::Failed(e) => return Err(e),
                Attempt::Done(value, Finished::ReadOnly(reads, at), _) => {
                    return Ok((value, Outcome::ReadOnly(reads, at)))
                }
                Attempt::Done(value, Finished::Commit(request), origin) => (value, request, origin),
            };
            if let Some((deadline, timeout)) = deadline {
                if tokio::time::Instant::now() >= deadline {
                    return Err(transaction_timeout(timeout).into());
                }
            }
            match self.commit(request, origin).await {
                Ok(_) => return Ok((value, Outcome::Committed)),
                Err(e) if e.is_retryable() && conflicts < max_retries => {
                    conflicts += 1;
                    backoff(conflicts).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs the closure once on a fresh snapshot.
    fn attempt<T, E, F>(&self, f: &mut F) -> Attempt<T, E>
    where
        F: FnMut(&mut Transaction<'_>) -> Result<T, E>,
    {
        let mut tx = Transaction::new(&self.inner.shared);
        let out = f(&mut tx);
        match tx.take_need() {
            Some(need) => Attempt::Need(need),
            None => match out {
                Ok(value) => {
                    let origin = tx.origin();
                    Attempt::Done(value, tx.finish(), origin)
                }
                // A read failed because the database was replaced under the snapshot: the
                // closure runs again on the new one.
                Err(_) if tx.origin().generation != self.inner.shared.generation() => {
                    Attempt::Need(Need::Fresh)
                }
                Err(e) => Attempt::Failed(e),
            },
        }
    }

    /// Provides what an attempt needed. Each need is met by one round trip and then stays
    /// met, so the loop ends; only a schema needed again and again (the server keeps losing
    /// it) gives up.
    async fn provide(&self, need: Need, needs: &mut Needs) -> Result<()> {
        match need {
            Need::Schema(schema) => {
                needs.schema(schema)?;
                self.define_schema(schema).await
            }
            Need::Ids(count) => self.ensure_ids(count).await,
            Need::Fresh => Ok(()),
        }
    }

    async fn commit(&self, request: CommitRequest, origin: Origin) -> Result<Tid> {
        match self
            .inner
            .session
            .request(|core| core.commit(request, origin))
            .await?
        {
            Reply::Committed(tid) => Ok(tid),
            other => Err(unexpected(other)),
        }
    }

    /// Waits until this client has seen every commit the server made before this call.
    pub async fn flush(&self) -> Result<Tid> {
        match self.inner.session.request(|core| core.flush()).await? {
            Reply::Flushed(tid) => Ok(tid),
            other => Err(unexpected(other)),
        }
    }

    async fn ensure_ids(&self, count: u64) -> Result<()> {
        if self.inner.shared.ids.lock().remaining() >= count {
            return Ok(());
        }
        match self
            .inner
            .session
            .request(|core| core.request_ids(count))
            .await?
        {
            Reply::Ids => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// The schemas one transaction needed defined, with how often.
#[derive(Default)]
struct Needs {
    schemas: Vec<(&'static Schema, u32)>,
}

impl Needs {
    /// Counts a need for `schema`; fails once the same schema was needed too often.
    fn schema(&mut self, schema: &'static Schema) -> Result<()> {
        let index = match self
            .schemas
            .iter()
            .position(|(s, _)| std::ptr::eq(*s, schema))
        {
            Some(index) => index,
            None => {
                self.schemas.push((schema, 0));
                self.schemas.len() - 1
            }
        };
        let count = &mut self.schemas[index].1;
        *count += 1;
        if *count > MAX_SAME_NEED {
            return Err(Error::Invalid(format!(
                "schema {} was defined {MAX_SAME_NEED} times for this transaction and is still unknown to the server",
                schema.name()
            )));
        }
        Ok(())
    }
}

fn transaction_timeout(timeout: Duration) -> Error {
    Error::Timeout(
        timeout,
        "the transaction to commit (a commit already sent may still be applied)".into(),
    )
}

pub(crate) fn unexpected(reply: Reply) -> Error {
    Error::Protocol(format!("unexpected answer from the server: {reply:?}"))
}

/// Waits a short, growing, jittered time before re-running a conflicted transaction, so that
/// clients that keep colliding spread out.
async fn backoff(attempt: u32) {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let cap_us = 50u64 << attempt.min(8);
    let jitter = h.finish() % cap_us.max(1);
    if attempt > 1 {
        tokio::time::sleep(Duration::from_micros(jitter)).await;
    } else {
        tokio::task::yield_now().await;
    }
}
