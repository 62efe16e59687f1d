//! The sequencer: the one task that owns the schema registry, the store and every connection's
//! subscriptions. Connection tasks send it requests over a channel; it takes whatever is queued
//! and processes the batch in order, answering on each connection's FIFO outbound queue, so a
//! pushed commit always precedes any answer that mentions a later tid.
//!
//! Subscribing takes a snapshot of the covered objects at the current tid, extends the
//! connection's visibility at once (so every later commit is filtered with it) and queues the
//! snapshot on the connection's outbound queue, where the connection's writer encodes and sends
//! it chunk by chunk (see [`crate::snapshot`]) while the sequencer goes on with other requests.
//! The FIFO queue puts the snapshot's completion before every commit made after its tid.
//!
//! Unsubscribing removes targets from the connection's visibility (a target not subscribed is
//! not an error; an unknown type or index id is) and answers `Unsubscribed` with the current tid
//! and the objects that were visible only through the removed targets (see
//! [`Visibility::remove`]); no commit concerning them is sent afterwards, unless they become
//! visible again, in which case they arrive with their full data as when they first did.
//!
//! No frame larger than the frame limit is queued: commits are limited in size by the store so
//! that pushes stay far below it, and a push that would still exceed it (many large objects
//! moving into a subscribed index value in one commit) closes that connection with the reason
//! logged instead of sending a frame the client cannot read.
//!
//! The request channel is bounded both by a number of requests and by the bytes of the frames
//! they came in (see `SEQUENCER_QUEUE` and `SEQUENCER_QUEUE_BYTES` in the crate root):
//! connection tasks wait when either is used up, which slows clients down rather than growing
//! memory.
//!
//! Commits may carry a client-chosen commit id: applied ids are recorded for a window (see
//! [`commit_ids`]), so a repeated commit is not applied twice and a client can ask what became
//! of commits whose answer it lost. A client that reconnects resumes its session (see
//! [`sessions`]).
//!
//! The sequencer also maintains the `core.Connection` object of every live connection (see
//! [`crate::liveness`]): created by a commit right after the connection's `Welcome`, deleted by
//! a commit once the connection has ended, whatever the reason.

