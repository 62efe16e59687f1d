//! A connection's outbound queue: a FIFO of pre-encoded frames and subscription snapshots,
//! bounded by what its frames cost in memory, per connection and summed over the server.
//!
//! The sequencer must never wait for a slow client, so the queue itself is unbounded and byte
//! counters bound it instead. A send that would take one queue past its limit closes that
//! connection ([`Refusal::SlowReader`]); a send that takes the sum of every queue past the
//! server-wide budget closes the connection with the largest queue
//! ([`Refusal::OutboundBudget`]), whichever connection the send was for.
//!
//! A queued frame is counted for what it costs, not only for its bytes (see [`cost`]): a client
//! that stops reading while many small commits are pushed to it holds a frame allocation, a
//! channel slot and a shared-buffer header per commit, which more than doubled the memory of a
//! queue of small frames over the bytes counted.
//!
//! A closed queue leaves the totals at once, although its frames are freed a moment later by
//! its writer: a burst of sends over the budget then closes only as many connections as it
//! takes to come back under it.
//!
//! A subscription's initial data is queued as one [`Snapshot`] item, which the receiving side
//! turns into frames one at a time, in its place in the FIFO: everything queued after it (the
//! commits that followed the snapshot's tid) is sent after its last frame. A snapshot's bytes do
//! not count against the limits: they are the covered objects' data encoded once, about their
//! size in the store, and only one chunk's frame is built from them at a time. The frames queued behind a snapshot
//! do count, so a client that reads a large snapshot too slowly while much is committed is
//! disconnected like any slow client.

use crate::snapshot::Snapshot;
use bytes::Bytes;
use odb_wire::Refusal;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a queued frame costs beyond its bytes: its slot in the channel (a [`Bytes`], 32 bytes),
/// the header that lets queues share one encoded frame (32 bytes with the allocator's
/// rounding), and the channel's per-block bookkeeping.
const FRAME_OVERHEAD: usize = 80;

/// The memory a queued frame of `len` bytes is counted for: its bytes, an eighth more for the
/// allocator's size classes (whose steps are an eighth to a quarter apart), and
/// [`FRAME_OVERHEAD`]. Measured on the server binary, a queue of 100-byte frames counted this
/// way stays within its limit in resident memory.
pub(crate) fn cost(len: usize) -> usize {
    len.saturating_add(len / 8).saturating_add(FRAME_OVERHEAD)
}

/// Figures summed over every queue of a server, and the server-wide budget.
#[derive(Debug)]
pub(crate) struct Totals {
    /// What the frames queued on open connections cost ([`cost`]), not yet taken by a writer.
    pub bytes: AtomicUsize,
    /// Snapshots queued or being sent.
    pub snapshots: AtomicUsize,
    /// Most [`Totals::bytes`] before the largest queue is closed.
    budget: usize,
    /// Every queue whose receiver is alive, to find the largest when over budget.
    queues: Mutex<Vec<Weak<Shared>>>,
}

impl Default for Totals {
    /// Totals without a server-wide budget.
    fn default() -> Self {
        Totals::new(usize::MAX)
    }
}

impl Totals {
    /// Totals of a server that closes the largest queue once all of them together cost more
    /// than `budget` bytes.
    pub fn new(budget: usize) -> Totals {
        Totals {
            bytes: AtomicUsize::new(0),
            snapshots: AtomicUsize::new(0),
            budget,
            queues: Mutex::new(Vec::new()),
        }
    }

    fn register(&self, queue: &Arc<Shared>) {
        let mut queues = self.queues.lock();
        queues.retain(|q| q.strong_count() > 0);
        queues.push(Arc::downgrade(queue));
    }

    fn unregister(&self, queue: &Arc<Shared>) {
        let target = Arc::as_ptr(queue);
        self.queues
            .lock()
            .retain(|q| q.strong_count() > 0 && q.as_ptr() != target);
    }

    /// Closes the largest open queues until the total is within the budget again.
    fn shed(&self) {
        while self.bytes.load(Ordering::Acquire) > self.budget {
            let largest = {
                let queues = self.queues.lock();
                queues
                    .iter()
                    .filter_map(Weak::upgrade)
                    .filter(|q| !q.closed.is_cancelled())
                    .max_by_key(|q| q.queued())
            };
            let Some(largest) = largest else { return };
            let queued = largest.queued();
            close(
                &largest,
                Refusal::OutboundBudget {
                    queued: queued as u64,
                    budget: self.budget as u64,
                },
            );
        }
    }
}

