//! Group commit to a durable [`Storage`].
//!
//! With a storage attached, nothing the sequencer queues for a connection leaves at once: frames
//! are held, the batch's changes (objects, registry, tid, id counter and commit-id records) are
//! stored by one [`Storage::persist`] call, and only then are the held frames released. An acknowledged commit
//! (a `CommitResult` with `Committed` or `CommittedAsSent`) or a granted id block is therefore
//! stored.
//!
//! When storing fails for certain ([`StorageError::Unavailable`]), the batch's object changes are
//! undone in memory (the tid and the id counter keep their new values, so no tid and no id is
//! ever handed out twice), pushed commits are dropped, commit results become
//! `StorageUnavailable`, and a connection that was being welcomed is closed with that reason.
//! Id grants and schema ids are answered all the same: the counters are not undone, so they are
//! never handed out twice, and they reach the storage with the first batch that uses them (every
//! batch stores the id counter and any changed registry), or are never used. Requests that answer from the current state
//! (subscribe, unsubscribe, flush) are processed only once everything before them is stored, so
//! no answer ever shows data that could still be undone.
//!
//! The storage is then *down*: frames are no longer held (nothing is stored, so nothing can be
//! undone), commits are refused at once with `StorageUnavailable`, while clients still connect,
//! subscribe and read. The only changes made meanwhile are the server's own (`core.Connection`
//! objects, id and schema grants); every [`RETRY`] the sequencer tries to store them, and the
//! first success ends the outage: commits are accepted again, with no restart.
//!
//! When the storage cannot tell whether a batch was stored ([`StorageError::OutcomeUnknown`]:
//! the link broke during the write), the batch is *in doubt*: its frames stay held, new commits
//! are refused, and the same changes are stored again every [`IN_DOUBT_RETRY`] (writing them
//! again is harmless). If that succeeds, the batch's commits are answered `Committed` as usual.
//! If it has not succeeded after [`IN_DOUBT_LIMIT`], its commits are answered `OutcomeUnknown`,
//! never as failed, the batch is undone in memory as above, and its objects are stored again,
//! with their restored contents, by the next batch that succeeds, so that the storage ends up
//! agreeing with memory whether or not the batch had landed. The start-up batch is stored again
//! in the same way; if its outcome stays unknown, or storing it fails for certain, the server
//! does not start.
//!
//! The batch's commit-id records are stored with it and undone with it (see
//! [`super::commit_ids`]); resumes and commit queries, like subscriptions, are answered only
//! once everything before them is stored, so no answer reports a commit applied that could
//! still be undone.

use super::commit_ids::Clock;
use super::{queue_frame, Request, Sequencer, Status};
use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::outbound::Outbound;
use crate::registry::Registry;
use crate::storage::{Batch, Loaded, Storage, StorageError, StoredObject};
use crate::store::{Record, Store};
use bytes::Bytes;
use odb_wire::{ClientMessage, CommitOutcome, ObjectId, Refusal, RequestId, ServerMessage, Tid};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long to wait before trying again to store after storing failed.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// How long to wait before storing again a batch whose outcome is unknown.
pub(crate) const IN_DOUBT_RETRY: Duration = Duration::from_millis(200);

/// How long a batch whose outcome is unknown is stored again before its commits are answered
/// `OutcomeUnknown`.
pub(crate) const IN_DOUBT_LIMIT: Duration = Duration::from_secs(5);

/// The storage, what it holds, and the frames waiting for the current batch to be stored.
pub(super) struct Durable {
    storage: Box<dyn Storage>,
    held: Vec<Held>,
    stored_tid: Tid,
    stored_next_id: u64,
    stored_registry: (u32, u32, u32, u32),
    /// Whether the database's identity is stored (it is not in a new storage, nor in data
    /// written before identities were).
    stored_database: bool,
    retry_at: Option<Instant>,
    /// Why the storage is down, while it is (see the module documentation).
    down: Option<String>,
    /// Since when the held batch's outcome is unknown, while it is.
    in_doubt: Option<Instant>,
    /// Objects of a batch given up in doubt: stored again with their current contents.
    unsure: BTreeSet<ObjectId>,
}

/// A frame waiting for its batch to be stored.
struct Held {
    conn: ObjectId,
    outbound: Outbound,
    frame: Bytes,
    on_failure: OnFailure,
}

