//! Read-only questions about the sequencer's state, asked by the metrics endpoint and the web
//! inspector.
//!
//! Every answer is bounded: lists are paged or cut at a limit the sequencer enforces whatever
//! was asked, so that an inspector page costs the sequencer little more than a small commit.
//! (The gauges are the exception: they walk every object, as a metrics scrape does.)

use super::Sequencer;
use crate::metrics::Gauges;
use crate::subscriptions::Held;
use bytes::Bytes;
use odb_wire::{IndexId, ObjectData, ObjectId, SchemaInfo, StatsData, TypeId};

/// The most objects answered to one [`Query::Objects`].
pub(crate) const MAX_PAGE: usize = 200;

/// The most connections answered to one [`Query::Connections`].
pub(crate) const MAX_CONNECTIONS: usize = 200;

/// The most subscription targets listed for one connection.
pub(crate) const MAX_TARGETS: usize = 50;

/// What is asked.
#[derive(Debug)]
pub(crate) enum Query {
    /// The state figures of the metrics.
    Gauges,
    /// The figures a client's `Stats` gets.
    Stats,
    /// Every schema, with object counts.
    Schemas,
    /// A page of the objects of a type, in id order.
    Objects {
        /// The type.
        ty: TypeId,
        /// Only objects with a greater id.
        after: ObjectId,
        /// How many at most (and never more than [`MAX_PAGE`]).
        limit: usize,
    },
    /// One object.
    Object(ObjectId),
    /// The first [`MAX_CONNECTIONS`] connections, in id order.
    Connections,
}

/// One connection, as the inspector shows it.
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    /// Its id, which is also the id of its `core.Connection` object.
    pub id: ObjectId,
    /// Its `core.Connection` object.
    pub object: Option<ObjectData>,
    /// Bytes queued for it.
    pub outbound_bytes: usize,
    /// How many subscriptions it holds.
    pub held: Held,
    /// Up to [`MAX_TARGETS`] of its subscribed index values (types are their "all" index).
    pub indices: Vec<(IndexId, Bytes)>,
    /// Objects it subscribed to one by one, within the same limit.
    pub objects: Vec<ObjectId>,
}

/// The answer to a [`Query`] of the same name.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The state figures of the metrics.
    Gauges(Gauges),
    /// The figures a client's `Stats` gets.
    Stats(StatsData),
    /// Every schema.
    Schemas(Vec<SchemaInfo>),
    /// A page of objects; `more` tells whether objects follow it.
    Objects {
        /// The objects.
        objects: Vec<ObjectData>,
        /// Whether more follow.
        more: bool,
    },
    /// The object, if it is live.
    Object(Option<ObjectData>),
    /// The connections listed and how many there are in all.
    Connections {
        /// The first connections.
        list: Vec<ConnectionInfo>,
        /// How many are live.
        total: usize,
    },
}

impl Sequencer {
    /// Answers a question about the current state.
    pub(super) fn inspect(&self, query: Query) -> Answer {
        match query {
            Query::Gauges => Answer::Gauges(self.gauges()),
            Query::Stats => Answer::Stats(self.stats()),
            Query::Schemas => Answer::Schemas(self.schema_infos()),
            Query::Objects { ty, after, limit } => self.objects_page(ty, after, limit),
            Query::Object(id) => Answer::Object(self.store.object_data(id)),
            Query::Connections => self.connections(),
        }
    }

    fn objects_page(&self, ty: TypeId, after: ObjectId, limit: usize) -> Answer {
        let limit = limit.clamp(1, MAX_PAGE);
        let Some(info) = self.registry.type_info(ty) else {
            return Answer::Objects {
                objects: Vec::new(),
                more: false,
            };
        };
        let Some(first) = after.0.checked_add(1) else {
            return Answer::Objects {
                objects: Vec::new(),
                more: false,
            };
        };
        let mut ids =
            self.store
                .members_in(info.all_index, &[], ObjectId(first), ObjectId(u64::MAX));
        let objects = ids
            .by_ref()
            .take(limit)
            .filter_map(|id| self.store.object_data(id))
            .collect();
        let more = ids.next().is_some();
        Answer::Objects { objects, more }
    }

    fn connections(&self) -> Answer {
        let is_type_index = |index| {
            self.registry
                .index_type(index)
                .and_then(|ty| self.registry.type_info(ty))
                .is_some_and(|info| info.all_index == index)
        };
        let list = self
            .conns
            .iter()
            .take(MAX_CONNECTIONS)
            .map(|(&id, conn)| {
                let (indices, objects) = conn.visibility.targets(MAX_TARGETS);
                ConnectionInfo {
                    id,
                    object: self.store.object_data(id),
                    outbound_bytes: conn.outbound.queued(),
                    held: conn.visibility.held(is_type_index),
                    indices,
                    objects,
                }
            })
            .collect();
        Answer::Connections {
            list,
            total: self.conns.len(),
        }
    }

    /// The figures answered to a client's `Stats`.
    pub(super) fn stats(&self) -> StatsData {
        let g = self.gauges();
        let n = |x: usize| x as u64;
        StatsData {
            tid: self.store.tid(),
            connections: n(self.conns.len()),
            objects: n(self.store.object_count()),
            index_values: n(g.index_values),
            store_bytes: n(g.store_bytes),
            conflict_stamps: n(self.store.conflict_stamps()),
            outbound_bytes: n(self.conns.values().map(|c| c.outbound.queued()).sum()),
            subscriptions: (
                n(g.type_subscriptions),
                n(g.index_subscriptions),
                n(g.object_subscriptions),
            ),
        }
    }

    /// Every schema, with the number of live objects of each type.
    pub(super) fn schema_infos(&self) -> Vec<SchemaInfo> {
        self.registry
            .schema_infos(|all| self.store.member_count(all, &[]))
    }

    /// Walks every object and connection: linear in their number, which is why it is computed
    /// only when a scrape asks for it.
    fn gauges(&self) -> Gauges {
        let mut gauges = Gauges {
            index_values: self.store.index_value_count(),
            store_bytes: self.store.record_bytes(),
            ..Gauges::default()
        };
        let is_type_index = |index| {
            self.registry
                .index_type(index)
                .and_then(|ty| self.registry.type_info(ty))
                .is_some_and(|info| info.all_index == index)
        };
        for conn in self.conns.values() {
            let held = conn.visibility.held(is_type_index);
            gauges.type_subscriptions += held.types;
            gauges.index_subscriptions += held.index_values;
            gauges.object_subscriptions += held.objects;
            gauges.outbound_max_bytes = gauges.outbound_max_bytes.max(conn.outbound.queued());
        }
        gauges
    }
}
