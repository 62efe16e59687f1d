//! The built-in `core` schema and its `Connection` objects.
//!
//! Every live authenticated connection is represented by a `core.Connection` object whose id is
//! the connection id announced in `Welcome`. The sequencer creates it by an ordinary commit when
//! the connection registers and deletes it by an ordinary commit when the connection ends, so
//! clients subscribed to the type see connections come and go (a liveness signal for higher
//! layers). The schema is defined by name, exactly as a client declares it, and field values are
//! encoded as the client encodes them (`odb_wire::encode`), so clients read them with the
//! generated accessors of `odb::system::Connection`.
//!
//! Setting `suspend_heartbeat_checks` to `true` on a connection's object stops the server from
//! closing that connection for missed heartbeats (useful while a client sits in a debugger). The
//! flag is read from the store every time the connection's idle timeout expires.

use crate::registry::Registry;
use crate::store::Store;
use bytes::Bytes;
use odb_wire::{
    CommitRequest, FieldId, FieldWrite, IndexWrite, ObjectId, SchemaDef, Tid, TypeDef, TypeIds,
};

/// The name of the built-in schema.
pub(crate) const SCHEMA: &str = "core";
/// The name of the connection type in [`SCHEMA`].
pub(crate) const CONNECTION: &str = "Connection";
/// The client's name from its `Hello`: a `String`.
pub(crate) const CLIENT_NAME: &str = "client_name";
/// Whether missed heartbeats are tolerated: a `bool`, `false` when absent.
pub(crate) const SUSPEND_HEARTBEAT_CHECKS: &str = "suspend_heartbeat_checks";

/// The `core` schema as a client would send it in `DefineSchema`.
pub(crate) fn schema_def() -> SchemaDef {
    SchemaDef {
        name: SCHEMA.into(),
        types: vec![TypeDef {
            name: CONNECTION.into(),
            fields: vec![CLIENT_NAME.into(), SUSPEND_HEARTBEAT_CHECKS.into()],
            indices: Vec::new(),
        }],
    }
}

/// The server ids of `core.Connection`, and the commits that maintain its objects.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionType {
    ids: TypeIds,
    client_name: FieldId,
    suspend: FieldId,
}

impl ConnectionType {
    /// Defines the `core` schema in the registry (merging by name with an existing definition)
    /// and returns the connection type's ids.
    pub fn define(registry: &mut Registry) -> Result<ConnectionType, String> {
        // Described like a client's schema, so that tools show the fields' values.
        let described = [vec![odb_wire::TypeDesc::String, odb_wire::TypeDesc::Bool]];
        let schema = registry.define_described(&schema_def(), &described)?;
        let ids = schema
            .types
            .into_iter()
            .next()
            .ok_or_else(|| format!("the {SCHEMA} schema has no {CONNECTION} type"))?;
        let (client_name, suspend) = match ids.fields.as_slice() {
            [client_name, suspend] => (*client_name, *suspend),
            other => {
                return Err(format!(
                    "{SCHEMA}.{CONNECTION} got {} field ids instead of 2",
                    other.len()
                ))
            }
        };
        Ok(ConnectionType {
            ids,
            client_name,
            suspend,
        })
    }

    /// The type's ids.
    #[cfg(test)]
    pub fn ids(&self) -> &TypeIds {
        &self.ids
    }

    /// The field id of `suspend_heartbeat_checks`.
    #[cfg(test)]
    pub fn suspend_field(&self) -> FieldId {
        self.suspend
    }

    /// Refuses what a client may not do to `core.Connection` objects, which the server
    /// maintains: create or delete one, change one's index memberships, or write any field but
    /// `suspend_heartbeat_checks`, and that one only on the client's own object (`conn`).
    pub fn check_client_commit(
        &self,
        registry: &Registry,
        store: &Store,
        conn: ObjectId,
        commit: &CommitRequest,
    ) -> Result<(), String> {
        let ty = self.ids.type_id;
        let refused = |what: String| {
            Err(format!(
                "{what}: {SCHEMA}.{CONNECTION} objects are maintained by the server; a client may \
                 only set {SUSPEND_HEARTBEAT_CHECKS} on its own"
            ))
        };
        for w in &commit.writes {
            if registry.field_type(w.field) == Some(ty)
                && (w.object != conn || w.field != self.suspend)
            {
                return refused(format!(
                    "field {} of object {} cannot be written",
                    w.field, w.object
                ));
            }
        }
        for w in &commit.index_writes {
            if registry.index_type(w.index) == Some(ty) {
                return refused(format!(
                    "index {} of object {} cannot be written",
                    w.index, w.object
                ));
            }
        }
        for &id in &commit.deletes {
            if self.is_connection(store, id) {
                return refused(format!("object {id} cannot be deleted"));
            }
        }
        Ok(())
    }

    /// Whether a live object is a `core.Connection`.
    pub fn is_connection(&self, store: &Store, id: ObjectId) -> bool {
        store.record(id).is_some_and(|r| r.ty() == self.ids.type_id)
    }

    /// Every `core.Connection` object in the store, in ascending id order.
    pub fn all(&self, store: &Store) -> Vec<ObjectId> {
        store.members(self.ids.all_index, &Bytes::new()).collect()
    }

    /// The commit that creates the object of connection `id`, on top of tid `base`.
    pub fn create(
        &self,
        base: Tid,
        id: ObjectId,
        client_name: &str,
    ) -> Result<CommitRequest, String> {
        let name = odb_wire::encode(client_name)
            .map_err(|e| format!("cannot encode {CLIENT_NAME}: {e}"))?;
        let suspend = odb_wire::encode(&false)
            .map_err(|e| format!("cannot encode {SUSPEND_HEARTBEAT_CHECKS}: {e}"))?;
        let write = |field, value| FieldWrite {
            object: id,
            field,
            value: Some(value),
        };
        Ok(CommitRequest {
            base_tid: base,
            writes: vec![
                write(self.ids.exists_field, Bytes::new()),
                write(self.client_name, name),
                write(self.suspend, suspend),
            ],
            index_writes: vec![IndexWrite {
                object: id,
                index: self.ids.all_index,
                value: Some(Bytes::new()),
            }],
            ..CommitRequest::default()
        })
    }

    /// The commit that deletes these objects, on top of tid `base`.
    pub fn delete(&self, base: Tid, ids: Vec<ObjectId>) -> CommitRequest {
        CommitRequest {
            base_tid: base,
            deletes: ids,
            ..CommitRequest::default()
        }
    }

    /// Whether heartbeat checks are suspended for connection `id`: its object exists and its
    /// `suspend_heartbeat_checks` field currently decodes to `true`.
    pub fn heartbeat_checks_suspended(&self, store: &Store, id: ObjectId) -> bool {
        let Some(record) = store.record(id) else {
            return false;
        };
        if record.ty() != self.ids.type_id {
            return false;
        }
        record
            .field(self.suspend)
            .is_some_and(|value| odb_wire::decode::<bool>(value).unwrap_or(false))
    }
}