/// A queue's count of what its frames cost, and whether that count is part of the totals (it
/// leaves them when the connection closes).
#[derive(Debug)]
struct Count {
    queued: usize,
    in_totals: bool,
}

/// State shared by everything that serves one connection.
#[derive(Debug)]
struct Shared {
    count: Mutex<Count>,
    limit: usize,
    closed: CancellationToken,
    reason: OnceLock<Refusal>,
    totals: Arc<Totals>,
}

impl Shared {
    /// Counts a frame of `cost` unless the queue is closed; returns what the queue then holds,
    /// or `None` if it is closed.
    fn add(&self, cost: usize) -> Option<usize> {
        let mut count = self.count.lock();
        if !count.in_totals {
            return None;
        }
        count.queued += cost;
        self.totals.bytes.fetch_add(cost, Ordering::AcqRel);
        Some(count.queued)
    }

    fn sub(&self, cost: usize) {
        let mut count = self.count.lock();
        count.queued = count.queued.saturating_sub(cost);
        if count.in_totals {
            self.totals.bytes.fetch_sub(cost, Ordering::AcqRel);
        }
    }

    fn queued(&self) -> usize {
        self.count.lock().queued
    }

    /// Takes the queue off the totals: it is closing, and its writer frees its frames.
    fn leave_totals(&self) {
        let mut count = self.count.lock();
        if count.in_totals {
            count.in_totals = false;
            self.totals.bytes.fetch_sub(count.queued, Ordering::AcqRel);
        }
    }
}

/// One entry of the queue. The snapshot is boxed so that every slot of the channel is as small
/// as a frame's handle.
#[derive(Debug)]
enum Item {
    Frame(Bytes),
    Snapshot(Box<Counted>),
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
    current: Option<Box<Counted>>,
}

/// Creates a queue whose frames may cost at most `limit` bytes; `closed` is cancelled when the
/// connection must close, and `totals` sums this queue with the server's others.
pub(crate) fn channel(
    limit: usize,
    closed: CancellationToken,
    totals: Arc<Totals>,
) -> (Outbound, OutboundReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        count: Mutex::new(Count {
            queued: 0,
            in_totals: true,
        }),
        limit,
        closed,
        reason: OnceLock::new(),
        totals,
    });
    shared.totals.register(&shared);
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
    /// the frame would take its queue past its limit or the server's queues past their budget
    /// while this one is the largest.
    ///
    /// Whether the queue is closed is read from its count, whose lock the send takes anyway:
    /// [`Outbound::close`], [`OutboundReceiver::abort`] and the receiver's end take the queue
    /// off the totals. (The closing token's own lock is not taken for every frame.) A token
    /// cancelled from outside, as when the server halts, stops the writer, which drops the
    /// queue: frames sent meanwhile are dropped with it.
    pub fn send(&self, frame: Bytes) -> bool {
        let cost = cost(frame.len());
        let Some(queued) = self.shared.add(cost) else {
            return false;
        };
        if queued > self.shared.limit {
            self.shared.sub(cost);
            self.close(Refusal::SlowReader {
                queued: queued as u64,
                limit: self.shared.limit as u64,
            });
            return false;
        }
        if self.tx.send(Item::Frame(frame)).is_err() {
            self.shared.sub(cost);
            return false;
        }
        let totals = &self.shared.totals;
        if totals.bytes.load(Ordering::Acquire) > totals.budget {
            totals.shed();
            // Shedding may have closed this very connection. (Checking the token takes its
            // lock, so it is not done on every frame.)
            return !self.shared.closed.is_cancelled();
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
        let item = Item::Snapshot(Box::new(Counted {
            snapshot,
            totals: self.shared.totals.clone(),
        }));
        self.tx.send(item).is_ok()
    }

    /// Closes the connection; the first reason given is the one logged and told the client.
    pub fn close(&self, reason: Refusal) {
        close(&self.shared, reason);
    }

    /// What the frames queued and not yet taken by the writer cost (see [`cost`]).
    pub fn queued(&self) -> usize {
        self.shared.queued()
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
                self.shared.sub(cost(frame.len()));
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
        self.shared.leave_totals();
    }
}

