//! The ODB server: a schema registry, an in-memory store with per-key conflict stamps, a single
//! commit sequencer, per-connection subscriptions, and the connection handling that speaks the
//! [`odb_wire`] protocol over TCP or in process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), odb_server::ServerError> {
//! use odb_server::{Server, ServerConfig};
//!
//! let server = Server::start(ServerConfig::new("token"), "127.0.0.1:0".parse().ok()).await?;
//! println!("listening on {:?}", server.local_addr());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
// Library code answers bad input with errors, never panics: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod admission;
mod auth_throttle;
mod config;
mod connection;
mod error;
mod fault;
mod http;
mod id_grants;
mod id_set;
mod inspector;
#[cfg(feature = "redis")]
pub mod leader;
mod limits;
mod listener;
mod liveness;
mod memory;
mod metrics;
mod outbound;
mod push;
mod registry;
mod sequencer;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod snapshot;
mod stats;
pub mod storage;
mod store;
mod subscriptions;
mod tls;

pub use config::ServerConfig;
pub use error::ServerError;
pub use stats::ServerStats;
pub use tls::{self_signed_names, TlsConfig};

use admission::Admission;
use auth_throttle::AuthThrottle;
use connection::ConnContext;
use odb_wire::Tid;
use sequencer::Status;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::DuplexStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Requests that may wait for the sequencer before connection tasks are slowed down.
const SEQUENCER_QUEUE: usize = 4096;

/// Bytes of request frames that may wait for the sequencer before connection tasks are slowed
/// down, as a multiple of the frame limit (a single frame of any allowed size always fits).
const SEQUENCER_QUEUE_FRAMES: usize = 4;

/// The smallest frame limit a server accepts: below it, a hello with a long token or a small
/// commit would not fit in one frame, and no client could work.
pub const MIN_MAX_FRAME: usize = 4 << 10;

/// How long [`Server::shutdown`] waits for requests to be answered and connections to drain
/// before it stops everything at once.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Buffer size of each direction of an in-process connection.
const IN_PROCESS_BUFFER: usize = 256 << 10;

/// A running server. Dropping it, or calling [`Server::shutdown`], stops every task it started
/// and closes every connection.
pub struct Server {
    ctx: ConnContext,
    status: Arc<Status>,
    fault: Arc<fault::Fault>,
    runtime: tokio::runtime::Handle,
    local_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
}

impl Server {
    /// Starts a server with an empty in-memory database. With `listen`, it also accepts TCP
    /// connections there (port 0 picks a free port; see [`Server::local_addr`]).
    ///
    /// Must be called within a tokio runtime. Fails if the address cannot be bound or a setting
    /// is unusable (zero heartbeat interval, zero id block size, a frame limit under
    /// [`MIN_MAX_FRAME`]).
    pub async fn start(
        config: ServerConfig,
        listen: Option<SocketAddr>,
    ) -> Result<Server, ServerError> {
        Self::start_with(config, listen, None).await
    }

    /// Starts a server on a [`storage::Storage`]: it loads what the storage holds, continues
    /// with its tids, ids and data, and stores every batch of commits before acknowledging
    /// them (see [`storage`]). Otherwise like [`Server::start`]; fails also if the storage
    /// cannot be read or written.
    pub async fn start_with_storage(
        config: ServerConfig,
        listen: Option<SocketAddr>,
        storage: Box<dyn storage::Storage>,
    ) -> Result<Server, ServerError> {
        Self::start_with(config, listen, Some(storage)).await
    }

