//! The Redis backend.
//!
//! Key layout, every key starting with a configurable prefix (default `odb:`):
//!
//! | key | type | contents |
//! | --- | --- | --- |
//! | `{prefix}format` | string | the format version, decimal (`1`) |
//! | `{prefix}tid` | string | the tid of the last stored commit, decimal |
//! | `{prefix}next_id` | string | the next object id to hand out, decimal |
//! | `{prefix}registry` | string | the encoded schema registry |
//! | `{prefix}database` | string | the database's identity, 32 hexadecimal digits |
//! | `{prefix}objects` | hash | object id (decimal) -> the encoded object |
//! | `{prefix}commits` | hash | commit id (`SESSION/SEQ`, hexadecimal/decimal) -> its encoded record |
//! | `{prefix}commit_horizon` | string | the newest tid whose commit-id record was dropped, decimal |
//! | `{prefix}leader` | string | with standby servers: the leader's lease, `EPOCH OWNER`, expiring |
//! | `{prefix}epoch` | string | with standby servers: the last fencing epoch handed out, decimal |
//!
//! Every batch is one `MULTI`/`EXEC` transaction, so Redis applies all of it or none of it; a
//! storage with a [`Fence`] (a leader among standby servers) writes each batch with one script
//! that checks the lease first (see [`super::lease`]).
//! How durable an acknowledged batch is depends on Redis's own settings: with
//! `appendonly yes` and `appendfsync always` it is on disk before `EXEC` returns.
//!
//! Every request has a timeout. A failed request drops the connection; the next batch connects
//! anew, so commits succeed again as soon as Redis is back. A write whose connection broke or
//! timed out after it was sent fails with [`StorageError::OutcomeUnknown`]: Redis may have
//! applied the transaction before the link went down.

use super::endpoint::{Endpoint, RedisTarget};
use super::lease::{Fence, FENCED_WRITE, NOT_THE_LEADER};
use super::{
    decode, encode, Batch, Loaded, Storage, StorageError, StorageFuture, StoredCommit,
    StoredObject, FORMAT_VERSION,
};
use odb_wire::{DatabaseId, ObjectId, Tid};
use redis::aio::MultiplexedConnection;
use std::time::Duration;

/// The key prefix used unless another one is configured.
pub const DEFAULT_REDIS_PREFIX: &str = "odb:";

/// The single keys read at load: tid, next id, registry, database identity, commit horizon.
type Meta = (
    Option<u64>,
    Option<u64>,
    Option<Vec<u8>>,
    Option<String>,
    Option<u64>,
);

/// How many hash entries one `HSCAN` asks for while loading.
const SCAN_COUNT: usize = 1000;

/// Storage in a Redis database, under a key prefix.
pub struct RedisStorage {
    client: Endpoint,
    /// The URL without its password, for messages.
    url: String,
    prefix: String,
    timeout: Duration,
    conn: Option<MultiplexedConnection>,
    fence: Option<Fence>,
    /// Replicas that must have each batch before it counts as stored; see
    /// [`RedisStorage::wait_for_replicas`].
    replicas: usize,
}

impl std::fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStorage")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(context: &str) -> impl Fn(redis::RedisError) -> StorageError + '_ {
    move |e| StorageError::Unavailable(format!("{context}: {}", one_line(&e)))
}

