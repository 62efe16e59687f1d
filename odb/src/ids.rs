//! Object ids granted by the server in blocks and handed out locally, no round trip per create.

use odb_wire::{IdBlock, ObjectId};
use std::collections::VecDeque;

/// The unused ids of the blocks this client holds. Blocks belong to the connection they were
/// granted on: the server accepts creations only with ids granted to the connection that sends
/// them, so a new connection starts an empty pool ([`IdPool::reset`]).
#[derive(Debug, Default)]
pub(crate) struct IdPool {
    blocks: VecDeque<IdBlock>,
    link: u64,
}

impl IdPool {
    /// Forgets every block: connection `link` starts with none.
    pub fn reset(&mut self, link: u64) {
        self.blocks.clear();
        self.link = link;
    }

    /// The connection the ids in the pool were granted on.
    pub fn link(&self) -> u64 {
        self.link
    }

    pub fn add(&mut self, block: IdBlock) {
        if block.len > 0 {
            self.blocks.push_back(block);
        }
    }

    pub fn take(&mut self) -> Option<ObjectId> {
        let block = self.blocks.front_mut()?;
        let id = ObjectId(block.start);
        block.start += 1;
        block.len -= 1;
        if block.len == 0 {
            self.blocks.pop_front();
        }
        Some(id)
    }

    pub fn remaining(&self) -> u64 {
        self.blocks.iter().map(|b| b.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_out_in_block_order_and_run_out() {
        let mut pool = IdPool::default();
        pool.add(IdBlock { start: 10, len: 2 });
        pool.add(IdBlock { start: 50, len: 1 });
        assert_eq!(pool.remaining(), 3);
        let ids: Vec<_> = std::iter::from_fn(|| pool.take()).collect();
        assert_eq!(ids, vec![ObjectId(10), ObjectId(11), ObjectId(50)]);
        assert_eq!(pool.remaining(), 0);
    }
}
