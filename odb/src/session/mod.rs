//! The client's session as a synchronous state machine, without I/O: [`ClientCore`].
//!
//! The core owns everything a session is: the schema registry and the id pool (in
//! [`Shared`], where views and transactions read them without the core's lock), the requests
//! waiting for answers, the chunks of subscriptions in flight, the write side of the replica,
//! the session's subscriptions, the commits whose outcome is not known yet, and the reconnect
//! state. A driver moves bytes: it tells the core that a transport is up
//! ([`ClientCore::on_connected`]) or gone ([`ClientCore::on_disconnected`]), hands it every
//! message received ([`ClientCore::on_message`]), writes what [`ClientCore::poll_transmit`]
//! gives, wakes it at [`ClientCore::poll_timeout`] ([`ClientCore::handle_timeout`]), dials when
//! [`ClientCore::poll_dial`] says so, and delivers [`ClientCore::poll_event`]'s answers. The
//! tokio driver is `crate::driver`; the simulation tests drive cores by hand.
//!
//! A session outlives its connections. When one breaks, the core keeps every request: on the
//! next connection it first restores the session (one `Resume` with every subscription and the
//! id blocks it was granted, answered by one consistent snapshot), then asks what became of the
//! commits sent on the broken connection (`QueryCommits`), then sends again what was waiting.
//! Each commit carries a commit id, so the server can tell whether it was applied; a commit
//! never reaches the wire twice. A commit not yet written when the connection broke is
//! reported as not applied (the transaction runs again); one written but not answered is
//! settled by the query: applied (with its tid) or not applied, or, when the server lost its
//! memory (a new database), [`Error::CommitOutcomeUnknown`].

mod answers;
mod as_sent;
mod policy;
mod restore;
#[cfg(test)]
mod sim;
mod switch;
#[cfg(test)]
mod switch_tests;
mod targets;

pub use policy::ReconnectPolicy;
pub(crate) use policy::Rng;
pub(crate) use targets::{Target, TypeKey};

use crate::local::{CommitKind, Shared};
use crate::registry::TypeInfo;
use crate::schema::Schema;
use crate::{Error, Result};
use as_sent::Written;
use bytes::Bytes;
use odb_wire::{
    ClientMessage, CommitId, CommitOutcome, CommitRequest, CommitStatus, DatabaseId, IdBlock,
    ObjectId, ObjectList, RequestId, SchemaIds, ServerMessage, Tid, TypeId,
    COMMITTED_AS_SENT_VERSION, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switch::Switch;
use targets::Targets;

/// How many heartbeat intervals of silence from the server end a connection.
const MISSED_HEARTBEATS: u32 = 4;

/// Where a client's connection stands, as [`Client::status`](crate::Client::status) reports
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Connected: commits go to the server, and the replica follows it.
    Connected,
    /// The connection broke and the client is trying to reconnect. Views read the replica as
    /// it was when the connection broke; transactions wait for the connection.
    Reconnecting {
        /// Attempts made since the connection broke.
        attempt: u32,
        /// When the connection broke.
        since: Instant,
    },
    /// The client is closed for good: closed by the program, or reconnecting stopped (see
    /// [`ReconnectPolicy`]). Every request fails with this reason.
    Closed {
        /// Why.
        reason: String,
    },
}

/// A successful answer to a request.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The schema's ids are in the registry.
    Schema,
    /// The ids are in the pool.
    Ids,
    /// The subscription's data is visible as of this tid.
    Subscribed(Tid),
    /// The cancelled subscriptions no longer apply as of this tid.
    Unsubscribed(Tid),
    /// The commit was applied at this tid, and the replica holds it.
    Committed(Tid),
    /// Every commit the server made before the flush has arrived.
    Flushed(Tid),
}

/// Something the driver must act on.
#[derive(Debug)]
pub(crate) enum Event {
    /// The final answer to a request.
    Answer {
        /// The request.
        id: RequestId,
        /// Its result.
        result: Result<Reply>,
    },
    /// The connection status changed.
    Status(ConnectionStatus),
}

