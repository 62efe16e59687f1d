//! One state of one object as the replica keeps it: a single exact-size heap buffer.
//!
//! The buffer starts with the local version from which the state holds (8 bytes, little
//! endian), followed by one entry per field that has a value, then one per index the object is
//! a member of (fields first, so that reading a field stops at the first index). An entry is a LEB128 varint tag (the field or index id shifted left by one, with
//! the low bit set for an index), the value's length as a varint, and the value's bytes. A
//! state without entries is a deleted object (a tombstone kept while open snapshots may still
//! read the states before it).
//!
//! Objects are small, so reading a field is a short linear scan over neighbouring bytes, and a
//! change rebuilds the object once. A typical three-field object with one index takes about 50
//! bytes in one allocation, where a value and version per key took 40 bytes per key in
//! separate vectors.

use super::Version;
use odb_wire::leb128::{get, put};
use odb_wire::{FieldId, IndexId};

/// What an entry of a record holds: a field's value or an index membership's value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Slot {
    Field(FieldId),
    Index(IndexId),
}

impl Slot {
    fn tag(self) -> u64 {
        match self {
            Slot::Field(f) => u64::from(f.0) << 1,
            Slot::Index(i) => (u64::from(i.0) << 1) | 1,
        }
    }

    fn from_tag(tag: u64) -> Slot {
        let id = (tag >> 1) as u32;
        match tag & 1 {
            0 => Slot::Field(FieldId(id)),
            _ => Slot::Index(IndexId(id)),
        }
    }
}

/// One state of one object, from its version on.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Record {
    data: Box<[u8]>,
}

const HEADER: usize = 8;

impl Record {
    /// A record of `entries` from `version` on. Entries must name distinct slots, fields
    /// first.
    pub fn build<'a>(
        version: Version,
        entries: impl IntoIterator<Item = (Slot, &'a [u8])>,
        scratch: &mut Vec<u8>,
    ) -> Record {
        scratch.clear();
        scratch.extend_from_slice(&version.0.to_le_bytes());
        for (slot, value) in entries {
            put(scratch, slot.tag());
            put(scratch, value.len() as u64);
            scratch.extend_from_slice(value);
        }
        Record {
            data: scratch.as_slice().into(),
        }
    }

    /// A deleted object's state from `version` on.
    pub fn tombstone(version: Version) -> Record {
        Record::build(version, [], &mut Vec::with_capacity(HEADER))
    }

    /// The version from which this state holds.
    #[inline]
    pub fn version(&self) -> Version {
        let mut bytes = [0u8; HEADER];
        if let Some(header) = self.data.get(..HEADER) {
            bytes.copy_from_slice(header);
        }
        Version(u64::from_le_bytes(bytes))
    }

    /// Whether this is a deleted object's state.
    pub fn is_tombstone(&self) -> bool {
        self.data.len() <= HEADER
    }

    /// Every entry, in the order they were built.
    #[inline]
    pub fn entries(&self) -> Entries<'_> {
        Entries {
            data: &self.data,
            pos: HEADER,
        }
    }

    /// The value of one slot.
    #[inline]
    pub fn get(&self, slot: Slot) -> Option<&[u8]> {
        let mut entries = self.entries();
        match slot {
            Slot::Field(_) => entries
                .take_while(|(s, _)| matches!(s, Slot::Field(_)))
                .find(|(s, _)| *s == slot),
            Slot::Index(_) => entries.find(|(s, _)| *s == slot),
        }
        .map(|(_, v)| v)
    }

    /// Field `field` when the existence field `exists` has a value (`Some(None)`: alive
    /// without a value for `field`), in one pass; `None` when the object is not alive.
    #[inline]
    pub fn live_field(&self, exists: FieldId, field: FieldId) -> Option<Option<&[u8]>> {
        let mut alive = false;
        let mut value = None;
        for (slot, bytes) in self.entries() {
            let Slot::Field(f) = slot else {
                break;
            };
            alive |= f == exists;
            if f == field {
                value = Some(bytes);
            }
            if alive && value.is_some() {
                break;
            }
        }
        alive.then_some(value)
    }

    /// Index values of this record, as `(index, value)`.
    pub fn index_values(&self) -> impl Iterator<Item = (IndexId, &[u8])> {
        self.entries().filter_map(|(slot, v)| match slot {
            Slot::Index(i) => Some((i, v)),
            Slot::Field(_) => None,
        })
    }

    /// Whether this record has exactly `value` in `index`.
    pub fn has_index_value(&self, index: IndexId, value: &[u8]) -> bool {
        self.get(Slot::Index(index)) == Some(value)
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("version", &self.version())
            .field("entries", &self.entries().collect::<Vec<_>>())
            .finish()
    }
}

/// The entries of a [`Record`].
pub(super) struct Entries<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = (Slot, &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<(Slot, &'a [u8])> {
        if self.pos >= self.data.len() {
            return None;
        }
        let slot = Slot::from_tag(get(self.data, &mut self.pos));
        let len = get(self.data, &mut self.pos) as usize;
        let start = self.pos;
        self.pos = start.saturating_add(len);
        Some((slot, self.data.get(start..self.pos).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_keeps_its_version_and_entries() {
        let long = vec![7u8; 300];
        let entries = [
            (Slot::Field(FieldId(0)), &b""[..]),
            (Slot::Field(FieldId(200)), &b"abc"[..]),
            (Slot::Index(IndexId(3)), &b""[..]),
            (Slot::Index(IndexId(70_000)), &long[..]),
        ];
        let record = Record::build(Version::test(u64::MAX - 1), entries, &mut Vec::new());
        assert_eq!(record.version(), Version::test(u64::MAX - 1));
        assert_eq!(record.entries().collect::<Vec<_>>(), entries.to_vec());
        assert_eq!(record.get(Slot::Field(FieldId(200))), Some(&b"abc"[..]));
        assert_eq!(record.get(Slot::Field(FieldId(3))), None);
        assert_eq!(
            record.live_field(FieldId(0), FieldId(200)),
            Some(Some(&b"abc"[..]))
        );
        assert_eq!(record.live_field(FieldId(0), FieldId(9)), Some(None));
        assert_eq!(record.live_field(FieldId(1), FieldId(200)), None);
        assert!(record.has_index_value(IndexId(70_000), &long));
        assert!(!record.is_tombstone());
        assert!(Record::tombstone(Version::test(4)).is_tombstone());
    }

    #[test]
    fn a_small_object_takes_one_small_buffer() {
        let entries = [
            (Slot::Field(FieldId(1)), &b""[..]),
            (Slot::Field(FieldId(2)), &b"\x0bitem-000123"[..]),
            (Slot::Field(FieldId(3)), &b"\x07"[..]),
            (Slot::Field(FieldId(4)), &b"\x09"[..]),
            (Slot::Index(IndexId(1)), &b""[..]),
            (Slot::Index(IndexId(2)), &b"\x0bitem-000123"[..]),
        ];
        let record = Record::build(Version::test(1), entries, &mut Vec::new());
        assert!(record.data.len() <= 50, "{}", record.data.len());
        assert_eq!(std::mem::size_of::<Option<Record>>(), 16);
    }
}
