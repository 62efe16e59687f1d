//! The object ids granted to one connection. A client may create objects only with ids the
//! server granted it, so that no client can take an id reserved for another or for the server's
//! own objects.

use odb_wire::{IdBlock, ObjectId};
use std::collections::VecDeque;

/// Most blocks remembered per connection. Clients use their blocks in the order granted, so a
/// client that asked for this many more has long used up the oldest, which is forgotten.
pub(crate) const MAX_BLOCKS: usize = 1024;

/// The id blocks granted to one connection, oldest first; adjacent blocks are merged.
#[derive(Debug, Default)]
pub(crate) struct IdGrants {
    blocks: VecDeque<IdBlock>,
}

impl IdGrants {
    /// Records a granted block.
    pub fn grant(&mut self, block: IdBlock) {
        if block.len == 0 {
            return;
        }
        if let Some(last) = self.blocks.back_mut() {
            if last.start.checked_add(last.len) == Some(block.start) {
                last.len = last.len.saturating_add(block.len);
                return;
            }
        }
        if self.blocks.len() >= MAX_BLOCKS {
            self.blocks.pop_front();
        }
        self.blocks.push_back(block);
    }

    /// Whether `id` lies in a block granted to this connection.
    pub fn contains(&self, id: ObjectId) -> bool {
        // Newest first: a client creates objects with the ids it was granted last.
        self.blocks
            .iter()
            .rev()
            .any(|b| id.0 >= b.start && id.0 - b.start < b.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_ids_only() {
        let mut grants = IdGrants::default();
        assert!(!grants.contains(ObjectId(1)));
        grants.grant(IdBlock { start: 10, len: 5 });
        grants.grant(IdBlock { start: 15, len: 5 });
        grants.grant(IdBlock { start: 100, len: 1 });
        assert_eq!(grants.blocks.len(), 2, "adjacent blocks merge");
        assert!(grants.contains(ObjectId(10)) && grants.contains(ObjectId(19)));
        assert!(!grants.contains(ObjectId(20)) && !grants.contains(ObjectId(9)));
        assert!(grants.contains(ObjectId(100)) && !grants.contains(ObjectId(101)));
        grants.grant(IdBlock {
            start: u64::MAX,
            len: 1,
        });
        assert!(grants.contains(ObjectId(u64::MAX)));
    }

    #[test]
    fn memory_is_bounded() {
        let mut grants = IdGrants::default();
        for n in 0..(MAX_BLOCKS as u64 + 10) {
            grants.grant(IdBlock {
                start: n * 10,
                len: 1,
            });
        }
        assert_eq!(grants.blocks.len(), MAX_BLOCKS);
        assert!(!grants.contains(ObjectId(0)));
    }
}
