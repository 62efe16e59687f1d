//! Transactions: a snapshot plus recorded reads and buffered writes, turned into one commit.

use crate::changes::ReadSet;
use crate::local::Shared;
use crate::registry::TypeInfo;
use crate::replica::SnapshotAt;
use crate::schema::{IndexValue, Schema};
use crate::session::Origin;
use crate::view::{Read, Snapshot};
use crate::{Error, Handle, Object, Result, TypeDef};
use bytes::{Bytes, BytesMut};
use odb_wire::{CommitRequest, FieldId, FieldWrite, IndexId, IndexWrite, Key, ObjectId, Tid};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::sync::Arc;

mod objects;
use objects::Objects;

/// Something a transaction attempt could not do synchronously; the client provides it and runs
/// the closure again.
#[derive(Debug)]
pub(crate) enum Need {
    /// The schema must be defined on the server first.
    Schema(&'static Schema),
    /// More object ids are needed.
    Ids(u64),
    /// The server's database was replaced under the snapshot: run again on a fresh one.
    Fresh,
}

/// What a finished transaction attempt produced.
pub(crate) enum Finished {
    /// Writes to send.
    Commit(CommitRequest),
    /// Nothing was written: what the attempt read, and where.
    ReadOnly(ReadSet, SnapshotAt),
}

/// What the transaction did to one object.
struct Pending {
    info: Arc<TypeInfo>,
    created: bool,
    deleted: bool,
    /// Written fields, by position in the type's declaration.
    fields: Fields,
}

/// Written field values, by position in the type's declaration.
#[derive(Default)]
struct Fields(Vec<Option<Bytes>>);

impl Fields {
    fn get(&self, field: &usize) -> Option<&Bytes> {
        self.0.get(*field).and_then(Option::as_ref)
    }

    fn contains_key(&self, field: &usize) -> bool {
        self.get(field).is_some()
    }

