//! The record of applied commit ids, which makes commits exactly-once.
//!
//! A client gives each commit an id. Once a commit with an id is applied, the id is recorded
//! with the commit's tid, in the same stored batch as the commit's data, so that:
//!
//! - a commit whose id is recorded is answered `AlreadyApplied` and not applied again;
//! - `QueryCommits` answers `Applied` for a recorded id.
//!
//! Records are kept for a window of count and time (see [`ServerConfig`]): a record is
//! dropped once more than the count of newer records exist, or once it is older than the time.
//! Records are dropped oldest first, that is in tid order, and the *horizon* is the newest tid
//! whose record was dropped. A commit that is not recorded and whose base tid is at or after the
//! horizon was not applied: had it been, its tid would be after its base tid, so after the
//! horizon, and its record would still be kept. The server then *fences* the id, so that a
//! late copy of that commit (still queued from a dead connection, say) is refused rather than
//! applied after the client was told it was not. Older commits are `Unknown`.
//!
//! With durable storage the records, the dropped ids and the horizon are stored with the data;
//! when a batch cannot be stored, its records are undone with its objects, and their ids become
//! *doubtful*: the batch may still have landed (a timeout), so they are answered `Unknown` and
//! refused from then on. Fences are kept in memory only, bounded like the records: after a
//! restart no connection that could deliver a late copy is left.
//!
//! [`ServerConfig`]: crate::ServerConfig

use crate::storage::{CommitChanges, StoredCommit};
use odb_wire::hash::FastMap;
use odb_wire::{CommitId, CommitStatus, Tid};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the time of records comes from: the system clock, or a clock a test moves by hand.
#[derive(Clone, Debug, Default)]
pub(crate) enum Clock {
    /// Milliseconds since the Unix epoch.
    #[default]
    System,
    /// Milliseconds as set by a test.
    #[cfg_attr(not(any(test, feature = "sim")), allow(dead_code))]
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The current time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            Clock::Manual(ms) => ms.load(Ordering::Acquire),
        }
    }
}

/// Why an id is refused although it is not recorded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Fence {
    /// It was answered `NotApplied`.
    NotApplied,
    /// Its batch could not be stored; it may have landed.
    Doubtful,
}

/// What changed since the last stored batch, to be stored or undone.
#[derive(Debug, Default)]
struct Journal {
    added: Vec<StoredCommit>,
    pruned: Vec<StoredCommit>,
    stored_horizon: Tid,
}

/// The tids of recorded commits, by session: each session's records sorted by sequence
/// number. A session numbers its commits in the order it sends them, and the server applies
/// them in that order, so a record is appended, found by subtraction, and dropped from the
/// front; nothing is hashed per commit but the session.
#[derive(Debug, Default)]
struct BySession(FastMap<u128, VecDeque<(u64, Tid)>>);

impl BySession {
    /// Where `seq` is (`Ok`) or would go (`Err`) among a session's records.
    fn position(records: &VecDeque<(u64, Tid)>, seq: u64) -> Result<usize, usize> {
        let Some(&(first, _)) = records.front() else {
            return Err(0);
        };
        if let Some(guess) = seq.checked_sub(first).and_then(|d| usize::try_from(d).ok()) {
            match records.get(guess) {
                Some(&(s, _)) if s == seq => return Ok(guess),
                None if records.back().is_some_and(|&(last, _)| last < seq) => {
                    return Err(records.len())
                }
                _ => {}
            }
        }
        records.binary_search_by_key(&seq, |&(s, _)| s)
    }

    fn get(&self, id: CommitId) -> Option<Tid> {
        let records = self.0.get(&id.session)?;
        let at = Self::position(records, id.seq).ok()?;
        records.get(at).map(|&(_, tid)| tid)
    }

    fn insert(&mut self, id: CommitId, tid: Tid) {
        let records = self.0.entry(id.session).or_default();
        match Self::position(records, id.seq) {
            Ok(at) => {
                if let Some(record) = records.get_mut(at) {
                    record.1 = tid;
                }
            }
            Err(at) if at == records.len() => records.push_back((id.seq, tid)),
            Err(at) => records.insert(at, (id.seq, tid)),
        }
    }

    fn remove(&mut self, id: CommitId) {
        let Some(records) = self.0.get_mut(&id.session) else {
            return;
        };
        if let Ok(at) = Self::position(records, id.seq) {
            if at == 0 {
                records.pop_front();
            } else {
                records.remove(at);
            }
        }
        if records.is_empty() {
            self.0.remove(&id.session);
        } else if records.capacity() > 4 * records.len().max(16) {
            records.shrink_to_fit();
        }
    }
}

/// The records; see the module documentation.
#[derive(Debug)]
pub(crate) struct CommitIds {
    count: usize,
    age_ms: u64,
    by_id: BySession,
    /// Records, oldest (lowest tid) first.
    order: VecDeque<StoredCommit>,
    horizon: Tid,
    fences: HashMap<CommitId, Fence>,
    /// Fenced ids with the time they were fenced, oldest first.
    fence_order: VecDeque<(CommitId, u64)>,
    journal: Option<Journal>,
}

