//! A connection's outbound queue: a FIFO of pre-encoded frames and subscription snapshots,
//! bounded by the bytes of the frames it holds.
//!
//! The sequencer must never wait for a slow client, so the queue itself is unbounded and a byte
//! counter bounds it instead: a send that would take the queue past the limit closes the
//! connection (with that reason) rather than growing memory without bound.
//!
//! A subscription's initial data is queued as one [`Snapshot`] item, which the receiving side
//! turns into frames one at a time, in its place in the FIFO: everything queued after it (the
//! commits that followed the snapshot's tid) is sent after its last frame. A snapshot's bytes do
//! not count against the limit: they are bounded by the snapshot, which shares its values with
//! the store, and only one chunk of it is encoded at a time. The frames queued behind a snapshot
//! do count, so a client that reads a large snapshot too slowly while much is committed is
//! disconnected like any slow client.

use crate::snapshot::Snapshot;
use bytes::Bytes;
use odb_wire::Refusal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Figures summed over every queue of a server.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    /// Bytes of frames queued and not yet taken by a writer.
    pub bytes: AtomicUsize,
    /// Snapshots queued or being sent.
    pub snapshots: AtomicUsize,
}

/// State shared by everything that serves one connection.
#[derive(Debug)]
struct Shared {
    queued: AtomicUsize,
    limit: usize,
    closed: CancellationToken,
    reason: OnceLock<Refusal>,
    totals: Arc<Totals>,
}

impl Shared {
    fn add(&self, len: usize) -> usize {
        self.totals.bytes.fetch_add(len, Ordering::AcqRel);
        self.queued.fetch_add(len, Ordering::AcqRel) + len
    }

    fn sub(&self, len: usize) {
        self.totals.bytes.fetch_sub(len, Ordering::AcqRel);
        self.queued.fetch_sub(len, Ordering::AcqRel);
    }
}

/// One entry of the queue.
#[derive(Debug)]
enum Item {
    Frame(Bytes),
    Snapshot(Counted),
}

/// A queued snapshot, counted in [`Totals::snapshots`] until it is dropped.
#[derive(Debug)]
struct Counted {
    snapshot: Snapshot,
    totals: Arc<Totals>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.totals.snapshots.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The sending side; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Outbound {
    tx: mpsc::UnboundedSender<Item>,
    shared: Arc<Shared>,
}

/// The receiving side, owned by the connection's writer.
#[derive(Debug)]
pub(crate) struct OutboundReceiver {
    rx: mpsc::UnboundedReceiver<Item>,
    shared: Arc<Shared>,
    /// The snapshot being sent.
    current: Option<Counted>,
}

/// Creates a queue holding at most `limit` bytes of frames; `closed` is cancelled when the
/// connection must close, and `totals` sums this queue with the server's others.
pub(crate) fn channel(
    limit: usize,
    closed: CancellationToken,
    totals: Arc<Totals>,
) -> (Outbound, OutboundReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        limit,
        closed,
        reason: OnceLock::new(),
        totals,
    });
    (
        Outbound {
            tx,
            shared: shared.clone(),
        },
        OutboundReceiver {
            rx,
            shared,
            current: None,
        },
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
        let queued = self.shared.add(len);
        if queued > self.shared.limit {
            self.shared.sub(len);
            self.close(Refusal::SlowReader {
                queued: queued as u64,
                limit: self.shared.limit as u64,
            });
            return false;
        }
        if self.tx.send(Item::Frame(frame)).is_err() {
            self.shared.sub(len);
            return false;
        }
        true
    }

    /// Queues a subscription's initial data, to be encoded and sent chunk by chunk before
    /// anything queued later. Returns `false` if the connection is closing.
    pub fn send_snapshot(&self, snapshot: Snapshot) -> bool {
        if self.shared.closed.is_cancelled() {
            return false;
        }
        self.shared.totals.snapshots.fetch_add(1, Ordering::AcqRel);
        let item = Item::Snapshot(Counted {
            snapshot,
            totals: self.shared.totals.clone(),
        });
        self.tx.send(item).is_ok()
    }

    /// Closes the connection; the first reason given is the one logged and told the client.
    pub fn close(&self, reason: Refusal) {
        close(&self.shared, reason);
    }

    /// Bytes of frames queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// Whether the connection is closing.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Why the connection was closed, if a reason was given.
    pub fn reason(&self) -> Option<&Refusal> {
        self.shared.reason.get()
    }
}

