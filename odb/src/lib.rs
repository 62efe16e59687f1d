//! ODB client SDK.
#![warn(missing_docs)]

mod error;
mod object;
mod schema;
mod view;
mod local;
mod registry;
mod replica;
mod ids;
mod client;
mod connection;
#[cfg(feature = "server")]
pub mod server;
mod transaction;

pub use client::{Client, ClientBuilder, DEFAULT_MAX_RETRIES};
pub use error::{Error, Result};
pub use object::{encode_value, Handle, Object, Ref};
pub use schema::{FieldDef, IndexDef, IndexValue, Schema, TypeDef};
pub use odb_wire::{ObjectId, Tid};
pub use view::{Read, View};
pub use transaction::Transaction;
pub use odb_derive::{schema, Object};

#[doc(hidden)]
pub mod __private {
    pub use crate::object::ops;
    pub use crate::object::{__decode_field, __decode_field_or_default};
    pub use bytes::Bytes;
    pub use once_cell::sync::Lazy;
    pub use serde;
}
