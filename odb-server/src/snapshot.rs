//! A subscription's initial data on its way to the client, encoded one chunk at a time.
//!
//! The sequencer takes the snapshot (the complete data of every covered object at one tid) and
//! queues it on the connection's outbound queue as one item; the connection's writer turns it
//! into `SubscriptionData` frames of at most [`CHUNK_OBJECTS`] objects and about half the frame
//! limit each, then `SubscriptionComplete` (or `Resumed`, for a resumed session), encoding each
//! frame only when the socket can take it.
//! So the sequencer never encodes a large snapshot, and at most one chunk of it is encoded at any
//! time. The objects are encoded once, back to back in one buffer, when the snapshot is taken:
//! a chunk's frame is a header and a slice of it.

use bytes::Bytes;
use odb_wire::{CodecError, EncodedObjects, IdBlock, RequestId, ServerMessage, Tid};

/// Most objects in one `SubscriptionData` chunk.
pub(crate) const CHUNK_OBJECTS: usize = 1000;

/// The initial data of one subscription, still to be sent.
#[derive(Debug)]
pub(crate) struct Snapshot {
    request_id: RequestId,
    tid: Tid,
    /// Every object's data, encoded once when the snapshot was taken.
    objects: EncodedObjects,
    /// The first object not sent yet.
    next: usize,
    /// Most bytes of object data in one chunk (a larger object travels alone).
    chunk_bytes: usize,
    complete_sent: bool,
    /// How the snapshot ends: `SubscriptionComplete`, or `Resumed` when it answers a `Resume`.
    end: End,
}

/// The last frame of a snapshot.
#[derive(Debug)]
enum End {
    Subscribed,
    /// A resume: with `visible`, a delta that names every visible object as id ranges.
    Resumed {
        visible: Option<Vec<IdBlock>>,
    },
}

impl Snapshot {
    /// The data of `objects`, consistent as of `tid`, answering subscription `request_id`;
    /// chunks hold at most `chunk_bytes` of object data, unless one object alone is larger.
    pub fn new(
        request_id: RequestId,
        tid: Tid,
        objects: EncodedObjects,
        chunk_bytes: usize,
    ) -> Snapshot {
        Snapshot {
            request_id,
            tid,
            objects,
            next: 0,
            chunk_bytes,
            complete_sent: false,
            end: End::Subscribed,
        }
    }

    /// Like [`Snapshot::new`], answering a `Resume`. Without `visible`, `objects` is every
    /// object the connection sees; with it, only those that changed since the resume's tid,
    /// and `visible` names (as id ranges) every object the connection sees.
    pub fn resumed(
        request_id: RequestId,
        tid: Tid,
        objects: EncodedObjects,
        visible: Option<Vec<IdBlock>>,
        chunk_bytes: usize,
    ) -> Snapshot {
        Snapshot {
            end: End::Resumed { visible },
            ..Snapshot::new(request_id, tid, objects, chunk_bytes)
        }
    }

    /// Whether the snapshot answers a resume with only what changed.
    pub fn is_delta(&self) -> bool {
        matches!(self.end, End::Resumed { visible: Some(_) })
    }

    /// How many objects are still to be sent.
    #[cfg(test)]
    pub fn remaining(&self) -> usize {
        self.objects.len() - self.next
    }

    /// Encodes the next frame: a chunk of data while objects remain, then the completion, then
    /// nothing.
    pub fn next_frame(&mut self) -> Option<Result<Bytes, CodecError>> {
        if self.next >= self.objects.len() {
            if self.complete_sent {
                return None;
            }
            self.complete_sent = true;
            let end = match &mut self.end {
                End::Resumed { visible } => ServerMessage::Resumed {
                    request_id: self.request_id,
                    tid: self.tid,
                    delta: visible.is_some(),
                    visible: visible.take().unwrap_or_default(),
                },
                End::Subscribed => ServerMessage::SubscriptionComplete {
                    request_id: self.request_id,
                    tid: self.tid,
                },
            };
            return Some(odb_wire::encode(&end));
        }
        let start = self.next;
        let mut bytes = 0usize;
        while self.next < self.objects.len() {
            let size = self.objects.size(self.next);
            let count = self.next - start;
            if count > 0
                && (count >= CHUNK_OBJECTS || bytes.saturating_add(size) > self.chunk_bytes)
            {
                break;
            }
            bytes = bytes.saturating_add(size);
            self.next += 1;
        }
        Some(self.objects.chunk(self.request_id, start..self.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odb_wire::{FieldId, IndexId, ObjectData, ObjectId};

    fn object(id: u64, value_len: usize) -> ObjectData {
        ObjectData {
            id: ObjectId(id),
            fields: vec![(FieldId(1), Bytes::from(vec![7; value_len]))],
            indices: vec![(IndexId(1), Bytes::new())],
        }
    }

    fn frames(mut snapshot: Snapshot) -> Vec<ServerMessage> {
        std::iter::from_fn(|| snapshot.next_frame())
            .map(|f| odb_wire::decode(&f.unwrap()).unwrap())
            .collect()
    }

    fn chunk_sizes(messages: &[ServerMessage]) -> Vec<usize> {
        messages
            .iter()
            .filter_map(|m| match m {
                ServerMessage::SubscriptionData { objects, .. } => Some(objects.len()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn chunks_by_count_then_completes() {
        let objects = (0..2500).map(|i| object(i, 1)).collect();
        let messages = frames(Snapshot::new(RequestId(4), Tid(9), objects, usize::MAX));
        assert_eq!(chunk_sizes(&messages), vec![1000, 1000, 500]);
        assert_eq!(
            messages.last(),
            Some(&ServerMessage::SubscriptionComplete {
                request_id: RequestId(4),
                tid: Tid(9)
            })
        );
        let ids: Vec<ObjectId> = messages
            .iter()
            .flat_map(|m| match m {
                ServerMessage::SubscriptionData { objects, .. } => {
                    objects.iter().map(|o| o.id).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(ids, (0..2500).map(ObjectId).collect::<Vec<_>>(), "in order");
    }

    #[test]
    fn chunks_by_bytes_and_a_large_object_travels_alone() {
        let objects = vec![object(1, 40), object(2, 40), object(3, 500), object(4, 1)];
        let messages = frames(Snapshot::new(RequestId(1), Tid(1), objects.into(), 150));
        assert_eq!(chunk_sizes(&messages), vec![2, 1, 1]);
    }

    #[test]
    fn an_empty_snapshot_is_just_the_completion() {
        let snapshot = Snapshot::new(RequestId(1), Tid(3), EncodedObjects::new(), 10);
        assert_eq!(snapshot.remaining(), 0);
        let messages = frames(snapshot);
        assert_eq!(messages.len(), 1);
        assert!(matches!(
            messages[0],
            ServerMessage::SubscriptionComplete { tid: Tid(3), .. }
        ));
    }
}
