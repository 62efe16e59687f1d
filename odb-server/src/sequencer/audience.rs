//! Which connections a commit can concern, found from the commit's objects rather than by asking
//! every connection.
//!
//! A connection sees an object through a subscribed index value the object holds (or held
//! before the commit), through the object's id (subscribed, or kept after it left a subscribed
//! value), or because the connection created it. The audience indexes all three the other way
//! round, from what is watched to who watches it:
//!
//! - each subscribed index value, to its subscribers;
//! - each object watched by id, to its watchers;
//! - each page of object ids, to the connections granted ids on that page (a connection creates
//!   objects only with ids granted to it, or with the ids of a session it resumed).
//!
//! The candidates of a commit are a superset of the connections that see part of it, and
//! [`Visibility::select`](crate::subscriptions::Visibility::select) still decides for each of
//! them what it gets. A connection that sees nothing of a commit therefore costs that commit
//! nothing, unless it was granted ids on the page of one of the commit's objects (a page holds
//! the ids of two or three connections with the default id blocks): a server with thousands of
//! idle connections fans a commit out about as fast as one with none.

use crate::subscriptions::{Current, Visibility};
use bytes::Bytes;
use odb_wire::hash::{FastMap, FastSet};
use odb_wire::{IdBlock, IndexId, ObjectId};
use std::collections::HashMap;

/// Object ids per page of the ownership index: at least a default id block (100,000 ids), so
/// that one grant is indexed under one or two pages.
const PAGE_BITS: u32 = 17;

/// Most pages one connection's ids are indexed under. A connection granted more (a client that
/// asked for billions of ids, or resumed a session naming huge ranges) becomes a candidate for
/// every commit instead, which bounds the index's memory.
const MAX_PAGES: usize = 4096;

/// Most pages one connection's id ranges may name, repeats included, before it becomes a
/// candidate for every commit: bounds the work of a `Resume` naming the same large ranges many
/// times.
const MAX_PAGE_VISITS: u64 = 4 * MAX_PAGES as u64;

/// The connections that watch something; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Audience {
    /// Subscribed index values and their subscribers. Values come from clients and keep the
    /// default, seeded hasher.
    index_values: FastMap<IndexId, HashMap<Bytes, Vec<ObjectId>>>,
    /// How many index values each connection with any subscribes to.
    index_subscribers: FastMap<ObjectId, usize>,
    /// Objects watched by id and their watchers.
    objects: FastMap<ObjectId, Vec<ObjectId>>,
    /// Pages of object ids and the connections owning ids on them.
    pages: FastMap<u64, Vec<ObjectId>>,
    /// Connections owning ids on more than [`MAX_PAGES`] pages: candidates for every commit.
    everywhere: Vec<ObjectId>,
    /// The pages each connection owns ids on, to take it out when it ends.
    owned: FastMap<ObjectId, Owned>,
}

/// The pages one connection owns ids on.
#[derive(Debug, Default)]
struct Owned {
    pages: FastSet<u64>,
    /// Pages named so far, repeats included.
    visits: u64,
}

/// Adds `conn` to a list of connections unless it is there; returns whether it was added.
fn insert(list: &mut Vec<ObjectId>, conn: ObjectId) -> bool {
    let new = !list.contains(&conn);
    if new {
        list.push(conn);
    }
    new
}

/// Takes `conn` out of a list of connections; returns whether the list is empty now.
fn remove(list: &mut Vec<ObjectId>, conn: ObjectId) -> bool {
    list.retain(|&c| c != conn);
    list.is_empty()
}

impl Audience {
    /// `conn` subscribed to `value` of `index`.
    pub fn add_index(&mut self, conn: ObjectId, index: IndexId, value: Bytes) {
        let values = self.index_values.entry(index).or_default();
        if insert(values.entry(value).or_default(), conn) {
            *self.index_subscribers.entry(conn).or_default() += 1;
        }
    }

    /// `conn` no longer subscribes to `value` of `index`.
    pub fn remove_index(&mut self, conn: ObjectId, index: IndexId, value: &[u8]) {
        let Some(values) = self.index_values.get_mut(&index) else {
            return;
        };
        let Some(conns) = values.get_mut(value) else {
            return;
        };
        if !conns.contains(&conn) {
            return;
        }
        if remove(conns, conn) {
            values.remove(value);
        }
        if values.is_empty() {
            self.index_values.remove(&index);
        }
        if let Some(count) = self.index_subscribers.get_mut(&conn) {
            *count -= 1;
            if *count == 0 {
                self.index_subscribers.remove(&conn);
            }
        }
    }

    /// `conn` watches `object` by id.
    pub fn add_object(&mut self, conn: ObjectId, object: ObjectId) {
        insert(self.objects.entry(object).or_default(), conn);
    }

    /// `conn` no longer watches `object` by id.
    pub fn remove_object(&mut self, conn: ObjectId, object: ObjectId) {
        if self
            .objects
            .get_mut(&object)
            .is_some_and(|c| remove(c, conn))
        {
            self.objects.remove(&object);
        }
    }

    /// `object` was deleted: nobody watches it by id any more.
    pub fn forget_object(&mut self, object: ObjectId) {
        self.objects.remove(&object);
    }

    /// `conn` owns the ids from `first` to `last` (inclusive): granted to it, its own
    /// connection object, or a resumed session's.
    pub fn add_ids(&mut self, conn: ObjectId, first: u64, last: u64) {
        if first > last || self.everywhere.contains(&conn) {
            return;
        }
        let (first_page, last_page) = (first >> PAGE_BITS, last >> PAGE_BITS);
        let owned = self.owned.entry(conn).or_default();
        owned.visits = owned.visits.saturating_add(last_page - first_page + 1);
        if owned.visits <= MAX_PAGE_VISITS {
            for page in first_page..=last_page {
                if owned.pages.insert(page) {
                    insert(self.pages.entry(page).or_default(), conn);
                }
            }
            if owned.pages.len() <= MAX_PAGES {
                return;
            }
        }
        // Too many pages: the connection becomes a candidate for every commit instead.
        self.leave_pages(conn);
        self.everywhere.push(conn);
    }