impl OutboundReceiver {
    /// Waits for the next frame; `None` once every sender is gone and the queue is empty, or
    /// once the connection has been closed because a snapshot frame could not be encoded.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            if let Some(next) = self.snapshot_frame() {
                return next;
            }
            let item = self.rx.recv().await?;
            if let Some(frame) = self.take(item) {
                return Some(frame);
            }
        }
    }

    /// The next frame if one is ready now (encoding the next chunk of a snapshot if one is
    /// being sent).
    pub fn try_recv(&mut self) -> Option<Bytes> {
        loop {
            if let Some(next) = self.snapshot_frame() {
                return next;
            }
            let item = self.rx.try_recv().ok()?;
            if let Some(frame) = self.take(item) {
                return Some(frame);
            }
        }
    }

    /// A frame, or a snapshot that becomes the current one.
    fn take(&mut self, item: Item) -> Option<Bytes> {
        match item {
            Item::Frame(frame) => {
                self.shared.sub(frame.len());
                Some(frame)
            }
            Item::Snapshot(snapshot) => {
                self.current = Some(snapshot);
                None
            }
        }
    }

    /// `None` when no snapshot is being sent; otherwise its next frame, or `Some(None)` if it
    /// could not be encoded (which closes the connection).
    fn snapshot_frame(&mut self) -> Option<Option<Bytes>> {
        let current = self.current.as_mut()?;
        match current.snapshot.next_frame() {
            Some(Ok(frame)) => Some(Some(frame)),
            Some(Err(e)) => {
                self.current = None;
                self.close(Refusal::Internal {
                    detail: format!("subscription data could not be encoded: {e}"),
                });
                Some(None)
            }
            None => {
                self.current = None;
                None
            }
        }
    }

    /// Closes the connection; the first reason given is the one logged and told the client.
    pub fn close(&self, reason: Refusal) {
        close(&self.shared, reason);
    }

    /// Closes the connection without a reason to tell: it is broken.
    pub fn abort(&self) {
        self.shared.closed.cancel();
    }
}

impl Drop for OutboundReceiver {
    /// Takes what is still queued off the server's totals.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            if let Item::Frame(frame) = item {
                self.shared.sub(frame.len());
            }
        }
    }
}

fn close(shared: &Shared, reason: Refusal) {
    let _ = shared.reason.set(reason);
    shared.closed.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exceeding_the_limit_closes_with_a_reason() {
        let token = CancellationToken::new();
        let (tx, mut rx) = channel(10, token.clone(), Arc::default());
        assert!(tx.send(Bytes::from_static(b"12345")));
        assert_eq!(rx.recv().await.as_deref(), Some(&b"12345"[..]));
        assert!(
            tx.send(Bytes::from_static(b"1234567890")),
            "the counter went down on receive"
        );
        assert!(!tx.send(Bytes::from_static(b"x")));
        assert!(token.is_cancelled());
        assert_eq!(
            tx.reason(),
            Some(&Refusal::SlowReader {
                queued: 11,
                limit: 10
            })
        );
        assert!(
            !tx.send(Bytes::from_static(b"")),
            "a closed queue takes nothing"
        );
    }

    fn object(id: u64) -> odb_wire::ObjectData {
        odb_wire::ObjectData {
            id: odb_wire::ObjectId(id),
            fields: vec![(odb_wire::FieldId(1), Bytes::from_static(b"v"))],
            indices: Vec::new(),
        }
    }

    #[test]
    fn a_snapshot_goes_out_in_its_place_and_only_frames_count() {
        let totals = Arc::new(Totals::default());
        let (tx, mut rx) = channel(100, CancellationToken::new(), totals.clone());
        assert!(tx.send(Bytes::from_static(b"before")));
        let objects = (0..2500).map(object).collect();
        let snapshot = Snapshot::new(odb_wire::RequestId(1), odb_wire::Tid(5), objects, 1 << 20);
        assert!(tx.send_snapshot(snapshot));
        assert!(tx.send(Bytes::from_static(b"after")));
        assert_eq!(totals.bytes.load(Ordering::Acquire), 11);
        assert_eq!(totals.snapshots.load(Ordering::Acquire), 1);

        assert_eq!(rx.try_recv().as_deref(), Some(&b"before"[..]));
        let mut chunks = 0;
        loop {
            let frame = rx.try_recv().expect("a frame is ready");
            match odb_wire::decode::<odb_wire::ServerMessage>(&frame).unwrap() {
                odb_wire::ServerMessage::SubscriptionData { .. } => chunks += 1,
                odb_wire::ServerMessage::SubscriptionComplete { tid, .. } => {
                    assert_eq!(tid, odb_wire::Tid(5));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(chunks, 3);
        assert_eq!(
            totals.bytes.load(Ordering::Acquire),
            5,
            "only \"after\" is left"
        );
        assert_eq!(rx.try_recv().as_deref(), Some(&b"after"[..]));
        assert!(rx.try_recv().is_none());
        assert_eq!(totals.snapshots.load(Ordering::Acquire), 0);
        assert_eq!(totals.bytes.load(Ordering::Acquire), 0);
    }

    #[test]
    fn dropping_the_receiver_takes_its_queue_off_the_totals() {
        let totals = Arc::new(Totals::default());
        let (tx, mut rx) = channel(100, CancellationToken::new(), totals.clone());
        let snapshot = |n| {
            Snapshot::new(
                odb_wire::RequestId(1),
                odb_wire::Tid(1),
                (0..n).map(object).collect(),
                64,
            )
        };
        assert!(tx.send_snapshot(snapshot(3000)));
        assert!(tx.send(Bytes::from_static(b"frame")));
        assert!(tx.send_snapshot(snapshot(1)));
        assert!(
            rx.try_recv().is_some(),
            "the first chunk of the first snapshot"
        );
        assert_eq!(totals.snapshots.load(Ordering::Acquire), 2);
        drop(rx);
        assert_eq!(totals.snapshots.load(Ordering::Acquire), 0);
        assert_eq!(totals.bytes.load(Ordering::Acquire), 0);
        assert!(!tx.send(Bytes::from_static(b"late")));
        assert_eq!(totals.bytes.load(Ordering::Acquire), 0);
    }
}