use crate::config::ServerConfig;
use crate::id_grants::IdGrants;
use crate::limits;
use crate::liveness::ConnectionType;
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::push;
use crate::registry::Registry;
use crate::snapshot::Snapshot;
use crate::store::{Applied, Limits, Store};
use crate::subscriptions::{current, Selection, Visibility};
use audience::Audience;
use bytes::Bytes;
use changes::ChangeLog;
pub(crate) use commit_ids::Clock;
use commit_ids::CommitIds;
use odb_wire::limits::Limit;
use odb_wire::{
    ClientMessage, CommitOutcome, CommitRequest, DatabaseId, IdBlock, ObjectId, RequestId,
    ServerMessage, SubscriptionTarget, COMMITTED_AS_SENT_VERSION,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most object ids granted by one request, so that one client cannot exhaust the id space.
const MAX_ID_REQUEST: u64 = 1 << 32;

/// Most requests taken from the channel at once.
const BATCH: usize = 256;

/// What a connection task asks of the sequencer.
#[derive(Debug)]
pub(crate) enum Request {
    /// An authenticated connection: allocate its id and first id block, queue its `Welcome`,
    /// and answer with its id.
    Register {
        /// Its outbound queue.
        outbound: Outbound,
        /// The name the client gave in its `Hello`.
        client_name: String,
        /// The connection's protocol version.
        protocol_version: u32,
        /// Receives the connection id.
        reply: oneshot::Sender<ObjectId>,
    },
    /// A message from a registered connection.
    Message {
        /// The connection.
        conn: ObjectId,
        /// What it sent.
        message: ClientMessage,
        /// The message's share of the byte budget of queued requests, given back when the
        /// request has been handled (`None` for requests made inside the server).
        _budget: Option<OwnedSemaphorePermit>,
        /// When its frame was read, for the queue-wait and commit-latency metrics.
        received: Instant,
    },
    /// The connection is gone.
    Disconnect {
        /// The connection.
        conn: ObjectId,
    },
    /// The server is shutting down: answer and store everything received before, then stop.
    Shutdown {
        /// Told once everything before is answered and stored.
        reply: oneshot::Sender<()>,
    },
    /// The connection has been silent for its whole idle timeout: may it stay open anyway?
    /// Answered `true` when its `core.Connection` object currently has
    /// `suspend_heartbeat_checks` set.
    Silent {
        /// The connection.
        conn: ObjectId,
        /// Receives the answer.
        reply: oneshot::Sender<bool>,
    },
    /// A read-only question about the current state, for metrics and inspection.
    Inspect {
        /// What is asked.
        query: inspect::Query,
        /// Receives the answer.
        reply: oneshot::Sender<inspect::Answer>,
    },
}

/// Figures the sequencer publishes for the [`Server`](crate::Server) handle.
#[derive(Debug, Default)]
pub(crate) struct Status {
    /// The current tid.
    pub tid: AtomicU64,
    /// Live authenticated connections.
    pub connections: AtomicUsize,
    /// Live objects.
    pub objects: AtomicUsize,
    /// Conflict keys with a stamp in the conflict history.
    pub conflict_stamps: AtomicUsize,
    /// The server's metrics, updated by the sequencer and the connection tasks.
    pub metrics: Arc<Metrics>,
    /// Summaries of applied commits, for the web inspector's live feed.
    pub feed: feed::Feed,
}

struct Conn {
    outbound: Outbound,
    visibility: Visibility,
    /// The object ids this connection may create objects with.
    grants: IdGrants,
    /// Whether its commits may be answered `CommittedAsSent` (protocol version 3 and later).
    as_sent: bool,
}

/// Checked subscription targets and the objects they cover now.
#[derive(Default)]
struct Planned {
    /// Subscribed index values (a type is its all-objects index with the empty value).
    indices: Vec<(odb_wire::IndexId, Bytes)>,
    /// Objects subscribed one by one.
    objects: Vec<ObjectId>,
    /// The live objects the targets cover, in ascending order once planned; each index
    /// value's members come sorted, so one target (the usual case) needs no sorting.
    covered: Vec<ObjectId>,
}

impl Planned {
    /// Adds the targets to a connection's visibility, and the connection to the audience of
    /// each.
    fn add_to(&self, conn: ObjectId, visibility: &mut Visibility, audience: &mut Audience) {
        for (index, value) in &self.indices {
            visibility.add_index(*index, value.clone());
            audience.add_index(conn, *index, value.clone());
        }
        for object in &self.objects {
            visibility.add_object(*object);
            audience.add_object(conn, *object);
        }
    }
}

/// The sequencer's state. All methods are synchronous: the async part is [`Sequencer::run`].
pub(crate) struct Sequencer {
    config: Arc<ServerConfig>,
    registry: Registry,
    store: Store,
    conns: BTreeMap<ObjectId, Conn>,
    /// Who watches what, to find the connections a commit concerns; see [`audience`].
    audience: Audience,
    /// The candidates of the commit being fanned out, kept to reuse the allocation.
    candidates: Vec<ObjectId>,
    /// Ids of `core.Connection` objects.
    connection_type: ConnectionType,
    /// Connections that have ended and whose `core.Connection` object is still to be deleted.
    ended: Vec<ObjectId>,
    /// The next object id to hand out; ids start at 1 and are never reused.
    next_id: u64,
    /// The storage, when the database is durable; see [`durable`].
    durable: Option<durable::Durable>,
    status: Arc<Status>,
    /// The identity of the database, sent in every `Welcome`.
    database: DatabaseId,
    /// The ids of applied commits; see [`commit_ids`].
    commit_ids: CommitIds,
    /// The time of commit-id records.
    clock: Clock,
    /// The objects recent commits touched, for resuming sessions; see [`changes`].
    changes: ChangeLog,
}

impl Sequencer {
    /// An empty database.
    pub fn new(config: Arc<ServerConfig>, status: Arc<Status>) -> Result<Self, String> {
        Self::from_parts(config, status, Registry::default(), Store::default(), 1)
    }

    /// A database with existing contents, as a durable backend would load them: defines the
    /// `core` schema (merging by name with what the registry has) and deletes, in one commit,
    /// every `core.Connection` object left over from connections of a previous run.
    pub fn from_parts(
        config: Arc<ServerConfig>,
        status: Arc<Status>,
        mut registry: Registry,
        mut store: Store,
        next_id: u64,
    ) -> Result<Self, String> {
        store.set_limits(Limits::for_server(
            config.max_frame,
            config.conflict_history,
        ));
        let connection_type = ConnectionType::define(&mut registry)
            .map_err(|e| format!("cannot define the core schema: {e}"))?;
        let commit_ids =
            CommitIds::new(config.commit_id_window_count, config.commit_id_window_time);
        let changes = ChangeLog::new(store.tid(), config.resume_window_changes);
        let mut seq = Sequencer {
            config,
            registry,
            store,
            conns: BTreeMap::new(),
            audience: Audience::default(),
            candidates: Vec::new(),
            connection_type,
            ended: Vec::new(),
            next_id: next_id.max(1),
            durable: None,
            status,
            database: DatabaseId(rand_u128()),
            commit_ids,
            clock: Clock::default(),
            changes,
        };
        seq.ended = seq.connection_type.all(&seq.store);
        if !seq.ended.is_empty() {
            tracing::info!(
                count = seq.ended.len(),
                "deleting connection objects left from a previous run"
            );
        }
        seq.delete_ended_connections();
        seq.publish();
        Ok(seq)
    }

    /// The identity of the database.
    #[cfg(any(test, feature = "sim"))]
    pub fn database(&self) -> DatabaseId {
        self.database
    }

    /// The tid of the last commit.
    #[cfg(any(test, feature = "sim"))]
    pub fn tid(&self) -> odb_wire::Tid {
        self.store.tid()
    }

    /// Processes requests until the channel closes or `stop` is cancelled.
    pub async fn run(mut self, requests: &mut mpsc::Receiver<Request>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut arrivals = Vec::new();
        let mut shutdown = None;
        loop {
            let retry_at = self.retry_at();
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = sleep_until(retry_at) => self.retry().await,
                n = requests.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    arrivals = observe::batch(&self.status.metrics, &batch);
                    for request in batch.drain(..) {
                        if let Request::Shutdown { reply } = request {
                            shutdown = Some(reply);
                            break;
                        }
                        if self.durable.is_some() && durable::reads_state(&request) {
                            // A failure is answered to the requests concerned.
                            let _ = self.settle().await;
                        }
                        self.handle(request);
                    }
                }
            }
            // Group commit: the batch is stored once, then its answers and pushes go out.
            let _ = self.settle().await;
            observe::answered(&self.status.metrics, &mut arrivals);
            if let Some(reply) = shutdown.take() {
                tracing::info!(
                    tid = self.store.tid().0,
                    "every request received is answered and stored"
                );
                let _ = reply.send(());
                break;
            }
        }
        tracing::debug!("sequencer stopped");
    }

    /// Processes one request, then deletes the objects of the connections that ended meanwhile.
    pub fn handle(&mut self, request: Request) {
        match request {
            Request::Register {
                outbound,
                client_name,
                protocol_version,
                reply,
            } => self.register(outbound, &client_name, protocol_version, reply),
            Request::Message { conn, message, .. } => self.message(conn, message),
            Request::Disconnect { conn } => self.drop_conn(conn),
            // Handled by `run`, which stops after it.
            Request::Shutdown { .. } => {}
            Request::Silent { conn, reply } => {
                let suspended = self.conns.contains_key(&conn)
                    && self
                        .connection_type
                        .heartbeat_checks_suspended(&self.store, conn);
                let _ = reply.send(suspended);
            }
            Request::Inspect { query, reply } => {
                let _ = reply.send(self.inspect(query));
            }
        }
        self.delete_ended_connections();
    }

    fn register(
        &mut self,
        outbound: Outbound,
        client_name: &str,
        protocol_version: u32,
        reply: oneshot::Sender<ObjectId>,
    ) {
        let (Some(conn), Some(ids)) = (self.allocate(1), self.allocate(self.config.id_block_size))
        else {
            outbound.close(odb_wire::Refusal::OutOfIds);
            return;
        };
        let conn = ObjectId(conn.start);
        let welcome = ServerMessage::Welcome {
            protocol_version,
            connection: conn,
            ids,
            tid: self.store.tid(),
            heartbeat_interval_ms: duration_ms(self.config.heartbeat_interval),
            max_frame: self.config.max_frame as u64,
            database: self.database,
        };
        let mut grants = IdGrants::default();
        grants.grant(ids);
        self.audience.add_ids(conn, conn.0, conn.0);
        self.audience.add_block(conn, ids);
        self.conns.insert(
            conn,
            Conn {
                outbound,
                visibility: Visibility::default(),
                grants,
                as_sent: protocol_version >= COMMITTED_AS_SENT_VERSION,
            },
        );
        self.publish();
        if reply.send(conn).is_err() {
            self.drop_conn(conn);
            return;
        }
        if self.send(conn, &welcome) {
            self.create_connection_object(conn, client_name);
        }
    }

    /// Commits the `core.Connection` object of a just-welcomed connection. The commit counts as
    /// the connection's own, so it sees its object without subscribing, as its own creation.
    fn create_connection_object(&mut self, conn: ObjectId, client_name: &str) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let request = match self
            .connection_type
            .create(self.store.tid(), conn, client_name)
        {
            Ok(request) => request,
            Err(reason) => {
                tracing::error!(
                    conn = conn.0,
                    "cannot create the connection object: {reason}"
                );
                return;
            }
        };
        match self.store.commit(&self.registry, &request) {
            Ok(applied) => {
                self.publish();
                self.fan_out(Some(conn), &applied, false);
            }
            Err(outcome) => {
                tracing::error!(
                    conn = conn.0,
                    ?outcome,
                    "cannot create the connection object"
                )
            }
        }
    }

    /// Deletes, by one commit per round, the `core.Connection` objects of every connection that
    /// has ended. Fanning a deletion out may end more connections, hence the loop.
    fn delete_ended_connections(&mut self) {
        while !self.ended.is_empty() {
            let ended = std::mem::take(&mut self.ended);
            let doomed: Vec<ObjectId> = ended
                .into_iter()
                .filter(|&id| self.connection_type.is_connection(&self.store, id))
                .collect();
            if doomed.is_empty() {
                continue;
            }
            let request = self.connection_type.delete(self.store.tid(), doomed);
            match self.store.commit(&self.registry, &request) {
                Ok(applied) => {
                    self.publish();
                    self.fan_out(None, &applied, false);
                }
                Err(outcome) => {
                    tracing::error!(?outcome, "cannot delete connection objects")
                }
            }
        }
    }

    fn message(&mut self, conn: ObjectId, message: ClientMessage) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        match message {
            ClientMessage::DefineSchema { request_id, schema } => {
                let answer = match self.registry.define(&schema) {
                    Ok(schema) => ServerMessage::SchemaDefined { request_id, schema },
                    Err(reason) => ServerMessage::RequestFailed {
                        request_id,
                        reason,
                        limit: None,
                    },
                };
                self.send(conn, &answer);
            }
            ClientMessage::DefineDescribedSchema {
                request_id,
                schema,
                descriptions,
            } => {
                let answer = match self.registry.define_described(&schema, &descriptions) {
                    Ok(schema) => ServerMessage::SchemaDefined { request_id, schema },
                    Err(reason) => ServerMessage::RequestFailed {
                        request_id,
                        reason,
                        limit: None,
                    },
                };
                self.send(conn, &answer);
            }
            ClientMessage::Stats { request_id } => {
                let stats = self.stats();
                self.send(conn, &ServerMessage::Stats { request_id, stats });
            }
            ClientMessage::ListSchemas { request_id } => {
                let schemas = self.schema_infos();
                self.send(
                    conn,
                    &ServerMessage::Schemas {
                        request_id,
                        schemas,
                    },
                );
            }
            ClientMessage::RequestIds { request_id, count } => {
                let granted = if count > MAX_ID_REQUEST {
                    None
                } else {
                    self.allocate(count.max(self.config.id_block_size))
                };
                if let (Some(block), Some(state)) = (granted, self.conns.get_mut(&conn)) {
                    state.grants.grant(block);
                    self.audience.add_block(conn, block);
                }
                let answer = match granted {
                    Some(block) => ServerMessage::Ids { request_id, block },
                    None => ServerMessage::RequestFailed {
                        request_id,
                        reason: format!(
                            "cannot grant {count} object ids; ask for at most {MAX_ID_REQUEST} at once"
                        ),
                        limit: None,
                    },
                };
                self.send(conn, &answer);
            }
            ClientMessage::Subscribe {
                request_id,
                targets,
            } => self.subscribe(conn, request_id, &targets),
            ClientMessage::Unsubscribe {
                request_id,
                targets,
            } => self.unsubscribe(conn, request_id, &targets),
            ClientMessage::Commit { request_id, commit } => self.commit(conn, request_id, &commit),
            ClientMessage::Flush { request_id } => {
                let tid = self.store.tid();
                self.send(conn, &ServerMessage::Flushed { request_id, tid });
            }
            ClientMessage::QueryCommits {
                request_id,
                commits,
            } => self.query_commits(conn, request_id, &commits),
            ClientMessage::Resume {
                request_id,
                targets,
                own,
                since,
            } => self.resume(conn, request_id, &targets, &own, since),
            // Liveness is the connection task's business (it asks with `Request::Silent`); a
            // second hello is refused there.
            ClientMessage::Heartbeat | ClientMessage::Hello { .. } => {}
        }
    }

    /// Grants `len` fresh object ids, or `None` if the id space is exhausted.
    fn allocate(&mut self, len: u64) -> Option<IdBlock> {
        let start = self.next_id;
        self.next_id = start.checked_add(len)?;
        Some(IdBlock { start, len })
    }

    fn commit(&mut self, conn: ObjectId, request_id: RequestId, commit: &CommitRequest) {
        if let Some(outcome) = commit.commit_id.and_then(|id| self.settled_commit(id)) {
            self.send(
                conn,
                &ServerMessage::CommitResult {
                    request_id,
                    outcome,
                },
            );
            return;
        }
        if let Some(reason) = self.storage_trouble() {
            // Fail fast rather than apply what cannot be stored now.
            let outcome = CommitOutcome::StorageUnavailable { reason };
            let result = ServerMessage::CommitResult {
                request_id,
                outcome,
            };
            self.send(conn, &result);
            return;
        }
        let checked = limits::check_commit(&self.config, commit)
            .and_then(|()| self.check_created_ids(conn, commit))
            .and_then(|()| {
                self.connection_type
                    .check_client_commit(&self.registry, &self.store, conn, commit)
                    .map_err(|reason| CommitOutcome::Invalid {
                        reason,
                        limit: None,
                    })
            });
        let started = Instant::now();
        let outcome = match checked.and_then(|()| self.store.commit(&self.registry, commit)) {
            Ok(applied) => {
                if let Some(id) = commit.commit_id {
                    let now = self.clock.now_ms();
                    self.commit_ids.record(id, applied.tid, now);
                }
                self.publish();
                if self.fan_out(Some(conn), &applied, true) {
                    CommitOutcome::CommittedAsSent { tid: applied.tid }
                } else {
                    CommitOutcome::Committed { tid: applied.tid }
                }
            }
            Err(outcome) => outcome,
        };
        observe::applied(&self.status.metrics, started, &outcome);
        self.send(
            conn,
            &ServerMessage::CommitResult {
                request_id,
                outcome,
            },
        );
    }

    /// Refuses a commit that creates an object with an id never granted to this connection.
    fn check_created_ids(
        &self,
        conn: ObjectId,
        commit: &CommitRequest,
    ) -> Result<(), CommitOutcome> {
        let Some(state) = self.conns.get(&conn) else {
            return Ok(());
        };
        // The grants are asked before the store: they answer for nearly every creation, while
        // looking up an id the store does not hold costs a cache miss in a large table.
        let foreign = commit.writes.iter().find(|w| {
            w.value.is_some()
                && self.registry.exists_field_type(w.field).is_some()
                && !state.grants.contains(w.object)
                && self.store.record(w.object).is_none()
        });
        match foreign {
            Some(w) => Err(CommitOutcome::Invalid {
                reason: format!(
                    "object {} cannot be created: its id was not granted to this connection \
                     (create objects only with ids from RequestIds or the Welcome)",
                    w.object
                ),
                limit: None,
            }),
            None => Ok(()),
        }
    }

    /// Pushes an applied commit to every connection that sees part of it, encoding each distinct
    /// filtered result once.
    /// `committer` is the connection that made the commit, `None` for the server's own commits.
    /// With `answer_as_sent` (a client's commit, answered next), returns whether the committer
    /// was left out, to be answered `CommittedAsSent`: it speaks a protocol version that allows
    /// it, and the commit changed for it exactly what its request wrote (see
    /// [`Visibility::saw_all_it_changed`]).
    fn fan_out(
        &mut self,
        committer: Option<ObjectId>,
        applied: &Applied,
        answer_as_sent: bool,
    ) -> bool {
        self.changes
            .record(applied.tid, applied.objects.iter().map(|t| t.id));
        self.status.feed.publish(applied, &self.store);
        let mut encoded: HashMap<Selection, Option<Bytes>> = HashMap::new();
        let mut failed = Vec::new();
        let mut kept = Vec::new();
        let max_frame = self.config.max_frame;
        let store = &self.store;
        let current = current(applied, store);
        let as_sent = committer
            .filter(|_| answer_as_sent)
            .and_then(|c| self.conns.get(&c))
            .is_some_and(|c| c.as_sent && c.visibility.saw_all_it_changed(&current));
        let mut candidates = std::mem::take(&mut self.candidates);
        self.audience
            .candidates(&current, committer, &mut candidates);
        #[cfg(debug_assertions)]
        check_audience(&mut self.conns, &candidates, &current, committer);
        for &id in &candidates {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            let selection = conn
                .visibility
                .select(&current, committer == Some(id), &mut kept);
            for object in kept.drain(..) {
                self.audience.add_object(id, object);
            }
            if selection.is_empty() || (as_sent && committer == Some(id)) {
                continue;
            }
            let frame =
                encoded
                    .entry(selection)
                    .or_insert_with_key(|selection| {
                        match push::encode_commit(selection, &current, applied.tid) {
                            Ok(frame) => Some(frame),
                            Err(e) => {
                                tracing::error!("cannot encode a commit push: {e}");
                                None
                            }
                        }
                    });
            let sent = match frame {
                Some(frame) => durable::queue(
                    self.durable.as_mut(),
                    id,
                    &conn.outbound,
                    frame.clone(),
                    max_frame,
                    durable::OnFailure::Drop,
                ),
                None => {
                    conn.outbound.close(odb_wire::Refusal::Internal {
                        detail: "a commit could not be encoded".into(),
                    });
                    false
                }
            };
            if !sent {
                failed.push(id);
            }
        }
        self.candidates = candidates;
        for object in current.iter().filter(|o| o.record.is_none()) {
            self.audience.forget_object(object.id);
        }
        for id in failed {
            self.drop_conn(id);
        }
        as_sent
    }

    fn subscribe(&mut self, conn: ObjectId, request_id: RequestId, targets: &[SubscriptionTarget]) {
        let planned = match self.plan_subscription(conn, targets) {
            Ok(planned) => planned,
            Err((reason, limit)) => return self.fail_as(conn, request_id, reason, limit),
        };
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        planned.add_to(conn, &mut state.visibility, &mut self.audience);
        let objects = data_of(&self.store, planned.covered.iter().copied());
        let snapshot = Snapshot::new(
            request_id,
            self.store.tid(),
            objects,
            self.config.max_frame / 2,
        );
        self.queue_snapshot(conn, snapshot);
    }

    /// Queues a snapshot on a connection's outbound queue; forgets the connection if it is
    /// closing.
    fn queue_snapshot(&mut self, conn: ObjectId, snapshot: Snapshot) {
        let sent = self
            .conns
            .get(&conn)
            .is_some_and(|state| state.outbound.send_snapshot(snapshot));
        if !sent {
            self.drop_conn(conn);
        }
    }

    /// Checks subscription targets (known ids, the subscription limit) and finds the objects
    /// they cover now; changes nothing.
    fn plan_subscription(
        &self,
        conn: ObjectId,
        targets: &[SubscriptionTarget],
    ) -> Result<Planned, (String, Option<Limit>)> {
        let mut planned = Planned::default();
        for target in targets {
            match target {
                SubscriptionTarget::Type(ty) => {
                    let Some(info) = self.registry.type_info(*ty) else {
                        return Err((format!("unknown type id {ty}"), None));
                    };
                    planned
                        .covered
                        .extend(self.store.members(info.all_index, &Bytes::new()));
                    planned.indices.push((info.all_index, Bytes::new()));
                }
                SubscriptionTarget::Index { index, value } => {
                    if self.registry.index_type(*index).is_none() {
                        return Err((format!("unknown index id {index}"), None));
                    }
                    planned.covered.extend(self.store.members(*index, value));
                    planned.indices.push((*index, value.clone()));
                }
                SubscriptionTarget::Object(id) => {
                    if self.store.record(*id).is_some() {
                        planned.covered.push(*id);
                    }
                    planned.objects.push(*id);
                }
            }
        }
        if !planned.covered.is_sorted_by(|a, b| a < b) {
            planned.covered.sort_unstable();
            planned.covered.dedup();
        }
        let Some(state) = self.conns.get(&conn) else {
            return Ok(planned);
        };
        let (held, new) = state
            .visibility
            .subscription_count(&planned.indices, &planned.objects);
        let limit = self.config.max_subscriptions;
        if held.saturating_add(new) > limit {
            let reason = Limit::SubscriptionsPerConnection.reason(format_args!(
                "{held} subscriptions held and {new} more asked for, over the server's \
                 limit of {limit} per connection; subscribe to a type or an index value \
                 instead of many single objects"
            ));
            return Err((reason, Some(Limit::SubscriptionsPerConnection)));
        }
        Ok(planned)
    }

    /// Cancels subscriptions and tells the connection which objects it no longer sees. Unknown
    /// type or index ids fail the request and change nothing.
    fn unsubscribe(
        &mut self,
        conn: ObjectId,
        request_id: RequestId,
        targets: &[SubscriptionTarget],
    ) {
        let mut indices = Vec::new();
        let mut objects = Vec::new();
        for target in targets {
            match target {
                SubscriptionTarget::Type(ty) => {
                    let Some(info) = self.registry.type_info(*ty) else {
                        return self.fail(conn, request_id, format!("unknown type id {ty}"));
                    };
                    indices.push((info.all_index, Bytes::new()));
                }
                SubscriptionTarget::Index { index, value } => {
                    if self.registry.index_type(*index).is_none() {
                        return self.fail(conn, request_id, format!("unknown index id {index}"));
                    }
                    indices.push((*index, value.clone()));
                }
                SubscriptionTarget::Object(id) => objects.push(*id),
            }
        }
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        let (dropped, unwatched) = state.visibility.remove(&indices, &objects, &self.store);
        for (index, value) in &indices {
            self.audience.remove_index(conn, *index, value);
        }
        for object in unwatched {
            self.audience.remove_object(conn, object);
        }
        let tid = self.store.tid();
        self.send(
            conn,
            &ServerMessage::Unsubscribed {
                request_id,
                tid,
                dropped,
            },
        );
    }

    fn fail(&mut self, conn: ObjectId, request_id: RequestId, reason: String) {
        let failed = ServerMessage::RequestFailed {
            request_id,
            reason,
            limit: None,
        };
        self.send(conn, &failed);
    }

    fn fail_as(
        &mut self,
        conn: ObjectId,
        request_id: RequestId,
        reason: String,
        limit: Option<Limit>,
    ) {
        let failed = ServerMessage::RequestFailed {
            request_id,
            reason,
            limit,
        };
        self.send(conn, &failed);
    }

    /// Queues a message for a connection. Returns `false`, and forgets the connection, if it is
    /// closing.
    fn send(&mut self, conn: ObjectId, message: &ServerMessage) -> bool {
        let Some(state) = self.conns.get(&conn) else {
            return false;
        };
        let sent = match encode_or_log(message) {
            Some(frame) => durable::queue(
                self.durable.as_mut(),
                conn,
                &state.outbound,
                frame,
                self.config.max_frame,
                durable::OnFailure::of(message),
            ),
            None => {
                state.outbound.close(odb_wire::Refusal::Internal {
                    detail: "a message could not be encoded".into(),
                });
                false
            }
        };
        if !sent {
            self.drop_conn(conn);
        }
        sent
    }

    /// Forgets a connection; its `core.Connection` object is deleted at the end of the request.
    fn drop_conn(&mut self, conn: ObjectId) {
        if let Some(state) = self.conns.remove(&conn) {
            self.audience.remove_conn(conn, &state.visibility);
            self.ended.push(conn);
            self.publish();
        }
    }

    fn publish(&self) {
        self.status.tid.store(self.store.tid().0, Ordering::Release);
        self.status
            .connections
            .store(self.conns.len(), Ordering::Release);
        self.status
            .objects
            .store(self.store.object_count(), Ordering::Release);
        self.status
            .conflict_stamps
            .store(self.store.conflict_stamps(), Ordering::Release);
    }
}

