//! ODB: a distributed, in-memory, transactional object database with a typed Rust SDK.
//!
//! Declare data as Rust structs in an [`macro@schema`] module, connect a [`Client`] to a server,
//! subscribe to what you need, and read and write in [`Client::view`] and
//! [`Client::transaction`] closures. Reads are served from a local replica the server keeps
//! current; commits are optimistic and fail only when something they read was changed
//! concurrently, in which case the closure runs again.
//!
//! ```no_run
//! #[odb::schema]
//! pub mod hello_world {
//!     #[derive(odb::Object, Debug, Clone)]
//!     pub struct Message {
//!         #[index]
//!         pub channel: String,
//!         pub message: String,
//!     }
//! }
//! use hello_world::Message;
//!
//! # async fn demo() -> odb::Result<()> {
//! let db = odb::Client::builder("odb://127.0.0.1:8000").token("TOKEN").connect().await?;
//! db.subscribe(hello_world::schema()).await?;
//! let msg = db.transaction(|tx| {
//!     Message::create(tx, Message { channel: "general".into(), message: "hi".into() })
//! }).await?;
//! let text = db.view(|v| msg.message(v))?;
//! # Ok(()) }
//! # fn main() {}
//! ```
//!
//! The user guide (the `book/` directory of the repository) explains the conflict rules,
//! subscriptions and the protocol.
#![warn(missing_docs)]
// Library code answers bad input with errors, never panics: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

// The derive macros generate `::odb::` paths; this lets them work inside this crate too.
extern crate self as odb;

mod builder;
mod changes;
mod client;
mod commits;
pub mod describe;
mod driver;
mod error;
mod ids;
mod local;
mod object;
mod pending;
mod reactor;
mod refusal;
mod registry;
mod replica;
mod schema;
#[cfg(feature = "server")]
pub mod server;
mod session;
mod subscribe;
pub mod system;
mod tls;
mod transact;
mod transaction;
mod view;

pub use builder::ClientBuilder;
pub use changes::AppliedCommit;
pub use client::{Client, ClientStats, DEFAULT_MAX_RETRIES};
pub use commits::Commits;
pub use describe::{Describe, TypeDesc};
pub use error::{Error, Result};
pub use object::{encode_value, Handle, IndexArg, Object, Ref};
pub use odb_wire::{Key, ObjectId, Tid};
pub use pending::{PendingCommit, PendingSubscription};
pub use reactor::Reactor;
pub use schema::{FieldDef, IndexDef, IndexValue, Schema, TypeDef};
pub use session::{ConnectionStatus, ReconnectPolicy};
pub use tls::connect_tls;
pub use transact::TxOptions;
pub use transaction::Transaction;
pub use view::{Read, View};

/// Declares a schema: put it on an inline module holding `#[derive(odb::Object)]` structs.
///
/// The schema's name is the module's name, or `#[odb::schema(name = "...")]`. The module gains
/// `pub fn schema() -> &'static odb::Schema`, to pass to [`Client::subscribe`].
pub use odb_derive::schema;

/// Makes a struct an ODB object type (inside an [`macro@schema`] module).
///
/// Field attributes: `#[index]` (a single-field index named like the field), `#[odb(default)]`
/// (a missing stored value reads as `Default::default()`). Struct attribute:
/// `#[odb(index(NAME = (field_a, field_b)))]` (a composite index). Every index named `NAME` (a
/// field's index is named after the field) gets the lookups `lookup_{all,any,one,unique}_by_NAME`
/// and the index value `NAME_index`; a composite lookup takes a tuple whose elements may be
/// borrowed (`("ann", 3)` for `(String, u32)`). Generates the handle type
/// `odb::Ref<T>`, `T::create`, lookups, and field accessors; see the user guide's schema chapter.
pub use odb_derive::Object;

/// The names most programs use, for `use odb::prelude::*`: the client, the read trait that
/// gives views and transactions their `tid()`, the handle and object types, the error and the
/// macros. Unlike `use odb::*`, it brings in no module names.
pub mod prelude {
    pub use crate::{schema, Client, Error, Object, Read, Ref, Result, Transaction, View};
}
/// Describes a struct or an enum used as a field type, so that tools can decode its stored
/// values (see [`describe`]).
///
/// It follows the serde attributes that change the encoding: skipped fields are left out, and
/// `#[serde(transparent)]` describes the inner field; a type whose encoding it cannot follow
/// (`tag`, `untagged`, `flatten`, `with`, `into`, `from`) is described as opaque. Generic types
/// are not supported: implement [`Describe`] by hand for them.
pub use odb_derive::Describe;

#[doc(hidden)]
pub mod __private {
    pub use crate::describe::{__nested, Probe, ViaDescribe, ViaOpaque};
    pub use crate::object::ops;
    pub use crate::object::{__decode_field, __decode_field_or_default};
    pub use crate::object::{DescribeDebug, DescribeOther, Described};
    pub use bytes::Bytes;
    pub use once_cell::sync::Lazy;
    pub use serde;
}
