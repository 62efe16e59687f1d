//! What a session is subscribed to, kept independent of server ids so that it can be asked for
//! again on a new connection, even from a server that assigned other ids.

use crate::registry::Registry;
use crate::schema::TypeDef;
use bytes::Bytes;
use odb_wire::{ObjectId, SubscriptionTarget, TypeId};

/// A type, compared by the address of its static description (as the registry knows types).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TypeKey(pub &'static TypeDef);

impl PartialEq for TypeKey {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for TypeKey {}

/// One subscription, as the user asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// Every object of a type.
    Type(TypeKey),
    /// The objects with one value of one index (`index`: position in the type's declaration).
    Index {
        ty: TypeKey,
        index: usize,
        value: Bytes,
    },
    /// One object.
    Object { ty: TypeKey, id: ObjectId },
}

impl Target {
    /// The type the target covers objects of.
    pub fn ty(&self) -> &'static TypeDef {
        match self {
            Target::Type(ty) | Target::Index { ty, .. } | Target::Object { ty, .. } => ty.0,
        }
    }

    /// The target in server ids, when the registry knows its type.
    pub fn wire(&self, registry: &Registry) -> Option<(SubscriptionTarget, TypeId)> {
        let info = registry.get(self.ty())?;
        let target = match self {
            Target::Type(_) => SubscriptionTarget::Type(info.type_id),
            Target::Index { index, value, .. } => SubscriptionTarget::Index {
                index: info.index_id(Some(*index))?,
                value: value.clone(),
            },
            Target::Object { id, .. } => SubscriptionTarget::Object(*id),
        };
        Some((target, info.type_id))
    }
}

/// The session's subscriptions: a set, as on the server (subscribing twice and cancelling once
/// cancels).
#[derive(Debug, Default)]
pub(crate) struct Targets {
    targets: Vec<Target>,
}

impl Targets {
    /// Adds targets; returns those that were not there yet.
    pub fn add(&mut self, targets: &[Target]) -> Vec<Target> {
        let mut added = Vec::new();
        for t in targets {
            if !self.targets.contains(t) {
                self.targets.push(t.clone());
                added.push(t.clone());
            }
        }
        added
    }

    /// Removes targets (those not there are ignored).
    pub fn remove(&mut self, targets: &[Target]) {
        self.targets.retain(|t| !targets.contains(t));
    }

    pub fn iter(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter()
    }
}
