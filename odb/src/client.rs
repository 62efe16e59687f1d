//! The client handle: what a program holds to read, write and follow the database.
//!
//! The handle's methods are spread by concern: connecting in `builder.rs`, subscriptions and
//! schemas in `subscribe.rs`, transactions in `transact.rs`; this file has the handle itself,
//! views, and waiting for changes.

use crate::builder::ClientBuilder;
use crate::changes::{wait_for_change, Woken};
use crate::commits::Commits;
use crate::driver::Session;
use crate::local::Shared;
use crate::session::ConnectionStatus;
use crate::view::{Snapshot, View};
use crate::{Error, Handle, Object, Result};
use odb_wire::{ObjectId, Tid};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Default number of times [`Client::transaction`] re-runs a closure after a conflict.
pub const DEFAULT_MAX_RETRIES: u32 = 100;

/// Counts describing a client's local replica (see [`Client::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// The tid of the newest commit applied.
    pub tid: Tid,
    /// Objects held in the replica, including deleted ones an open view or the retained
    /// history (see [`ClientBuilder::retain_history`]) still needs.
    pub replica_objects: usize,
}

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) session: Arc<Session>,
    pub(crate) max_retries: u32,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.session.close("the client was dropped");
    }
}

/// A session with an ODB server, and its local replica. Cheap to clone; the session ends when
/// [`Client::close`] is called or the last clone is dropped.
///
/// The client reconnects by itself when its connection breaks (see
/// [`ClientBuilder::reconnect`]), restores its subscriptions, and settles the commits that
/// were in flight; [`Client::status`] tells where the connection stands.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("connection", &self.connection_id())
            .field("tid", &self.current_tid())
            .finish()
    }
}