/// A Redis error on one line: the client's parse errors quote the server's reply over several
/// lines, which would break the server's one-line log and error messages.
pub(super) fn one_line(e: &redis::RedisError) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl RedisStorage {
    /// Connects to the Redis database at `target`: a URL (`redis://HOST:PORT/DB`, `rediss://`
    /// for TLS, or `redis+sentinel://HOST:PORT,.../MASTER/DB`; see the book), or a
    /// [`RedisTarget`] that also names the CA of a `rediss://` server. Then checks the format
    /// version under `prefix`, writing it into an empty database. Every request, and every
    /// connection attempt, times out after `timeout`.
    ///
    /// Fails if the URL is malformed, Redis cannot be reached (a TLS server whose certificate
    /// is not trusted included), or the keys under `prefix` hold data of another format
    /// version.
    pub async fn connect(
        target: impl Into<RedisTarget>,
        prefix: &str,
        timeout: Duration,
    ) -> Result<RedisStorage, StorageError> {
        let target = target.into();
        let client = Endpoint::open(&target)?;
        let mut storage = RedisStorage {
            client,
            url: target.redacted_url(),
            prefix: prefix.to_string(),
            timeout,
            conn: None,
            fence: None,
            replicas: 0,
        };
        storage.check_format().await?;
        Ok(storage)
    }

    /// Makes every later batch check the lease first: a batch is stored only while the lease
    /// key holds the fence's value, and otherwise fails (and cancels [`Fence::deposed`]).
    pub fn with_fence(mut self, fence: Fence) -> RedisStorage {
        self.fence = Some(fence);
        self
    }

    /// Makes every batch count as stored only once `replicas` Redis replicas have it (Redis's
    /// `WAIT`), so that an acknowledged commit survives a failover to one of them. A batch the
    /// replicas do not confirm within half the request timeout is of unknown outcome: it is on
    /// the master, and may or may not survive a failover.
    pub fn wait_for_replicas(mut self, replicas: usize) -> RedisStorage {
        self.replicas = replicas;
        self
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The open connection, connecting first if there is none.
    async fn conn(&mut self) -> Result<MultiplexedConnection, StorageError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let conn = self.client.connect_within(&self.url, self.timeout).await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the connection after a failure, so that the next call reconnects.
    fn settle<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn check_format(&mut self) -> Result<(), StorageError> {
        let mut conn = self.conn().await?;
        let result = self.check_format_on(&mut conn).await;
        self.settle(result)
    }

    async fn check_format_on(&self, conn: &mut MultiplexedConnection) -> Result<(), StorageError> {
        let context = format!("Redis at {} (prefix {:?})", self.url, self.prefix);
        let err = unavailable(&context);
        let format: Option<String> = redis::cmd("GET")
            .arg(self.key("format"))
            .query_async(conn)
            .await
            .map_err(&err)?;
        match format {
                Some(version) if version == FORMAT_VERSION.to_string() => Ok(()),
                Some(version) => Err(StorageError::Incompatible(format!(
                    "{context} holds ODB data of format version {version}; this server reads version {FORMAT_VERSION}"
                ))),
                None => {
                    let existing: u64 = redis::cmd("EXISTS")
                        .arg(self.key("tid"))
                        .arg(self.key("next_id"))
                        .arg(self.key("registry"))
                        .arg(self.key("objects"))
                        .arg(self.key("database"))
                        .arg(self.key("commits"))
                        .query_async(conn)
                        .await
                        .map_err(&err)?;
                    if existing > 0 {
                        return Err(StorageError::Incompatible(format!(
                            "{context} holds keys without a format version; they were not written by this server"
                        )));
                    }
                    redis::cmd("SET")
                        .arg(self.key("format"))
                        .arg(FORMAT_VERSION)
                        .query_async::<()>(conn)
                        .await
                        .map_err(&err)
                }
            }
    }

    async fn load_all(&mut self) -> Result<Loaded, StorageError> {
        let mut conn = self.conn().await?;
        let result = self.load_on(&mut conn).await;
        self.settle(result)
    }

    async fn load_on(&self, conn: &mut MultiplexedConnection) -> Result<Loaded, StorageError> {
        let err = unavailable("cannot read from Redis");
        let (tid, next_id, registry, database, commit_horizon): Meta = redis::cmd("MGET")
            .arg(self.key("tid"))
            .arg(self.key("next_id"))
            .arg(self.key("registry"))
            .arg(self.key("database"))
            .arg(self.key("commit_horizon"))
            .query_async(conn)
            .await
            .map_err(&err)?;
        let database = database
            .map(|hex| {
                u128::from_str_radix(&hex, 16)
                    .map(DatabaseId)
                    .map_err(|_| StorageError::Corrupt(format!("database identity {hex:?}")))
            })
            .transpose()?;
        let registry = registry
            .map(|b| super::decode_registry(&b))
            .transpose()?
            .unwrap_or_default();
        let mut objects = Vec::new();
        for (id, value) in self.scan_hash(conn, "objects").await? {
            let id = std::str::from_utf8(&id)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    StorageError::Corrupt(format!(
                        "object key {:?} is not a number",
                        String::from_utf8_lossy(&id)
                    ))
                })?;
            let object: StoredObject = decode(&value, &format!("object {id}"))?;
            objects.push((ObjectId(id), object));
        }
        let mut commits = Vec::new();
        for (_, value) in self.scan_hash(conn, "commits").await? {
            commits.push(decode::<StoredCommit>(&value, "commit record")?);
        }
        // HSCAN may return an entry more than once.
        commits.sort_by_key(|r| r.id);
        commits.dedup_by_key(|r| r.id);
        objects.sort_by_key(|(id, _)| *id);
        objects.dedup_by_key(|(id, _)| *id);
        Ok(Loaded {
            tid: Tid(tid.unwrap_or(0)),
            next_id: next_id.unwrap_or(0),
            registry,
            objects,
            database,
            commits,
            commit_horizon: Tid(commit_horizon.unwrap_or(0)),
        })
    }

    /// Every field and value of the hash `{prefix}{name}`, read in steps with `HSCAN` (which may
    /// return an entry more than once).
    async fn scan_hash(
        &self,
        conn: &mut MultiplexedConnection,
        name: &str,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        let err = unavailable("cannot read from Redis");
        let mut entries = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, items): (u64, Vec<Vec<u8>>) = redis::cmd("HSCAN")
                .arg(self.key(name))
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(conn)
                .await
                .map_err(&err)?;
            let mut items = items.into_iter();
            while let Some(field) = items.next() {
                let Some(value) = items.next() else {
                    return Err(StorageError::Corrupt(
                        "HSCAN returned an odd number of items".into(),
                    ));
                };
                entries.push((field, value));
            }
            if next == 0 {
                return Ok(entries);
            }
            cursor = next;
        }
    }

    async fn persist_batch(&mut self, batch: Batch) -> Result<(), StorageError> {
        let writes = writes_of(&batch)?;
        let mut conn = self.conn().await?;
        let result = match &self.fence {
            None => self.write_atomically(&mut conn, &writes).await,
            Some(fence) => self.write_fenced(&mut conn, fence, &writes).await,
        };
        let result = match result {
            Ok(()) if self.replicas > 0 => self.wait_replicas(&mut conn).await,
            other => other,
        };
        self.settle(result)
    }

    /// Waits until the configured number of replicas have every write made so far.
    async fn wait_replicas(&self, conn: &mut MultiplexedConnection) -> Result<(), StorageError> {
        let wait_ms = u64::try_from((self.timeout / 2).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let acknowledged: usize = redis::cmd("WAIT")
            .arg(self.replicas)
            .arg(wait_ms)
            .query_async(conn)
            .await
            .map_err(|e| {
                StorageError::OutcomeUnknown(format!(
                    "written to Redis at {}, but not confirmed by its replicas: {}",
                    self.url,
                    one_line(&e)
                ))
            })?;
        if acknowledged >= self.replicas {
            Ok(())
        } else {
            Err(StorageError::OutcomeUnknown(format!(
                "written to Redis at {}, but only {acknowledged} of the {} replicas required \
                 (--redis-wait-replicas) confirmed it within {wait_ms} ms",
                self.url, self.replicas
            )))
        }
    }

    /// A failed write, as unknown when it may have been applied all the same (see
    /// [`sent_maybe`]).
    fn write_error(&self, e: &redis::RedisError) -> StorageError {
        let message = format!("cannot write to Redis at {}: {}", self.url, one_line(e));
        if sent_maybe(e) {
            StorageError::OutcomeUnknown(message)
        } else {
            StorageError::Unavailable(message)
        }
    }

    /// Stores `writes` in one `MULTI`/`EXEC` transaction.
    async fn write_atomically(
        &self,
        conn: &mut MultiplexedConnection,
        writes: &[Write],
    ) -> Result<(), StorageError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        // One HSET and one HDEL per hash: a batch writes each field at most once.
        let mut hash_sets: Vec<(&str, Vec<FieldValue>)> = Vec::new();
        let mut hash_deletes: Vec<(&str, Vec<&[u8]>)> = Vec::new();
        for write in writes {
            match write {
                Write::Set(key, value) => {
                    pipe.set(self.key(key), value).ignore();
                }
                Write::HashSet(key, field, value) => {
                    match hash_sets.iter_mut().find(|(k, _)| k == key) {
                        Some((_, fields)) => fields.push((field, value)),
                        None => hash_sets.push((key, vec![(field, value)])),
                    }
                }
                Write::HashDelete(key, field) => {
                    match hash_deletes.iter_mut().find(|(k, _)| k == key) {
                        Some((_, fields)) => fields.push(field),
                        None => hash_deletes.push((key, vec![field])),
                    }
                }
            }
        }
        for (key, fields) in &hash_sets {
            pipe.hset_multiple(self.key(key), fields).ignore();
        }
        for (key, fields) in &hash_deletes {
            pipe.hdel(self.key(key), fields).ignore();
        }
        pipe.query_async::<()>(conn)
            .await
            .map_err(|e| self.write_error(&e))
    }

    /// Stores `writes` with one script that first checks that the lease is still ours (see
    /// [`super::lease`]); Redis runs a script atomically.
    async fn write_fenced(
        &self,
        conn: &mut MultiplexedConnection,
        fence: &Fence,
        writes: &[Write],
    ) -> Result<(), StorageError> {
        let script = redis::Script::new(FENCED_WRITE);
        let mut invocation = script.key(&fence.key);
        for key in FENCED_KEYS {
            invocation.key(self.key(key));
        }
        invocation.arg(&fence.value);
        let position = |key: &str| FENCED_KEYS.iter().position(|k| *k == key).map(|p| p + 2);
        for write in writes {
            let (op, key) = match write {
                Write::Set(key, _) => ("S", key),
                Write::HashSet(key, _, _) => ("H", key),
                Write::HashDelete(key, _) => ("D", key),
            };
            let index = position(key)
                .ok_or_else(|| StorageError::Unavailable(format!("no fenced key for {key:?}")))?;
            invocation.arg(op).arg(index);
            match write {
                Write::Set(_, value) => invocation.arg(value),
                Write::HashSet(_, field, value) => invocation.arg(field).arg(value),
                Write::HashDelete(_, field) => invocation.arg(field),
            };
        }
        let written: i64 = invocation
            .invoke_async(conn)
            .await
            .map_err(|e| self.write_error(&e))?;
        if written == 1 {
            Ok(())
        } else {
            fence.deposed.cancel();
            Err(StorageError::NotLeader(NOT_THE_LEADER.into()))
        }
    }
}

