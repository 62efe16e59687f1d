//! Which objects the most recent commits touched, so that a resuming session can be sent only
//! what changed while it was away.
//!
//! Every applied commit appends the ids of the objects it wrote, re-indexed or deleted. The log
//! is bounded by the number of ids it holds: once over its capacity, the oldest commits are
//! dropped whole, and the log then answers only for tids from the newest dropped one on. A log
//! starts at the tid the store was loaded at (or zero), so a server that restarted, or a
//! standby that took over, never claims to know what changed before it started: a session
//! that resumes from an earlier tid gets the full data.
//!
//! Commits that were applied and then undone (their batch could not be stored) stay in the log:
//! their objects are sent again, which costs a little and is always correct.

use odb_wire::hash::FastSet;
use odb_wire::{ObjectId, Tid};
use std::collections::VecDeque;

/// The objects changed by recent commits.
#[derive(Debug)]
pub(super) struct ChangeLog {
    /// The log knows every change made after this tid.
    start: Tid,
    /// Each logged commit's tid and how many ids it appended to `ids`, oldest first.
    commits: VecDeque<(Tid, u32)>,
    /// The ids of every logged commit, in commit order.
    ids: VecDeque<ObjectId>,
    /// Most ids held.
    capacity: usize,
}

impl ChangeLog {
    /// An empty log that knows every change made after `start`.
    pub fn new(start: Tid, capacity: usize) -> ChangeLog {
        ChangeLog {
            start,
            commits: VecDeque::new(),
            ids: VecDeque::new(),
            capacity,
        }
    }

    /// Records the objects a commit touched.
    pub fn record(&mut self, tid: Tid, touched: impl ExactSizeIterator<Item = ObjectId>) {
        let count = touched.len();
        if count > self.capacity {
            // One commit larger than the whole log: nothing before it can be answered either.
            self.commits.clear();
            self.ids.clear();
            self.start = tid;
            return;
        }
        let Ok(logged) = u32::try_from(count) else {
            return;
        };
        self.ids.extend(touched);
        self.commits.push_back((tid, logged));
        while self.ids.len() > self.capacity {
            let Some((dropped, len)) = self.commits.pop_front() else {
                break;
            };
            self.ids.drain(..len as usize);
            self.start = dropped;
        }
    }

    /// Every object touched by a commit after `since`, or `None` when the log no longer (or
    /// never did) cover that whole span.
    pub fn since(&self, since: Tid) -> Option<FastSet<ObjectId>> {
        if since < self.start {
            return None;
        }
        // Commits are in tid order: skip the ids of those at or before `since`.
        let skip: usize = self
            .commits
            .iter()
            .take_while(|(tid, _)| *tid <= since)
            .map(|(_, len)| *len as usize)
            .sum();
        Some(self.ids.iter().skip(skip).copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<ObjectId> {
        v.iter().map(|&i| ObjectId(i)).collect()
    }

    fn sorted(set: Option<FastSet<ObjectId>>) -> Option<Vec<u64>> {
        set.map(|s| {
            let mut v: Vec<u64> = s.into_iter().map(|o| o.0).collect();
            v.sort_unstable();
            v
        })
    }

    #[test]
    fn answers_changes_after_a_tid_within_the_window() {
        let mut log = ChangeLog::new(Tid(10), 100);
        log.record(Tid(11), ids(&[1, 2]).into_iter());
        log.record(Tid(12), ids(&[2, 3]).into_iter());
        assert_eq!(sorted(log.since(Tid(10))), Some(vec![1, 2, 3]));
        assert_eq!(sorted(log.since(Tid(11))), Some(vec![2, 3]));
        assert_eq!(sorted(log.since(Tid(12))), Some(vec![]));
        assert_eq!(sorted(log.since(Tid(9))), None, "before the log started");
    }

    #[test]
    fn dropping_old_commits_moves_the_start() {
        let mut log = ChangeLog::new(Tid(0), 3);
        log.record(Tid(1), ids(&[1, 2]).into_iter());
        log.record(Tid(2), ids(&[3]).into_iter());
        log.record(Tid(3), ids(&[4]).into_iter());
        // Four ids over a capacity of three: commit 1 is dropped whole.
        assert_eq!(sorted(log.since(Tid(0))), None);
        assert_eq!(sorted(log.since(Tid(1))), Some(vec![3, 4]));
        log.record(Tid(4), ids(&[5, 6, 7, 8]).into_iter());
        assert_eq!(
            sorted(log.since(Tid(3))),
            None,
            "a commit larger than the log"
        );
        assert_eq!(sorted(log.since(Tid(4))), Some(vec![]));
    }
}