/// What becomes of a held frame when its batch cannot be stored.
#[derive(Clone, Copy, Debug)]
pub(super) enum OnFailure {
    /// Send it anyway: it does not depend on the batch.
    Keep,
    /// Drop it (a pushed commit).
    Drop,
    /// Replace it by a failed (or, in doubt, unknown) commit result: it says `Committed`.
    CommitResult(RequestId),
    /// Close the connection (a `Welcome`: its `core.Connection` object is undone).
    Close,
}

impl OnFailure {
    /// How a message fares when its batch cannot be stored.
    pub(super) fn of(message: &ServerMessage) -> OnFailure {
        match message {
            ServerMessage::Commit(_) => OnFailure::Drop,
            ServerMessage::CommitResult {
                request_id,
                outcome: CommitOutcome::Committed { .. } | CommitOutcome::CommittedAsSent { .. },
            } => OnFailure::CommitResult(*request_id),
            ServerMessage::Welcome { .. } => OnFailure::Close,
            _ => OnFailure::Keep,
        }
    }
}

/// Queues a frame for a connection: held until the batch is stored when there is a storage, at
/// once otherwise. Returns `false` if the connection is closing (or is closed now because the
/// frame exceeds the frame limit).
pub(super) fn queue(
    durable: Option<&mut Durable>,
    conn: ObjectId,
    outbound: &Outbound,
    frame: Bytes,
    max_frame: usize,
    on_failure: OnFailure,
) -> bool {
    let Some(durable) = durable.filter(|d| d.down.is_none()) else {
        return queue_frame(outbound, frame, max_frame);
    };
    if frame.len() > max_frame {
        return queue_frame(outbound, frame, max_frame);
    }
    if outbound.is_closed() {
        return false;
    }
    durable.held.push(Held {
        conn,
        outbound: outbound.clone(),
        frame,
        on_failure,
    });
    true
}

/// Whether a request answers from the current state, so that everything before it must be
/// stored first.
pub(crate) fn reads_state(request: &Request) -> bool {
    matches!(
        request,
        Request::Message {
            message: ClientMessage::Subscribe { .. }
                | ClientMessage::Unsubscribe { .. }
                | ClientMessage::Flush { .. }
                | ClientMessage::Resume { .. }
                | ClientMessage::QueryCommits { .. }
                | ClientMessage::Stats { .. }
                | ClientMessage::ListSchemas { .. },
            ..
        }
    )
}

/// Starts the sequencer: empty and in memory only without a storage; otherwise with what the
/// storage holds, after storing the start-up changes (the `core` schema and the deletion of
/// connection objects left over from the previous run).
pub(crate) async fn open(
    config: Arc<ServerConfig>,
    status: Arc<Status>,
    storage: Option<Box<dyn Storage>>,
) -> Result<Sequencer, ServerError> {
    open_with_clock(config, status, storage, Clock::System).await
}

/// Like [`open`], with commit-id records timed by `clock`.
pub(crate) async fn open_with_clock(
    config: Arc<ServerConfig>,
    status: Arc<Status>,
    storage: Option<Box<dyn Storage>>,
    clock: Clock,
) -> Result<Sequencer, ServerError> {
    let Some(mut storage) = storage else {
        let mut seq = Sequencer::new(config, status).map_err(ServerError::Config)?;
        seq.clock = clock;
        return Ok(seq);
    };
    let what = storage.describe();
    let loaded = storage
        .load()
        .await
        .map_err(|e| ServerError::Storage(format!("cannot load from {what}: {e}")))?;
    let (registry, store) = restore(&loaded)
        .map_err(|e| ServerError::Storage(format!("cannot load from {what}: {e}")))?;
    tracing::info!(
        objects = loaded.objects.len(),
        tid = loaded.tid.0,
        "loaded the database from {what}"
    );
    let mut seq = Sequencer::from_parts(config, status, registry, store, loaded.next_id)
        .map_err(ServerError::Config)?;
    if let Some(database) = loaded.database {
        seq.database = database;
    }
    seq.clock = clock;
    seq.commit_ids.set_journaling();
    seq.commit_ids
        .load(loaded.commits.clone(), loaded.commit_horizon);
    seq.commit_ids.prune(seq.clock.now_ms());
    seq.durable = Some(Durable {
        storage,
        held: Vec::new(),
        stored_tid: loaded.tid,
        stored_next_id: loaded.next_id,
        stored_registry: (
            loaded.registry.last_type,
            loaded.registry.last_field,
            loaded.registry.last_index,
            0,
        ),
        stored_database: loaded.database.is_some(),
        retry_at: None,
        down: None,
        in_doubt: None,
        unsure: BTreeSet::new(),
    });
    seq.settle_start_up()
        .await
        .map_err(|e| ServerError::Storage(format!("cannot write to {what}: {e}")))?;
    Ok(seq)
}