impl Drop for OutboundReceiver {
    /// Takes what is still queued off the server's totals.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            if let Item::Frame(frame) = item {
                self.shared.sub(cost(frame.len()));
            }
        }
        self.shared.leave_totals();
        self.shared.totals.unregister(&self.shared);
    }
}

/// Closes a connection: the first reason given is kept, and its queue leaves the totals.
fn close(shared: &Shared, reason: Refusal) {
    let _ = shared.reason.set(reason);
    shared.closed.cancel();
    shared.leave_totals();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exceeding_the_limit_closes_with_a_reason() {
        let token = CancellationToken::new();
        let limit = cost(10);
        let (tx, mut rx) = channel(limit, token.clone(), Arc::default());
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
                queued: (cost(10) + cost(1)) as u64,
                limit: limit as u64,
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
        let (tx, mut rx) = channel(1000, CancellationToken::new(), totals.clone());
        assert!(tx.send(Bytes::from_static(b"before")));
        let objects = (0..2500).map(object).collect();
        let snapshot = Snapshot::new(odb_wire::RequestId(1), odb_wire::Tid(5), objects, 1 << 20);
        assert!(tx.send_snapshot(snapshot));
        assert!(tx.send(Bytes::from_static(b"after")));
        assert_eq!(totals.bytes.load(Ordering::Acquire), cost(6) + cost(5));
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
            cost(5),
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
        let (tx, mut rx) = channel(1000, CancellationToken::new(), totals.clone());
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

    #[test]
    fn a_queue_slot_is_a_frame_handle() {
        assert_eq!(std::mem::size_of::<Item>(), std::mem::size_of::<Bytes>());
    }

    #[test]
    fn a_frame_costs_more_than_its_bytes() {
        assert_eq!(cost(0), FRAME_OVERHEAD);
        assert_eq!(cost(800), 800 + 100 + FRAME_OVERHEAD);
        assert_eq!(cost(usize::MAX), usize::MAX, "saturates");
    }

    #[test]
    fn over_the_budget_the_largest_queue_is_closed_first() {
        let frame = |n: usize| Bytes::from(vec![0u8; n]);
        let budget = cost(100) + cost(300) + cost(200);
        let totals = Arc::new(Totals::new(budget));
        let queue = || channel(usize::MAX, CancellationToken::new(), totals.clone());
        let (small, _small_rx) = queue();
        let (large, _large_rx) = queue();
        let (sender, _sender_rx) = queue();
        assert!(small.send(frame(100)));
        assert!(large.send(frame(300)));
        assert!(sender.send(frame(200)), "exactly at the budget");
        assert!(
            sender.send(frame(1)),
            "over the budget: the largest queue goes, not the sender's"
        );
        assert!(large.is_closed());
        assert_eq!(
            large.reason(),
            Some(&Refusal::OutboundBudget {
                queued: cost(300) as u64,
                budget: budget as u64,
            })
        );
        assert!(!small.is_closed() && !sender.is_closed());
        assert_eq!(
            totals.bytes.load(Ordering::Acquire),
            cost(100) + cost(200) + cost(1),
            "a closed queue leaves the totals at once"
        );
        assert!(!large.send(frame(1)), "a closed queue takes nothing");

        // The sender's own queue is the largest: its send reports the close.
        assert!(!sender.send(frame(400)));
        assert!(matches!(
            sender.reason(),
            Some(Refusal::OutboundBudget { .. })
        ));
        assert!(!small.is_closed());
        assert_eq!(totals.bytes.load(Ordering::Acquire), cost(100));
    }

    #[test]
    fn dropped_queues_leave_the_registry() {
        let totals = Arc::new(Totals::new(1000));
        for _ in 0..10 {
            let (tx, rx) = channel(100, CancellationToken::new(), totals.clone());
            assert!(tx.send(Bytes::from_static(b"x")));
            drop(rx);
        }
        assert!(totals.queues.lock().is_empty());
        assert_eq!(totals.bytes.load(Ordering::Acquire), 0);
    }
}
