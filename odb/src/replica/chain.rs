//! One key's retained versions: a field of an object, or its membership in an index.

use super::value::Value;
use super::Version;

/// One version of a key: from `Version` on, the value (`None`: absent).
pub(super) type Entry = (Version, Option<Value>);

/// One key's versions, oldest first, with the key (a field or index id). A `None` value means
/// "absent from that version on".
///
/// Almost every key has exactly one retained version, which is stored inline so that reading
/// it does not follow another pointer; the key shares the word of the enum's tag.
#[derive(Debug, Clone)]
pub(super) enum Chain<K> {
    /// Exactly one version.
    One(K, Entry),
    /// No version, or several.
    Many(K, Vec<Entry>),
}

impl<K: Copy> Chain<K> {
    /// A key without versions.
    pub fn new(key: K) -> Chain<K> {
        Chain::Many(key, Vec::new())
    }

    pub fn key(&self) -> K {
        match self {
            Chain::One(key, _) | Chain::Many(key, _) => *key,
        }
    }

    pub fn entries(&self) -> &[Entry] {
        match self {
            Chain::One(_, entry) => std::slice::from_ref(entry),
            Chain::Many(_, list) => list,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    #[inline]
    pub fn at(&self, at: Version) -> Option<&[u8]> {
        match self {
            Chain::One(_, (v, value)) => value.as_deref().filter(|_| *v <= at),
            Chain::Many(_, list) => list
                .iter()
                .rev()
                .find(|(v, _)| *v <= at)
                .and_then(|(_, value)| value.as_deref()),
        }
    }

    /// Appends a version (the replica's versions only grow). Returns whether the chain now
    /// holds more than its current value (see [`Chain::has_history`]): only then can pruning
    /// ever change it.
    pub fn push(&mut self, version: Version, value: Option<Value>) -> bool {
        let key = self.key();
        match self {
            Chain::One(_, last) if last.0 == version => last.1 = value,
            Chain::Many(_, list) if list.is_empty() => *self = Chain::One(key, (version, value)),
            Chain::Many(_, list) => match list.last_mut() {
                Some(last) if last.0 == version => last.1 = value,
                _ => list.push((version, value)),
            },
            Chain::One(..) => {
                let old = std::mem::replace(self, Chain::Many(key, Vec::with_capacity(2)));
                if let (Chain::One(_, first), Chain::Many(_, list)) = (old, &mut *self) {
                    list.push(first);
                    list.push((version, value));
                }
            }
        }
        self.has_history()
    }

    /// Drops versions older than the newest one visible at `horizon`, and a final absence
    /// nobody can see past. Returns the dropped values that no longer appear in the chain.
    pub fn prune(&mut self, horizon: Version) -> Vec<Value> {
        let key = self.key();
        let list = match self {
            Chain::One(_, (v, None)) if *v <= horizon => {
                *self = Chain::new(key);
                return Vec::new();
            }
            Chain::One(..) => return Vec::new(),
            Chain::Many(_, list) => list,
        };
        let keep_from = list.iter().rposition(|(v, _)| *v <= horizon).unwrap_or(0);
        let mut dropped: Vec<Value> = list.drain(..keep_from).filter_map(|(_, v)| v).collect();
        if matches!(list.as_slice(), [(v, None)] if *v <= horizon) {
            list.clear();
        }
        dropped.retain(|d| {
            !list
                .iter()
                .any(|(_, kept)| kept.as_ref().is_some_and(|k| k == d))
        });
        match list.len() {
            0 => *self = Chain::new(key),
            1 => {
                if let Some(entry) = list.pop() {
                    *self = Chain::One(key, entry);
                }
            }
            _ => {}
        }
        dropped
    }

    /// True when more versions than the current one are retained (pruning is pending).
    pub fn has_history(&self) -> bool {
        let entries = self.entries();
        entries.len() > 1 || matches!(entries, [(_, None)])
    }

    /// The newest value.
    pub fn latest(&self) -> Option<&[u8]> {
        self.entries()
            .last()
            .and_then(|(_, value)| value.as_deref())
    }
}

/// The chain of `key` in `chains`, added without versions when absent.
pub(super) fn chain_mut<K: PartialEq + Copy>(chains: &mut Vec<Chain<K>>, key: K) -> &mut Chain<K> {
    let pos = match chains.iter().position(|c| c.key() == key) {
        Some(pos) => pos,
        None => {
            chains.push(Chain::new(key));
            chains.len() - 1
        }
    };
    &mut chains[pos]
}

#[cfg(test)]
mod tests {
    use super::*;
    use odb_wire::FieldId;

    #[test]
    fn a_chain_with_its_key_takes_no_more_room_than_without() {
        assert_eq!(std::mem::size_of::<Chain<FieldId>>(), 40);
    }

    #[test]
    fn pushing_and_pruning_keep_the_key() {
        let mut chain = Chain::new(FieldId(3));
        assert!(!chain.push(Version::test(1), Some(Value::new(b"a"))));
        assert!(chain.push(Version::test(2), Some(Value::new(b"b"))));
        assert_eq!(chain.key(), FieldId(3));
        assert_eq!(chain.at(Version::test(1)), Some(&b"a"[..]));
        assert_eq!(chain.prune(Version::test(2)), vec![Value::new(b"a")]);
        assert!(!chain.has_history());
        assert_eq!(chain.key(), FieldId(3));
        assert_eq!(chain.latest(), Some(&b"b"[..]));
    }
}
