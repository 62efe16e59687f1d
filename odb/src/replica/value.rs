//! A field or index value as the replica keeps it.
//!
//! Most values are small (numbers, short strings, the empty value of a type's all-objects
//! index), so they are stored inline: a `Bytes` would take 32 bytes plus an allocation of its
//! own, and, once shared with the index candidates, a second allocation for its reference
//! count. Longer values get one exact-size allocation.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// Longest value stored inline: the variant then takes as much room as the boxed one.
const INLINE: usize = 22;

/// An immutable byte string, inline when short.
#[derive(Clone)]
pub(crate) enum Value {
    /// `len` bytes at the start of `bytes`.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// A longer value.
    Heap(Box<[u8]>),
}

impl Value {
    /// A copy of `bytes`.
    pub fn new(bytes: &[u8]) -> Value {
        let mut inline = [0u8; INLINE];
        match (inline.get_mut(..bytes.len()), u8::try_from(bytes.len())) {
            (Some(prefix), Ok(len)) => {
                prefix.copy_from_slice(bytes);
                Value::Inline { len, bytes: inline }
            }
            _ => Value::Heap(bytes.into()),
        }
    }

    /// The bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Value::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Value::Heap(bytes) => bytes,
        }
    }
}

impl std::ops::Deref for Value {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for Value {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

// Equality and hash are those of the bytes, as `Borrow<[u8]>` requires for map lookups by
// slice.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_value_takes_three_words_and_keeps_its_bytes() {
        assert_eq!(std::mem::size_of::<Value>(), 24);
        assert_eq!(std::mem::size_of::<Option<Value>>(), 24);
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 1000] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let value = Value::new(&bytes);
            assert_eq!(value.as_slice(), &bytes[..]);
            assert_eq!(matches!(value, Value::Inline { .. }), len <= INLINE);
        }
    }

    #[test]
    fn a_map_keyed_by_values_is_found_by_slices() {
        let mut map = HashMap::new();
        map.insert(Value::new(b"short"), 1);
        map.insert(Value::new(&[9u8; 40]), 2);
        assert_eq!(map.get(&b"short"[..]), Some(&1));
        assert_eq!(map.get(&[9u8; 40][..]), Some(&2));
        assert_eq!(map.get(&b"other"[..]), None);
    }
}
