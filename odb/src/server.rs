//! An embedded ODB server running inside this process (feature `server`).
//!
//! ```no_run
//! # async fn demo() -> odb::Result<()> {
//! let server = odb::server::Server::in_memory().start().await?;
//! let db = server.client().await?;   // an in-process connection, no sockets
//! # Ok(()) }
//! ```
//!
//! The embedded server is the same server as the `odb-server` binary: clients connected in
//! process speak the same protocol as remote ones, and [`ServerBuilder::listen`] also accepts
//! TCP clients, over TLS with [`ServerBuilder::tls`]:
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use odb::server::{Server, TlsConfig};
//!
//! // A fresh certificate for 127.0.0.1; clients pin its PEM (or use a CA-signed one,
//! // `TlsConfig::from_pem_files`).
//! let tls = TlsConfig::self_signed(&["127.0.0.1".to_string()])?;
//! let server = Server::in_memory()
//!     .listen(([127, 0, 0, 1], 0).into())
//!     .token("TOKEN")
//!     .tls(tls.clone())
//!     .start()
//!     .await?;
//! let url = server.url().unwrap_or_default();
//! assert!(url.starts_with("odbs://127.0.0.1:"));
//!
//! let pem = std::env::temp_dir().join(format!("odb-doc-{}.pem", std::process::id()));
//! std::fs::write(&pem, tls.certificate_pem().unwrap_or_default())?;
//! let db = odb::Client::builder(url).token("TOKEN").tls_ca_file(&pem).connect().await?;
//! assert_eq!(server.stats().connections, 1);
//! # drop(db); std::fs::remove_file(&pem)?;
//! # Ok(()) }
//! ```

use crate::{Client, Error, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use odb_server::storage::{self, Storage};
pub use odb_server::{ServerConfig, ServerStats, TlsConfig};

/// Entry point for starting an embedded server.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A server keeping its data in memory (nothing survives the process).
    pub fn in_memory() -> ServerBuilder {
        ServerBuilder {
            config: ServerConfig::new(random_token()),
            listen: None,
            storage: None,
        }
    }

    /// A server that also stores its data in an embedded database in the directory `dir`
    /// (created if missing), like `odb-server --data-dir`: a server started later on the same
    /// directory continues with its data, tids and ids. Every commit is stored before it is
    /// acknowledged.
    ///
    /// Fails with [`Error::Server`] if the directory cannot be opened, for example because
    /// another server holds it.
    pub fn in_dir(dir: impl AsRef<Path>) -> Result<ServerBuilder> {
        let dir = dir.as_ref();
        let storage = odb_server::storage::FileStorage::open(dir)
            .map_err(|e| Error::Server(format!("cannot open {}: {e}", dir.display())))?;
        Ok(Self::with_storage(storage))
    }

    /// A server that also stores its data in `storage` (see [`storage`], which also has a
    /// Redis backend), loading what it already holds when it starts.
    pub fn with_storage(storage: impl Storage) -> ServerBuilder {
        ServerBuilder {
            storage: Some(Box::new(storage)),
            ..Self::in_memory()
        }
    }
}

