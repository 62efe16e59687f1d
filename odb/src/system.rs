//! The built-in schema the server maintains; on the wire and in the server's logs it is named
//! `core`. (The module is `odb::system` rather than `odb::core`, which would shadow the `core`
//! crate in programs that `use odb::*`.)
//!
//! The server represents every live connection by a [`Connection`] object whose id is the
//! connection's id ([`Client::connection_id`](crate::Client::connection_id)). It creates the
//! object when the connection is established and deletes it when the connection ends for any
//! reason (closed, broken, or silent for too many heartbeat intervals), so a client that
//! subscribes to the type sees connections appear and disappear:
//!
//! ```
//! # async fn demo(db: odb::Client) -> odb::Result<()> {
//! db.subscribe_type::<odb::system::Connection>().await?;
//! let live = db.view(|v| odb::system::Connection::lookup_all(v))?;
//! # Ok(()) }
//! ```
//!
//! Every client can read its own object without subscribing: [`Client::connection`] returns
//! its handle.
//!
//! Setting [`Connection::suspend_heartbeat_checks`] to `true` on its own object keeps the server
//! from closing the connection for missed heartbeats, for example while the program is paused in
//! a debugger. The server reads the flag each time the connection's idle timeout expires.
//! That flag, on its own object, is all a client may write: the server refuses commits that
//! create or delete connection objects or write anything else to them.
//!
//! [`Client::connection`]: crate::Client::connection

#[crate::schema(name = "core")]
mod schema_module {
    /// One live connection to the server. Created and deleted by the server.
    #[derive(odb::Object, Debug, Clone, PartialEq, Eq)]
    pub struct Connection {
        /// The name the client gave when it connected ([`ClientBuilder::name`]).
        ///
        /// [`ClientBuilder::name`]: crate::ClientBuilder::name
        pub client_name: String,
        /// While `true`, the server does not close this connection for missed heartbeats.
        #[odb(default)]
        pub suspend_heartbeat_checks: bool,
    }
}

pub use schema_module::{schema, Connection};
