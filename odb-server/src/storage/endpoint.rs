//! Where the Redis database is: one address, or the master that Redis Sentinel names.
//!
//! - `redis://[USER:PASSWORD@]HOST:PORT/DB` and `rediss://...` (TLS) connect to that address.
//!   A `rediss://` server's certificate is verified against the system's trusted roots, or,
//!   when a [`RedisTarget`] names a CA, against that CA only (a private CA, as Redis
//!   deployments inside one organisation often use).
//! - `redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]` asks the sentinels
//!   at every (re)connection which server is the master named `MASTER`, so that after a Redis
//!   failover the next connection goes to the promoted replica. The credentials, if any, are
//!   those of the Redis master; the sentinels are asked without.
//!
//! Both kinds go through the redis crate's own support (its TLS and Sentinel clients; a
//! custom CA through its `TlsCertificates`).

use super::StorageError;
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, RedisConnectionInfo, RedisResult, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;

/// The URL scheme of a Redis reached through Sentinel.
const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// The URL scheme of a Redis reached over TLS.
const TLS_SCHEME: &str = "rediss://";

/// The Redis database a server stores its data in: a URL (see the module documentation) and,
/// for `rediss://`, optionally the CA certificates its certificate must be signed by.
///
/// Plain URLs convert into it, so `RedisStorage::connect("redis://127.0.0.1:6379/0", ..)`
/// works; a custom CA is added with [`RedisTarget::ca_file`] or [`RedisTarget::ca_pem`].
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    url: String,
    /// PEM certificates to trust instead of the system's roots.
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &self.redacted_url())
            .field("custom_ca", &self.ca_pem.is_some())
            .finish()
    }
}

impl RedisTarget {
    /// The database at `url`, with a `rediss://` server verified against the system's roots.
    pub fn new(url: impl Into<String>) -> RedisTarget {
        RedisTarget {
            url: url.into(),
            ca_pem: None,
        }
    }

    /// Trusts the CA certificates of the PEM file at `path`, and only those, for the Redis
    /// server's certificate.
    ///
    /// Fails with [`StorageError::Incompatible`] if the file cannot be read or holds no
    /// certificate; connecting fails if the URL is not `rediss://`.
    pub fn ca_file(self, path: impl AsRef<Path>) -> Result<RedisTarget, StorageError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| {
            StorageError::Incompatible(format!(
                "cannot read the Redis CA file {}: {e}",
                path.display()
            ))
        })?;
        self.ca_pem(pem).map_err(|e| {
            StorageError::Incompatible(format!(
                "the Redis CA file {}: {}",
                path.display(),
                e.detail()
            ))
        })
    }

    /// Trusts the CA certificates in `pem`, and only those, for the Redis server's certificate.
    ///
    /// Fails with [`StorageError::Incompatible`] if `pem` holds no certificate or a malformed
    /// one.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Result<RedisTarget, StorageError> {
        let pem = pem.into();
        // Checked here, so that a wrong file is reported at startup rather than as an unknown
        // issuer at every connection attempt.
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StorageError::Incompatible(format!("malformed PEM certificate: {e}")))?;
        if certificates.is_empty() {
            return Err(StorageError::Incompatible(
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        self.ca_pem = Some(pem);
        Ok(self)
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with its password, if it has one, replaced by `***`: what logs and error
    /// messages show.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// Whether a custom CA replaces the system's roots.
    pub fn has_custom_ca(&self) -> bool {
        self.ca_pem.is_some()
    }
}

impl From<&str> for RedisTarget {
    fn from(url: &str) -> RedisTarget {
        RedisTarget::new(url)
    }
}

impl From<String> for RedisTarget {
    fn from(url: String) -> RedisTarget {
        RedisTarget::new(url)
    }
}

impl From<&String> for RedisTarget {
    fn from(url: &String) -> RedisTarget {
        RedisTarget::new(url.as_str())
    }
}

impl From<&RedisTarget> for RedisTarget {
    fn from(target: &RedisTarget) -> RedisTarget {
        target.clone()
    }
}

/// `url` with the password of its user information (`scheme://USER:PASSWORD@host...`)
/// replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, hosts)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{hosts}{path}"),
        None => url.to_string(),
    }
}

/// A Redis database to connect to.
pub(crate) enum Endpoint {
    /// One address.
    Direct(Client),
    /// The master of a Sentinel-monitored group.
    Sentinel(Box<SentinelClient>),
}

