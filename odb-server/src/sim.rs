//! A deterministic, single-threaded harness that runs the real sequencer without I/O, for tests
//! of clients against the server. Enabled by the `sim` feature; not meant for production use.
//!
//! [`SimServer`] owns a [`Sequencer`](crate::sequencer) and drives its synchronous request
//! handling directly: no tokio runtime, no timers, no threads. Each connection is a
//! [`SimConn`] handle; frames a test sends go through the same hello checks and decoding as a
//! real connection's, and frames it receives come off the connection's real outbound queue,
//! subscription data one chunk at a time, exactly as the connection's writer takes them. So a
//! test decides the interleaving of every delivery, and can cut a connection at any frame,
//! including in the middle of a snapshot.
//!
//! With a [`MemoryStorage`], the server stores every request's changes before its answers can
//! be received, as the real server's group commit does. [`SimServer::set_auto_settle`] turns
//! that off, so that answers wait for [`SimServer::settle`]: a [`SimServer::restart`] before it
//! then loses the batch, as a crash between applying a commit and storing it would.
//!
//! What is not simulated: heartbeats and idle timeouts, the connection limit, the byte budget of
//! queued requests, and TLS.
//!
//! ```
//! use odb_server::sim::SimServer;
//! use odb_server::ServerConfig;
//! use odb_wire::{ClientMessage, ServerMessage, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION};
//!
//! let mut server = SimServer::new(ServerConfig::new("token"), None).unwrap();
//! let conn = server.connect();
//! server.send(
//!     &conn,
//!     &ClientMessage::Hello {
//!         protocol_version: PROTOCOL_VERSION,
//!         token: "token".into(),
//!         client_name: "example".into(),
//!         oldest_protocol_version: OLDEST_PROTOCOL_VERSION,
//!     },
//! );
//! assert!(matches!(server.recv(&conn), Some(ServerMessage::Welcome { .. })));
//! ```

use crate::config::ServerConfig;
use crate::connection::accept_hello;
use crate::error::ServerError;
use crate::outbound::{self, Outbound, OutboundReceiver, Totals};
use crate::sequencer::{open_with_clock, reads_state, Clock, Request, Sequencer, Status};
use crate::storage::{MemoryStorage, StorageError};
use bytes::Bytes;
use odb_wire::{ClientMessage, DatabaseId, ObjectId, Refusal, ServerMessage, Tid};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Where the simulated clock starts, in milliseconds since the Unix epoch (a fixed time, so
/// that runs are reproducible).
const SIM_EPOCH_MS: u64 = 1_700_000_000_000;

/// A handle on one simulated connection. Handles of connections that ended (or that belong to
/// a server state dropped by [`SimServer::restart`]) stay valid to use: sends are ignored and
/// nothing is received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SimConn(u64);

/// What a connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for its hello.
    Hello,
    /// Registered under this id.
    Open(ObjectId),
    /// The server stopped reading it; what was queued can still be received.
    Draining,
}

struct SimConnState {
    phase: Phase,
    outbound: Outbound,
    queue: OutboundReceiver,
    closed: CancellationToken,
    /// Frames sent outside the outbound queue (a refused hello).
    early: VecDeque<Bytes>,
}

/// A simulated server; see the module documentation.
pub struct SimServer {
    config: Arc<ServerConfig>,
    storage: Option<MemoryStorage>,
    seq: Sequencer,
    clock: Arc<AtomicU64>,
    conns: BTreeMap<u64, SimConnState>,
    next_handle: u64,
    auto_settle: bool,
    totals: Arc<Totals>,
}

