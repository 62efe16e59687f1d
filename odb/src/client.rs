//! The client handle: connecting, subscribing, views and transactions.

use crate::connection::{self, Conn, Reply};
use crate::local::Shared;
use crate::registry::TypeInfo;
use crate::schema::{IndexValue, Schema};
use crate::transaction::{Need, Transaction};
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
    /// Objects held in the replica, including deleted ones an open view still needs.
    pub replica_objects: usize,
}

/// How many times one transaction may stop to have a schema defined or ids granted.
const MAX_NEEDS: u32 = 16;

/// Builds a [`Client`]: `Client::builder("odb://127.0.0.1:8000").token("TOKEN").connect()`.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    token: String,
    name: String,
    max_retries: u32,
    max_frame: usize,
    connect_timeout: Duration,
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

    /// How long to wait for the TCP connection and the server's welcome (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects and authenticates.
    ///
    /// Fails with [`Error::Unauthorized`] for a wrong token, [`Error::Io`] when nothing
    /// listens at the address, [`Error::Invalid`] for a malformed URL.
    pub async fn connect(self) -> Result<Client> {
        let (scheme, addr) = self.url.split_once("://").ok_or_else(|| {
            Error::Invalid(format!(
                "malformed URL {:?}: expected odb://host:port",
                self.url
            ))
        })?;
        match scheme {
            "odb" => {}
            "odbs" => return Err(Error::Tls(
                "odbs:// (TLS) is not supported by this build yet; use odb:// on a trusted network"
                    .into(),
            )),
            other => {
                return Err(Error::Invalid(format!(
                    "unknown URL scheme {other:?} in {:?}: expected odb://host:port",
                    self.url
                )))
            }
        }
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

struct Inner {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    cancel: CancellationToken,
    connection: ObjectId,
    max_retries: u32,
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
    inner: Arc<Inner>,
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
        let view = View {
            snap: Snapshot::open(&self.inner.shared),
        };
        f(&view)
    }

    /// Waits until `condition` holds on the local replica, or fails with [`Error::Timeout`].
    ///
    /// The condition runs on a fresh view now and again after each change of the replica
    /// (every applied commit or subscription), never by polling. It fails with
    /// [`Error::Disconnected`] if the connection closes first.
    pub async fn wait_for(
        &self,
        mut condition: impl FnMut(&View<'_>) -> Result<bool>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.inner.shared.tid_tx.subscribe();
        loop {
            changes.borrow_and_update();
            if self.view(&mut condition)? {
                return Ok(());
            }
            if let Some(reason) = self.closed_reason() {
                return Err(Error::Disconnected(reason));
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Err(_) => return Err(Error::Timeout(timeout, "the condition to hold".into())),
                Ok(Err(_)) => return Err(Error::Disconnected("the client was closed".into())),
                Ok(Ok(())) => {}
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
    pub async fn transaction<T, F>(&self, mut f: F) -> Result<T>
    where
        F: FnMut(&mut Transaction<'_>) -> Result<T>,
    {
        let mut conflicts = 0u32;
        let mut needs = 0u32;
        loop {
            self.ensure_ids(1).await?;
            let (out, request, need) = {
                let mut tx = Transaction::new(&self.inner.shared);
                let out = f(&mut tx);
                match tx.take_need() {
                    Some(need) => (out, None, Some(need)),
                    None if out.is_ok() => (out, tx.into_request(), None),
                    None => (out, None, None),
                }
            };
            if let Some(need) = need {
                needs += 1;
                if needs > MAX_NEEDS {
                    return Err(Error::Invalid(format!(
                        "the transaction still needed {need:?} after {MAX_NEEDS} attempts to provide it"
                    )));
                }
                match need {
                    Need::Schema(schema) => self.define_schema(schema).await?,
                    Need::Ids(count) => self.ensure_ids(count).await?,
                }
                continue;
            }
            let value = out?;
            let Some(request) = request else {
                return Ok(value);
            };
            match self.commit(request).await {
                Ok(_) => return Ok(value),
                Err(e) if e.is_retryable() && conflicts < self.inner.max_retries => {
                    conflicts += 1;
                    backoff(conflicts).await;
                }
                Err(e) => return Err(e),
            }
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
            Reply::Commit(CommitOutcome::Invalid { reason }) => Err(Error::Server(reason)),
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

    /// Subscribes to every type of a schema. Returns once the data is visible locally.
    pub async fn subscribe(&self, schema: &'static Schema) -> Result<Tid> {
        self.define_schema(schema).await?;
        let types: Vec<Arc<TypeInfo>> = schema
            .types()
            .iter()
            .filter_map(|t| self.inner.shared.type_info(t))
            .collect();
        let targets = types
            .iter()
            .map(|t| SubscriptionTarget::Type(t.type_id))
            .collect();
        self.subscribe_targets(targets, types.iter().map(|t| t.type_id).collect())
            .await
    }

    /// Subscribes to every object of type `T`. Returns once the data is visible locally.
    pub async fn subscribe_type<T: Object>(&self) -> Result<Tid> {
        let info = self.type_info::<T>().await?;
        self.subscribe_targets(
            vec![SubscriptionTarget::Type(info.type_id)],
            vec![info.type_id],
        )
        .await
    }

    /// Subscribes to the objects whose index has a value (made by the generated
    /// `Type::NAME_index(value)`), including objects that get that value later.
    pub async fn subscribe_index(&self, value: IndexValue) -> Result<Tid> {
        self.define_schema(value.schema).await?;
        let info = self.known_type(value.ty)?;
        let index = info.index_id(Some(value.index)).ok_or_else(|| {
            Error::Invalid(format!("no index #{} in {}", value.index, value.ty.name))
        })?;
        let target = SubscriptionTarget::Index {
            index,
            value: value.value.map_err(Error::Encode)?,
        };
        self.subscribe_targets(vec![target], vec![info.type_id])
            .await
    }

    /// Subscribes to one object.
    pub async fn subscribe_object<H: Handle>(&self, object: H) -> Result<Tid> {
        let info = self.type_info::<H::Object>().await?;
        self.subscribe_targets(
            vec![SubscriptionTarget::Object(object.id())],
            vec![info.type_id],
        )
        .await
    }

    /// Cancels a type subscription made with [`Client::subscribe_type`]. Objects of `T` this
    /// client then sees through no other subscription (and did not create) are removed from
    /// its replica and receive no more commits.
    pub async fn unsubscribe_type<T: Object>(&self) -> Result<Tid> {
        let info = self.type_info::<T>().await?;
        self.unsubscribe_targets(vec![SubscriptionTarget::Type(info.type_id)])
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

    async fn subscribe_targets(
        &self,
        targets: Vec<SubscriptionTarget>,
        types: Vec<TypeId>,
    ) -> Result<Tid> {
        match self
            .inner
            .conn
            .request(|request_id| ClientMessage::Subscribe {
                request_id,
                targets,
            })
            .await?
        {
            Reply::Subscribed(tid) => {
                self.inner.shared.local.write().readable.extend(types);
                Ok(tid)
            }
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

fn unexpected(reply: Reply) -> Error {
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