    fn insert(&mut self, field: usize, value: Bytes) {
        if self.0.len() <= field {
            self.0.resize(field + 1, None);
        }
        self.0[field] = Some(value);
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    /// The written fields, ascending position.
    fn into_iter(self) -> impl Iterator<Item = (usize, Bytes)> {
        self.0
            .into_iter()
            .enumerate()
            .filter_map(|(f, v)| v.map(|v| (f, v)))
    }
}

/// A read-write transaction, given to the closure of [`crate::Client::transaction`].
///
/// Reads come from a snapshot of the local replica and are recorded; writes are buffered and
/// sent as one commit when the closure returns `Ok`. The commit fails (and the client runs the
/// closure again) only if something this transaction read was changed since its snapshot.
pub struct Transaction<'a> {
    snap: Snapshot<'a>,
    reads: RefCell<BTreeSet<(ObjectId, FieldId)>>,
    index_reads: RefCell<BTreeSet<(IndexId, Bytes)>>,
    /// Whether the closure looked at the snapshot's tid.
    tid_read: Cell<bool>,
    objects: Objects<Pending>,
    need: Option<Need>,
    created: u64,
    /// The type of the last object created, so that creating many objects of one type looks
    /// it up once.
    created_type: Option<Arc<TypeInfo>>,
    /// The connection the ids of created objects were granted on (`u64::MAX`: on several).
    ids_link: Option<u64>,
}

impl<'a> Transaction<'a> {
    pub(crate) fn new(shared: &'a Shared) -> Transaction<'a> {
        Transaction {
            snap: Snapshot::open(shared),
            reads: RefCell::default(),
            index_reads: RefCell::default(),
            tid_read: Cell::new(false),
            objects: Objects::default(),
            need: None,
            created: 0,
            created_type: None,
            ids_link: None,
        }
    }

    /// What the commit is made from: the connection the ids of the objects this transaction
    /// created were granted on, and the replica generation its snapshot read.
    pub(crate) fn origin(&self) -> Origin {
        Origin {
            ids_link: self.ids_link,
            generation: self.snap.generation,
        }
    }

    pub(crate) fn take_need(&mut self) -> Option<Need> {
        self.need.take()
    }

    /// Records a read of field `field` (its name as declared) of `object` without reading it,
    /// so that the commit fails with a conflict if another commit changes that field after this
    /// transaction's snapshot. Use it to make a transaction depend on data it did not read.
    ///
    /// Fails with [`Error::Invalid`] if the type has no such field, and with
    /// [`Error::NotSubscribed`] if this client cannot read the type.
    pub fn mark_read<H: Handle>(&self, object: H, field: &str) -> Result<()> {
        let ty = <H::Object as Object>::type_def();
        let info = self.snap.type_info(ty)?;
        let pos = ty
            .fields
            .iter()
            .position(|f| f.name == field)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{} has no field named {field:?}",
                    ty.qualified_name()
                ))
            })?;
        self.record_read(object.id(), info.fields[pos]);
        Ok(())
    }

    /// Records a lookup of one index value (made by the generated `Type::NAME_index(value)`)
    /// without doing it: the commit fails with a conflict if another commit adds an object to
    /// that value or removes one from it after this transaction's snapshot.
    ///
    /// Fails with [`Error::Encode`] if the value could not be encoded, and with
    /// [`Error::NotSubscribed`] if this client cannot read the type.
    pub fn mark_index_read(&self, value: &IndexValue) -> Result<()> {
        let info = self.snap.type_info(value.ty)?;
        let index = info.index_id(Some(value.index)).ok_or_else(|| {
            Error::Invalid(format!(
                "no index #{} in {}",
                value.index,
                value.ty.qualified_name()
            ))
        })?;
        let bytes = value.value.clone().map_err(Error::Encode)?;
        self.index_reads.borrow_mut().insert((index, bytes));
        Ok(())
    }

    /// Records a read of the set of all objects of type `T` (what `T::lookup_all` reads): the
    /// commit fails with a conflict if another commit creates or deletes a `T` after this
    /// transaction's snapshot.
    ///
    /// Fails with [`Error::NotSubscribed`] if this client cannot read the type.
    pub fn mark_type_read<T: Object>(&self) -> Result<()> {
        let info = self.snap.type_info(T::type_def())?;
        self.index_reads
            .borrow_mut()
            .insert((info.all_index, odb_wire::ALL_OBJECTS_VALUE));
        Ok(())
    }

    /// What this transaction did to object `id`, checking that it is of type `ty`.
    fn pending(&self, ty: &'static TypeDef, id: ObjectId) -> Result<Option<&Pending>> {
        match self.objects.get(&id) {
            Some(p) if !std::ptr::eq(p.info.def, ty) => Err(Snapshot::does_not_exist(ty, id)),
            other => Ok(other),
        }
    }

    fn record_read(&self, id: ObjectId, field: FieldId) {
        self.reads.borrow_mut().insert((id, field));
    }

    fn info_for_write(&mut self, ty: &'static TypeDef, id: ObjectId) -> Result<Arc<TypeInfo>> {
        if let Some(p) = self.pending(ty, id)? {
            if p.deleted {
                return Err(Snapshot::does_not_exist(ty, id));
            }
            return Ok(p.info.clone());
        }
        let info = self.snap.type_info(ty)?;
        // Any write to an object depends on its existence, so a concurrent delete conflicts.
        self.record_read(id, info.exists_field);
        if !self.snap.exists(&info, id) {
            return Err(Snapshot::does_not_exist(ty, id));
        }
        Ok(info)
    }

    pub(crate) fn create_raw(
        &mut self,
        schema: &'static Schema,
        ty: &'static TypeDef,
        fields: Vec<Bytes>,
    ) -> Result<ObjectId> {
        let cached = self
            .created_type
            .as_ref()
            .filter(|info| std::ptr::eq(info.def, ty))
            .cloned();
        let Some(info) = cached.or_else(|| self.snap.shared.type_info(ty)) else {
            self.need = Some(Need::Schema(schema));
            return Err(Error::Invalid(format!(
                "schema {} is not defined yet; the transaction runs again once it is",
                schema.name()
            )));
        };
        let (id, link) = {
            let mut pool = self.snap.shared.ids.lock();
            (pool.take(), pool.link())
        };
        self.ids_link = match self.ids_link {
            Some(seen) if seen != link => Some(u64::MAX),
            _ => Some(link),
        };
        let Some(id) = id else {
            self.need = Some(Need::Ids(self.created.max(1) * 2));
            return Err(Error::Invalid(
                "out of object ids; the transaction runs again once more are granted".into(),
            ));
        };
        self.created += 1;
        if !self
            .created_type
            .as_ref()
            .is_some_and(|cached| Arc::ptr_eq(cached, &info))
        {
            self.created_type = Some(info.clone());
        }
        self.objects.get_or_insert_with(id, || Pending {
            info,
            created: true,
            deleted: false,
            fields: Fields(fields.into_iter().map(Some).collect()),
        });
        Ok(id)
    }

    pub(crate) fn write_field_raw(
        &mut self,
        ty: &'static TypeDef,
        id: ObjectId,
        field: usize,
        value: Bytes,
    ) -> Result<()> {
        let info = self.info_for_write(ty, id)?;
        if field >= info.fields.len() {
            return Err(Error::Invalid(format!("no field #{field} in {}", ty.name)));
        }
        let pending = self.objects.get(&id);
        let created = pending.is_some_and(|p| p.created);
        if !created {
            // Writing an indexed field depends on every field of every index covering it, so
            // that the index value the server stores is computed from current data.
            for index in info.indices_covering(field) {
                for &f in info.def.indices[index].fields {
                    if !pending.is_some_and(|p| p.fields.contains_key(&f)) {
                        self.record_read(id, info.fields[f]);
                    }
                }
            }
        }
        self.objects
            .get_or_insert_with(id, || Pending {
                info,
                created: false,
                deleted: false,
                fields: Fields::default(),
            })
            .fields
            .insert(field, value);
        Ok(())
    }

    pub(crate) fn delete_raw(&mut self, ty: &'static TypeDef, id: ObjectId) -> Result<()> {
        let info = self.info_for_write(ty, id)?;
        let pending = self.objects.get(&id);
        if !pending.is_some_and(|p| p.created) {
            for index in info.def.indices {
                for &f in index.fields {
                    if !pending.is_some_and(|p| p.fields.contains_key(&f)) {
                        self.record_read(id, info.fields[f]);
                    }
                }
            }
        }
        let p = self.objects.get_or_insert_with(id, || Pending {
            info,
            created: false,
            deleted: false,
            fields: Fields::default(),
        });
        p.deleted = true;
        p.fields.clear();
        Ok(())
    }

    /// The value of index `index` of a pending object (`None`: not in the index).
    fn pending_index_value(
        &self,
        id: ObjectId,
        p: &Pending,
        index: Option<usize>,
    ) -> Option<Bytes> {
        pending_index_value(&self.snap, id, p, index)
    }

    /// What the attempt produced: a commit request, or the reads of a read-only attempt.
    pub(crate) fn finish(self) -> Finished {
        let at = self.snap.at;
        let tid_read = self.tid_read.get();
        let reads = self.reads.take();
        let index_reads = self.index_reads.take();
        match self.into_request() {
            Some(mut request) => {
                request.reads = reads.into_iter().collect();
                request.index_reads = index_reads.into_iter().collect();
                Finished::Commit(request)
            }
            None => {
                let keys = reads
                    .into_iter()
                    .map(|(o, f)| Key::Field(o, f))
                    .chain(index_reads.into_iter().map(|(i, v)| Key::Index(i, v)))
                    .collect();
                Finished::ReadOnly(ReadSet::new(keys, tid_read), at)
            }
        }
    }

    /// Builds the commit request without its read sets; `None` when the transaction wrote
    /// nothing.
    fn into_request(self) -> Option<CommitRequest> {
        let snap = self.snap;
        let objects = self.objects.into_sorted();
        let (writes, index_writes) = objects.iter().fold((0, 0), |(w, i), (_, p)| {
            (w + 1 + p.fields.0.len(), i + 1 + p.info.def.indices.len())
        });
        let mut req = CommitRequest {
            base_tid: snap.tid,
            writes: Vec::with_capacity(writes),
            index_writes: Vec::with_capacity(index_writes),
            ..CommitRequest::default()
        };
        for (id, p) in objects {
            let info = p.info.clone();
            match (p.created, p.deleted) {
                (true, true) => continue,
                (false, true) => {
                    req.deletes.push(id);
                    continue;
                }
                // The server adds a created object to its type's all-objects index.
                (true, false) => req.writes.push(FieldWrite {
                    object: id,
                    field: info.exists_field,
                    value: Some(odb_wire::EXISTS_VALUE),
                }),
                (false, false) => {}
            }
            for (i, def) in info.def.indices.iter().enumerate() {
                if p.created || def.fields.iter().any(|f| p.fields.contains_key(f)) {
                    req.index_writes.push(IndexWrite {
                        object: id,
                        index: info.indices[i],
                        value: pending_index_value(&snap, id, &p, Some(i)),
                    });
                }
            }
            // The values move into the request: the index values above are copies.
            for (f, v) in p.fields.into_iter() {
                req.writes.push(FieldWrite {
                    object: id,
                    field: info.fields[f],
                    value: Some(v),
                });
            }
        }
        if req.writes.is_empty() && req.deletes.is_empty() {
            return None;
        }
        Some(req)
    }
}

