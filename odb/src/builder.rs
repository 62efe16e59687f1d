//! Building and connecting a [`Client`]: settings, server URLs, and the first connection.

use crate::client::{Client, Inner, DEFAULT_MAX_RETRIES};
use crate::driver::{self, BoxStream, Dialer, Session};
use crate::session::{ClientCore, CoreConfig, ReconnectPolicy, Rng};
use crate::{Error, Object, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// Builds a [`Client`]: `Client::builder("odb://127.0.0.1:8000").token("TOKEN").connect()`.
#[derive(Clone)]
pub struct ClientBuilder {
    urls: Vec<String>,
    token: String,
    name: String,
    max_retries: u32,
    max_frame: usize,
    connect_timeout: Duration,
    tls_ca_file: Option<PathBuf>,
    retain_history: usize,
    reconnect: ReconnectPolicy,
    seed: Option<u64>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("urls", &self.urls)
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("max_retries", &self.max_retries)
            .field("max_frame", &self.max_frame)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("retain_history", &self.retain_history)
            .field("reconnect", &self.reconnect)
            .finish()
    }
}

/// One server address: `odb://host:port` or `odbs://host:port`.
#[derive(Debug, Clone)]
struct Endpoint {
    addr: String,
    tls: bool,
}

impl ClientBuilder {
    pub(crate) fn new(url: String) -> ClientBuilder {
        ClientBuilder {
            urls: split_urls(&url),
            token: String::new(),
            name: std::env::args()
                .next()
                .unwrap_or_else(|| "odb-client".to_string()),
            max_retries: DEFAULT_MAX_RETRIES,
            max_frame: odb_wire::DEFAULT_MAX_FRAME,
            connect_timeout: Duration::from_secs(10),
            tls_ca_file: None,
            retain_history: 0,
            reconnect: ReconnectPolicy::default(),
            seed: None,
        }
    }

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

    /// The server URLs to try in turn, replacing the one given to
    /// [`Client::builder`](crate::Client::builder) (which may itself be a comma-separated list,
    /// as `ODB_URL` is in the examples). The first connection tries each once, in order; after
    /// a break, the client goes on from the URL after the one that broke.
    pub fn urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.urls = urls
            .into_iter()
            .flat_map(|u| split_urls(&u.into()))
            .collect();
        self
    }

    /// How the client reconnects after its connection breaks (default
    /// [`ReconnectPolicy::default`]: forever, with backoff from 100 ms to 5 s);
    /// [`ReconnectPolicy::disabled`] closes the client instead.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
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

    /// How long to wait for a TCP connection and the server's welcome (default 10 s), on the
    /// first connection and on each reconnection attempt.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// For `odbs://` URLs: trust the certificates in this PEM file (a CA, or the server's
    /// self-signed certificate, pinned) instead of the system's root certificates. The server's
    /// certificate is always verified, including its name.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Seeds the client's random choices (reconnect jitter, its commit-id session), for
    /// reproducible tests. By default they are seeded at random.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Connects and authenticates.
    ///
    /// `odb://host:port` is plaintext TCP; `odbs://host:port` is TLS, verifying the server's
    /// certificate (see [`ClientBuilder::tls_ca_file`]). With several URLs, each is tried once
    /// in order until one answers. Once connected, the client reconnects by itself when the
    /// connection breaks (see [`ClientBuilder::reconnect`]); this first connection is not
    /// retried, so that a wrong address or token is reported at once.
    ///
    /// Fails with [`Error::Unauthorized`] for a wrong token, [`Error::Io`] when nothing
    /// listens at the address, [`Error::Invalid`] for a malformed URL, [`Error::Tls`] when the
    /// server's certificate is not trusted or the handshake fails, and [`Error::Protocol`] when
    /// the server does not speak the ODB protocol (for example a TLS port asked with `odb://`).
    pub async fn connect(self) -> Result<Client> {
        let endpoints = self
            .urls
            .iter()
            .map(|u| parse_url(u))
            .collect::<Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            return Err(Error::Invalid(
                "no server URL given: expected odb://host:port".into(),
            ));
        }
        let ca_file = self.tls_ca_file.clone();
        let timeout = self.connect_timeout;
        let endpoints = Arc::new(endpoints);
        let dial_endpoints = endpoints.clone();
        let dialer: Dialer = Arc::new(move |index| {
            let endpoint = dial_endpoints[index % dial_endpoints.len()].clone();
            let ca_file = ca_file.clone();
            Box::pin(async move { dial(&endpoint, ca_file.as_deref(), timeout).await })
        });
        let session = self.session(endpoints.len());
        let mut last_error = None;
        for index in 0..endpoints.len() {
            let attempt = async {
                let stream = dialer(index).await?;
                tokio::time::timeout(timeout, driver::handshake(&session, stream))
                    .await
                    .map_err(|_| Error::Timeout(timeout, "the server's welcome".into()))?
            };
            match attempt.await {
                Ok(transport) => return self.finish(session, Some(dialer), transport).await,
                // The session is not started yet: its core learns nothing of these failures.
                Err(e) if driver::is_permanent(&e) => return Err(e),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            Error::Invalid("no server URL given: expected odb://host:port".into())
        }))
    }

    /// Connects over an already open byte stream (for example an in-process pipe to an
    /// embedded server) speaking the ODB protocol. There is nothing to reconnect to: when the
    /// stream breaks, the client closes.
    pub async fn connect_stream<S>(self, stream: S) -> Result<Client>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let session = self.session(0);
        let timeout = self.connect_timeout;
        let transport = tokio::time::timeout(
            timeout,
            driver::handshake(&session, Box::new(stream) as BoxStream),
        )
        .await
        .map_err(|_| Error::Timeout(timeout, "the server's welcome".into()))??;
        self.finish(session, None, transport).await
    }

    fn session(&self, urls: usize) -> Arc<Session> {
        let core = ClientCore::new(
            CoreConfig {
                token: self.token.clone(),
                name: self.name.clone(),
                max_frame: self.max_frame,
                policy: self.reconnect,
                urls,
                retain_history: self.retain_history,
                seed: self.seed.unwrap_or_else(Rng::seed),
            },
            Instant::now(),
        );
        Session::new(core, self.max_frame, self.connect_timeout)
    }

    /// Starts the driver on the first connection, then defines the `core` schema so that the
    /// connection's own `core.Connection` object (pushed right after the welcome) can be read
    /// without subscribing.
    async fn finish(
        self,
        session: Arc<Session>,
        dialer: Option<Dialer>,
        transport: driver::Transport,
    ) -> Result<Client> {
        tokio::spawn(driver::run(session.clone(), dialer, transport));
        let client = Client {
            inner: Arc::new(Inner {
                shared: session.shared.clone(),
                session,
                max_retries: self.max_retries,
            }),
        };
        let timeout = self.connect_timeout;
        let core = crate::system::schema();
        tokio::time::timeout(timeout, client.define_schema(core))
            .await
            .map_err(|_| Error::Timeout(timeout, "the definition of the core schema".into()))??;
        let info = client.known_type(<crate::system::Connection as Object>::type_def())?;
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

/// Splits a comma-separated list of URLs.
fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses `odb://host:port` or `odbs://host:port`, with a message that says what is wrong.
fn parse_url(url: &str) -> Result<Endpoint> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(Error::Invalid(format!(
            "{url:?} is not a server URL: expected odb://host:port (or odbs://host:port for TLS)"
        )));
    };
    let tls = match scheme {
        "odb" => false,
        "odbs" => true,
        other => {
            return Err(Error::Invalid(format!(
                "unknown URL scheme {other:?} in {url:?}: expected odb://host:port (or odbs://host:port for TLS)"
            )))
        }
    };
    let addr = rest.trim_end_matches('/');
    if addr.is_empty() {
        return Err(Error::Invalid(format!(
            "{url:?} names no host: expected {scheme}://host:port"
        )));
    }
    let port = match addr.rsplit_once(':') {
        // An IPv6 address without a port ends with its bracket.
        Some((host, port)) if !host.is_empty() && !port.contains(']') => port,
        _ => {
            return Err(Error::Invalid(format!(
                "{url:?} has no port: expected {scheme}://host:port, such as {scheme}://{addr}:8000"
            )))
        }
    };
    if port.parse::<u16>().is_err() {
        return Err(Error::Invalid(format!(
            "the port {port:?} in {url:?} is not a number from 0 to 65535"
        )));
    }
    Ok(Endpoint {
        addr: addr.to_string(),
        tls,
    })
}