/// A hash field and its value.
type FieldValue<'a> = (&'a [u8], &'a [u8]);

/// One write of a batch; keys are names under the prefix.
enum Write {
    Set(&'static str, Vec<u8>),
    HashSet(&'static str, Vec<u8>, Vec<u8>),
    HashDelete(&'static str, Vec<u8>),
}

/// The keys a fenced write may touch, in the order the script receives them (after the lease).
const FENCED_KEYS: [&str; 7] = [
    "tid",
    "next_id",
    "registry",
    "database",
    "objects",
    "commits",
    "commit_horizon",
];

/// Everything `batch` writes, in order.
fn writes_of(batch: &Batch) -> Result<Vec<Write>, StorageError> {
    let decimal = |n: u64| n.to_string().into_bytes();
    let mut writes = vec![
        Write::Set("tid", decimal(batch.tid.0)),
        Write::Set("next_id", decimal(batch.next_id)),
    ];
    if let Some(registry) = &batch.registry {
        writes.push(Write::Set("registry", encode(registry)?));
    }
    if let Some(database) = batch.database {
        writes.push(Write::Set("database", database.to_string().into_bytes()));
    }
    for (id, object) in &batch.objects {
        match object {
            Some(object) => writes.push(Write::HashSet("objects", decimal(id.0), encode(object)?)),
            None => writes.push(Write::HashDelete("objects", decimal(id.0))),
        }
    }
    for record in &batch.commits.added {
        writes.push(Write::HashSet(
            "commits",
            record.id.to_string().into_bytes(),
            encode(record)?,
        ));
    }
    for id in &batch.commits.pruned {
        writes.push(Write::HashDelete("commits", id.to_string().into_bytes()));
    }
    writes.push(Write::Set(
        "commit_horizon",
        decimal(batch.commits.horizon.0),
    ));
    Ok(writes)
}

/// Whether a failed `MULTI`/`EXEC` may have been applied all the same: the link broke or timed
/// out once the transaction could have reached Redis. An error answered by Redis itself, or a
/// refused connection, means nothing was applied.
fn sent_maybe(e: &redis::RedisError) -> bool {
    !e.is_connection_refusal() && (e.is_io_error() || e.is_timeout() || e.is_connection_dropped())
}

impl Storage for RedisStorage {
    fn describe(&self) -> String {
        format!("redis {} (prefix {:?})", self.url, self.prefix)
    }

    fn load(&mut self) -> StorageFuture<'_, Loaded> {
        Box::pin(self.load_all())
    }

    fn persist(&mut self, batch: Batch) -> StorageFuture<'_, ()> {
        Box::pin(self.persist_batch(batch))
    }
}
