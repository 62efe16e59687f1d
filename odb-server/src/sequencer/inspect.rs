//! Read-only questions about the sequencer's state, asked by the metrics endpoint.

use super::Sequencer;
use crate::metrics::Gauges;
use odb_wire::{SchemaInfo, StatsData};

/// What is asked.
#[derive(Debug)]
pub(crate) enum Query {
    /// The state figures of the metrics.
    Gauges,
}

/// The answer to a [`Query`] of the same name.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The state figures of the metrics.
    Gauges(Gauges),
}

impl Sequencer {
    /// Answers a question about the current state.
    pub(super) fn inspect(&self, query: Query) -> Answer {
        match query {
            Query::Gauges => Answer::Gauges(self.gauges()),
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