/// Opens a stream to one endpoint: TCP, then TLS for `odbs://`.
async fn dial(
    endpoint: &Endpoint,
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<BoxStream> {
    let addr = &endpoint.addr;
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Timeout(timeout, format!("a TCP connection to {addr}")))?
        .map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot connect to {addr}: {e}; is odb-server running there?"),
            ))
        })?;
    stream.set_nodelay(true)?;
    if endpoint.tls {
        let handshake = crate::tls::handshake(stream, addr, ca_file);
        let stream = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| Error::Timeout(timeout, format!("the TLS handshake with {addr}")))??;
        return Ok(Box::new(stream));
    }
    Ok(Box::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_say_what_is_wrong() {
        let err = |u: &str| parse_url(u).unwrap_err().to_string();
        assert!(
            err("odb://127.0.0.1").contains("has no port"),
            "{}",
            err("odb://127.0.0.1")
        );
        assert!(err("127.0.0.1:8000").contains("is not a server URL"));
        assert!(err("http://h:1").contains("unknown URL scheme"));
        assert!(err("odb://h:99999").contains("not a number"));
        assert!(err("odb://").contains("names no host"));
        assert!(err("odb://[::1]").contains("has no port"));
        assert!(parse_url("odb://[::1]:8000").is_ok());
        let e = parse_url("odbs://db.example.com:443/").unwrap();
        assert!(e.tls);
        assert_eq!(e.addr, "db.example.com:443");
    }

    #[test]
    fn url_lists_split_on_commas() {
        assert_eq!(
            split_urls(" odb://a:1, odb://b:2 ,,"),
            vec!["odb://a:1".to_string(), "odb://b:2".to_string()]
        );
        let b = ClientBuilder::new("odb://a:1".into()).urls(["odb://x:1,odb://y:2", "odb://z:3"]);
        assert_eq!(b.urls.len(), 3);
    }

    #[test]
    fn debug_hides_the_token() {
        let b = ClientBuilder::new("odb://a:1".into()).token("s3cret");
        assert!(!format!("{b:?}").contains("s3cret"));
    }
}