    async fn start_with(
        config: ServerConfig,
        listen: Option<SocketAddr>,
        storage: Option<Box<dyn storage::Storage>>,
    ) -> Result<Server, ServerError> {
        if config.heartbeat_interval.is_zero() {
            return Err(ServerError::Config(
                "heartbeat_interval must be greater than zero".into(),
            ));
        }
        if config.id_block_size == 0 {
            return Err(ServerError::Config(
                "id_block_size must be at least 1".into(),
            ));
        }
        if config.max_frame < MIN_MAX_FRAME {
            return Err(ServerError::Config(format!(
                "the frame limit of {} bytes is too small to work: a hello or a small commit \
                 would not fit; use at least {MIN_MAX_FRAME} bytes",
                config.max_frame
            )));
        }
        if config.commit_id_window_count == 0 {
            return Err(ServerError::Config(
                "commit_id_window_count must be at least 1".into(),
            ));
        }
        if config.max_connections == 0 || config.max_hello_frame == 0 {
            return Err(ServerError::Config(
                "max_connections and max_hello_frame must be at least 1".into(),
            ));
        }
        if let Some(addr) = listen {
            if !addr.ip().is_loopback() && config.tls.is_none() && !config.allow_plaintext {
                return Err(ServerError::Config(format!(
                    "refusing plaintext TCP on the non-loopback address {addr}: configure TLS \
                     (--tls-cert/--tls-key or --tls-self-signed) or allow plaintext explicitly \
                     (--allow-plaintext)"
                )));
            }
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ServerError::Config("Server::start must run inside a tokio runtime".into())
        })?;
        let listener = match listen {
            Some(addr) => Some(listener::bind(addr).await?),
            None => None,
        };
        let local_addr = listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let http_listener = http::bind(&config).await?;
        let metrics_addr = http_listener.as_ref().map(|l| l.local_addr()).transpose()?;

        let config = Arc::new(config);
        let status = Arc::new(Status::default());
        let stop = CancellationToken::new();
        let halt = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (requests, inbox) = mpsc::channel(SEQUENCER_QUEUE);
        let sequencer = sequencer::open(config.clone(), status.clone(), storage).await?;
        let fault = Arc::new(fault::Fault::default());
        let farewell = Arc::new(std::sync::OnceLock::new());
        let watch = fault::Watch {
            fault: fault.clone(),
            stop: stop.clone(),
            halt: halt.clone(),
            farewell: farewell.clone(),
        };
        let sequencer_halt = halt.clone();
        tracker.spawn(async move {
            let mut inbox = inbox;
            fault::supervise(sequencer.run(&mut inbox, sequencer_halt), watch).await;
            // Closed only now: a connection that can no longer hand a request to a failed
            // sequencer finds the server already stopping, with the reason to pass on.
            drop(inbox);
        });