/// What the driver should do about dialing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dial {
    /// Connect to the server URL with this index now, then call [`ClientCore::on_connected`]
    /// or [`ClientCore::on_connect_failed`].
    Now(usize),
    /// Ask again at this time.
    At(Instant),
    /// Nothing to dial: connected, connecting, or closed.
    Idle,
}

/// The settings of a session.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    pub token: String,
    pub name: String,
    pub max_frame: usize,
    pub policy: ReconnectPolicy,
    /// How many server URLs the driver can dial (0: it cannot dial at all).
    pub urls: usize,
    pub retain_history: usize,
    pub seed: u64,
}

/// Where the session's connection stands.
#[derive(Debug)]
enum State {
    /// Not connected; the next attempt is due at `retry_at`.
    Down {
        attempt: u32,
        since: Instant,
        retry_at: Instant,
    },
    /// The driver is connecting, or the hello is on its way.
    Connecting { attempt: u32, since: Instant },
    /// Welcomed by the server.
    Up,
    /// Closed for good.
    Closed { reason: String },
}

/// A request waiting for its answer.
#[derive(Debug)]
enum Pending {
    /// A schema definition; sent again on a new connection until answered.
    Schema {
        schema: &'static Schema,
        /// Asked by the session itself to restore a subscription on a new database.
        internal: bool,
    },
    /// An id grant; sent again on a new connection until answered.
    Ids { count: u64 },
    /// A flush; sent again on a new connection until answered.
    Flush,
    /// A subscription. If its connection breaks, the session's restore answers it.
    Subscribe {
        /// Targets this request added to the session's set (removed again if it fails).
        added: Vec<Target>,
        /// Types whose objects become readable with its data.
        types: Vec<TypeId>,
        /// The connection it was sent on (0: waiting for the restore).
        link: u64,
    },
    /// A cancellation; if its connection breaks, the session's restore answers it.
    Unsubscribe {
        /// The targets it cancels.
        targets: Vec<Target>,
        /// The connection it was sent on (0: waiting for the restore).
        link: u64,
    },
    /// A commit.
    Commit {
        id: CommitId,
        base: Tid,
        /// Handed to the driver for writing.
        sent: bool,
        /// Its connection broke before the answer: to be asked about.
        unsettled: bool,
        /// What it wrote, applied to the replica if the server answers `CommittedAsSent`
        /// (dropped once the commit is unsettled, whose answer then comes from a query).
        writes: Option<Box<Written>>,
    },
    /// The session's restore on a new connection, with the subscriptions and cancellations
    /// it answers (those made while it could not be sent).
    Resume { answers: Vec<RequestId> },
    /// A question about unsettled commits (their request ids).
    Query { commits: Vec<RequestId> },
}

/// What a commit was made from, checked before it is sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    /// The connection the ids of the objects it created were granted on (`None`: it created
    /// none; `u64::MAX`: several).
    pub ids_link: Option<u64>,
    /// The replica generation its snapshot read.
    pub generation: u64,
}