impl std::fmt::Debug for SimServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimServer")
            .field("tid", &self.current_tid())
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl SimServer {
    /// Starts a server: on `storage` (loading what it holds) if given, else with an empty
    /// in-memory database.
    ///
    /// Fails if the storage cannot be read or written, or the core schema cannot be defined.
    pub fn new(config: ServerConfig, storage: Option<MemoryStorage>) -> Result<Self, ServerError> {
        let config = Arc::new(config);
        let clock = Arc::new(AtomicU64::new(SIM_EPOCH_MS));
        let seq = start(&config, storage.as_ref(), &clock)?;
        Ok(SimServer {
            config,
            storage,
            seq,
            clock,
            conns: BTreeMap::new(),
            next_handle: 1,
            auto_settle: true,
            totals: Arc::default(),
        })
    }

    /// Drops every connection and all in-memory state, and starts again as a fresh server
    /// process would: from what the storage holds, or, without one, with an empty database
    /// of a new identity. Changes not settled yet are lost. The simulated clock keeps going.
    ///
    /// Fails as [`SimServer::new`] does.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.conns.clear();
        self.seq = start(&self.config, self.storage.as_ref(), &self.clock)?;
        Ok(())
    }

    /// Opens a connection; the first frame sent on it must be a hello.
    pub fn connect(&mut self) -> SimConn {
        let handle = self.next_handle;
        self.next_handle += 1;
        let closed = CancellationToken::new();
        let (outbound, queue) = outbound::channel(
            self.config.outbound_limit_bytes,
            closed.clone(),
            self.totals.clone(),
        );
        self.conns.insert(
            handle,
            SimConnState {
                phase: Phase::Hello,
                outbound,
                queue,
                closed,
                early: VecDeque::new(),
            },
        );
        SimConn(handle)
    }

    /// Sends a message, encoded as a client would.
    pub fn send(&mut self, conn: &SimConn, message: &ClientMessage) {
        match odb_wire::encode(message) {
            Ok(frame) => self.send_frame(conn, frame),
            Err(e) => tracing::error!("cannot encode a client message: {e}"),
        }
    }

    /// Sends one frame as the server would read it off the socket: checked as a hello first,
    /// then decoded and handed to the sequencer. Frames on a connection that ended are ignored.
    pub fn send_frame(&mut self, conn: &SimConn, frame: Bytes) {
        let Some(state) = self.conns.get(&conn.0) else {
            return;
        };
        match state.phase {
            Phase::Hello => self.hello(conn.0, &frame),
            Phase::Open(id) => self.message(conn.0, id, &frame),
            Phase::Draining => {}
        }
    }

    /// The next message the server sent on this connection, if one is ready. `None` also once
    /// the connection has ended and everything it was sent has been received.
    ///
    /// # Panics
    ///
    /// If the server sent a frame that does not decode: a bug this harness exists to find.
    pub fn recv(&mut self, conn: &SimConn) -> Option<ServerMessage> {
        let frame = self.recv_frame(conn)?;
        match odb_wire::decode_server_message(&frame) {
            Ok(message) => Some(message),
            Err(e) => panic!("the server sent a frame that does not decode: {e}"),
        }
    }

    /// Like [`SimServer::recv`], without decoding.
    pub fn recv_frame(&mut self, conn: &SimConn) -> Option<Bytes> {
        let state = self.conns.get_mut(&conn.0)?;
        if let Some(frame) = state.early.pop_front() {
            return Some(frame);
        }
        if state.closed.is_cancelled() {
            // The server closed the connection: its writer stops at once.
            self.end(conn.0);
            return None;
        }
        state.queue.try_recv()
    }

    /// Whether the connection is still open: not ended by either side.
    pub fn is_open(&self, conn: &SimConn) -> bool {
        self.conns
            .get(&conn.0)
            .is_some_and(|s| s.phase != Phase::Draining && !s.closed.is_cancelled())
    }

    /// Cuts the connection from the client's side: whatever was queued for it is lost.
    pub fn disconnect(&mut self, conn: &SimConn) {
        self.end(conn.0);
        self.conns.remove(&conn.0);
    }

    /// Whether every request's changes are stored before its answers can be received (the
    /// default). When off, answers wait for [`SimServer::settle`].
    pub fn set_auto_settle(&mut self, on: bool) {
        self.auto_settle = on;
    }

    /// Stores what changed since the last stored batch and releases the answers that waited
    /// for it. Without a storage, does nothing. On failure, the batch is undone and its answers
    /// say so, as in the real server.
    pub fn settle(&mut self) -> Result<(), StorageError> {
        futures::executor::block_on(self.seq.settle())
    }

    /// Moves the clock of commit-id records forward.
    pub fn advance_clock(&mut self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.clock.fetch_add(ms, Ordering::AcqRel);
    }

    /// The tid of the last commit.
    pub fn current_tid(&self) -> Tid {
        self.seq.tid()
    }

    /// The identity of the database.
    pub fn database(&self) -> DatabaseId {
        self.seq.database()
    }

    fn hello(&mut self, handle: u64, frame: &[u8]) {
        let limit = self.config.max_hello_frame.min(self.config.max_frame);
        let accepted = if frame.len() > limit {
            Err(Refusal::NotHello {
                detail: format!(
                    "unreadable first frame: frame of {} bytes over the limit of {limit}",
                    frame.len()
                ),
            })
        } else {
            accept_hello(&self.config, frame)
        };
        let Some(state) = self.conns.get_mut(&handle) else {
            return;
        };
        let hello = match accepted {
            Ok(hello) => hello,
            Err(reason) => {
                if let Ok(frame) = odb_wire::encode(&ServerMessage::Rejected { reason }) {
                    state.early.push_back(frame);
                }
                state.phase = Phase::Draining;
                return;
            }
        };
        let (reply, mut id) = oneshot::channel();
        let outbound = state.outbound.clone();
        self.seq.handle(Request::Register {
            outbound,
            client_name: hello.client_name,
            protocol_version: hello.version,
            reply,
        });
        let phase = match id.try_recv() {
            Ok(id) => Phase::Open(id),
            Err(_) => Phase::Draining,
        };
        if let Some(state) = self.conns.get_mut(&handle) {
            state.phase = phase;
        }
        self.auto_settle();
    }

    fn message(&mut self, handle: u64, id: ObjectId, frame: &[u8]) {
        let limit = self.config.max_frame.min(odb_wire::MAX_FRAME_CAP);
        let message = if frame.len() > limit {
            Err(format!(
                "unreadable frame: frame of {} bytes over the limit of {limit}",
                frame.len()
            ))
        } else {
            match odb_wire::decode_client_message(frame) {
                Ok(ClientMessage::Heartbeat) => return,
                Ok(ClientMessage::Hello { .. }) => {
                    Err("a second Hello on an authenticated connection".into())
                }
                Ok(message) => Ok(message),
                Err(e) => Err(e.to_string()),
            }
        };
        let message = match message {
            Ok(message) => message,
            Err(reason) => return self.protocol_error(handle, reason),
        };
        let request = Request::Message {
            conn: id,
            message,
            _budget: None,
            received: tokio::time::Instant::now(),
        };
        if self.storage.is_some() && reads_state(&request) {
            // A failure is answered to the requests concerned.
            let _ = self.settle();
        }
        self.seq.handle(request);
        self.auto_settle();
    }

    /// Closes a connection that misbehaved, telling it why, as the real connection does.
    fn protocol_error(&mut self, handle: u64, reason: String) {
        if let Some(state) = self.conns.get(&handle) {
            let reason = Refusal::ProtocolViolation { detail: reason };
            if let Ok(frame) = odb_wire::encode(&ServerMessage::Closing { reason }) {
                state.outbound.send(frame);
            }
        }
        self.end(handle);
    }

    /// Tells the sequencer that a connection has ended; it stays only to drain its queue.
    fn end(&mut self, handle: u64) {
        let Some(state) = self.conns.get_mut(&handle) else {
            return;
        };
        let phase = std::mem::replace(&mut state.phase, Phase::Draining);
        if let Phase::Open(conn) = phase {
            self.seq.handle(Request::Disconnect { conn });
            self.auto_settle();
        }
    }

    fn auto_settle(&mut self) {
        if self.auto_settle {
            // A failure is answered to the requests concerned.
            let _ = self.settle();
        }
    }
}

/// Starts a sequencer as a server start would.
fn start(
    config: &Arc<ServerConfig>,
    storage: Option<&MemoryStorage>,
    clock: &Arc<AtomicU64>,
) -> Result<Sequencer, ServerError> {
    let storage = storage.map(|s| Box::new(s.clone()) as Box<dyn crate::storage::Storage>);
    futures::executor::block_on(open_with_clock(
        config.clone(),
        Arc::new(Status::default()),
        storage,
        Clock::Manual(clock.clone()),
    ))
}

#[cfg(test)]
mod tests;
