//! A connection's outbound queue: pre-encoded frames, bounded by the bytes they hold.
//!
//! The sequencer must never wait for a slow client, so the queue itself is unbounded and a byte
//! counter bounds it instead: a send that would take the queue past the limit closes the
//! connection (with that reason) rather than growing memory without bound.

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// State shared by everything that serves one connection.
#[derive(Debug)]
struct Shared {
    queued: AtomicUsize,
    limit: usize,
    closed: CancellationToken,
    reason: OnceLock<String>,
}

/// The sending side; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Outbound {
    tx: mpsc::UnboundedSender<Bytes>,
    shared: Arc<Shared>,
}

/// The receiving side, owned by the connection's writer.
#[derive(Debug)]
pub(crate) struct OutboundReceiver {
    rx: mpsc::UnboundedReceiver<Bytes>,
    shared: Arc<Shared>,
}

/// Creates a queue holding at most `limit` bytes; `closed` is cancelled when the connection must
/// close.
pub(crate) fn channel(limit: usize, closed: CancellationToken) -> (Outbound, OutboundReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        limit,
        closed,
        reason: OnceLock::new(),
    });
    (
        Outbound {
            tx,
            shared: shared.clone(),
        },
        OutboundReceiver { rx, shared },
    )
}

impl Outbound {
    /// Queues a frame. Returns `false` if the connection is closing, or is closed now because
    /// the frame would exceed the queue limit.
    pub fn send(&self, frame: Bytes) -> bool {
        if self.shared.closed.is_cancelled() {
            return false;
        }
        let len = frame.len();
        let queued = self.shared.queued.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.shared.limit {
            self.close(format!(
                "outbound queue would hold {queued} bytes, over the limit of {} bytes: \
                 the client does not read fast enough",
                self.shared.limit
            ));
            return false;
        }
        self.tx.send(frame).is_ok()
    }

    /// Closes the connection; the first reason given is the one logged.
    pub fn close(&self, reason: String) {
        close(&self.shared, reason);
    }

    /// Whether the connection is closing.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Why the connection was closed, if a reason was given.
    pub fn reason(&self) -> Option<&str> {
        self.shared.reason.get().map(String::as_str)
    }
}

impl OutboundReceiver {
    /// Waits for the next frame; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.recv().await?;
        self.taken(&frame);
        Some(frame)
    }

    /// The next frame if one is queued now.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.try_recv().ok()?;
        self.taken(&frame);
        Some(frame)
    }

    fn taken(&self, frame: &Bytes) {
        self.shared.queued.fetch_sub(frame.len(), Ordering::AcqRel);
    }

    /// Closes the connection; the first reason given is the one logged.
    pub fn close(&self, reason: String) {
        close(&self.shared, reason);
    }
}

fn close(shared: &Shared, reason: String) {
    let _ = shared.reason.set(reason);
    shared.closed.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exceeding_the_limit_closes_with_a_reason() {
        let token = CancellationToken::new();
        let (tx, mut rx) = channel(10, token.clone());
        assert!(tx.send(Bytes::from_static(b"12345")));
        assert_eq!(rx.recv().await.as_deref(), Some(&b"12345"[..]));
        assert!(
            tx.send(Bytes::from_static(b"1234567890")),
            "the counter went down on receive"
        );
        assert!(!tx.send(Bytes::from_static(b"x")));
        assert!(token.is_cancelled());
        assert!(tx.reason().is_some_and(|r| r.contains("limit")));
        assert!(
            !tx.send(Bytes::from_static(b"")),
            "a closed queue takes nothing"
        );
    }
}