impl Endpoint {
    /// Parses the target's URL (see the module documentation). Fails on a malformed URL, and
    /// on a custom CA with a URL that is not `rediss://`.
    pub(crate) fn open(target: &RedisTarget) -> Result<Endpoint, StorageError> {
        let url = target.url();
        let shown = target.redacted_url();
        let invalid =
            |why: String| StorageError::Incompatible(format!("invalid Redis URL {shown:?}: {why}"));
        if let Some(ca_pem) = &target.ca_pem {
            if !url.starts_with(TLS_SCHEME) {
                return Err(StorageError::Incompatible(format!(
                    "a Redis CA file was given, but the Redis URL {shown:?} does not use TLS; use {TLS_SCHEME}HOST:PORT/DB"
                )));
            }
            let certificates = TlsCertificates {
                client_tls: None,
                root_cert: Some(ca_pem.clone()),
            };
            return Client::build_with_tls(url, certificates)
                .map(Endpoint::Direct)
                .map_err(|e| invalid(super::redis::one_line(&e)));
        }
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
            let reason = super::redis::one_line(&e);
            StorageError::Unavailable(format!(
                "cannot connect to Redis at {url}: {reason}{}",
                certificate_hint(&reason)
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

/// What to do about a Redis certificate that was not trusted; empty for other failures.
fn certificate_hint(reason: &str) -> &'static str {
    // rustls names the certificate problem only in its message (`invalid peer certificate:
    // UnknownIssuer`); the redis crate passes it on as text.
    if reason.contains("invalid peer certificate") {
        " (the Redis server's certificate is not trusted: trust the CA that signed it with --redis-ca-file or RedisTarget::ca_file, and use a host name or address the certificate names)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(url: &str) -> Result<Endpoint, StorageError> {
        Endpoint::open(&RedisTarget::new(url))
    }

    #[test]
    fn urls_are_parsed_or_refused_with_a_reason() {
        assert!(matches!(
            open("redis://127.0.0.1:6379/0"),
            Ok(Endpoint::Direct(_))
        ));
        assert!(matches!(
            open("rediss://redis.example:6380/0"),
            Ok(Endpoint::Direct(_))
        ));
        assert!(matches!(
            open("redis+sentinel://:secret@10.0.0.1:26379,10.0.0.2:26379/main/2"),
            Ok(Endpoint::Sentinel(_))
        ));
        for bad in [
            "redis+sentinel://10.0.0.1:26379",
            "redis+sentinel://10.0.0.1:26379/",
            "redis+sentinel:///main",
            "redis+sentinel://10.0.0.1:26379/main/x",
            "nonsense",
        ] {
            match open(bad) {
                Err(StorageError::Incompatible(message)) => {
                    assert!(message.contains("invalid Redis URL"), "{message}")
                }
                Err(other) => panic!("{bad}: {other}"),
                Ok(_) => panic!("{bad} was accepted"),
            }
        }
    }

    #[test]
    fn passwords_are_hidden_from_messages() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "redis://:s3cret@10.0.0.5:6379/0",
                "redis://:***@10.0.0.5:6379/0",
            ),
            (
                "rediss://ann:p@ss:w@rd@redis:6380/2",
                "rediss://ann:***@redis:6380/2",
            ),
            ("redis://ann@redis:6379", "redis://ann@redis:6379"),
            (
                "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/main/2",
                "redis+sentinel://:***@10.0.0.1:26379,10.0.0.2:26379/main/2",
            ),
            ("nonsense", "nonsense"),
        ] {
            let target = RedisTarget::new(url);
            assert_eq!(target.redacted_url(), shown, "{url}");
            assert!(format!("{target:?}").contains(shown), "{target:?}");
        }
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("a key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("a CA").pem()
    }

    #[test]
    fn a_custom_ca_needs_a_certificate_and_a_tls_url() {
        let with_ca = RedisTarget::new("rediss://127.0.0.1:6380/0")
            .ca_pem(ca_pem())
            .expect("a CA");
        assert!(with_ca.has_custom_ca());
        assert!(matches!(Endpoint::open(&with_ca), Ok(Endpoint::Direct(_))));

        for plain in [
            "redis://127.0.0.1:6379/0",
            "redis+sentinel://10.0.0.1:26379/main",
        ] {
            let target = RedisTarget::new(plain).ca_pem(ca_pem()).expect("a CA");
            match Endpoint::open(&target) {
                Err(StorageError::Incompatible(message)) => {
                    assert!(message.contains("does not use TLS"), "{message}")
                }
                Err(other) => panic!("{plain}: {other}"),
                Ok(_) => panic!("{plain} was accepted with a CA"),
            }
        }

        for (bad, expected) in [
            ("", "holds no PEM certificate"),
            ("not a certificate", "holds no PEM certificate"),
            (
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                "malformed PEM",
            ),
        ] {
            match RedisTarget::new("rediss://127.0.0.1:6380/0").ca_pem(bad) {
                Err(StorageError::Incompatible(message)) => {
                    assert!(message.contains(expected), "{bad:?}: {message}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let missing = RedisTarget::new("rediss://127.0.0.1:6380/0").ca_file("/nonexistent/ca.pem");
        assert!(
            matches!(&missing, Err(StorageError::Incompatible(m)) if m.contains("cannot read the Redis CA file")),
            "{missing:?}"
        );
    }
}
