//! Reactors: a transaction run to a fixed point, then again whenever what it read changes.

use crate::changes::{wait_for_change, Woken};
use crate::transact::Outcome;
use crate::{Client, Error, Result, Transaction};
use odb_wire::Tid;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What a reactor is doing, as seen by its handle.
#[derive(Debug, Clone, Default)]
struct Status {
    /// The reactor is at a fixed point for the replica's state at this tid.
    idle_at: Option<Tid>,
    /// The reactor stopped; with the message of the error that stopped it, if any.
    stopped: Option<Option<String>>,
}

/// A running reactor, made by [`Client::reactor`]. Dropping it stops the reactor.
///
/// When the reactor's function or a commit fails (a conflict that outlasted the retries, a
/// closed connection, an error returned by the function), the error is logged with `tracing`
/// and the reactor stops; [`Reactor::error`] then describes the error and [`Reactor::stop`]
/// returns it.
pub struct Reactor {
    client: Client,
    cancel: CancellationToken,
    status: watch::Receiver<Status>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl Client {
    /// Starts a reactor: `f` runs as a transaction (with the client's retries) again and again
    /// until a run commits nothing (a fixed point); the reactor then sleeps until a commit
    /// changes something that last run read, and starts over. It never polls.
    ///
    /// `f` should write only when something needs to change, or it never reaches a fixed
    /// point. The reactor runs on a spawned task and keeps this client connected until it
    /// stops; see [`Reactor`] for errors. Must be called within a tokio runtime.
    pub fn reactor<F>(&self, f: F) -> Reactor
    where
        F: FnMut(&mut Transaction<'_>) -> Result<()> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let (status_tx, status) = watch::channel(Status::default());
        let client = self.clone();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let result = tokio::select! {
                _ = stop.cancelled() => Ok(()),
                result = react(&client, f, &status_tx) => result,
            };
            if let Err(e) = &result {
                tracing::warn!(error = %e, "a reactor stopped after an error");
            }
            status_tx.send_modify(|s| {
                s.idle_at = None;
                s.stopped = Some(result.as_ref().err().map(ToString::to_string));
            });
            result
        });
        Reactor {
            client: self.clone(),
            cancel,
            status,
            task: Some(task),
        }
    }
}

/// The reactor's loop; returns only with the error that stops it.
async fn react<F>(client: &Client, mut f: F, status: &watch::Sender<Status>) -> Result<()>
where
    F: FnMut(&mut Transaction<'_>) -> Result<()>,
{
    let max_retries = client.inner.max_retries;
    loop {
        // Listening starts before the run, so no change after its snapshot is missed.
        let mut changes = client.inner.shared.changes.subscribe();
        let ((), outcome) = client.run_transaction(max_retries, None, &mut f).await?;
        let Outcome::ReadOnly(reads, at) = outcome else {
            continue;
        };
        status.send_modify(|s| s.idle_at = Some(at.tid));
        let woken = wait_for_change(&mut changes, &reads, at, None, |tid| {
            // Nothing the reactor read changed: it is still at a fixed point.
            status.send_modify(|s| s.idle_at = Some(tid));
        })
        .await;
        status.send_modify(|s| s.idle_at = None);
        if let Some(reason) = client.closed_reason() {
            return Err(Error::Disconnected(reason));
        }
        if woken == Woken::Closed {
            return Err(Error::Disconnected("the client was closed".into()));
        }
    }
}

impl Reactor {
    /// Whether the reactor is still running.
    pub fn is_running(&self) -> bool {
        self.status.borrow().stopped.is_none()
    }

    /// The message of the error that stopped the reactor, if one did.
    pub fn error(&self) -> Option<String> {
        self.status.borrow().stopped.clone().flatten()
    }

    /// Waits until the reactor has reached a fixed point for everything this client's
    /// replica had applied when this was called, i.e. it is asleep waiting for a change.
    ///
    /// Fails with [`Error::Timeout`], or with [`Error::Invalid`] if the reactor stopped.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<()> {
        let target = self.client.current_tid();
        let mut status = self.status.clone();
        let wait = status.wait_for(|s| s.stopped.is_some() || s.idle_at >= Some(target));
        let status = tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout(timeout, "the reactor to reach a fixed point".into()))?
            .map_err(|_| Error::Invalid("the reactor's task is gone".into()))?;
        match &status.stopped {
            None => Ok(()),
            Some(None) => Err(Error::Invalid("the reactor was stopped".into())),
            Some(Some(error)) => Err(Error::Invalid(format!(
                "the reactor stopped after an error: {error}"
            ))),
        }
    }

    /// Stops the reactor and waits for it to finish. Returns the error that had stopped it
    /// before, if any.
    pub async fn stop(mut self) -> Result<()> {
        self.cancel.cancel();
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::Invalid(format!("the reactor's task failed: {e}")))?,
            None => Ok(()),
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