/// Configures an embedded server before starting it.
pub struct ServerBuilder {
    config: ServerConfig,
    listen: Option<SocketAddr>,
    storage: Option<Box<dyn Storage>>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("listen", &self.listen)
            .field("storage", &self.storage.as_ref().map(|s| s.describe()))
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// The service token TCP clients must present (default: a random one; in-process clients
    /// made with [`RunningServer::client`] always use the right token).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = token.into();
        self
    }

    /// Also accept TCP clients on this address (port 0 picks a free port; see
    /// [`RunningServer::local_addr`]).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Serve Prometheus metrics over HTTP at `/metrics` on this address, and the web inspector
    /// at `/` (port 0 picks a free port; see [`RunningServer::metrics_addr`]). Only loopback
    /// addresses are accepted unless [`ServerConfig::metrics_allow_remote`] is set.
    pub fn metrics(mut self, addr: SocketAddr) -> Self {
        self.config.metrics_addr = Some(addr);
        self
    }

    /// How often heartbeats are exchanged.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval;
        self
    }

    /// Serves TCP clients over TLS with this certificate: they connect to `odbs://` URLs
    /// ([`RunningServer::url`] gives one). In-process clients never use TLS.
    ///
    /// Build the configuration with [`TlsConfig::from_pem_files`] (a certificate signed by a
    /// CA the clients trust) or [`TlsConfig::self_signed`] (clients pin
    /// [`TlsConfig::certificate_pem`] with `ClientBuilder::tls_ca_file`); either fails with a
    /// message naming the file or the name that could not be used.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Replaces the whole server configuration (the token and the TLS setting included).
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts the server's tasks on the current tokio runtime.
    ///
    /// Fails with [`Error::Io`] when the listen address cannot be bound, [`Error::Server`]
    /// when the storage cannot be read, and [`Error::Invalid`] for an unusable setting (for
    /// example plaintext TCP on an address other than loopback without TLS).
    pub async fn start(self) -> Result<RunningServer> {
        let token = self.config.token.clone();
        let tls = self.config.tls.is_some();
        let started = match self.storage {
            Some(storage) => {
                odb_server::Server::start_with_storage(self.config, self.listen, storage).await
            }
            None => odb_server::Server::start(self.config, self.listen).await,
        };
        let server = started.map_err(start_error)?;
        Ok(RunningServer { server, token, tls })
    }
}

/// A running embedded server. Dropping it stops the server.
pub struct RunningServer {
    server: odb_server::Server,
    token: String,
    /// Whether TCP clients must use TLS, for [`RunningServer::url`].
    tls: bool,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("local_addr", &self.server.local_addr())
            .finish()
    }
}

impl RunningServer {
    /// Connects a new client over an in-process pipe.
    pub async fn client(&self) -> Result<Client> {
        let stream = self
            .server
            .connect_in_process()
            .map_err(|e| Error::Disconnected(e.to_string()))?;
        Client::builder("odb://in-process")
            .token(self.token.clone())
            .connect_stream(stream)
            .await
    }

    /// The TCP address the server listens on, if it was started with [`ServerBuilder::listen`].
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.local_addr()
    }

    /// The address of the metrics endpoint, if it was started with [`ServerBuilder::metrics`]
    /// or [`ServerConfig::metrics_addr`].
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.metrics_addr()
    }

    /// The URL TCP clients connect to, if the server listens on TCP: `odbs://addr` when it
    /// serves TLS ([`ServerBuilder::tls`]), `odb://addr` otherwise.
    ///
    /// With TLS, the client checks the certificate against the URL's host, so the certificate
    /// must name the listening address (for example `127.0.0.1`), or the client must connect
    /// to a name the certificate holds.
    pub fn url(&self) -> Option<String> {
        let scheme = if self.tls { "odbs" } else { "odb" };
        self.local_addr().map(|a| format!("{scheme}://{a}"))
    }

    /// The tid of the server's last commit (`Tid(0)` before the first).
    pub fn current_tid(&self) -> crate::Tid {
        self.server.current_tid()
    }

    /// The server's counters: tid, live connections, objects, conflict-history size and what
    /// is queued for clients. Cheap enough to poll.
    pub fn stats(&self) -> ServerStats {
        self.server.stats()
    }

    /// The service token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The underlying server of the `odb-server` crate, for what this type does not offer.
    pub fn inner(&self) -> &odb_server::Server {
        &self.server
    }

    /// Stops the server and waits for its tasks to end.
    pub async fn shutdown(self) {
        self.server.shutdown().await
    }
}

/// The client SDK's error for a server that could not start, keeping the kind of failure.
fn start_error(e: odb_server::ServerError) -> Error {
    use odb_server::ServerError;
    match e {
        ServerError::Bind { .. } => Error::Io(std::io::Error::other(e.to_string())),
        ServerError::Io(io) => Error::Io(io),
        ServerError::Config(reason) => Error::Invalid(reason),
        ServerError::Tls(reason) => Error::Tls(reason),
        ServerError::Storage(_) | ServerError::Stopped | ServerError::Failed(_) => {
            Error::Server(e.to_string())
        }
    }
}

fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut token = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        token.push_str(&format!("{:016x}", h.finish()));
    }
    token
}
