//! The client handle: connecting, subscribing, views and transactions.

use crate::changes::{wait_for_change, ReadSet, Woken};
use crate::commits::Commits;
use crate::connection::{self, Conn, Reply};
use crate::local::Shared;
use crate::pending::{PendingCommit, PendingSubscription};
use crate::registry::TypeInfo;
use crate::replica::SnapshotAt;
use crate::schema::{IndexValue, Schema};
use crate::transaction::{Finished, Need, Transaction};
use crate::view::{Snapshot, View};
use crate::{Error, Handle, Object, Result};
use odb_wire::{
    ClientMessage, CommitOutcome, CommitRequest, IndexDef, Key, ObjectId, SchemaDef,
    SubscriptionTarget, Tid, TypeDef as WireTypeDef, TypeId,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

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

/// How many times one transaction may stop to have a schema defined or ids granted.
const MAX_NEEDS: u32 = 16;

/// Options for one transaction, given to [`Client::transaction_with`].
///
/// ```
/// # use std::time::Duration;
/// let options = odb::TxOptions::default().max_retries(3).timeout(Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOptions {
    max_retries: Option<u32>,
    timeout: Option<Duration>,
}

impl TxOptions {
    /// How many times the closure is re-run after a conflict before the conflict is returned
    /// (default: the client's [`ClientBuilder::max_retries`]). `0` means no retry.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// The longest the whole transaction (every attempt, commit round trip and retry backoff)
    /// may take; after that it fails with [`Error::Timeout`] (default: no limit).
    ///
    /// A commit already sent when the time runs out is not withdrawn: it may still be applied.
    /// Read the data again (or use [`Client::flush`]) to find out.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// How a transaction attempt ended.
enum Attempt<T> {
    /// The client must provide something before the closure can run to the end.
    Need(Need),
    /// The closure returned a value.
    Done(T, Finished),
    /// The closure returned an error.
    Failed(Error),
}

/// How a successful transaction ended.
pub(crate) enum Outcome {
    /// Its writes were committed at this tid.
    Committed,
    /// It wrote nothing; it read these keys at this snapshot.
    ReadOnly(ReadSet, SnapshotAt),
}

/// Builds a [`Client`]: `Client::builder("odb://127.0.0.1:8000").token("TOKEN").connect()`.
#[derive(Clone)]
pub struct ClientBuilder {
    url: String,
    token: String,
    name: String,
    max_retries: u32,
    max_frame: usize,
    connect_timeout: Duration,
    tls_ca_file: Option<std::path::PathBuf>,
    retain_history: usize,
}

/// Everything but the token, which must not end up in logs.
impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("max_retries", &self.max_retries)
            .field("max_frame", &self.max_frame)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("retain_history", &self.retain_history)
            .finish()
    }
}

impl ClientBuilder {
    /// The service token the server was started with.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    /// A name for this client in the server's logs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many times a transaction is re-run after a conflict before the conflict is returned
    /// (default [`DEFAULT_MAX_RETRIES`]).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Largest frame sent or accepted (default [`odb_wire::DEFAULT_MAX_FRAME`]).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// How many commits back [`Client::view_at`] can read (default 0: only the current
    /// state). The replica keeps the state after each of its `commits` most recent changes
    /// before the newest one, which costs the memory of the values they overwrote.
    pub fn retain_history(mut self, commits: usize) -> Self {
        self.retain_history = commits;
        self
    }