/// The current value of a field of a pending object as its transaction sees it, without
/// recording a read.
fn current_field(snap: &Snapshot<'_>, id: ObjectId, p: &Pending, field: usize) -> Option<Bytes> {
    if let Some(v) = p.fields.get(&field) {
        return Some(v.clone());
    }
    if p.created {
        return None;
    }
    snap.field(&p.info, id, field).ok().flatten()
}

/// The value of index `index` of a pending object (`None`: not in the index).
fn pending_index_value(
    snap: &Snapshot<'_>,
    id: ObjectId,
    p: &Pending,
    index: Option<usize>,
) -> Option<Bytes> {
    if p.deleted {
        return None;
    }
    let Some(index) = index else {
        return Some(Bytes::new());
    };
    let def = p.info.def.indices.get(index)?;
    if let [f] = def.fields {
        // A one-field index's value is the field's value.
        return current_field(snap, id, p, *f);
    }
    let mut value = BytesMut::new();
    for &f in def.fields {
        value.extend_from_slice(&current_field(snap, id, p, f)?);
    }
    Some(value.freeze())
}

impl Transaction<'_> {
    /// The tid of the snapshot this transaction reads from. (The same as [`Read::tid`],
    /// callable without importing the trait.) Reading it makes the commit conflict with any
    /// commit made since.
    pub fn tid(&self) -> Tid {
        Read::tid(self)
    }
}