/// The client's session: see the module documentation.
pub(crate) struct ClientCore {
    shared: Arc<Shared>,
    config: CoreConfig,
    rng: Rng,
    /// The commit-id session: random, one per client.
    session: u128,
    next_commit: u64,
    next_request: u64,
    state: State,
    /// Connection generation, counting from 1; 0 before the first.
    link: u64,
    /// The URL the next attempt dials.
    next_url: usize,
    /// The database of the last welcome.
    database: Option<DatabaseId>,
    connection: ObjectId,
    /// Negotiated on the current connection.
    max_frame: usize,
    heartbeat: Duration,
    last_received: Instant,
    next_heartbeat: Instant,
    /// Why the server said it would close the connection.
    closing: Option<odb_wire::Refusal>,
    requests: HashMap<RequestId, Pending>,
    /// Encoded frames for the driver, with the request each belongs to.
    outbox: VecDeque<(Option<RequestId>, Bytes)>,
    events: VecDeque<Event>,
    targets: Targets,
    /// Every schema defined on the current database, to define again on a new one.
    schemas: Vec<&'static Schema>,
    /// Schemas still to be defined before the restore can be sent (a new database).
    redefining: usize,
    /// While following a new database: its registry and how far the switch is.
    switch: Option<Switch>,
    /// The replica's generation (mirrors [`crate::local::Local::generation`]).
    generation: u64,
    /// Id blocks granted on earlier connections to the current database.
    granted: Vec<IdBlock>,
    /// Chunks of subscriptions and restores in flight.
    buffers: HashMap<RequestId, Vec<ObjectList>>,
    /// While a restore is on its way: the commits pushed meanwhile. The replica is still at its
    /// state from before the break, so a newer commit cannot be applied before the restore's
    /// snapshot; those the snapshot does not hold are applied after it.
    restoring: Option<Vec<odb_wire::CommitData>>,
    /// Whether the current connection's server may answer commits `CommittedAsSent` (it
    /// speaks protocol version 3 or later): only then are a commit's writes kept until its
    /// answer.
    as_sent: bool,
}

impl ClientCore {
    /// A session that is not connected yet; the driver connects first thing.
    pub fn new(config: CoreConfig, now: Instant) -> ClientCore {
        let mut rng = Rng::new(config.seed);
        let session = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        let shared = Arc::new(Shared::new(Tid(0)));
        shared
            .local
            .write()
            .replica
            .set_retain(config.retain_history);
        ClientCore {
            shared,
            max_frame: config.max_frame,
            config,
            rng,
            session,
            next_commit: 1,
            next_request: 1,
            state: State::Down {
                attempt: 0,
                since: now,
                retry_at: now,
            },
            link: 0,
            next_url: 0,
            database: None,
            connection: ObjectId(0),
            heartbeat: Duration::from_secs(1),
            last_received: now,
            next_heartbeat: now,
            closing: None,
            requests: HashMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            targets: Targets::default(),
            schemas: Vec::new(),
            redefining: 0,
            switch: None,
            generation: 0,
            granted: Vec::new(),
            buffers: HashMap::new(),
            restoring: None,
            as_sent: false,
        }
    }

    /// The state views and transactions read.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The connection status.
    pub fn status(&self) -> ConnectionStatus {
        match &self.state {
            // A new database is not followed until its data has arrived.
            State::Up => match &self.switch {
                Some(switch) => ConnectionStatus::Reconnecting {
                    attempt: switch.attempt,
                    since: switch.since,
                },
                None => ConnectionStatus::Connected,
            },
            State::Down { attempt, since, .. } | State::Connecting { attempt, since } => {
                ConnectionStatus::Reconnecting {
                    attempt: *attempt,
                    since: *since,
                }
            }
            State::Closed { reason } => ConnectionStatus::Closed {
                reason: reason.clone(),
            },
        }
    }

    /// Why the session is closed, if it is.
    pub fn closed_reason(&self) -> Option<&str> {
        match &self.state {
            State::Closed { reason } => Some(reason),
            _ => None,
        }
    }

    /// Whether the driver's transport should stay open: connected, or connecting.
    pub fn transport_open(&self) -> bool {
        matches!(self.state, State::Up | State::Connecting { .. })
    }