        let outbound_budget = config.outbound_budget();
        tracing::info!(
            "outbound queues: at most {} bytes per connection, {outbound_budget} bytes for all",
            config.outbound_limit_bytes
        );
        let ctx = ConnContext {
            connections: Arc::new(Semaphore::new(
                config.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            refusals: Arc::new(Semaphore::new(connection::MAX_REFUSALS)),
            queued_bytes: Arc::new(Semaphore::new(connection::queue_budget(
                config.max_frame,
                SEQUENCER_QUEUE_FRAMES,
            ))),
            auth_throttle: Arc::new(AuthThrottle::default()),
            admission: Arc::new(Admission::new(config.hello_cap_per_address())),
            refusal_log: Arc::default(),
            queues: Arc::new(outbound::Totals::new(outbound_budget)),
            config,
            sequencer: requests,
            stop,
            halt,
            farewell,
            tracker,
            metrics: status.metrics.clone(),
        };
        if let Some(http_listener) = http_listener {
            let state = http::HttpState::new(
                status.clone(),
                ctx.queues.clone(),
                ctx.sequencer.clone(),
                ctx.config.clone(),
                ctx.auth_throttle.clone(),
                ctx.stop.clone(),
            );
            let span = tracing::info_span!("metrics", addr = ?metrics_addr);
            let task = http::serve(http_listener, state, ctx.stop.clone(), ctx.tracker.clone());
            ctx.tracker.spawn(task.instrument(span));
        }
        if let Some(listener) = listener {
            let span = tracing::info_span!("listener", addr = ?local_addr);
            ctx.tracker
                .spawn(listener::accept_loop(listener, ctx.clone()).instrument(span));
        }
        Ok(Server {
            ctx,
            status,
            fault,
            runtime,
            local_addr,
            metrics_addr,
        })
    }

    /// The address the server listens on, if it was started with one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The address of the metrics endpoint, if
    /// [`ServerConfig::metrics_addr`] was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Opens a connection inside this process. The returned stream is the client end and speaks
    /// exactly the protocol of a TCP connection, starting with `Hello`.
    ///
    /// Fails with [`ServerError::Stopped`] once the server is shutting down.
    pub fn connect_in_process(&self) -> Result<DuplexStream, ServerError> {
        if self.ctx.stop.is_cancelled() {
            return Err(ServerError::Stopped);
        }
        let (client, server) = tokio::io::duplex(IN_PROCESS_BUFFER);
        let peer = connection::Peer {
            name: "in-process".into(),
            ip: None,
        };
        match self.ctx.connections.clone().try_acquire_owned() {
            Ok(permit) => {
                let task = connection::serve(self.ctx.clone(), server, peer, permit, None);
                self.ctx.tracker.spawn_on(task, &self.runtime);
            }
            Err(_) => {
                let reason = connection::server_full(&self.ctx);
                let task = connection::refuse(self.ctx.clone(), server, peer, reason);
                self.ctx.tracker.spawn_on(task, &self.runtime);
            }
        }
        Ok(client)
    }

    /// Why the server failed on its own, if it did: its sequencer, through which every
    /// request goes, panicked (a bug, or a [`storage::Storage`] backend that panicked) or
    /// stopped unasked. A failed server has stopped listening and closes every connection,
    /// telling clients why ([`odb_wire::Refusal::Internal`], after which they reconnect); it
    /// cannot recover: shut it down and start a new one. `odb-server` exits with an error, for
    /// its supervisor to restart it. Every commit acknowledged before the failure was stored
    /// first (with durable storage), and a client whose commit was in flight learns its
    /// outcome when it resumes its session on the new server.
    pub fn failure(&self) -> Option<String> {
        self.fault.reason().map(str::to_string)
    }

    /// Waits until the server fails on its own (see [`Server::failure`]) and returns why.
    /// Never returns while the server works, nor when it is shut down.
    pub async fn failed(&self) -> String {
        self.fault.raised().await
    }

    /// The tid of the last commit (`Tid(0)` before the first).
    pub fn current_tid(&self) -> Tid {
        Tid(self.status.tid.load(Ordering::Acquire))
    }

    /// How many authenticated connections are live.
    pub fn connection_count(&self) -> usize {
        self.status.connections.load(Ordering::Acquire)
    }

    /// The server's counters: tid, connections, objects, conflict-history size and what is
    /// queued for clients. Cheap (a few atomic reads); never waits for the sequencer.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            tid: self.current_tid(),
            connections: self.connection_count(),
            objects: self.status.objects.load(Ordering::Acquire),
            conflict_stamps: self.status.conflict_stamps.load(Ordering::Acquire),
            outbound_bytes: self.ctx.queues.bytes.load(Ordering::Acquire),
            outbound_snapshots: self.ctx.queues.snapshots.load(Ordering::Acquire),
        }
    }

    /// Stops the server like [`Server::shutdown`], telling every client `reason` instead of
    /// "shutting down" (a leader that lost its lease says "not the leader", so that clients
    /// look for the new one).
    pub async fn shutdown_with_reason(self, reason: odb_wire::Refusal) {
        let _ = self.ctx.farewell.set(reason);
        self.shutdown().await;
    }

    /// Shuts the server down gracefully and waits until every task it started has finished:
    /// stops accepting connections and reading requests, answers and stores every request
    /// already received, then closes each connection once what is queued for it has gone out
    /// (telling the client the server is shutting down). Whatever is still running after
    /// [`SHUTDOWN_GRACE`] is stopped at once.
    pub async fn shutdown(self) {
        self.ctx.stop.cancel();
        let (reply, done) = tokio::sync::oneshot::channel();
        let drained = async {
            if self
                .ctx
                .sequencer
                .send(sequencer::Request::Shutdown { reply })
                .await
                .is_ok()
            {
                let _ = done.await;
            }
            self.ctx.tracker.close();
            self.ctx.tracker.wait().await;
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
            tracing::warn!("still busy after {SHUTDOWN_GRACE:?} of shutting down: stopping now");
        }
        self.ctx.halt.cancel();
        self.ctx.tracker.close();
        self.ctx.tracker.wait().await;
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("tid", &self.current_tid())
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.ctx.stop.cancel();
        self.ctx.halt.cancel();
    }
}