    /// How long to wait for the TCP connection and the server's welcome (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// For `odbs://` URLs: trust the certificates in this PEM file (a CA, or the server's
    /// self-signed certificate, pinned) instead of the system's root certificates. The server's
    /// certificate is always verified, including its name.
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Connects and authenticates.
    ///
    /// `odb://host:port` is plaintext TCP; `odbs://host:port` is TLS, verifying the server's
    /// certificate (see [`ClientBuilder::tls_ca_file`]).
    ///
    /// Fails with [`Error::Unauthorized`] for a wrong token, [`Error::Io`] when nothing
    /// listens at the address, [`Error::Invalid`] for a malformed URL, [`Error::Tls`] when the
    /// server's certificate is not trusted or the handshake fails, and [`Error::Protocol`] when
    /// the server does not speak the ODB protocol (for example a TLS port asked with `odb://`).
    pub async fn connect(self) -> Result<Client> {
        let (scheme, addr) = self.url.split_once("://").ok_or_else(|| {
            Error::Invalid(format!(
                "malformed URL {:?}: expected odb://host:port",
                self.url
            ))
        })?;
        let tls = match scheme {
            "odb" => false,
            "odbs" => true,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown URL scheme {other:?} in {:?}: expected odb://host:port",
                    self.url
                )))
            }
        };
        let addr = addr.trim_end_matches('/').to_string();
        let timeout = self.connect_timeout;
        let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr))
            .await
            .map_err(|_| Error::Timeout(timeout, format!("a TCP connection to {addr}")))?
            .map_err(|e| {
                Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot connect to {addr}: {e}; is odb-server running there?"),
                ))
            })?;
        stream.set_nodelay(true)?;
        if tls {
            let handshake = crate::tls::handshake(stream, &addr, self.tls_ca_file.as_deref());
            let stream = tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| Error::Timeout(timeout, format!("the TLS handshake with {addr}")))??;
            return self.connect_stream(stream).await;
        }
        self.connect_stream(stream).await
    }

    /// Connects over an already open byte stream (for example an in-process pipe to an
    /// embedded server) speaking the ODB protocol.
    pub async fn connect_stream<S>(self, stream: S) -> Result<Client>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let timeout = self.connect_timeout;
        let (conn, welcome, shared) = tokio::time::timeout(
            timeout,
            connection::open(
                stream,
                &self.token,
                &self.name,
                self.max_frame,
                cancel.clone(),
            ),
        )
        .await
        .map_err(|_| Error::Timeout(timeout, "the server's welcome".into()))??;
        shared.local.write().replica.set_retain(self.retain_history);
        let client = Client {
            inner: Arc::new(Inner {
                shared,
                conn,
                cancel,
                connection: welcome.connection,
                max_retries: self.max_retries,
            }),
        };
        // The server pushed this connection's own `core.Connection` object right after the
        // welcome; define the core schema so that it can be read without subscribing.
        let core = crate::core::schema();
        tokio::time::timeout(timeout, client.define_schema(core))
            .await
            .map_err(|_| Error::Timeout(timeout, "the definition of the core schema".into()))??;
        let info = client.known_type(<crate::core::Connection as Object>::type_def())?;
        client
            .inner
            .shared
            .local
            .write()
            .readable
            .insert(info.type_id);
        Ok(client)
    }
}

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: Arc<Conn>,
    cancel: CancellationToken,
    connection: ObjectId,
    max_retries: u32,
}

impl Inner {
    /// The client's default number of conflict retries.
    pub(crate) fn max_retries(&self) -> u32 {
        self.max_retries
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A connection to an ODB server with its local replica. Cheap to clone; the connection closes
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("connection", &self.inner.connection)
            .field("tid", &self.current_tid())
            .finish()
    }
}