/// Rebuilds the registry and the store (journaling, so that the start-up commits are stored).
fn restore(loaded: &Loaded) -> Result<(Registry, Store), String> {
    let registry = Registry::from_stored(&loaded.registry)?;
    let mut store = Store::loaded(
        loaded.tid,
        loaded.objects.iter().map(|(id, o)| {
            (
                *id,
                Record {
                    ty: o.ty,
                    fields: o.fields.clone(),
                    indices: o.indices.clone(),
                },
            )
        }),
    );
    store.set_journaling(true);
    Ok((registry, store))
}

impl Sequencer {
    /// When to try again to store what a failed batch left to do, if anything.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.durable.as_ref().and_then(|d| d.retry_at)
    }

    /// Why commits are refused at once, if they are: the storage is down, or a batch is in
    /// doubt.
    pub(super) fn storage_trouble(&self) -> Option<String> {
        let durable = self.durable.as_ref()?;
        if let Some(down) = &durable.down {
            return Some(down.clone());
        }
        durable
            .in_doubt
            .map(|_| "the outcome of an earlier write is not known yet".to_string())
    }

    /// Runs when [`Sequencer::retry_at`] is due: deletes the objects of ended connections and
    /// stores what is unstored. While the storage is down, this is the probe that ends the
    /// outage once a batch is stored again.
    pub(super) async fn retry(&mut self) {
        self.delete_ended_connections();
        let Some(durable) = &self.durable else {
            return;
        };
        if durable.down.is_none() {
            let _ = self.settle().await;
            return;
        }
        let batch = self.batch();
        let tid = self.store.tid();
        let next_id = self.next_id;
        let registry = self.registry.generation();
        let Some(durable) = &mut self.durable else {
            return;
        };
        match durable.storage.persist(batch).await {
            Ok(()) => {
                tracing::info!("the storage is available again; commits are accepted");
                durable.down = None;
                durable.retry_at = None;
                durable.unsure.clear();
                durable.stored_tid = tid;
                durable.stored_next_id = next_id;
                durable.stored_registry = registry;
                self.store.clear_journal();
            }
            Err(e) => {
                tracing::debug!("the storage is still unavailable: {e}");
                durable.down = Some(e.detail());
                durable.retry_at = Some(Instant::now() + RETRY);
            }
        }
    }

    /// Stores the start-up changes. A write whose outcome is unknown is stored again, as at run
    /// time, for up to [`IN_DOUBT_LIMIT`]; any other failure, or one still unsettled after that,
    /// fails the start.
    async fn settle_start_up(&mut self) -> Result<(), StorageError> {
        loop {
            let Err(error) = self.settle().await else {
                return Ok(());
            };
            let in_doubt = self.durable.as_ref().is_some_and(|d| d.in_doubt.is_some());
            match self.retry_at() {
                Some(at) if in_doubt => tokio::time::sleep_until(at).await,
                _ => return Err(error),
            }
        }
    }

    /// Whether anything changed since the last stored batch.
    fn unstored(&self, durable: &Durable) -> bool {
        self.store.has_changes()
            || self.store.tid() != durable.stored_tid
            || self.next_id != durable.stored_next_id
            || self.registry.generation() != durable.stored_registry
            || !durable.stored_database
            || self.commit_ids.has_changes()
    }

    /// Stores what changed since the last stored batch and releases the held frames; repeated
    /// while releasing them ends connections whose objects must be deleted. Without a storage,
    /// does nothing. On failure, undoes the batch as described in the module documentation.
    pub(crate) async fn settle(&mut self) -> Result<(), StorageError> {
        loop {
            let Some(durable) = &self.durable else {
                return Ok(());
            };
            if durable.down.is_some() {
                // Nothing is held while the storage is down: the probe in `retry` stores.
                return Ok(());
            }
            let unstored = self.unstored(durable) || !durable.unsure.is_empty();
            if !unstored && durable.held.is_empty() {
                if let Some(durable) = &mut self.durable {
                    durable.retry_at = None;
                }
                return Ok(());
            }
            let batch = unstored.then(|| self.batch());
            let Some(durable) = &mut self.durable else {
                return Ok(());
            };
            let started = Instant::now();
            let result = match batch {
                Some(batch) => durable.storage.persist(batch).await,
                None => Ok(()),
            };
            if unstored {
                self.status
                    .metrics
                    .persist(started.elapsed(), result.is_ok());
            }
            if let Err(e) = result {
                if !self.keep_in_doubt(&e) {
                    self.fail_batch(&e);
                }
                return Err(e);
            }
            if durable.in_doubt.take().is_some() {
                tracing::info!("a batch whose outcome was unknown is stored now");
            }
            durable.unsure.clear();
            durable.stored_tid = self.store.tid();
            durable.stored_next_id = self.next_id;
            durable.stored_registry = self.registry.generation();
            durable.stored_database = true;
            durable.retry_at = None;
            self.store.clear_journal();
            self.commit_ids.clear_journal();
            let held = std::mem::take(&mut durable.held);
            let mut failed = Vec::new();
            for h in held {
                if !h.outbound.send(h.frame) {
                    failed.push(h.conn);
                }
            }
            for conn in failed {
                self.drop_conn(conn);
            }
            self.delete_ended_connections();
        }
    }

    /// What changed since the last stored batch, with the objects of a batch given up in
    /// doubt.
    fn batch(&self) -> Batch {
        let registry_changed = self
            .durable
            .as_ref()
            .is_some_and(|d| d.stored_registry != self.registry.generation());
        let database_unstored = self.durable.as_ref().is_some_and(|d| !d.stored_database);
        let mut changes = self.store.changes();
        if let Some(durable) = &self.durable {
            let changed: BTreeSet<ObjectId> = changes.iter().map(|(id, _)| *id).collect();
            for id in durable.unsure.difference(&changed) {
                changes.push((*id, self.store.current(*id)));
            }
        }
        Batch {
            tid: self.store.tid(),
            next_id: self.next_id,
            registry: registry_changed.then(|| self.registry.to_stored()),
            objects: changes
                .into_iter()
                .map(|(id, record)| {
                    let object = record.map(|r| StoredObject {
                        ty: r.ty,
                        fields: r.fields,
                        indices: r.indices,
                    });
                    (id, object)
                })
                .collect(),
            database: database_unstored.then_some(self.database),
            commits: self.commit_ids.changes(),
        }
    }

    /// After a failed write: whether to keep the held batch and store it again later, because
    /// its outcome is unknown and the time allowed for settling it has not passed.
    fn keep_in_doubt(&mut self, error: &StorageError) -> bool {
        let Some(durable) = &mut self.durable else {
            return false;
        };
        let now = Instant::now();
        let since = match (durable.in_doubt, error) {
            (Some(since), _) => since,
            (None, StorageError::OutcomeUnknown(_)) => {
                tracing::warn!(
                    "the outcome of a batch is unknown ({error}); storing it again for up to \
                     {IN_DOUBT_LIMIT:?}"
                );
                now
            }
            (None, _) => return false,
        };
        if now.saturating_duration_since(since) >= IN_DOUBT_LIMIT {
            return false;
        }
        durable.in_doubt = Some(since);
        durable.retry_at = Some(now + IN_DOUBT_RETRY);
        true
    }

    /// Undoes a batch that could not be stored (or whose outcome stayed unknown), answers its
    /// requests accordingly, and marks the storage down.
    fn fail_batch(&mut self, error: &StorageError) {
        let reason = match error {
            StorageError::Unavailable(_) | StorageError::OutcomeUnknown(_) => error.detail(),
            other => other.to_string(),
        };
        let unknown = self
            .durable
            .as_mut()
            .is_some_and(|d| d.in_doubt.take().is_some());
        if unknown {
            tracing::warn!(
                "a batch's outcome stayed unknown; its commits are answered so: {reason}"
            );
            let changed: Vec<ObjectId> =
                self.store.changes().into_iter().map(|(id, _)| id).collect();
            if let Some(durable) = &mut self.durable {
                durable.unsure.extend(changed);
            }
        } else {
            tracing::warn!("a batch could not be stored; its commits fail: {reason}");
        }
        self.store.roll_back();
        let now = self.clock.now_ms();
        self.commit_ids.roll_back(now);
        let Some(durable) = &mut self.durable else {
            return;
        };
        durable.down = Some(reason.clone());
        durable.retry_at = Some(Instant::now() + RETRY);
        let held = std::mem::take(&mut durable.held);
        let mut failed = Vec::new();
        let deposed = matches!(error, StorageError::NotLeader(_));
        for h in held {
            let replacement = match h.on_failure {
                OnFailure::Keep => Some(h.frame),
                OnFailure::Drop => None,
                // Another server leads now: the client settles the commit with it (it was not
                // applied there, so it runs again), rather than taking a storage failure.
                OnFailure::CommitResult(_) if deposed => {
                    h.outbound.close(Refusal::NotLeader {
                        detail: error.detail(),
                    });
                    failed.push(h.conn);
                    None
                }
                OnFailure::CommitResult(request_id) => {
                    let outcome = if unknown {
                        CommitOutcome::OutcomeUnknown {
                            reason: reason.clone(),
                        }
                    } else {
                        CommitOutcome::StorageUnavailable {
                            reason: reason.clone(),
                        }
                    };
                    self.status.metrics.commit_outcome(&outcome);
                    encode(&ServerMessage::CommitResult {
                        request_id,
                        outcome,
                    })
                }
                OnFailure::Close => {
                    h.outbound.close(Refusal::StorageUnavailable {
                        detail: error.detail(),
                    });
                    failed.push(h.conn);
                    None
                }
            };
            if let Some(frame) = replacement {
                if !h.outbound.send(frame) {
                    failed.push(h.conn);
                }
            }
        }
        for conn in failed {
            self.drop_conn(conn);
        }
        // Deletions of connection objects were undone too: do them again at the next retry.
        for id in self.connection_type.all(&self.store) {
            if !self.conns.contains_key(&id) && !self.ended.contains(&id) {
                self.ended.push(id);
            }
        }
        self.publish();
    }
}