impl CommitIds {
    /// No records, keeping at most `count` of them for at most `age`.
    pub fn new(count: usize, age: Duration) -> Self {
        CommitIds {
            count,
            age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
            by_id: BySession::default(),
            order: VecDeque::new(),
            horizon: Tid(0),
            fences: HashMap::new(),
            fence_order: VecDeque::new(),
            journal: None,
        }
    }

    /// Takes over loaded records (in any order) and horizon.
    pub fn load(&mut self, mut records: Vec<StoredCommit>, horizon: Tid) {
        records.sort_by_key(|r| r.tid);
        self.by_id = BySession::default();
        for r in &records {
            self.by_id.insert(r.id, r.tid);
        }
        self.order = records.into();
        self.horizon = horizon;
        if let Some(journal) = &mut self.journal {
            journal.stored_horizon = horizon;
        }
    }

    /// Starts journaling changes, to be stored by the durable module.
    pub fn set_journaling(&mut self) {
        self.journal = Some(Journal {
            stored_horizon: self.horizon,
            ..Journal::default()
        });
    }

    /// The newest tid whose record was dropped.
    #[cfg(test)]
    pub fn horizon(&self) -> Tid {
        self.horizon
    }

    /// How many records are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The tid at which a commit with this id was applied, if it is recorded.
    pub fn applied(&self, id: CommitId) -> Option<Tid> {
        self.by_id.get(id)
    }

    /// Why an unrecorded id is refused, if it is.
    pub fn fence_of(&self, id: CommitId) -> Option<Fence> {
        self.fences.get(&id).copied()
    }

    /// Records an applied commit, then drops what falls out of the window.
    pub fn record(&mut self, id: CommitId, tid: Tid, now_ms: u64) {
        let record = StoredCommit {
            id,
            tid,
            at_ms: now_ms,
        };
        self.by_id.insert(id, tid);
        self.order.push_back(record);
        if let Some(journal) = &mut self.journal {
            journal.added.push(record);
        }
        self.prune(now_ms);
    }

    /// Drops the records and fences outside the window.
    pub fn prune(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(self.age_ms);
        while let Some(&oldest) = self.order.front() {
            if self.order.len() <= self.count && oldest.at_ms >= cutoff {
                break;
            }
            self.order.pop_front();
            self.by_id.remove(oldest.id);
            self.horizon = self.horizon.max(oldest.tid);
            if let Some(journal) = &mut self.journal {
                journal.pruned.push(oldest);
            }
        }
        self.prune_fences(now_ms);
    }

    /// Drops the fences outside the window.
    fn prune_fences(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(self.age_ms);
        while let Some(&(id, at)) = self.fence_order.front() {
            if self.fence_order.len() <= self.count && at >= cutoff {
                break;
            }
            self.fence_order.pop_front();
            self.fences.remove(&id);
        }
    }

    /// What became of a commit with this id and base tid; a commit found not applied is fenced.
    pub fn status(&mut self, id: CommitId, base_tid: Tid, now_ms: u64) -> CommitStatus {
        if let Some(tid) = self.applied(id) {
            return CommitStatus::Applied { tid };
        }
        match self.fence_of(id) {
            Some(Fence::NotApplied) => return CommitStatus::NotApplied,
            Some(Fence::Doubtful) => return CommitStatus::Unknown,
            None => {}
        }
        if base_tid < self.horizon {
            return CommitStatus::Unknown;
        }
        self.fence(id, Fence::NotApplied, now_ms);
        CommitStatus::NotApplied
    }

    fn fence(&mut self, id: CommitId, fence: Fence, now_ms: u64) {
        if self.fences.insert(id, fence).is_none() {
            self.fence_order.push_back((id, now_ms));
        }
        self.prune_fences(now_ms);
    }

