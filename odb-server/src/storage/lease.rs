//! The leader lease on Redis, and the fence that keeps a deposed leader from writing.
//!
//! Several servers may share one Redis database and key prefix; exactly one of them leads. It
//! holds the key `{prefix}leader`, whose value is `EPOCH OWNER`: `EPOCH` comes from
//! `INCR {prefix}epoch`, so every new leader has a higher epoch than all before it, and `OWNER`
//! names the process. The key is taken with a script that sets it only if it is absent, with an
//! expiry (the lease); the leader renews it (same script family, only while the value is still
//! its own) every third of the lease.
//!
//! The lease alone cannot stop a leader that was paused or cut off from writing after its lease
//! ran out: its clock and its renewals say nothing about what Redis decided meanwhile. So every
//! batch it stores goes through one script that first compares `{prefix}leader` with the value
//! this leader took and writes only if they are equal ([`Fence`]). Redis runs a script
//! atomically, so no other leader's lease can begin between the check and the write.

use super::endpoint::{Endpoint, RedisTarget};
use super::StorageError;
use redis::aio::MultiplexedConnection;
use redis::Script;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Takes the lease if nobody holds it. KEYS: lease, epoch counter. ARGV: owner, lease in ms.
/// Returns the new value, or nil if the lease is held.
const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local epoch = redis.call('INCR', KEYS[2])
local value = epoch .. ' ' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
";

/// Extends the lease if it is still ours. KEYS: lease. ARGV: our value, lease in ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Gives the lease up if it is still ours. KEYS: lease. ARGV: our value.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// The lease as one server sees it: its Redis connection and the keys.
pub struct Lease {
    client: Endpoint,
    /// The URL without its password, for messages.
    url: String,
    conn: Option<MultiplexedConnection>,
    key: String,
    epoch_key: String,
    ttl: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("url", &self.url)
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A lease this server took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLease {
    /// Its fencing epoch: higher than that of every lease taken before it.
    pub epoch: u64,
    /// The value of the lease key while it is ours (`EPOCH OWNER`).
    pub value: String,
}

impl Lease {
    /// A lease on the Redis database at `target` (a URL, or a [`RedisTarget`]), under
    /// `prefix`, lasting `ttl` unless renewed. Every request times out after `timeout`.
    /// Connects lazily; fails only on a malformed URL.
    pub fn new(
        target: impl Into<RedisTarget>,
        prefix: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Lease, StorageError> {
        let target = target.into();
        let client = Endpoint::open(&target)?;
        Ok(Lease {
            client,
            url: target.redacted_url(),
            conn: None,
            key: lease_key(prefix),
            epoch_key: format!("{prefix}epoch"),
            ttl,
            timeout,
        })
    }

    /// How long the lease lasts unless renewed.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lease for `owner` if nobody holds it; `None` if somebody does.
    pub async fn try_acquire(&mut self, owner: &str) -> Result<Option<HeldLease>, StorageError> {
        let script = Script::new(ACQUIRE);
        let mut invocation = script.key(&self.key);
        invocation
            .key(&self.epoch_key)
            .arg(owner)
            .arg(millis(self.ttl));
        let mut conn = self.conn().await?;
        let result: Result<Option<String>, _> = invocation.invoke_async(&mut conn).await;
        let value = self.settle(result)?;
        value
            .map(|value| {
                let epoch = value
                    .split(' ')
                    .next()
                    .and_then(|e| e.parse().ok())
                    .ok_or_else(|| StorageError::Corrupt(format!("lease value {value:?}")))?;
                Ok(HeldLease { epoch, value })
            })
            .transpose()
    }

    /// Extends `held` by the lease's length; `false` if the lease is no longer ours (it ran out,
    /// and perhaps another server took it).
    pub async fn renew(&mut self, held: &HeldLease) -> Result<bool, StorageError> {
        let script = Script::new(RENEW);
        let mut invocation = script.key(&self.key);
        invocation.arg(&held.value).arg(millis(self.ttl));
        let mut conn = self.conn().await?;
        let result: Result<i64, _> = invocation.invoke_async(&mut conn).await;
        Ok(self.settle(result)? == 1)
    }

    /// Gives `held` up, so that a standby need not wait for it to run out.
    pub async fn release(&mut self, held: &HeldLease) -> Result<(), StorageError> {
        let script = Script::new(RELEASE);
        let mut invocation = script.key(&self.key);
        invocation.arg(&held.value);
        let mut conn = self.conn().await?;
        let result: Result<i64, _> = invocation.invoke_async(&mut conn).await;
        self.settle(result).map(|_| ())
    }

    /// The fence for a storage writing under `held`.
    pub fn fence(&self, held: &HeldLease) -> Fence {
        Fence {
            key: self.key.clone(),
            value: held.value.clone(),
            deposed: CancellationToken::new(),
        }
    }

    async fn conn(&mut self) -> Result<MultiplexedConnection, StorageError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let conn = self.client.connect_within(&self.url, self.timeout).await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the connection after a failure, so that the next call reconnects.
    fn settle<T>(&mut self, result: redis::RedisResult<T>) -> Result<T, StorageError> {
        result.map_err(|e| {
            self.conn = None;
            StorageError::Unavailable(format!("lease on Redis at {}: {e}", self.url))
        })
    }
}

/// The name of the lease key under `prefix`.
pub(crate) fn lease_key(prefix: &str) -> String {
    format!("{prefix}leader")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// What a fenced storage checks before each write: the lease key must still hold `value`.
#[derive(Clone, Debug)]
pub struct Fence {
    /// The lease key.
    pub key: String,
    /// The value the lease key holds while this server leads.
    pub value: String,
    /// Cancelled by the storage when a write was refused because the lease is no longer ours.
    pub deposed: CancellationToken,
}

/// The message of the error a fenced write fails with; clients see it in the failed commit's
/// reason.
pub(crate) const NOT_THE_LEADER: &str = "not the leader: the lease is held by another server";

/// Stores a batch only if the lease is still ours. KEYS: the lease, then the keys the operations
/// name by position. ARGV[1]: our lease value; then operations, each a code and its arguments:
/// `S k v` (SET), `H k f v` (HSET), `D k f` (HDEL), where `k` is a position in KEYS.
pub(crate) const FENCED_WRITE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local i = 2
while i <= #ARGV do
  local op = ARGV[i]
  local key = KEYS[tonumber(ARGV[i + 1])]
  if op == 'S' then
    redis.call('SET', key, ARGV[i + 2])
    i = i + 3
  elseif op == 'H' then
    redis.call('HSET', key, ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  else
    redis.call('HDEL', key, ARGV[i + 2])
    i = i + 3
  end
end
return 1
";
