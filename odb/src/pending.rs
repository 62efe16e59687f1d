//! Requests sent to the server whose answers are awaited later: asynchronous commits and
//! non-blocking subscriptions.

use crate::driver::Session;
use crate::session::Reply;
use crate::transact::unexpected;
use crate::{Client, Error, Result};
use futures::future::BoxFuture;
use odb_wire::Tid;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::sync::oneshot;

/// A commit sent by [`Client::transaction_async`], resolving when the server answers.
///
/// Awaiting it gives the closure's value once the commit is confirmed (and visible in this
/// client's replica), or the commit's error: [`Error::Conflict`] and
/// [`Error::CommitNotApplied`] are not retried. If the connection breaks before the answer,
/// the client asks the server after reconnecting, so the answer is still definite, except for
/// [`Error::CommitOutcomeUnknown`] when the server lost its memory. Dropping it does not
/// withdraw the commit.
#[must_use = "the commit's outcome is only known by awaiting it"]
pub struct PendingCommit<T> {
    value: Option<T>,
    sent: Option<(Client, oneshot::Receiver<Result<Reply>>)>,
}

// The value is never pinned: it is only moved out once the answer arrived.
impl<T> Unpin for PendingCommit<T> {}

impl<T> PendingCommit<T> {
    pub(crate) fn ready(value: T) -> PendingCommit<T> {
        PendingCommit {
            value: Some(value),
            sent: None,
        }
    }

    pub(crate) fn sent(client: Client, answer: oneshot::Receiver<Result<Reply>>, value: T) -> Self {
        PendingCommit {
            value: Some(value),
            sent: Some((client, answer)),
        }
    }
}

impl<T> std::fmt::Debug for PendingCommit<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCommit")
            .field("answered", &self.sent.is_none())
            .finish()
    }
}

impl<T> Future for PendingCommit<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        if let Some((client, answer)) = &mut this.sent {
            let received = ready!(Pin::new(answer).poll(cx));
            let outcome = match received {
                Ok(Ok(Reply::Committed(_))) => Ok(()),
                Ok(Ok(other)) => Err(unexpected(other)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(client.inner.session.closed_error()),
            };
            this.sent = None;
            if let Err(e) = outcome {
                this.value = None;
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(
            this.value.take().ok_or_else(|| {
                Error::Invalid("a PendingCommit was polled after it completed".into())
            }),
        )
    }
}

/// A subscription started by [`Client::subscribe_nowait`] and its siblings, resolving to the
/// tid at which the subscribed data became visible.
///
/// The subscription proceeds whether or not this is awaited; awaiting it tells when (and
/// whether) it completed.
#[must_use = "the subscription's outcome is only known by awaiting it"]
pub struct PendingSubscription {
    state: State,
}

enum State {
    Ready(Option<Result<Tid>>),
    Sent(Arc<Session>, oneshot::Receiver<Result<Reply>>),
    Task(tokio::task::JoinHandle<Result<Tid>>),
    Lazy(BoxFuture<'static, Result<Tid>>),
}

impl PendingSubscription {
    pub(crate) fn ready(result: Result<Tid>) -> PendingSubscription {
        PendingSubscription {
            state: State::Ready(Some(result)),
        }
    }

    pub(crate) fn sent(session: Arc<Session>, answer: oneshot::Receiver<Result<Reply>>) -> Self {
        PendingSubscription {
            state: State::Sent(session, answer),
        }
    }

    /// Runs `work` on a spawned task, or, outside a tokio runtime, when first polled.
    pub(crate) fn spawn(work: impl Future<Output = Result<Tid>> + Send + 'static) -> Self {
        let state = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => State::Task(runtime.spawn(work)),
            Err(_) => State::Lazy(Box::pin(work)),
        };
        PendingSubscription { state }
    }
}

impl std::fmt::Debug for PendingSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Ready(_) => "ready",
            State::Sent(..) => "sent",
            State::Task(_) | State::Lazy(_) => "defining the schema",
        };
        f.debug_struct("PendingSubscription")
            .field("state", &state)
            .finish()
    }
}

impl Future for PendingSubscription {
    type Output = Result<Tid>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Tid>> {
        let this = self.get_mut();
        let result = match &mut this.state {
            State::Ready(result) => result.take().unwrap_or_else(|| {
                Err(Error::Invalid(
                    "a PendingSubscription was polled after it completed".into(),
                ))
            }),
            State::Sent(session, answer) => match ready!(Pin::new(answer).poll(cx)) {
                Ok(Ok(Reply::Subscribed(tid))) => Ok(tid),
                Ok(Ok(other)) => Err(unexpected(other)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(session.closed_error()),
            },
            State::Task(task) => match ready!(Pin::new(task).poll(cx)) {
                Ok(result) => result,
                Err(e) => Err(Error::Invalid(format!("the subscription task failed: {e}"))),
            },
            State::Lazy(work) => ready!(work.as_mut().poll(cx)),
        };
        this.state = State::Ready(None);
        Poll::Ready(result)
    }
}