    /// Whether anything changed since the last stored batch.
    pub fn has_changes(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|j| !j.added.is_empty() || !j.pruned.is_empty())
    }

    /// What changed since the last stored batch. A record added and dropped since is left out.
    pub fn changes(&self) -> CommitChanges {
        let Some(journal) = &self.journal else {
            return CommitChanges::default();
        };
        let added: HashSet<CommitId> = journal.added.iter().map(|r| r.id).collect();
        let pruned: HashSet<CommitId> = journal.pruned.iter().map(|r| r.id).collect();
        CommitChanges {
            added: journal
                .added
                .iter()
                .filter(|r| !pruned.contains(&r.id))
                .copied()
                .collect(),
            pruned: journal
                .pruned
                .iter()
                .filter(|r| !added.contains(&r.id))
                .map(|r| r.id)
                .collect(),
            horizon: self.horizon,
        }
    }

    /// Forgets the journal: its changes are stored.
    pub fn clear_journal(&mut self) {
        if let Some(journal) = &mut self.journal {
            journal.added.clear();
            journal.pruned.clear();
            journal.stored_horizon = self.horizon;
        }
    }

    /// Undoes every change since the last stored batch: records added since are removed (their
    /// ids become doubtful), records dropped since come back, and the horizon with them.
    pub fn roll_back(&mut self, now_ms: u64) {
        let Some(journal) = self.journal.take() else {
            return;
        };
        let added: HashSet<CommitId> = journal.added.iter().map(|r| r.id).collect();
        let mut restored: Vec<StoredCommit> = journal
            .pruned
            .iter()
            .filter(|r| !added.contains(&r.id))
            .copied()
            .collect();
        restored.extend(self.order.iter().filter(|r| !added.contains(&r.id)));
        self.horizon = journal.stored_horizon;
        self.set_journaling();
        self.load(restored, journal.stored_horizon);
        for id in added {
            self.fence(id, Fence::Doubtful, now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> CommitId {
        CommitId { session: 7, seq }
    }

    #[test]
    fn the_window_drops_by_count_and_by_age_and_moves_the_horizon() {
        let mut ids = CommitIds::new(3, Duration::from_secs(10));
        for n in 1..=5 {
            ids.record(id(n), Tid(n * 10), 0);
        }
        assert_eq!(ids.len(), 3);
        assert_eq!(ids.applied(id(2)), None);
        assert_eq!(ids.applied(id(3)), Some(Tid(30)));
        assert_eq!(ids.horizon(), Tid(20));
        ids.record(id(6), Tid(60), 10_001);
        assert_eq!(ids.len(), 1, "the older ones are over ten seconds old");
        assert_eq!(ids.horizon(), Tid(50));
    }

    #[test]
    fn records_by_session_agree_with_a_map_in_any_order() {
        // A small generator, so that the test needs no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut records = BySession::default();
        let mut model: HashMap<CommitId, Tid> = HashMap::new();
        let mut seqs = [0u64; 3];
        for step in 0..20_000u64 {
            let session = u128::from(next(3) as u8);
            let seq = match next(10) {
                // Mostly the next number of the session, sometimes one out of order.
                0 => next(seqs[session as usize] + 2),
                _ => {
                    seqs[session as usize] += 1 + next(2);
                    seqs[session as usize]
                }
            };
            let id = CommitId { session, seq };
            if next(3) == 0 {
                records.remove(id);
                model.remove(&id);
            } else {
                records.insert(id, Tid(step));
                model.insert(id, Tid(step));
            }
            let probe = CommitId {
                session: u128::from(next(3) as u8),
                seq: next(seqs[0].max(seqs[1]).max(seqs[2]) + 2),
            };
            assert_eq!(
                records.get(probe),
                model.get(&probe).copied(),
                "step {step}"
            );
            assert_eq!(records.get(id), model.get(&id).copied(), "step {step}");
        }
        for (id, tid) in &model {
            assert_eq!(records.get(*id), Some(*tid));
        }
    }

    #[test]
    fn status_fences_what_it_reports_not_applied() {
        let mut ids = CommitIds::new(2, Duration::from_secs(10));
        for n in 1..=3 {
            ids.record(id(n), Tid(n), 0);
        }
        assert_eq!(
            ids.status(id(3), Tid(2), 0),
            CommitStatus::Applied { tid: Tid(3) }
        );
        assert_eq!(ids.status(id(9), Tid(0), 0), CommitStatus::Unknown);
        assert_eq!(ids.status(id(9), Tid(1), 0), CommitStatus::NotApplied);
        assert_eq!(ids.fence_of(id(9)), Some(Fence::NotApplied));
        assert_eq!(ids.status(id(9), Tid(0), 0), CommitStatus::NotApplied);
    }

    #[test]
    fn rolling_back_undoes_records_and_drops_and_makes_ids_doubtful() {
        let mut ids = CommitIds::new(2, Duration::from_secs(10));
        ids.set_journaling();
        ids.record(id(1), Tid(1), 0);
        ids.record(id(2), Tid(2), 0);
        let stored = ids.changes();
        assert_eq!(stored.added.len(), 2);
        ids.clear_journal();
        ids.record(id(3), Tid(3), 0);
        ids.record(id(4), Tid(4), 0);
        let changes = ids.changes();
        assert_eq!(changes.pruned, vec![id(1), id(2)]);
        assert_eq!(changes.horizon, Tid(2));
        ids.roll_back(0);
        assert!(!ids.has_changes());
        assert_eq!(ids.horizon(), Tid(0));
        assert_eq!(ids.applied(id(1)), Some(Tid(1)));
        assert_eq!(ids.applied(id(2)), Some(Tid(2)));
        assert_eq!(ids.applied(id(3)), None);
        assert_eq!(ids.fence_of(id(4)), Some(Fence::Doubtful));
        assert_eq!(ids.status(id(4), Tid(3), 0), CommitStatus::Unknown);
    }
}