impl Read for Transaction<'_> {
    fn tid(&self) -> Tid {
        self.tid_read.set(true);
        self.snap.tid
    }

    fn read_field_raw(
        &self,
        ty: &'static TypeDef,
        id: ObjectId,
        field: usize,
    ) -> Result<Option<Bytes>> {
        if let Some(p) = self.pending(ty, id)? {
            if p.deleted {
                return Err(Snapshot::does_not_exist(ty, id));
            }
            if let Some(v) = p.fields.get(&field) {
                return Ok(Some(v.clone()));
            }
            if p.created {
                return Ok(None);
            }
        }
        let info = self.snap.type_info(ty)?;
        let field_id = *info
            .fields
            .get(field)
            .ok_or_else(|| Error::Invalid(format!("no field #{field} in {}", ty.name)))?;
        self.record_read(id, field_id);
        let value = self.snap.field(&info, id, field);
        if !matches!(value, Ok(Some(_))) {
            self.record_read(id, info.exists_field);
        }
        value
    }

    fn exists_raw(&self, ty: &'static TypeDef, id: ObjectId) -> Result<bool> {
        if let Some(p) = self.pending(ty, id)? {
            return Ok(!p.deleted);
        }
        let info = self.snap.type_info(ty)?;
        self.record_read(id, info.exists_field);
        Ok(self.snap.exists(&info, id))
    }

    fn lookup_raw(
        &self,
        ty: &'static TypeDef,
        index: Option<usize>,
        value: &[u8],
    ) -> Result<Vec<ObjectId>> {
        let info = self.snap.type_info(ty)?;
        let index_id = info
            .index_id(index)
            .ok_or_else(|| Error::Invalid(format!("no index #{index:?} in {}", ty.name)))?;
        self.index_reads
            .borrow_mut()
            .insert((index_id, Bytes::copy_from_slice(value)));
        let mut ids: BTreeSet<ObjectId> =
            self.snap.lookup(&info, index, value)?.into_iter().collect();
        for (id, p) in self.objects.iter() {
            let id = *id;
            if p.info.type_id != info.type_id {
                continue;
            }
            let pending = self.pending_index_value(id, p, index);
            if pending.is_some_and(|v| odb_wire::bytes_eq(&v, value)) {
                ids.insert(id);
            } else {
                ids.remove(&id);
            }
        }
        Ok(ids.into_iter().collect())
    }
}
