//! Where the Redis database is: one address, or the master that Redis Sentinel names.
//!
//! - `redis://[USER:PASSWORD@]HOST:PORT/DB` and `rediss://...` (TLS, the server's certificate
//!   verified against the system's trusted roots) connect to that address.
//! - `redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]` asks the sentinels
//!   at every (re)connection which server is the master named `MASTER`, so that after a Redis
//!   failover the next connection goes to the promoted replica. The credentials, if any, are
//!   those of the Redis master; the sentinels are asked without.
//!
//! Both kinds go through the redis crate's own support (its TLS and Sentinel clients).

use super::StorageError;
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, RedisConnectionInfo, RedisResult};

/// The URL scheme of a Redis reached through Sentinel.
const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// A Redis database to connect to.
pub(crate) enum Endpoint {
    /// One address.
    Direct(Client),
    /// The master of a Sentinel-monitored group.
    Sentinel(Box<SentinelClient>),
}

impl Endpoint {
    /// Parses `url` (see the module documentation). Fails on a malformed URL.
    pub(crate) fn open(url: &str) -> Result<Endpoint, StorageError> {
        let invalid =
            |why: String| StorageError::Incompatible(format!("invalid Redis URL {url:?}: {why}"));
        let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) else {
            return Client::open(url)
                .map(Endpoint::Direct)
                .map_err(|e| invalid(e.to_string()));
        };
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((credentials, rest)) => (Some(credentials), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid("no master name after the sentinels' addresses".into()))?;
        let (master, db) = match path.split_once('/') {
            Some((master, db)) => (master, db),
            None => (path, "0"),
        };
        if master.is_empty() {
            return Err(invalid("the master name is empty".into()));
        }
        let db: i64 = db
            .parse()
            .map_err(|_| invalid(format!("database {db:?} is not a number")))?;
        let sentinels: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("redis://{h}"))
            .collect();
        if sentinels.is_empty() {
            return Err(invalid("no sentinel address".into()));
        }
        let (username, password) = match credentials {
            None => (None, None),
            Some(c) => match c.split_once(':') {
                Some((user, password)) => (
                    (!user.is_empty()).then(|| user.to_string()),
                    Some(password.to_string()),
                ),
                None => (Some(c.to_string()), None),
            },
        };
        let node = SentinelNodeConnectionInfo {
            tls_mode: None,
            redis_connection_info: Some(RedisConnectionInfo {
                db,
                username,
                password,
                ..RedisConnectionInfo::default()
            }),
        };
        SentinelClient::build(
            sentinels,
            master.to_string(),
            Some(node),
            SentinelServerType::Master,
        )
        .map(|client| Endpoint::Sentinel(Box::new(client)))
        .map_err(|e| invalid(e.to_string()))
    }

    /// Opens a connection: to the address, or to the current master.
    /// Connects, allowing `timeout` for the connection and for each answer; an error names
    /// `url`.
    pub(crate) async fn connect_within(
        &mut self,
        url: &str,
        timeout: std::time::Duration,
    ) -> Result<MultiplexedConnection, StorageError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        self.connect(&config).await.map_err(|e| {
            StorageError::Unavailable(format!(
                "cannot connect to Redis at {url}: {}",
                super::redis::one_line(&e)
            ))
        })
    }

    pub(crate) async fn connect(
        &mut self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        match self {
            Endpoint::Direct(client) => {
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await
            }
            Endpoint::Sentinel(sentinel) => sentinel.get_async_connection_with_config(config).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_or_refused_with_a_reason() {
        assert!(matches!(
            Endpoint::open("redis://127.0.0.1:6379/0"),
            Ok(Endpoint::Direct(_))
        ));
        assert!(matches!(
            Endpoint::open("rediss://redis.example:6380/0"),
            Ok(Endpoint::Direct(_))
        ));
        assert!(matches!(
            Endpoint::open("redis+sentinel://:secret@10.0.0.1:26379,10.0.0.2:26379/main/2"),
            Ok(Endpoint::Sentinel(_))
        ));
        for bad in [
            "redis+sentinel://10.0.0.1:26379",
            "redis+sentinel://10.0.0.1:26379/",
            "redis+sentinel:///main",
            "redis+sentinel://10.0.0.1:26379/main/x",
            "nonsense",
        ] {
            match Endpoint::open(bad) {
                Err(StorageError::Incompatible(message)) => {
                    assert!(message.contains("invalid Redis URL"), "{message}")
                }
                Err(other) => panic!("{bad}: {other}"),
                Ok(_) => panic!("{bad} was accepted"),
            }
        }
    }
}
