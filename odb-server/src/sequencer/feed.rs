//! The live commit feed of the web inspector: a summary of every applied commit, broadcast to
//! whoever follows the feed.
//!
//! Nothing is built while nobody follows it. A summary is bounded whatever the commit's size:
//! it names at most [`MAX_OBJECTS`] objects, copies no value longer than [`MAX_VALUE`] bytes and
//! at most [`MAX_COPIED`] bytes of values in all, so a bulk commit costs the sequencer no more
//! than a small one, and the summaries kept for followers hold a few megabytes at most. The channel is a
//! bounded broadcast: a follower that falls behind loses the oldest summaries (and is told how
//! many), and the sequencer never waits for it.

use crate::store::{Applied, Store};
use bytes::Bytes;
use odb_wire::{FieldId, ObjectId, Tid, TypeId};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// Objects named in one summary; the rest are only counted.
pub(crate) const MAX_OBJECTS: usize = 20;

/// The longest value copied into a summary; longer ones are given by their length.
pub(crate) const MAX_VALUE: usize = 1024;

/// The most bytes of values copied into one summary; values past it are given by their length.
pub(crate) const MAX_COPIED: usize = 16 << 10;

/// Summaries kept for followers that have not read them yet.
const CAPACITY: usize = 256;

/// What happened to one object in a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    /// The commit created it.
    Created,
    /// The commit wrote some of its fields or changed its index values.
    Updated,
    /// The commit deleted it.
    Deleted,
}

/// A field value in a summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FeedValue {
    /// The stored bytes.
    Bytes(Bytes),
    /// The field was removed.
    Removed,
    /// A value too long to copy: its length.
    Long(usize),
}

/// One object of a commit summary.
#[derive(Clone, Debug)]
pub(crate) struct FeedObject {
    /// Its id.
    pub id: ObjectId,
    /// Its type.
    pub ty: TypeId,
    /// What happened to it.
    pub kind: ChangeKind,
    /// The fields the commit wrote (none for a deletion), existence fields included.
    pub fields: Vec<(FieldId, FeedValue)>,
}

/// The summary of one applied commit.
#[derive(Clone, Debug)]
pub(crate) struct FeedCommit {
    /// Its tid.
    pub tid: Tid,
    /// The first [`MAX_OBJECTS`] objects it touched, in id order.
    pub objects: Vec<FeedObject>,
    /// How many objects it touched in all.
    pub total: usize,
}

/// The sending end of the feed, shared by the sequencer and the inspector.
#[derive(Debug)]
pub(crate) struct Feed {
    sender: broadcast::Sender<Arc<FeedCommit>>,
    /// Followers alive. The sequencer reads it on every commit; asking the channel instead
    /// would take its lock each time.
    followers: Arc<AtomicUsize>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            sender: broadcast::channel(CAPACITY).0,
            followers: Arc::default(),
        }
    }
}

/// One follower of the feed: it receives every summary published while it lives.
#[derive(Debug)]
pub(crate) struct Follower {
    receiver: broadcast::Receiver<Arc<FeedCommit>>,
    followers: Arc<AtomicUsize>,
}

impl Follower {
    /// Waits for the next summary.
    pub async fn recv(&mut self) -> Result<Arc<FeedCommit>, RecvError> {
        self.receiver.recv().await
    }

    /// The next summary if one is waiting.
    pub fn try_recv(&mut self) -> Result<Arc<FeedCommit>, TryRecvError> {
        self.receiver.try_recv()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.followers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Feed {
    /// How many followers are alive.
    pub fn followers(&self) -> usize {
        self.followers.load(Ordering::Acquire)
    }

    /// Follows the feed from the next commit on.
    pub fn follow(&self) -> Follower {
        self.followers.fetch_add(1, Ordering::AcqRel);
        Follower {
            receiver: self.sender.subscribe(),
            followers: self.followers.clone(),
        }
    }

    /// Summarises an applied commit for the followers, if there are any.
    pub fn publish(&self, applied: &Applied, store: &Store) {
        if self.followers() == 0 {
            return;
        }
        let mut budget = MAX_COPIED;
        let objects = applied
            .objects
            .iter()
            .take(MAX_OBJECTS)
            .filter_map(|touched| {
                let Some(record) = store.record(touched.id) else {
                    let before = touched.before.as_ref()?;
                    return Some(FeedObject {
                        id: touched.id,
                        ty: before.ty(),
                        kind: ChangeKind::Deleted,
                        fields: Vec::new(),
                    });
                };
                let fields = record
                    .written_at(applied.tid)
                    .map(|(field, value)| {
                        let value = match value {
                            None => FeedValue::Removed,
                            Some(v) if v.len() > MAX_VALUE.min(budget) => FeedValue::Long(v.len()),
                            Some(v) => {
                                budget -= v.len();
                                FeedValue::Bytes(Bytes::copy_from_slice(v))
                            }
                        };
                        (field, value)
                    })
                    .collect();
                Some(FeedObject {
                    id: touched.id,
                    ty: record.ty(),
                    kind: if touched.created() {
                        ChangeKind::Created
                    } else {
                        ChangeKind::Updated
                    },
                    fields,
                })
            })
            .collect();
        let summary = FeedCommit {
            tid: applied.tid,
            objects,
            total: applied.objects.len(),
        };
        // Nobody may be following any more; that is fine.
        let _ = self.sender.send(Arc::new(summary));
    }
}

#[cfg(test)]
mod tests {
    use super::Feed;

    #[test]
    fn followers_are_counted_while_they_live() {
        let feed = Feed::default();
        assert_eq!(feed.followers(), 0);
        let first = feed.follow();
        let second = feed.follow();
        assert_eq!(feed.followers(), 2);
        drop(first);
        assert_eq!(feed.followers(), 1);
        drop(second);
        assert_eq!(feed.followers(), 0, "nothing is summarised for nobody");
    }
}
