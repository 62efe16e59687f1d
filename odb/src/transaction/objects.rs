//! The objects a transaction wrote, created or deleted.

use odb_wire::hash::FastMap;
use odb_wire::ObjectId;

/// Per object, what a transaction did to it: kept in the order the objects were first touched,
/// with an index by id. Objects a transaction creates get ascending ids, so the list is usually
/// already in id order, which is the order the commit lists them in.
pub(super) struct Objects<P> {
    list: Vec<(ObjectId, P)>,
    positions: FastMap<ObjectId, usize>,
}

impl<P> Default for Objects<P> {
    fn default() -> Self {
        Objects {
            list: Vec::new(),
            positions: FastMap::default(),
        }
    }
}

impl<P> Objects<P> {
    pub fn get(&self, id: &ObjectId) -> Option<&P> {
        let &pos = self.positions.get(id)?;
        self.list.get(pos).map(|(_, p)| p)
    }

    /// The entry of `id`, inserted with `make` when absent.
    pub fn get_or_insert_with(&mut self, id: ObjectId, make: impl FnOnce() -> P) -> &mut P {
        let pos = *self.positions.entry(id).or_insert_with(|| {
            self.list.push((id, make()));
            self.list.len() - 1
        });
        &mut self.list[pos].1
    }

    /// Every object, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &(ObjectId, P)> {
        self.list.iter()
    }

    /// Every object, ascending id.
    pub fn into_sorted(self) -> Vec<(ObjectId, P)> {
        let mut list = self.list;
        if !list.is_sorted_by_key(|(id, _)| *id) {
            list.sort_unstable_by_key(|(id, _)| *id);
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_found_by_id_and_listed_by_id() {
        let mut objects = Objects::default();
        *objects.get_or_insert_with(ObjectId(5), || 0) += 1;
        *objects.get_or_insert_with(ObjectId(2), || 10) += 1;
        *objects.get_or_insert_with(ObjectId(5), || 100) += 1;
        assert_eq!(objects.get(&ObjectId(5)), Some(&2));
        assert_eq!(objects.get(&ObjectId(2)), Some(&11));
        assert_eq!(objects.get(&ObjectId(3)), None);
        assert_eq!(
            objects.into_sorted(),
            vec![(ObjectId(2), 11), (ObjectId(5), 2)]
        );
    }
}
