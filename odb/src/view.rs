//! Read-only snapshots of the local replica, and the [`Read`] trait shared with transactions.

use crate::changes::ReadSet;
use crate::local::Shared;
use crate::registry::TypeInfo;
use crate::replica::{HistoryError, SnapshotAt};
use crate::{Error, Result, TypeDef};
use bytes::Bytes;
use odb_wire::{Key, ObjectId, Tid};
use std::cell::RefCell;
use std::sync::Arc;

/// Reading objects: implemented by [`View`] and [`crate::Transaction`], and sealed: no other
/// type can implement it, so its methods can change without breaking programs.
///
/// The generated accessors (`msg.message(&v)`, `Message::lookup_all(&v)`, …) take any
/// `&impl Read`; the raw methods below are what they call and are not meant for direct use.
/// [`View::tid`] needs no import; for `tx.tid()` bring the trait into scope, or
/// `use odb::prelude::*`.
pub trait Read: sealed::Sealed {
    /// The tid of the snapshot this reads from.
    fn tid(&self) -> Tid;

    /// Raw bytes of field `field` of object `id` (`None`: no stored value).
    #[doc(hidden)]
    fn read_field_raw(
        &self,
        ty: &'static TypeDef,
        id: ObjectId,
        field: usize,
    ) -> Result<Option<Bytes>>;

    /// Decodes field `field` of object `id` with `decode`, given its raw bytes (`None`: no
    /// stored value), without copying them where the implementation allows.
    #[doc(hidden)]
    fn read_field_with<V>(
        &self,
        ty: &'static TypeDef,
        id: ObjectId,
        field: usize,
        decode: impl FnOnce(Option<&[u8]>) -> Result<V>,
    ) -> Result<V>
    where
        Self: Sized,
    {
        let bytes = self.read_field_raw(ty, id, field)?;
        decode(bytes.as_deref())
    }

    /// Whether object `id` exists and is visible.
    #[doc(hidden)]
    fn exists_raw(&self, ty: &'static TypeDef, id: ObjectId) -> Result<bool>;

    /// Ids of the visible objects whose index has this encoded value, ascending
    /// (`index == None`: all objects of the type).
    #[doc(hidden)]
    fn lookup_raw(
        &self,
        ty: &'static TypeDef,
        index: Option<usize>,
        value: &[u8],
    ) -> Result<Vec<ObjectId>>;
}

/// A registered snapshot of the replica at one tid: reads see exactly the state after that
/// commit, however many commits arrive meanwhile. Released on drop.
pub(crate) struct Snapshot<'a> {
    pub shared: &'a Shared,
    pub at: SnapshotAt,
    pub tid: Tid,
    /// The types this snapshot resolved so far. A type once readable stays readable, and its
    /// ids never change within a generation, so each is looked up in the registry once per
    /// snapshot.
    types: RefCell<Vec<Arc<TypeInfo>>>,
    /// Whether the client was connected when the snapshot opened.
    pub connected: bool,
    /// The replica's generation when the snapshot opened: types resolve in it only.
    pub generation: u64,
}

impl<'a> Snapshot<'a> {
    pub fn open(shared: &'a Shared) -> Snapshot<'a> {
        let (at, generation) = {
            let mut local = shared.local.write();
            (local.replica.open_snapshot(), local.generation)
        };
        Snapshot {
            shared,
            at,
            tid: at.tid,
            types: RefCell::default(),
            connected: shared.is_connected(),
            generation,
        }
    }

    /// A snapshot of the state after commit `tid` as this client saw it, if still retained.
    pub fn open_at(shared: &'a Shared, tid: Tid) -> Result<Snapshot<'a>> {
        let mut local = shared.local.write();
        let generation = local.generation;
        let at = local.replica.open_snapshot_at(tid).map_err(|e| match e {
            HistoryError::Unavailable { oldest } => Error::HistoryUnavailable { tid, oldest },
            HistoryError::Future { current } => Error::Invalid(format!(
                "tid {tid} is newer than this client's replica, which is at tid {current}; \
                     wait for it with flush() or wait_for() first"
            )),
        })?;
        drop(local);
        Ok(Snapshot {
            shared,
            at,
            tid,
            types: RefCell::default(),
            connected: shared.is_connected(),
            generation,
        })
    }

    pub fn type_info(&self, ty: &'static TypeDef) -> Result<Arc<TypeInfo>> {
        self.with_type(ty, |info| Ok(info.clone()))
    }

    /// Runs `f` with the ids of type `ty`; fails with `NotSubscribed` when it is not readable.
    /// `f` must not resolve further types of this snapshot.
    #[inline]
    pub fn with_type<R>(
        &self,
        ty: &'static TypeDef,
        f: impl FnOnce(&Arc<TypeInfo>) -> Result<R>,
    ) -> Result<R> {
        {
            let types = self.types.borrow();
            if let Some(info) = types.iter().find(|i| std::ptr::eq(i.def, ty)) {
                return f(info);
            }
        }
        let info = self.shared.readable_type(ty, self.generation)?;
        let out = f(&info);
        self.types.borrow_mut().push(info);
        out
    }

    pub fn does_not_exist(ty: &'static TypeDef, id: ObjectId) -> Error {
        Error::ObjectDoesNotExist {
            type_name: ty.qualified_name(),
            object: id.0,
        }
    }

    pub fn exists(&self, info: &TypeInfo, id: ObjectId) -> bool {
        self.shared
            .local
            .read()
            .replica
            .field(id, info.exists_field, self.at)
            .is_some()
    }

    /// A field's value; `ObjectDoesNotExist` when the object is not alive at this snapshot.
    pub fn field(&self, info: &TypeInfo, id: ObjectId, field: usize) -> Result<Option<Bytes>> {
        let field_id = *info
            .fields
            .get(field)
            .ok_or_else(|| Error::Invalid(format!("no field #{field} in {}", info.def.name)))?;
        let local = self.shared.local.read();
        if local
            .replica
            .field(id, info.exists_field, self.at)
            .is_none()
        {
            return Err(Self::does_not_exist(info.def, id));
        }
        Ok(local
            .replica
            .field(id, field_id, self.at)
            .map(Bytes::copy_from_slice))
    }

    pub fn lookup(
        &self,
        info: &TypeInfo,
        index: Option<usize>,
        value: &[u8],
    ) -> Result<Vec<ObjectId>> {
        let index_id = info
            .index_id(index)
            .ok_or_else(|| Error::Invalid(format!("no index #{index:?} in {}", info.def.name)))?;
        let local = self.shared.local.read();
        Ok(local.replica.lookup(index_id, value, self.at))
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        self.shared.local.write().replica.close_snapshot(self.at);
    }
}

/// A read-only snapshot of the client's replica, given to the closure of
/// [`crate::Client::view`]. Reads are local and never fail with a conflict.
pub struct View<'a> {
    pub(crate) snap: Snapshot<'a>,
    /// When set, every key read is recorded (for waiting until one of them changes).
    pub(crate) reads: Option<RefCell<ReadSet>>,
}

/// Keeps [`Read`] to the types of this crate: outside crates cannot name `Sealed`.
mod sealed {
    pub trait Sealed {}
    impl Sealed for super::View<'_> {}
    impl Sealed for crate::Transaction<'_> {}
}

impl View<'_> {
    /// The tid of the snapshot this view reads from: the state after that commit. (The same as
    /// [`Read::tid`], callable without importing the trait.) A `wait_for` condition that reads
    /// it runs again after every change.
    pub fn tid(&self) -> Tid {
        Read::tid(self)
    }
}