fn encode(message: &ServerMessage) -> Option<Bytes> {
    match odb_wire::encode(message) {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::error!("cannot encode a server message: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::registry::Registry;
    use crate::store::Store;
    use bytes::Bytes;
    use odb_wire::{
        CommitRequest, FieldWrite, IndexDef, IndexWrite, ObjectId, SchemaDef, Tid, TypeDef,
    };

    #[test]
    fn rolling_back_restores_objects_and_index_members_but_not_the_tid() {
        let mut registry = Registry::default();
        let schema = registry
            .define(&SchemaDef {
                name: "s".into(),
                types: vec![TypeDef {
                    name: "T".into(),
                    fields: vec!["a".into()],
                    indices: vec![IndexDef {
                        name: "by_a".into(),
                        fields: vec!["a".into()],
                    }],
                }],
            })
            .unwrap();
        let t = &schema.types[0];
        let create = |base: Tid, o: u64, a: &'static str| CommitRequest {
            base_tid: base,
            writes: vec![
                FieldWrite {
                    object: ObjectId(o),
                    field: t.exists_field,
                    value: Some(Bytes::new()),
                },
                FieldWrite {
                    object: ObjectId(o),
                    field: t.fields[0],
                    value: Some(Bytes::from_static(a.as_bytes())),
                },
            ],
            index_writes: vec![IndexWrite {
                object: ObjectId(o),
                index: t.indices[0],
                value: Some(Bytes::from_static(a.as_bytes())),
            }],
            ..CommitRequest::default()
        };
        let mut store = Store::loaded(Tid(0), Vec::new());
        store.set_journaling(true);
        store.commit(&registry, &create(Tid(0), 1, "x")).unwrap();
        assert_eq!(store.changes().len(), 1);
        store.clear_journal();
        let before = store.object_data(ObjectId(1));

        // Re-index object 1, create object 2, then delete object 1: all undone.
        store.commit(&registry, &create(Tid(1), 2, "x")).unwrap();
        let mut move_1 = create(Tid(2), 1, "y");
        move_1.writes.remove(0);
        store.commit(&registry, &move_1).unwrap();
        store
            .commit(
                &registry,
                &CommitRequest {
                    base_tid: Tid(3),
                    deletes: vec![ObjectId(1)],
                    ..CommitRequest::default()
                },
            )
            .unwrap();
        assert!(store.has_changes());
        store.roll_back();
        assert!(!store.has_changes());
        assert_eq!(store.tid(), Tid(4), "tids are not reused");
        assert_eq!(store.object_data(ObjectId(1)), before);
        assert!(store.record(ObjectId(2)).is_none());
        let x = Bytes::from_static(b"x");
        assert_eq!(
            store.members(t.indices[0], &x).collect::<Vec<_>>(),
            vec![ObjectId(1)]
        );
        assert_eq!(
            store
                .members(t.indices[0], &Bytes::from_static(b"y"))
                .count(),
            0
        );
        assert_eq!(
            store
                .members(t.all_index, &Bytes::new())
                .collect::<Vec<_>>(),
            vec![ObjectId(1)]
        );
    }
}