    /// Takes `conn` off every page it owns ids on.
    fn leave_pages(&mut self, conn: ObjectId) {
        let Some(owned) = self.owned.remove(&conn) else {
            return;
        };
        for page in owned.pages {
            if self.pages.get_mut(&page).is_some_and(|c| remove(c, conn)) {
                self.pages.remove(&page);
            }
        }
    }

    /// `conn` was granted `block`.
    pub fn add_block(&mut self, conn: ObjectId, block: IdBlock) {
        if block.len > 0 {
            self.add_ids(conn, block.start, block.start.saturating_add(block.len - 1));
        }
    }

    /// Takes an ended connection out of the index; `visibility` is what it watched.
    pub fn remove_conn(&mut self, conn: ObjectId, visibility: &Visibility) {
        for (index, value) in visibility.index_values() {
            self.remove_index(conn, index, value);
        }
        for object in visibility.watched() {
            self.remove_object(conn, object);
        }
        self.leave_pages(conn);
        remove(&mut self.everywhere, conn);
    }

    /// The connections that may see part of a commit, in ascending order, without duplicates:
    /// `committer` (its own commit's answer and creations), and every connection watching one
    /// of the touched objects' index values (before or after the commit), ids or id pages.
    pub fn candidates(
        &self,
        current: &[Current<'_>],
        committer: Option<ObjectId>,
        out: &mut Vec<ObjectId>,
    ) {
        out.clear();
        out.extend(committer);
        out.extend_from_slice(&self.everywhere);
        let mut add = |conns: &[ObjectId]| {
            for &conn in conns {
                // Consecutive objects of a large commit mostly find the same connections.
                if out.last() != Some(&conn) {
                    out.push(conn);
                }
            }
        };
        // The connections with index subscriptions found so far: once all of them are, the
        // remaining objects' index values need not be read (a large commit to a subscribed type
        // finds its subscribers with its first object).
        let mut by_index: FastSet<ObjectId> = FastSet::default();
        let mut last_page = None;
        for object in current {
            let page = object.id.0 >> PAGE_BITS;
            if last_page != Some(page) {
                last_page = Some(page);
                if let Some(conns) = self.pages.get(&page) {
                    add(conns);
                }
            }
            if let Some(conns) = self.objects.get(&object.id) {
                add(conns);
            }
            if by_index.len() == self.index_subscribers.len() {
                continue;
            }
            let before = object.touched.before.iter().flat_map(|r| r.indices());
            let after = object.record.into_iter().flat_map(|r| r.indices());
            for (index, value) in before.chain(after) {
                let conns = self
                    .index_values
                    .get(&index)
                    .and_then(|values| values.get(value));
                if let Some(conns) = conns {
                    add(conns);
                    by_index.extend(conns);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
    }

    /// How many entries the index holds, for tests: index values, watched objects, pages and
    /// connections everywhere.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index_values.values().map(HashMap::len).sum::<usize>()
            + self.index_subscribers.len()
            + self.objects.len()
            + self.pages.len()
            + self.everywhere.len()
            + self.owned.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_owned_by_page_and_wide_owners_are_everywhere() {
        let mut audience = Audience::default();
        let (a, b) = (ObjectId(1), ObjectId(2));
        audience.add_ids(a, 10, 200_000);
        audience.add_ids(b, 200_001, 300_000);
        assert_eq!(audience.pages[&0], vec![a]);
        assert_eq!(audience.pages[&1], vec![a, b]);
        assert_eq!(audience.pages[&2], vec![b]);
        audience.add_ids(b, 0, u64::MAX);
        assert_eq!(audience.everywhere, vec![b]);
        let c = ObjectId(3);
        let wide = (MAX_PAGES as u64 - 1) << PAGE_BITS;
        for _ in 0..4 {
            audience.add_ids(c, 0, wide);
        }
        assert!(
            audience.owned.contains_key(&c),
            "4 x {MAX_PAGES} pages named"
        );
        audience.add_ids(c, 0, 0);
        assert!(
            audience.everywhere.contains(&c),
            "naming the same pages over and over has a bound too"
        );
        assert!(!audience.pages.values().any(|c| c.contains(&b)));
        for conn in [a, b, c] {
            audience.remove_conn(conn, &Visibility::default());
        }
        assert_eq!(audience.len(), 0, "nothing is left of ended connections");
    }

    #[test]
    fn index_values_and_objects_come_and_go() {
        let mut audience = Audience::default();
        let (a, b) = (ObjectId(1), ObjectId(2));
        let value = Bytes::from_static(b"v");
        audience.add_index(a, IndexId(3), value.clone());
        audience.add_index(a, IndexId(3), value.clone());
        audience.add_index(b, IndexId(3), value.clone());
        assert_eq!(audience.index_values[&IndexId(3)][&value], vec![a, b]);
        audience.add_object(a, ObjectId(9));
        audience.remove_index(a, IndexId(3), b"v");
        audience.remove_index(b, IndexId(3), b"v");
        assert!(audience.index_values.is_empty());
        audience.remove_object(b, ObjectId(9));
        assert_eq!(audience.objects[&ObjectId(9)], vec![a]);
        audience.forget_object(ObjectId(9));
        assert_eq!(audience.len(), 0);
    }
}
