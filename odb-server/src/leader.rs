//! Standby servers on a shared Redis: exactly one leads and serves, the others wait.
//!
//! [`run_standby`] loops over leadership terms. A standby polls the lease
//! ([`crate::storage::Lease`]) every tenth of its length and does not listen: a client given
//! several URLs gets "connection refused" from every standby at once and moves on to the next
//! URL, which finds the leader faster than a hello that is refused after a handshake. Once it
//! takes the lease it loads the database from Redis (tids, object ids, commit-id records and the
//! database's identity continue), binds the listen address and serves, storing every batch
//! through a fence that checks the lease in the same atomic script.
//!
//! The leader renews the lease every third of its length. Its term ends when a renewal finds
//! the lease gone or taken, when it cannot renew before the lease runs out, or when a fenced
//! write is refused. It then closes every connection with a `Closing` frame whose reason starts
//! with "not the leader", and becomes a standby again.

use crate::storage::{Fence, HeldLease, Lease, RedisStorage, RedisTarget};
use crate::{Server, ServerConfig, ServerError};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;

/// The default length of the lease: a standby takes over within about twice this after the
/// leader dies.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);

/// The shortest lease accepted: renewals every third of it must fit Redis round trips.
pub const MIN_LEASE: Duration = Duration::from_millis(300);

/// How a server joins a group of standby servers.
#[derive(Clone, Debug)]
pub struct StandbyConfig {
    /// The Redis database every server of the group uses (its URL, and the CA of a
    /// `rediss://` server if it is not one of the system's roots).
    pub redis: RedisTarget,
    /// The key prefix every server of the group uses.
    pub prefix: String,
    /// Timeout of every Redis request and connection attempt.
    pub redis_timeout: Duration,
    /// How long the lease lasts unless renewed (see [`DEFAULT_LEASE`]).
    pub lease: Duration,
    /// A name for this server in the lease key, for operators (e.g. its address and pid).
    pub owner: String,
    /// Redis replicas that must confirm each batch before its commits are acknowledged (see
    /// [`RedisStorage::wait_for_replicas`]); 0 (the default) does not wait.
    pub wait_replicas: usize,
}

/// Why a term as leader ended.
enum TermEnd {
    /// `stop` was cancelled.
    Stopped,
    /// The lease is lost; the reason says how.
    Deposed(String),
    /// The server failed on its own (see [`Server::failure`]).
    Failed(String),
}

/// Serves as one of a group of standby servers until `stop` is cancelled: waits for the lease,
/// serves on `listen` while it holds it, steps down when it loses it, and waits again.
///
/// Fails at once on a malformed Redis URL, an unusable lease length, or a configuration the
/// server refuses; Redis being unreachable is waited out. On `stop` the lease is given up, so
/// that a standby takes over without waiting for it to run out.
pub async fn run_standby(
    config: ServerConfig,
    listen: SocketAddr,
    standby: StandbyConfig,
    stop: CancellationToken,
) -> Result<(), ServerError> {
    if standby.lease < MIN_LEASE {
        return Err(ServerError::Config(format!(
            "the lease must last at least {} ms",
            MIN_LEASE.as_millis()
        )));
    }
    let mut lease = Lease::new(
        &standby.redis,
        &standby.prefix,
        standby.lease,
        standby.redis_timeout.min(standby.lease / 3),
    )
    .map_err(|e| ServerError::Config(e.detail()))?;
    loop {
        tracing::info!("standby: waiting for the lease");
        let Some((held, asked_at)) = acquire(&mut lease, &standby.owner, &stop).await else {
            return Ok(());
        };
        tracing::info!(epoch = held.epoch, "took the lease: loading the database");
        let fence = lease.fence(&held);
        let server = match start(&config, listen, &standby, fence.clone()).await {
            Ok(server) => server,
            Err(e) => {
                tracing::warn!(epoch = held.epoch, "cannot start leading: {e}");
                if let Err(e) = lease.release(&held).await {
                    tracing::warn!("cannot give the lease up: {e}");
                }
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = sleep(poll_interval(standby.lease)) => continue,
                }
            }
        };
        tracing::info!(
            epoch = held.epoch,
            tid = server.current_tid().0,
            ready_ms = asked_at.elapsed().as_millis() as u64,
            "leading: serving on {listen}"
        );
        let end = tokio::select! {
            end = hold(&mut lease, &held, asked_at, &fence, &stop) => end,
            reason = server.failed() => TermEnd::Failed(reason),
        };
        match end {
            TermEnd::Stopped => {
                server.shutdown().await;
                if let Err(e) = lease.release(&held).await {
                    tracing::warn!("cannot give the lease up: {e}");
                }
                return Ok(());
            }
            TermEnd::Failed(reason) => {
                // A standby takes over at once instead of waiting for the lease to run out;
                // this process ends with the error, for its supervisor to restart it.
                server.shutdown().await;
                if let Err(e) = lease.release(&held).await {
                    tracing::warn!("cannot give the lease up: {e}");
                }
                return Err(ServerError::Failed(reason));
            }
            TermEnd::Deposed(why) => {
                tracing::warn!(epoch = held.epoch, "stepping down: {why}");
                server
                    .shutdown_with_reason(odb_wire::Refusal::NotLeader {
                        detail: why.to_string(),
                    })
                    .await;
            }
        }
    }
}

