//! The stream of commits applied to a client's replica ([`Client::commits`]).
//!
//! [`Client::commits`]: crate::Client::commits

use crate::changes::{AppliedCommit, Change};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::broadcast;

/// The commits applied to a client's replica, in tid order, from the moment
/// [`Client::commits`](crate::Client::commits) was called.
///
/// A bounded number of changes is buffered for a consumer that is behind. A consumer that
/// falls further behind has missed commits: rather than deliver a stream with holes, the
/// stream ends, and [`Commits::lagged`] returns `true`. Start a new stream and re-read the
/// state to continue. The stream also ends when the connection closes.
pub struct Commits {
    inner: BoxStream<'static, AppliedCommit>,
    lagged: Arc<AtomicBool>,
}

impl Commits {
    pub(crate) fn new(changes: broadcast::Receiver<Arc<Change>>) -> Commits {
        let lagged = Arc::new(AtomicBool::new(false));
        let flag = lagged.clone();
        let inner = futures::stream::unfold(Some(changes), move |changes| {
            let flag = flag.clone();
            async move {
                let mut changes = changes?;
                loop {
                    match changes.recv().await {
                        Ok(change) if change.closed => return None,
                        Ok(change) => {
                            if let Some(commit) = &change.commit {
                                return Some((commit.clone(), Some(changes)));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(
                                missed,
                                "a commits() stream fell too far behind and ends"
                            );
                            flag.store(true, Ordering::Relaxed);
                            return None;
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })
        .boxed();
        Commits { inner, lagged }
    }

    /// True once the stream ended because its consumer fell too far behind and commits were
    /// missed.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Commits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commits")
            .field("lagged", &self.lagged())
            .finish()
    }
}

impl Stream for Commits {
    type Item = AppliedCommit;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AppliedCommit>> {
        self.inner.poll_next_unpin(cx)
    }
}
