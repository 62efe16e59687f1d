//! The `odb` command's library: a read-only protocol session with a server, the schema
//! catalog that decodes stored values through their descriptions, and the commands.
//!
//! The command only reads: it subscribes to what it shows and never commits.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod commands;
pub mod error;
pub mod render;
pub mod session;

pub use error::CliError;
pub use odb_wire::catalog::{self, Catalog};
pub use session::{Session, Target};