/// Checks, in debug builds (the tests), that every connection the audience left out of a
/// commit's candidates sees nothing of it.
#[cfg(debug_assertions)]
fn check_audience(
    conns: &mut BTreeMap<ObjectId, Conn>,
    candidates: &[ObjectId],
    current: &[crate::subscriptions::Current<'_>],
    committer: Option<ObjectId>,
) {
    let mut kept = Vec::new();
    for (&id, conn) in conns.iter_mut() {
        if candidates.binary_search(&id).is_err() {
            let selection = conn
                .visibility
                .select(current, committer == Some(id), &mut kept);
            assert!(
                selection.is_empty() && kept.is_empty(),
                "connection {id} is not a candidate for a commit it sees: {selection:?}"
            );
        }
    }
}

/// Queues a frame unless it is larger than the frame limit, in which case the connection is
/// closed with that reason: the client could not read it. Returns whether it was queued.
fn queue_frame(outbound: &Outbound, frame: Bytes, max_frame: usize) -> bool {
    if frame.len() > max_frame {
        outbound.close(odb_wire::Refusal::Internal {
            detail: format!(
                "a message for this connection encodes to {} bytes, over the frame limit of \
                 {max_frame} bytes",
                frame.len()
            ),
        });
        return false;
    }
    outbound.send(frame)
}

fn encode_or_log(message: &ServerMessage) -> Option<Bytes> {
    match odb_wire::encode(message) {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::error!("cannot encode a server message: {e}");
            None
        }
    }
}

/// A random 128-bit number, from the standard library's randomly seeded hasher.
fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        h.finish()
    };
    (u128::from(half()) << 64) | u128::from(half())
}

/// The complete current data of the live objects among `ids`, encoded for a snapshot.
fn data_of(store: &Store, ids: impl IntoIterator<Item = ObjectId>) -> odb_wire::EncodedObjects {
    let mut out = odb_wire::EncodedObjects::new();
    for id in ids {
        store.encode_object(id, &mut out);
    }
    out
}

/// Waits until `at`; forever without it.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

mod audience;
mod changes;
mod commit_ids;
mod durable;
pub(crate) mod feed;
pub(crate) mod inspect;
mod observe;
mod sessions;

pub(crate) use durable::open;
#[cfg(any(test, feature = "sim"))]
pub(crate) use durable::{open_with_clock, reads_state};

#[cfg(test)]
mod tests;