impl Client {
    /// Starts building a client for `url`: `odb://host:port`, `odbs://host:port` for TLS, or
    /// several of them separated by commas (tried in turn; see [`ClientBuilder::urls`]).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url.into())
    }

    /// The id the server gave the current connection. It changes when the client reconnects.
    pub fn connection_id(&self) -> ObjectId {
        self.inner.shared.connection()
    }

    /// The handle of the current connection's own [`system::Connection`](crate::system::Connection)
    /// object, readable without subscribing. Its id is [`Client::connection_id`].
    pub fn connection(&self) -> crate::Ref<crate::system::Connection> {
        Handle::from_id(self.connection_id())
    }

    /// Where the connection stands now, and every change from now on: `Connected`,
    /// `Reconnecting { attempt, since }` while the client tries to reconnect, and
    /// `Closed { reason }` once it has stopped for good.
    ///
    /// ```no_run
    /// # async fn demo(db: odb::Client) {
    /// let mut status = db.status();
    /// while status.changed().await.is_ok() {
    ///     eprintln!("connection: {:?}", *status.borrow());
    /// }
    /// # }
    /// ```
    pub fn status(&self) -> watch::Receiver<ConnectionStatus> {
        self.inner.session.status()
    }

    /// Whether the client is connected now. While it is not, views read the replica as it was
    /// when the connection broke (see [`View::may_be_stale`]).
    pub fn is_connected(&self) -> bool {
        self.inner.shared.is_connected()
    }

    /// Closes the session now, without waiting for the last clone to be dropped: requests in
    /// flight fail, and every clone's later requests fail with [`Error::Disconnected`]. Views
    /// still read the replica as it was.
    pub fn close(&self) {
        self.inner.session.close("the client was closed");
    }

    /// The tid of the newest commit this client's replica has applied.
    pub fn current_tid(&self) -> Tid {
        self.inner.shared.local.read().replica.tid()
    }

    /// The tid of the newest commit applied to this client's replica that created, wrote or
    /// deleted an object of type `T` (as far as this client sees it), or `Tid(0)` if none did
    /// since the client connected.
    pub fn type_tid<T: Object>(&self) -> Tid {
        let Some(info) = self.inner.shared.type_info(T::type_def()) else {
            return Tid(0);
        };
        let local = self.inner.shared.local.read();
        local
            .type_tids
            .get(&info.type_id)
            .copied()
            .unwrap_or(Tid(0))
    }

    /// Every commit applied to this client's replica from now on, in tid order, as a
    /// [`Stream`](futures::Stream) of [`AppliedCommit`](crate::AppliedCommit)s.
    ///
    /// Subscriptions' initial data, objects dropped by an unsubscription and the restore after
    /// a reconnection are not commits and do not appear. The stream buffers a bounded number of
    /// changes for a slow consumer; one that falls further behind is not allowed to hold the
    /// client's memory: its stream ends, and [`Commits::lagged`] says so. It also ends when the
    /// client closes; it goes on across reconnections.
    pub fn commits(&self) -> Commits {
        Commits::new(self.inner.shared.changes.subscribe())
    }

    /// Counts describing the local replica, for monitoring memory use.
    pub fn stats(&self) -> ClientStats {
        let local = self.inner.shared.local.read();
        ClientStats {
            tid: local.replica.tid(),
            replica_objects: local.replica.object_count(),
        }
    }

    /// Why the client closed, or `None` while it is open (connected or reconnecting).
    pub fn closed_reason(&self) -> Option<String> {
        self.inner.session.closed_reason()
    }

    /// Runs `f` on a read-only snapshot of the local replica. Never contacts the server, and
    /// works while the client reconnects (see [`View::may_be_stale`]).
    ///
    /// `f`'s result is returned as is, so its error may be the program's own type (one that
    /// [`Error`] converts into, for `?` on reads); when nothing else fixes the error type, name
    /// it: `Ok::<_, odb::Error>(value)`.
    pub fn view<T, E>(&self, f: impl FnOnce(&View<'_>) -> Result<T, E>) -> Result<T, E> {
        let view = View::new(Snapshot::open(&self.inner.shared));
        f(&view)
    }

    /// Runs `f` on a read-only view of the state right after commit `tid`, as this client saw
    /// it (its subscriptions at the time included). Never contacts the server.
    ///
    /// Only recent states are kept, as many as [`ClientBuilder::retain_history`] says. A `tid`
    /// older than that fails with [`Error::HistoryUnavailable`]; a `tid` newer than
    /// [`Client::current_tid`] fails with [`Error::Invalid`]; these errors come back converted
    /// into `f`'s error type, which is returned as is (see [`Client::view`]).
    pub fn view_at<T, E: From<Error>>(
        &self,
        tid: Tid,
        f: impl FnOnce(&View<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let view = View::new(Snapshot::open_at(&self.inner.shared, tid)?);
        f(&view)
    }

    /// Waits until `condition` holds on the local replica, or fails with [`Error::Timeout`].
    ///
    /// The condition runs on a fresh view now, and again only when a change applied to the
    /// replica touches something it read last time: a field it read (or the existence of an
    /// object it read), or an index value it looked up (including a type's set of all objects).
    /// A condition that looks at the view's tid runs again after every change. There is no
    /// polling. While the client reconnects it keeps waiting; it fails with
    /// [`Error::Disconnected`] if the client closes first, and returns the condition's own
    /// error if it fails.
    ///
    /// Unlike views and transactions, the condition's error type is ODB's own [`Error`]: a
    /// condition is a question about the data, and the usual `|v| Ok(x.value(v)? > 3)` needs
    /// no annotation this way.
    pub async fn wait_for(
        &self,
        mut condition: impl FnMut(&View<'_>) -> Result<bool>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Listening starts before the first evaluation, so no change can slip in between.
        let mut changes = self.inner.shared.changes.subscribe();
        loop {
            let (reads, at) = {
                let view = View::recording(Snapshot::open(&self.inner.shared));
                match condition(&view) {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    // The database was replaced while the condition read: ask it again on
                    // the new one.
                    Err(Error::DatabaseReplaced) => continue,
                    Err(e) => return Err(e),
                }
                view.into_reads()
            };
            if let Some(reason) = self.closed_reason() {
                return Err(Error::Disconnected(reason));
            }
            match wait_for_change(&mut changes, &reads, at, Some(deadline), |_| {}).await {
                Woken::Changed => {}
                Woken::TimedOut => {
                    return Err(Error::Timeout(timeout, "the condition to hold".into()))
                }
                Woken::Closed => return Err(Error::Disconnected("the client was closed".into())),
            }
        }
    }
}