impl Client {
    /// Starts building a client for `url`: `odb://host:port`.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            token: String::new(),
            name: std::env::args()
                .next()
                .unwrap_or_else(|| "odb-client".to_string()),
            max_retries: DEFAULT_MAX_RETRIES,
            max_frame: odb_wire::DEFAULT_MAX_FRAME,
            connect_timeout: Duration::from_secs(10),
            tls_ca_file: None,
            retain_history: 0,
        }
    }

    /// The id the server gave this connection.
    pub fn connection_id(&self) -> ObjectId {
        self.inner.connection
    }

    /// The handle of this connection's own [`core::Connection`](crate::core::Connection)
    /// object, readable without subscribing. Its id is [`Client::connection_id`].
    pub fn connection(&self) -> crate::Ref<crate::core::Connection> {
        Handle::from_id(self.inner.connection)
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
    /// Subscriptions' initial data and objects dropped by an unsubscription are not commits
    /// and do not appear. The stream buffers a bounded number of changes for a slow consumer;
    /// one that falls further behind is not allowed to hold the client's memory: its stream
    /// ends, and [`Commits::lagged`] says so. It also ends when the connection closes.
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

    /// Why the connection closed, or `None` while it is open.
    pub fn closed_reason(&self) -> Option<String> {
        self.inner.conn.closed_reason()
    }

    /// Runs `f` on a read-only snapshot of the local replica. Never contacts the server.
    pub fn view<T>(&self, f: impl FnOnce(&View<'_>) -> Result<T>) -> Result<T> {
        let view = View::new(Snapshot::open(&self.inner.shared));
        f(&view)
    }

    /// Runs `f` on a read-only view of the state right after commit `tid`, as this client saw
    /// it (its subscriptions at the time included). Never contacts the server.
    ///
    /// Only recent states are kept, as many as [`ClientBuilder::retain_history`] says. A `tid`
    /// older than that fails with [`Error::HistoryUnavailable`]; a `tid` newer than
    /// [`Client::current_tid`] fails with [`Error::Invalid`].
    pub fn view_at<T>(&self, tid: Tid, f: impl FnOnce(&View<'_>) -> Result<T>) -> Result<T> {
        let view = View::new(Snapshot::open_at(&self.inner.shared, tid)?);
        f(&view)
    }

    /// Waits until `condition` holds on the local replica, or fails with [`Error::Timeout`].
    ///
    /// The condition runs on a fresh view now, and again only when a change applied to the
    /// replica touches something it read last time: a field it read (or the existence of an
    /// object it read), or an index value it looked up (including a type's set of all objects).
    /// A condition that looks at the view's tid runs again after every change. There is no
    /// polling. Fails with [`Error::Disconnected`] if the connection closes first, and returns
    /// the condition's own error if it fails.
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
                if condition(&view)? {
                    return Ok(());
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

    /// Runs `f` in a transaction and commits what it wrote.
    ///
    /// `f` runs synchronously on a snapshot of the local replica (no awaits inside: every read
    /// is local). If the commit conflicts, `f` runs again on a fresh snapshot, up to the
    /// configured number of retries. When this returns `Ok`, the commit is visible in this
    /// client's replica. A closure that writes nothing never contacts the server. An `Err`
    /// returned by `f` is returned as is and nothing is committed.
    pub async fn transaction<T, F>(&self, f: F) -> Result<T>
    where
        F: FnMut(&mut Transaction<'_>) -> Result<T>,
    {
        self.transaction_with(TxOptions::default(), f).await
    }

    /// Like [`Client::transaction`], with per-transaction [`TxOptions`] (retries, timeout).
    ///
    /// Fails with [`Error::Timeout`] when the options' timeout passes before the transaction
    /// committed; see [`TxOptions::timeout`] for what that means for a commit in flight.
    pub async fn transaction_with<T, F>(&self, options: TxOptions, f: F) -> Result<T>
    where
        F: FnMut(&mut Transaction<'_>) -> Result<T>,
    {
        let retries = options.max_retries.unwrap_or(self.inner.max_retries);
        let Some(timeout) = options.timeout else {
            return Ok(self.run_transaction(retries, None, f).await?.0);
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let run = self.run_transaction(retries, Some((deadline, timeout)), f);
        let (value, _) = tokio::time::timeout_at(deadline, run)
            .await
            .map_err(|_| transaction_timeout(timeout))??;
        Ok(value)
    }

    /// Runs `f` once in a transaction and sends its commit without waiting for the answer.
    ///
    /// Returns once the commit is sent; the returned [`PendingCommit`] resolves to `f`'s value
    /// when the server confirms the commit (the commit is then visible locally), or to the
    /// error, [`Error::Conflict`] included: there is no retry. A closure that writes nothing
    /// gives a `PendingCommit` that is already resolved. `f` runs again only if the client
    /// must first define the schema on the server or obtain object ids, before anything is
    /// sent. An error returned by `f` is returned here and nothing is sent.
    ///
    /// Several pending commits from one client are answered in the order they were sent. A
    /// commit whose `PendingCommit` is dropped is not withdrawn.
    pub async fn transaction_async<T, F>(&self, mut f: F) -> Result<PendingCommit<T>>
    where
        F: FnMut(&mut Transaction<'_>) -> Result<T>,
    {
        let mut needs = 0u32;
        loop {
            self.ensure_ids(1).await?;
            match self.attempt(&mut f) {
                Attempt::Need(need) => self.provide(need, &mut needs).await?,
                Attempt::Failed(e) => return Err(e),
                Attempt::Done(value, Finished::ReadOnly(..)) => {
                    return Ok(PendingCommit::ready(value))
                }
                Attempt::Done(value, Finished::Commit(request)) => {
                    let answer = self.inner.conn.start(|request_id| ClientMessage::Commit {
                        request_id,
                        commit: request,
                    })?;
                    return Ok(PendingCommit::sent(self.clone(), answer, value));
                }
            }
        }
    }

    /// Runs a transaction with retries; says whether it committed or what it read. No commit
    /// is sent once the deadline (with the timeout it came from) has passed.
    pub(crate) async fn run_transaction<T, F>(
        &self,
        max_retries: u32,
        deadline: Option<(tokio::time::Instant, Duration)>,
        mut f: F,
    ) -> Result<(T, Outcome)>
    where
        F: FnMut(&mut Transaction<'_>) -> Result<T>,
    {
        let mut conflicts = 0u32;
        let mut needs = 0u32;
        loop {
            self.ensure_ids(1).await?;
            let (value, request) = match self.attempt(&mut f) {
                Attempt::Need(need) => {
                    self.provide(need, &mut needs).await?;
                    continue;
                }
                Attempt::Failed(e) => return Err(e),
                Attempt::Done(value, Finished::ReadOnly(reads, at)) => {
                    return Ok((value, Outcome::ReadOnly(reads, at)))
                }
                Attempt::Done(value, Finished::Commit(request)) => (value, request),
            };
            if let Some((deadline, timeout)) = deadline {
                if tokio::time::Instant::now() >= deadline {
                    return Err(transaction_timeout(timeout));
                }
            }
            match self.commit(request).await {
                Ok(_) => return Ok((value, Outcome::Committed)),
                Err(e) if e.is_retryable() && conflicts < max_retries => {
                    conflicts += 1;
                    backoff(conflicts).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs the closure once on a fresh snapshot.
    fn attempt<T, F>(&self, f: &mut F) -> Attempt<T>
    where
        F: FnMut(&mut Transaction<'_>) -> Result<T>,
    {
        let mut tx = Transaction::new(&self.inner.shared);
        let out = f(&mut tx);
        match tx.take_need() {
            Some(need) => Attempt::Need(need),
            None => match out {
                Ok(value) => Attempt::Done(value, tx.finish()),
                Err(e) => Attempt::Failed(e),
            },
        }
    }

    /// Provides what an attempt needed, counting the attempts in `needs`.
    async fn provide(&self, need: Need, needs: &mut u32) -> Result<()> {
        *needs += 1;
        if *needs > MAX_NEEDS {
            return Err(Error::Invalid(format!(
                "the transaction still needed {need:?} after {MAX_NEEDS} attempts to provide it"
            )));
        }
        match need {
            Need::Schema(schema) => self.define_schema(schema).await,
            Need::Ids(count) => self.ensure_ids(count).await,
        }
    }

    async fn commit(&self, request: CommitRequest) -> Result<Tid> {
        let reply = self
            .inner
            .conn
            .request(|request_id| ClientMessage::Commit {
                request_id,
                commit: request,
            })
            .await?;
        self.commit_outcome(reply)
    }

    /// What the server's answer to a commit means.
    pub(crate) fn commit_outcome(&self, reply: Reply) -> Result<Tid> {
        match reply {
            Reply::Commit(CommitOutcome::Committed { tid }) => Ok(tid),
            Reply::Commit(CommitOutcome::Conflict { key, written_at }) => {
                // Everything this connection can see up to `written_at` has arrived (the stream
                // is FIFO), so the next snapshot may start there even if that commit itself was
                // invisible here; otherwise a retry would reuse the same stale base tid.
                self.inner.shared.advance(written_at);
                Err(Error::Conflict {
                    key: self.describe_key(&key),
                    written_at,
                    raw: key,
                })
            }
            Reply::Commit(CommitOutcome::TooOld { base_tid, horizon }) => {
                Err(Error::TooOld { base_tid, horizon })
            }
            Reply::Commit(
                outcome @ (CommitOutcome::Invalid { .. }
                | CommitOutcome::StorageUnavailable { .. }
                | CommitOutcome::OutcomeUnknown { .. }),
            ) => Err(crate::refusal::commit_error(outcome)),
            other => Err(unexpected(other)),
        }
    }

    fn describe_key(&self, key: &Key) -> String {
        let registry = self.inner.shared.registry.read();
        registry.describe(key)
    }

    /// Waits until this client has seen every commit the server made before this call.
    pub async fn flush(&self) -> Result<Tid> {
        match self
            .inner
            .conn
            .request(|request_id| ClientMessage::Flush { request_id })
            .await?
        {
            Reply::Flushed(tid) => Ok(tid),
            other => Err(unexpected(other)),
        }
    }

    /// Subscribes to every type of a schema. Returns once the data is visible locally, with
    /// the tid at which it became visible.
    pub async fn subscribe(&self, schema: &'static Schema) -> Result<Tid> {
        self.define_schema(schema).await?;
        self.subscribe_nowait(schema).await
    }

    /// Subscribes to every object of type `T`. Returns once the data is visible locally.
    pub async fn subscribe_type<T: Object>(&self) -> Result<Tid> {
        self.define_schema(T::schema()).await?;
        self.subscribe_type_nowait::<T>().await
    }

    /// Subscribes to the objects whose index has a value (made by the generated
    /// `Type::NAME_index(value)`), including objects that get that value later. Returns once
    /// the data is visible locally.
    pub async fn subscribe_index(&self, value: IndexValue) -> Result<Tid> {
        self.define_schema(value.schema).await?;
        self.subscribe_index_nowait(value).await
    }

    /// Subscribes to one object. Returns once the data is visible locally.
    pub async fn subscribe_object<H: Handle>(&self, object: H) -> Result<Tid> {
        self.define_schema(<H::Object as Object>::schema()).await?;
        self.subscribe_object_nowait(object).await
    }

    /// Starts subscribing to every type of a schema without waiting.
    ///
    /// The request is sent at once (after the schema's definition, if this client has not
    /// defined it yet: that round trip then runs on a spawned task). Nothing of the data is
    /// visible until the subscription completes; it then becomes visible atomically, even if
    /// the returned [`PendingSubscription`] is never awaited. Awaiting it gives the tid at
    /// which the data became visible, or the error.
    pub fn subscribe_nowait(&self, schema: &'static Schema) -> PendingSubscription {
        self.with_schema(schema, move |client| {
            let types: Vec<TypeId> = schema
                .types()
                .iter()
                .filter_map(|t| client.inner.shared.type_info(t))
                .map(|t| t.type_id)
                .collect();
            let targets = types.iter().map(|&t| SubscriptionTarget::Type(t)).collect();
            client.send_subscription(targets, types)
        })
    }

    /// Starts subscribing to every object of type `T` without waiting; see
    /// [`Client::subscribe_nowait`].
    pub fn subscribe_type_nowait<T: Object>(&self) -> PendingSubscription {
        self.with_schema(T::schema(), |client| {
            match client.known_type(T::type_def()) {
                Ok(info) => client.send_subscription(
                    vec![SubscriptionTarget::Type(info.type_id)],
                    vec![info.type_id],
                ),
                Err(e) => PendingSubscription::ready(Err(e)),
            }
        })
    }

    /// Starts subscribing to the objects with an index value without waiting; see
    /// [`Client::subscribe_index`] and [`Client::subscribe_nowait`].
    pub fn subscribe_index_nowait(&self, value: IndexValue) -> PendingSubscription {
        self.with_schema(value.schema, move |client| {
            match client.index_target(&value) {
                Ok((target, type_id)) => client.send_subscription(vec![target], vec![type_id]),
                Err(e) => PendingSubscription::ready(Err(e)),
            }
        })
    }

    /// Starts subscribing to one object without waiting; see [`Client::subscribe_nowait`].
    pub fn subscribe_object_nowait<H: Handle>(&self, object: H) -> PendingSubscription {
        self.with_schema(<H::Object as Object>::schema(), move |client| match client
            .known_type(<H::Object as Object>::type_def())
        {
            Ok(info) => client.send_subscription(
                vec![SubscriptionTarget::Object(object.id())],
                vec![info.type_id],
            ),
            Err(e) => PendingSubscription::ready(Err(e)),
        })
    }

    /// Runs `send` now if `schema` is defined here, else after defining it on a spawned task
    /// (or, outside a tokio runtime, when the result is first polled).
    fn with_schema(
        &self,
        schema: &'static Schema,
        send: impl FnOnce(&Client) -> PendingSubscription + Send + 'static,
    ) -> PendingSubscription {
        if self.inner.shared.registry.read().has_types(schema.types()) {
            return send(self);
        }
        let client = self.clone();
        PendingSubscription::spawn(async move {
            client.define_schema(schema).await?;
            send(&client).await
        })
    }

    /// Sends a subscription request; `types` become readable when its data arrives.
    fn send_subscription(
        &self,
        targets: Vec<SubscriptionTarget>,
        types: Vec<TypeId>,
    ) -> PendingSubscription {
        let shared = &self.inner.shared;
        let mut registered = None;
        let sent = self.inner.conn.start(|request_id| {
            shared.subscribing.lock().insert(request_id, types);
            registered = Some(request_id);
            ClientMessage::Subscribe {
                request_id,
                targets,
            }
        });
        match sent {
            Ok(answer) => PendingSubscription::sent(self.inner.conn.clone(), answer),
            Err(e) => {
                if let Some(id) = registered {
                    shared.subscribing.lock().remove(&id);
                }
                PendingSubscription::ready(Err(e))
            }
        }
    }

    /// The subscription target of an index value, and its type.
    fn index_target(&self, value: &IndexValue) -> Result<(SubscriptionTarget, TypeId)> {
        let info = self.known_type(value.ty)?;
        let index = info.index_id(Some(value.index)).ok_or_else(|| {
            Error::Invalid(format!("no index #{} in {}", value.index, value.ty.name))
        })?;
        let target = SubscriptionTarget::Index {
            index,
            value: value.value.clone().map_err(Error::Encode)?,
        };
        Ok((target, info.type_id))
    }

    /// Cancels the subscription to a whole schema made with [`Client::subscribe`]. Objects
    /// this client then sees through no other subscription (and did not create) are removed
    /// from its replica and receive no more commits. Returns the tid at which they were
    /// removed.
    pub async fn unsubscribe(&self, schema: &'static Schema) -> Result<Tid> {
        self.define_schema(schema).await?;
        let targets = schema
            .types()
            .iter()
            .map(|t| {
                self.known_type(t)
                    .map(|i| SubscriptionTarget::Type(i.type_id))
            })
            .collect::<Result<Vec<_>>>()?;
        self.unsubscribe_targets(targets).await
    }

    /// Cancels a type subscription made with [`Client::subscribe_type`]. Objects of `T` this
    /// client then sees through no other subscription (and did not create) are removed from
    /// its replica and receive no more commits.
    pub async fn unsubscribe_type<T: Object>(&self) -> Result<Tid> {
        let info = self.type_info::<T>().await?;
        self.unsubscribe_targets(vec![SubscriptionTarget::Type(info.type_id)])
            .await
    }

    /// Cancels an index subscription made with [`Client::subscribe_index`]; see
    /// [`Client::unsubscribe`] for what happens to the objects.
    pub async fn unsubscribe_index(&self, value: IndexValue) -> Result<Tid> {
        self.define_schema(value.schema).await?;
        let (target, _) = self.index_target(&value)?;
        self.unsubscribe_targets(vec![target]).await
    }

    /// Cancels an object subscription made with [`Client::subscribe_object`]; see
    /// [`Client::unsubscribe`] for what happens to the object.
    pub async fn unsubscribe_object<H: Handle>(&self, object: H) -> Result<Tid> {
        self.type_info::<H::Object>().await?;
        self.unsubscribe_targets(vec![SubscriptionTarget::Object(object.id())])
            .await
    }

    async fn unsubscribe_targets(&self, targets: Vec<SubscriptionTarget>) -> Result<Tid> {
        match self
            .inner
            .conn
            .request(|request_id| ClientMessage::Unsubscribe {
                request_id,
                targets,
            })
            .await?
        {
            Reply::Unsubscribed(tid) => Ok(tid),
            other => Err(unexpected(other)),
        }
    }

    async fn type_info<T: Object>(&self) -> Result<Arc<TypeInfo>> {
        self.define_schema(T::schema()).await?;
        self.known_type(T::type_def())
    }

    fn known_type(&self, ty: &'static crate::TypeDef) -> Result<Arc<TypeInfo>> {
        self.inner.shared.type_info(ty).ok_or_else(|| {
            Error::Invalid(format!(
                "type {} is not part of its schema's declaration",
                ty.qualified_name()
            ))
        })
    }

    /// Declares a schema on the server (done automatically on first use).
    pub async fn define_schema(&self, schema: &'static Schema) -> Result<()> {
        if self.inner.shared.registry.read().has_types(schema.types()) {
            return Ok(());
        }
        let def = SchemaDef {
            name: schema.name().to_string(),
            types: schema
                .types()
                .iter()
                .map(|t| WireTypeDef {
                    name: t.name.to_string(),
                    fields: t.fields.iter().map(|f| f.name.to_string()).collect(),
                    indices: t
                        .indices
                        .iter()
                        .map(|i| IndexDef {
                            name: i.name.to_string(),
                            fields: i
                                .fields
                                .iter()
                                .filter_map(|&f| t.fields.get(f).map(|f| f.name.to_string()))
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        };
        let ids = match self
            .inner
            .conn
            .request(|request_id| ClientMessage::DefineSchema {
                request_id,
                schema: def,
            })
            .await?
        {
            Reply::Schema(ids) => ids,
            other => return Err(unexpected(other)),
        };
        if ids.types.len() != schema.types().len() {
            return Err(Error::Protocol(format!(
                "the server answered {} types for schema {}, which has {}",
                ids.types.len(),
                schema.name(),
                schema.types().len()
            )));
        }
        let infos = schema
            .types()
            .iter()
            .zip(&ids.types)
            .map(|(def, ids)| TypeInfo::new(def, ids))
            .collect();
        self.inner.shared.registry.write().insert_schema(infos);
        Ok(())
    }

    async fn ensure_ids(&self, count: u64) -> Result<()> {
        if self.inner.shared.ids.lock().remaining() >= count {
            return Ok(());
        }
        match self
            .inner
            .conn
            .request(|request_id| ClientMessage::RequestIds { request_id, count })
            .await?
        {
            Reply::Ids(block) => {
                self.inner.shared.ids.lock().add(block);
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }
}

fn transaction_timeout(timeout: Duration) -> Error {
    Error::Timeout(
        timeout,
        "the transaction to commit (a commit already sent may still be applied)".into(),
    )
}

pub(crate) fn unexpected(reply: Reply) -> Error {
    Error::Protocol(format!("unexpected answer from the server: {reply:?}"))
}

/// Waits a short, growing, jittered time before re-running a conflicted transaction, so that
/// clients that keep colliding spread out.
async fn backoff(attempt: u32) {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let cap_us = 50u64 << attempt.min(8);
    let jitter = h.finish() % cap_us.max(1);
    if attempt > 1 {
        tokio::time::sleep(Duration::from_micros(jitter)).await;
    } else {
        tokio::task::yield_now().await;
    }
}
