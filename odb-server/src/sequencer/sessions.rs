//! The requests that let a session survive its connection: commit queries and resume.
//!
//! A client whose connection broke connects again and sends `Resume` with everything it was
//! subscribed to and the id blocks it was granted on earlier connections. The new connection
//! then sees the objects created with ids of those blocks as its own creations (whoever created
//! them, since only the session could), and gets, at one snapshot, every object it now sees: the
//! targets' members, its own objects, and what it already saw (its `core.Connection` object).
//!
//! When the client says which tid its replica holds (`since`, from a connection to the same
//! database) and the [`ChangeLog`](super::changes::ChangeLog) still covers every commit after
//! it, the answer is a delta (`Resumed` with `delta: true`): the data of only the visible
//! objects that changed since, and the id ranges of every visible object, so that the client
//! drops what it holds outside them. Otherwise it holds the full data (`delta: false`): the
//! client replaces its replica with it, dropping every object the answer does not hold. Both
//! leave the client with the same replica.
//!
//! It also asks, with `QueryCommits`, what became of the commits whose answers it did not get;
//! see [`super::commit_ids`].

use super::commit_ids::Fence;
use super::Sequencer;
use crate::snapshot::Snapshot;
use odb_wire::hash::FastSet;
use odb_wire::{
    CommitId, CommitOutcome, IdBlock, ObjectId, RequestId, ServerMessage, SubscriptionTarget, Tid,
};
use std::collections::BTreeSet;

/// Most id blocks one `Resume` may name.
pub(super) const MAX_OWN_BLOCKS: usize = 65_536;

impl Sequencer {
    /// The answer to a commit whose id is already settled: recorded as applied, or fenced.
    pub(super) fn settled_commit(&self, id: CommitId) -> Option<CommitOutcome> {
        if let Some(tid) = self.commit_ids.applied(id) {
            return Some(CommitOutcome::AlreadyApplied { tid });
        }
        let reason = match self.commit_ids.fence_of(id)? {
            Fence::NotApplied => format!(
                "commit {id} was reported not applied to a commit query, so it can no longer \
                 be applied; run the transaction again under a new commit id"
            ),
            Fence::Doubtful => format!(
                "the outcome of commit {id} is unknown (storing it failed, and it may have \
                 landed), so it is not applied again"
            ),
        };
        Some(CommitOutcome::Invalid {
            reason,
            limit: None,
        })
    }

    /// Answers what became of each commit asked about; see [`commit_ids`].
    pub(super) fn query_commits(
        &mut self,
        conn: ObjectId,
        request_id: RequestId,
        commits: &[(CommitId, Tid)],
    ) {
        let now = self.clock.now_ms();
        let statuses = commits
            .iter()
            .map(|&(id, base_tid)| self.commit_ids.status(id, base_tid, now))
            .collect();
        self.send(
            conn,
            &ServerMessage::CommitStatuses {
                request_id,
                statuses,
            },
        );
    }

    /// Restores a session on this connection; see the module documentation. Unknown targets,
    /// too many subscriptions or too many id blocks fail the request and change nothing.
    pub(super) fn resume(
        &mut self,
        conn: ObjectId,
        request_id: RequestId,
        targets: &[SubscriptionTarget],
        own: &[IdBlock],
        since: Option<Tid>,
    ) {
        if own.len() > MAX_OWN_BLOCKS {
            let reason = format!(
                "{} id blocks named, over the limit of {MAX_OWN_BLOCKS} per resume",
                own.len()
            );
            return self.fail(conn, request_id, reason);
        }
        let planned = match self.plan_subscription(conn, targets) {
            Ok(planned) => planned,
            Err((reason, limit)) => return self.fail_as(conn, request_id, reason, limit),
        };
        // Ids not handed out yet may later be granted to another connection: they are not
        // the session's.
        let issued_below = self.next_id;
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        planned.add_to(conn, &mut state.visibility, &mut self.audience);
        for block in own.iter().filter(|b| b.len > 0) {
            let last = block
                .start
                .saturating_add(block.len - 1)
                .min(issued_below.saturating_sub(1));
            state.visibility.add_own(block.start.max(1), last);
            self.audience.add_ids(conn, block.start.max(1), last);
        }
        let visible = state
            .visibility
            .visible_objects(&self.store, self.registry.all_indices());
        let tid = self.store.tid();
        let chunk_bytes = self.config.max_frame / 2;
        let changed = since
            .filter(|&since| since <= tid)
            .and_then(|since| self.changes.since(since));
        let snapshot = match changed.and_then(|changed| delta(&visible, changed, chunk_bytes)) {
            Some((changed, ranges)) => Snapshot::resumed(
                request_id,
                tid,
                super::data_of(&self.store, changed),
                Some(ranges),
                chunk_bytes,
            ),
            None => Snapshot::resumed(
                request_id,
                tid,
                super::data_of(&self.store, visible),
                None,
                chunk_bytes,
            ),
        };
        self.status.metrics.resumed(snapshot.is_delta());
        self.queue_snapshot(conn, snapshot);
    }
}

/// The visible objects that changed, and every visible object as id ranges; `None` when the
/// ranges would not fit in one frame (a very fragmented set), and the full data is sent instead.
fn delta(
    visible: &BTreeSet<ObjectId>,
    changed: FastSet<ObjectId>,
    chunk_bytes: usize,
) -> Option<(Vec<ObjectId>, Vec<IdBlock>)> {
    let mut ranges: Vec<IdBlock> = Vec::new();
    for &ObjectId(id) in visible {
        match ranges.last_mut() {
            Some(last) if last.start.checked_add(last.len) == Some(id) => last.len += 1,
            _ => ranges.push(IdBlock { start: id, len: 1 }),
        }
    }
    // Each range takes at most two 10-byte varints.
    if ranges.len().saturating_mul(20) > chunk_bytes {
        return None;
    }
    let mut changed: Vec<ObjectId> = changed
        .into_iter()
        .filter(|id| visible.contains(id))
        .collect();
    changed.sort_unstable();
    Some((changed, ranges))
}