/// How often a standby asks for the lease.
fn poll_interval(lease: Duration) -> Duration {
    (lease / 10).clamp(Duration::from_millis(20), Duration::from_millis(500))
}

/// Polls the lease until this server holds it; `None` once `stop` is cancelled. Also returns
/// when the successful request was sent: the lease runs out one lease length after that at
/// the latest.
async fn acquire(
    lease: &mut Lease,
    owner: &str,
    stop: &CancellationToken,
) -> Option<(HeldLease, Instant)> {
    let poll = poll_interval(lease.ttl());
    let mut reported = false;
    loop {
        let asked_at = Instant::now();
        match lease.try_acquire(owner).await {
            Ok(Some(held)) => return Some((held, asked_at)),
            Ok(None) => reported = false,
            Err(e) if !reported => {
                tracing::warn!("standby: {e}");
                reported = true;
            }
            Err(e) => tracing::debug!("standby: {e}"),
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = sleep(poll) => {}
        }
    }
}

/// Loads the database from Redis and starts serving, every write fenced by the lease.
async fn start(
    config: &ServerConfig,
    listen: SocketAddr,
    standby: &StandbyConfig,
    fence: Fence,
) -> Result<Server, ServerError> {
    let storage = RedisStorage::connect(&standby.redis, &standby.prefix, standby.redis_timeout)
        .await
        .map_err(|e| ServerError::Storage(e.detail()))?
        .with_fence(fence)
        .wait_for_replicas(standby.wait_replicas);
    Server::start_with_storage(config.clone(), Some(listen), Box::new(storage)).await
}

/// Renews the lease every third of its length until the term ends.
async fn hold(
    lease: &mut Lease,
    held: &HeldLease,
    asked_at: Instant,
    fence: &Fence,
    stop: &CancellationToken,
) -> TermEnd {
    let ttl = lease.ttl();
    let period = ttl / 3;
    // Measured from before the request that took or renewed the lease, so never later than
    // Redis's own expiry.
    let mut valid_until = asked_at + ttl;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return TermEnd::Stopped,
            _ = fence.deposed.cancelled() => {
                return TermEnd::Deposed("a write was refused: another server holds the lease".into());
            }
            _ = sleep(period) => {}
        }
        let sent = Instant::now();
        if sent >= valid_until {
            return TermEnd::Deposed("the lease ran out before it was renewed".into());
        }
        match timeout(valid_until - sent, lease.renew(held)).await {
            Ok(Ok(true)) => valid_until = sent + ttl,
            Ok(Ok(false)) => {
                return TermEnd::Deposed("the lease ran out or another server took it".into())
            }
            Ok(Err(e)) => tracing::warn!("cannot renew the lease (will retry): {e}"),
            Err(_) => return TermEnd::Deposed("cannot renew the lease in time".into()),
        }
    }
}