    /// Whether [`ClientCore::poll_transmit`] has frames.
    pub fn has_transmit(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Whether connected and welcomed.
    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up)
    }

    /// Whether requests go out now: connected, and not switching to a new database (whose
    /// ids the client does not use before its data has arrived).
    fn ready(&self) -> bool {
        self.is_up() && self.switch.is_none()
    }

    // ---- driver interface -------------------------------------------------------------

    /// Whether and when the driver should connect.
    pub fn poll_dial(&mut self, now: Instant) -> Dial {
        match self.state {
            State::Down {
                attempt,
                since,
                retry_at,
            } if self.config.urls > 0 => {
                if now < retry_at {
                    return Dial::At(retry_at);
                }
                let url = self.next_url % self.config.urls;
                self.next_url = self.next_url.wrapping_add(1);
                self.state = State::Connecting {
                    attempt: attempt + 1,
                    since,
                };
                self.events.push_back(Event::Status(self.status()));
                Dial::Now(url)
            }
            _ => Dial::Idle,
        }
    }

    /// A transport is up: the hello goes out first.
    pub fn on_connected(&mut self, now: Instant) {
        if let State::Down { attempt, since, .. } = self.state {
            self.state = State::Connecting { attempt, since };
        }
        self.outbox.clear();
        self.closing = None;
        self.last_received = now;
        let hello = ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: self.config.token.clone(),
            client_name: self.config.name.clone(),
            oldest_protocol_version: OLDEST_PROTOCOL_VERSION,
        };
        match odb_wire::encode(&hello) {
            Ok(frame) => self.outbox.push_back((None, frame)),
            Err(e) => self.close(format!("cannot encode the hello: {e}")),
        }
    }

    /// Connecting failed (dialing, TLS, or the hello). `permanent` errors (a refused token, no
    /// common protocol version) close the session; others are tried again after a backoff.
    pub fn on_connect_failed(&mut self, reason: String, permanent: bool, now: Instant) {
        if permanent {
            self.close(reason);
            return;
        }
        let (attempt, since) = match self.state {
            State::Connecting { attempt, since } | State::Down { attempt, since, .. } => {
                (attempt, since)
            }
            State::Up => (0, now),
            State::Closed { .. } => return,
        };
        self.schedule_retry(attempt, since, reason, now);
    }

    /// The connection broke (or was closed by the core: see [`ClientCore::handle_timeout`]).
    pub fn on_disconnected(&mut self, reason: String, now: Instant) {
        let said = self.closing.take();
        let reason = match &said {
            Some(said) => format!("{reason} (the server said: {said})"),
            None => reason,
        };
        // A reason that does not pass (a protocol violation, exhausted ids) ends the session.
        if said.as_ref().is_some_and(|said| said.is_permanent()) {
            self.close(reason);
            return;
        }
        // A server that stepped down or is stopping says so on purpose: another server (a
        // standby taking over, or the same one restarting) is worth trying at once.
        let at_once = matches!(
            said,
            Some(odb_wire::Refusal::NotLeader { .. } | odb_wire::Refusal::ShuttingDown)
        );
        match self.state {
            State::Closed { .. } => return,
            State::Connecting { attempt, since } => {
                self.schedule_retry(attempt, since, reason, now);
                return;
            }
            State::Down { .. } => return,
            State::Up => {}
        }
        tracing::info!(%reason, "connection to the server lost");
        self.shared.set_connected(false);
        self.outbox.clear();
        self.buffers.clear();
        self.restoring = None;
        // A switch not finished starts again on the next connection; the registry and replica
        // are still the old database's.
        self.switch = None;
        self.redefining = 0;
        if !self.config.policy.allows(0) || self.config.urls == 0 {
            self.close(reason);
            return;
        }
        let ids: Vec<RequestId> = self.requests.keys().copied().collect();
        for id in ids {
            let Some(pending) = self.requests.get_mut(&id) else {
                continue;
            };
            match pending {
                Pending::Commit {
                    sent: true,
                    unsettled,
                    writes,
                    ..
                } => {
                    *unsettled = true;
                    *writes = None;
                }
                Pending::Commit { sent: false, .. } => {
                    self.requests.remove(&id);
                    self.answer(
                        id,
                        Err(Error::CommitNotApplied {
                            reason: format!("the connection broke before it was sent: {reason}"),
                        }),
                    );
                }
                Pending::Resume { .. } | Pending::Query { .. } => {
                    self.requests.remove(&id);
                }
                Pending::Schema { internal: true, .. } => {
                    self.requests.remove(&id);
                }
                Pending::Subscribe { link, .. } | Pending::Unsubscribe { link, .. } => *link = 0,
                Pending::Schema { .. } | Pending::Ids { .. } | Pending::Flush => {}
            }
        }
        let wait = if at_once {
            Duration::ZERO
        } else {
            self.rng.jitter(self.config.policy.delay(1))
        };
        self.state = State::Down {
            attempt: 0,
            since: now,
            retry_at: now + wait,
        };
        self.events.push_back(Event::Status(self.status()));
    }

    /// The next frame to write.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let (id, frame) = self.outbox.pop_front()?;
        if let Some(Pending::Commit { sent, .. }) = id.and_then(|id| self.requests.get_mut(&id)) {
            *sent = true;
        }
        Some(frame)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`ClientCore::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Up | State::Connecting { .. } => Some(self.next_heartbeat.min(self.silence())),
            State::Down { retry_at, .. } => Some(retry_at),
            State::Closed { .. } => None,
        }
    }

    /// Sends heartbeats, and ends a connection the server has been silent on for too long.
    /// Returns `true` when the connection was ended: the driver drops its transport.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.state {
            State::Up | State::Connecting { .. } => {
                if now >= self.silence() {
                    let limit = self.heartbeat * MISSED_HEARTBEATS;
                    self.on_disconnected(
                        format!("the server sent nothing for {limit:?} (not even a heartbeat)"),
                        now,
                    );
                    return true;
                }
                if now >= self.next_heartbeat && self.is_up() {
                    if let Ok(frame) = odb_wire::encode(&ClientMessage::Heartbeat) {
                        self.outbox.push_back((None, frame));
                    }
                    self.next_heartbeat = now + self.heartbeat;
                }
                false
            }
            _ => false,
        }
    }

    /// Closes the session for good: every request fails with `reason`.
    pub fn close(&mut self, reason: String) {
        if matches!(self.state, State::Closed { .. }) {
            return;
        }
        tracing::debug!(%reason, "client closed");
        self.shared.set_connected(false);
        self.state = State::Closed {
            reason: reason.clone(),
        };
        self.outbox.clear();
        self.buffers.clear();
        let requests: Vec<(RequestId, Pending)> = self.requests.drain().collect();
        for (id, pending) in requests {
            let error = match pending {
                Pending::Commit { sent: true, .. } => Error::CommitOutcomeUnknown {
                    reason: format!(
                        "the connection closed before the server answered, and the client will not reconnect: {reason}"
                    ),
                },
                Pending::Commit { sent: false, .. } => Error::CommitNotApplied {
                    reason: reason.clone(),
                },
                _ => Error::Disconnected(reason.clone()),
            };
            self.answer(id, Err(error));
        }
        self.shared.publish_closed();
        self.events.push_back(Event::Status(self.status()));
    }

    // ---- commands ---------------------------------------------------------------------

    /// Defines a schema on the server (answered [`Reply::Schema`] once its ids are in the
    /// registry).
    pub fn define_schema(&mut self, schema: &'static Schema) -> Result<RequestId> {
        self.request(Pending::Schema {
            schema,
            internal: false,
        })
    }

    /// Asks for at least `count` more object ids.
    pub fn request_ids(&mut self, count: u64) -> Result<RequestId> {
        self.request(Pending::Ids { count })
    }

    /// Asks for every commit made so far.
    pub fn flush(&mut self) -> Result<RequestId> {
        self.request(Pending::Flush)
    }

    /// Subscribes to targets whose types are defined (answered [`Reply::Subscribed`]). While
    /// the connection is down (or switching to a new database) it waits for the session's
    /// restore.
    pub fn subscribe(&mut self, targets: &[Target]) -> Result<RequestId> {
        self.check_open()?;
        let id = self.next_id();
        let (types, link) = if self.ready() {
            (self.send_targets(id, true, targets)?, self.link)
        } else {
            (Vec::new(), 0)
        };
        let added = self.targets.add(targets);
        self.requests
            .insert(id, Pending::Subscribe { added, types, link });
        Ok(id)
    }

    /// Cancels subscriptions (answered [`Reply::Unsubscribed`]).
    pub fn unsubscribe(&mut self, targets: &[Target]) -> Result<RequestId> {
        self.check_open()?;
        let id = self.next_id();
        let link = if self.ready() {
            self.send_targets(id, false, targets)?;
            self.link
        } else {
            0
        };
        self.targets.remove(targets);
        self.requests.insert(
            id,
            Pending::Unsubscribe {
                targets: targets.to_vec(),
                link,
            },
        );
        Ok(id)
    }

    /// Queues a subscription (or its cancellation) in server ids; returns its types.
    fn send_targets(
        &mut self,
        id: RequestId,
        subscribe: bool,
        targets: &[Target],
    ) -> Result<Vec<TypeId>> {
        let (wire, types) = self.wire_targets(targets)?;
        let message = if subscribe {
            ClientMessage::Subscribe {
                request_id: id,
                targets: wire,
            }
        } else {
            ClientMessage::Unsubscribe {
                request_id: id,
                targets: wire,
            }
        };
        self.queue(Some(id), &message)?;
        Ok(types)
    }

    /// Commits a transaction whose created objects took ids on connection `ids_link` (`None`:
    /// it created nothing). Answered [`Reply::Committed`] or an error:
    /// [`Error::CommitNotApplied`] when the commit could not be sent on the connection its ids
    /// belong to (run the transaction again).
    pub fn commit(&mut self, mut request: CommitRequest, origin: Origin) -> Result<RequestId> {
        self.check_open()?;
        let id = self.next_id();
        let reason = if !self.is_up() {
            Some("the client is not connected")
        } else if self.switch.is_some() || origin.generation != self.generation {
            Some("the server's database was replaced (an in-memory server restarted) after the transaction's snapshot")
        } else if origin.ids_link.is_some_and(|link| link != self.link) {
            Some("its object ids were granted on a connection that broke since")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.answer(
                id,
                Err(Error::CommitNotApplied {
                    reason: reason.into(),
                }),
            );
            return Ok(id);
        }
        let commit_id = CommitId {
            session: self.session,
            seq: self.next_commit,
        };
        self.next_commit += 1;
        let base = request.base_tid;
        request.commit_id = Some(commit_id);
        let message = ClientMessage::Commit {
            request_id: id,
            commit: request,
        };
        self.queue(Some(id), &message)?;
        let writes = match message {
            ClientMessage::Commit { commit, .. } if self.as_sent => {
                Some(Box::new(Written::of(commit)))
            }
            _ => None,
        };
        self.requests.insert(
            id,
            Pending::Commit {
                id: commit_id,
                base,
                sent: false,
                unsettled: false,
                writes,
            },
        );
        Ok(id)
    }

    // ---- internals --------------------------------------------------------------------

    fn next_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    fn check_open(&self) -> Result<()> {
        match &self.state {
            State::Closed { reason } => Err(Error::Disconnected(reason.clone())),
            _ => Ok(()),
        }
    }

    /// Registers a request that is sent again on a new connection until answered; sends it
    /// now if connected.
    fn request(&mut self, pending: Pending) -> Result<RequestId> {
        self.check_open()?;
        let id = self.next_id();
        if self.ready() {
            self.send_request(id, &pending)?;
        }
        self.requests.insert(id, pending);
        Ok(id)
    }

    /// Queues the message of a schema, id or flush request.
    fn send_request(&mut self, id: RequestId, pending: &Pending) -> Result<()> {
        let message = match pending {
            // With a description of each field's type, for tools that decode values.
            Pending::Schema { schema, .. } => schema.define_message(id),
            Pending::Ids { count } => ClientMessage::RequestIds {
                request_id: id,
                count: *count,
            },
            Pending::Flush => ClientMessage::Flush { request_id: id },
            _ => return Ok(()),
        };
        self.queue(Some(id), &message)
    }

    /// Encodes a message for the driver. A message over the frame limit fails alone.
    fn queue(&mut self, id: Option<RequestId>, message: &ClientMessage) -> Result<()> {
        let frame =
            odb_wire::encode_client_message(message).map_err(|e| Error::Encode(e.to_string()))?;
        if frame.len() > self.max_frame {
            return Err(Error::LimitExceeded {
                what: format!(
                    "a request of {} bytes exceeds the maximum frame size of {} bytes; split the transaction or raise the frame limit on both sides",
                    frame.len(),
                    self.max_frame
                ),
            });
        }
        self.outbox.push_back((id, frame));
        Ok(())
    }

    fn answer(&mut self, id: RequestId, result: Result<Reply>) {
        self.events.push_back(Event::Answer { id, result });
    }

    fn silence(&self) -> Instant {
        self.last_received + self.heartbeat * MISSED_HEARTBEATS
    }

    fn schedule_retry(&mut self, failed: u32, since: Instant, reason: String, now: Instant) {
        if !self.config.policy.allows(failed) || self.config.urls == 0 {
            let reason = if failed > 0 && self.config.policy.is_enabled() {
                format!("gave up reconnecting after {failed} attempts: {reason}")
            } else {
                reason
            };
            self.close(reason);
            return;
        }
        tracing::debug!(attempt = failed, %reason, "reconnecting");
        let delay = self.rng.jitter(self.config.policy.delay(failed + 1));
        self.state = State::Down {
            attempt: failed,
            since,
            retry_at: now + delay,
        };
        self.events.push_back(Event::Status(self.status()));
    }

    /// Targets in server ids, and their types.
    fn wire_targets(
        &self,
        targets: &[Target],
    ) -> Result<(Vec<odb_wire::SubscriptionTarget>, Vec<TypeId>)> {
        self.server_registry(|registry| {
            let mut wire = Vec::with_capacity(targets.len());
            let mut types = Vec::with_capacity(targets.len());
            for t in targets {
                let (target, ty) = t.wire(registry).ok_or_else(|| {
                    Error::Invalid(format!(
                        "type {} is not defined on the server yet",
                        t.ty().qualified_name()
                    ))
                })?;
                wire.push(target);
                types.push(ty);
            }
            Ok((wire, types))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odb_wire::Refusal;

    fn welcomed(now: Instant) -> ClientCore {
        let mut core = ClientCore::new(
            CoreConfig {
                token: "t".into(),
                name: "test".into(),
                max_frame: odb_wire::DEFAULT_MAX_FRAME,
                policy: ReconnectPolicy::default(),
                urls: 2,
                retain_history: 0,
                seed: 1,
            },
            now,
        );
        core.on_connected(now);
        core.on_message(
            ServerMessage::Welcome {
                protocol_version: PROTOCOL_VERSION,
                connection: ObjectId(1),
                ids: IdBlock { start: 2, len: 10 },
                tid: Tid(1),
                heartbeat_interval_ms: 1000,
                max_frame: 1 << 20,
                database: DatabaseId(7),
            },
            now,
        );
        assert!(core.is_up());
        core
    }

    #[test]
    fn a_break_waits_before_dialing_but_a_server_that_stepped_down_does_not() {
        let now = Instant::now();
        let mut core = welcomed(now);
        core.on_disconnected("the connection broke".into(), now);
        assert!(matches!(core.poll_dial(now), Dial::At(at) if at > now));

        for said in [
            Refusal::NotLeader {
                detail: "lease lost".into(),
            },
            Refusal::ShuttingDown,
        ] {
            let mut core = welcomed(now);
            core.on_message(ServerMessage::Closing { reason: said }, now);
            core.on_disconnected("the server closed the connection".into(), now);
            assert!(matches!(core.poll_dial(now), Dial::Now(_)));
        }
    }

    #[test]
    fn a_permanent_refusal_closes_the_session() {
        let now = Instant::now();
        let mut core = welcomed(now);
        core.on_message(
            ServerMessage::Closing {
                reason: Refusal::ProtocolViolation {
                    detail: "a second hello".into(),
                },
            },
            now,
        );
        core.on_disconnected("the server closed the connection".into(), now);
        assert!(matches!(core.status(), ConnectionStatus::Closed { .. }));
        assert_eq!(core.poll_dial(now), Dial::Idle);
    }
}