impl<'a> View<'a> {
    pub(crate) fn new(snap: Snapshot<'a>) -> View<'a> {
        View { snap, reads: None }
    }

    /// Whether this view may show a stale state: the client was not connected when it opened
    /// (it is reconnecting, or closed), so commits made meanwhile by others may be missing.
    /// The state is still consistent: it is exactly the state after the view's tid.
    pub fn may_be_stale(&self) -> bool {
        !self.snap.connected
    }

    /// A view that records what it reads; see [`View::into_reads`].
    pub(crate) fn recording(snap: Snapshot<'a>) -> View<'a> {
        View {
            snap,
            reads: Some(RefCell::default()),
        }
    }

    /// The keys read so far and where the view read them.
    pub(crate) fn into_reads(self) -> (ReadSet, SnapshotAt) {
        let reads = self.reads.map(RefCell::into_inner).unwrap_or_default();
        (ReadSet::new(reads.keys, reads.tid), self.snap.at)
    }

    fn record(&self, key: impl FnOnce() -> Key) {
        if let Some(reads) = &self.reads {
            reads.borrow_mut().keys.insert(key());
        }
    }
}

impl View<'_> {
    /// Runs `then` on field `field` of object `id` as this view sees it, under the replica's
    /// read lock: the replica's own bytes, without copying them or touching their reference
    /// count. `then` must not reach this client.
    #[inline]
    fn field_then<V>(
        &self,
        ty: &'static TypeDef,
        id: ObjectId,
        field: usize,
        then: impl FnOnce(Option<&[u8]>) -> Result<V>,
    ) -> Result<V> {
        self.snap.with_type(ty, |info| {
            self.record(|| Key::Field(id, info.exists_field));
            let Some(&field_id) = info.fields.get(field) else {
                return Err(Error::Invalid(format!(
                    "no field #{field} in {}",
                    info.def.name
                )));
            };
            self.record(|| Key::Field(id, field_id));
            let local = self.snap.shared.local.read();
            match local
                .replica
                .live_field(id, info.exists_field, field_id, self.snap.at)
            {
                Some(value) => then(value),
                None => Err(Snapshot::does_not_exist(info.def, id)),
            }
        })
    }
}

impl Read for View<'_> {
    fn tid(&self) -> Tid {
        if let Some(reads) = &self.reads {
            reads.borrow_mut().tid = true;
        }
        self.snap.tid
    }

    fn read_field_raw(
        &self,
        ty: &'static TypeDef,
        id: ObjectId,
        field: usize,
    ) -> Result<Option<Bytes>> {
        self.field_then(ty, id, field, |bytes| Ok(bytes.map(Bytes::copy_from_slice)))
    }

    #[inline]
    fn read_field_with<V>(
        &self,
        ty: &'static TypeDef,
        id: ObjectId,
        field: usize,
        decode: impl FnOnce(Option<&[u8]>) -> Result<V>,
    ) -> Result<V> {
        self.field_then(ty, id, field, decode)
    }

    fn exists_raw(&self, ty: &'static TypeDef, id: ObjectId) -> Result<bool> {
        self.snap.with_type(ty, |info| {
            self.record(|| Key::Field(id, info.exists_field));
            Ok(self.snap.exists(info, id))
        })
    }

    fn lookup_raw(
        &self,
        ty: &'static TypeDef,
        index: Option<usize>,
        value: &[u8],
    ) -> Result<Vec<ObjectId>> {
        self.snap.with_type(ty, |info| {
            if let Some(index_id) = info.index_id(index) {
                self.record(|| Key::Index(index_id, Bytes::copy_from_slice(value)));
            }
            self.snap.lookup(info, index, value)
        })
    }
}
