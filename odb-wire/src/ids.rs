//! Identifiers shared by the client and the server.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident($inner:ty)) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// An object's identity, unique across the whole database and never reused.
    ObjectId(u64)
);
id_type!(
    /// A field of one object type, assigned by the server per (schema, type, field name).
    FieldId(u32)
);
id_type!(
    /// An index of one object type, assigned by the server per (schema, type, index name).
    IndexId(u32)
);
id_type!(
    /// An object type, assigned by the server per (schema, type name).
    TypeId(u32)
);
id_type!(
    /// A transaction id: the position of a commit in the server's total order. Strictly
    /// increasing without gaps; `Tid(0)` is the empty database.
    Tid(u64)
);
id_type!(
    /// Correlates a client request with the server's answer on one connection.
    RequestId(u64)
);

impl Tid {
    /// The tid that follows this one.
    pub fn next(self) -> Tid {
        Tid(self.0 + 1)
    }
}

/// A contiguous block of object ids granted to one client: `start .. start + len`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct IdBlock {
    /// First id of the block.
    pub start: u64,
    /// Number of ids in the block.
    pub len: u64,
}

/// A conflict key: the unit at which the server tracks writes and validates reads.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Key {
    /// One field of one object. An object's existence is its type's existence field.
    Field(ObjectId, FieldId),
    /// The set of objects whose index has exactly this encoded value.
    Index(IndexId, bytes::Bytes),
}
