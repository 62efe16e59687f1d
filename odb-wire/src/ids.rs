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

/// The identity of a database: random when it is created, kept by durable storage.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseId(pub u128);

impl fmt::Debug for DatabaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseId({:032x})", self.0)
    }
}

impl fmt::Display for DatabaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A commit's identity, chosen by the client: its session (random, one per client) and the
/// commit's number in that session.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct CommitId {
    /// The client session, random.
    pub session: u128,
    /// The commit's number in the session, counting from 1.
    pub seq: u64,
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}/{}", self.session, self.seq)
    }
}

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
#[derive(Clone, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum Key {
    /// One field of one object. An object's existence is its type's existence field.
    Field(ObjectId, FieldId),
    /// The set of objects whose index has exactly this encoded value.
    Index(IndexId, bytes::Bytes),
}

// Equality is written out to compare index values with `bytes_eq`; hashing is written out
// along with it so that the two stay consistent.
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Key::Field(object, field) => {
                state.write_u8(0);
                object.hash(state);
                field.hash(state);
            }
            Key::Index(index, value) => {
                state.write_u8(1);
                index.hash(state);
                value.hash(state);
            }
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        match (self, other) {
            (Key::Field(o, f), Key::Field(p, g)) => o == p && f == g,
            (Key::Index(i, v), Key::Index(j, w)) => i == j && bytes_eq(v, w),
            _ => false,
        }
    }
}

/// Whether two byte strings are equal, without calling `memcmp` for empty ones.
///
/// Empty `Bytes` (every empty index value, such as the all-objects index's) point at a
/// dangling address, and some `memcmp` implementations (glibc's AVX-512 one) take a slow
/// fault-suppressing path when asked to compare zero bytes there: over a hundred times the
/// cost of comparing short values.
#[inline]
pub fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn keys_compare_by_value() {
        let empty = Key::Index(IndexId(1), Bytes::new());
        assert_eq!(empty, Key::Index(IndexId(1), Bytes::from(Vec::new())));
        assert_ne!(empty, Key::Index(IndexId(2), Bytes::new()));
        assert_ne!(empty, Key::Index(IndexId(1), Bytes::from_static(b"a")));
        assert_eq!(
            Key::Index(IndexId(1), Bytes::from_static(b"ab")),
            Key::Index(IndexId(1), Bytes::from(b"ab".to_vec()))
        );
        assert_eq!(
            Key::Field(ObjectId(1), FieldId(2)),
            Key::Field(ObjectId(1), FieldId(2))
        );
        assert_ne!(
            Key::Field(ObjectId(1), FieldId(2)),
            Key::Field(ObjectId(1), FieldId(3))
        );
        assert_ne!(Key::Field(ObjectId(1), FieldId(1)), empty);
    }
}
