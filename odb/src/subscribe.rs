//! Subscriptions and schema definitions: what a client asks the server to send it.
//!
//! Subscriptions belong to the session, not to one connection: after a reconnection the client
//! asks for all of them again at one snapshot, so a subscription made (or cancelled) while the
//! client reconnects takes effect with that restore.

use crate::client::Client;
use crate::pending::PendingSubscription;
use crate::registry::TypeInfo;
use crate::schema::{IndexValue, Schema};
use crate::session::{Reply, Target, TypeKey};
use crate::transact::unexpected;
use crate::{Error, Handle, Object, Result};
use odb_wire::Tid;
use std::sync::Arc;

impl Client {
    /// Subscribes to every type of a schema. Returns once the data is visible locally, with
    /// the tid at which it became visible.
    pub async fn subscribe(&self, schema: &'static Schema) -> Result<Tid> {
        self.define_schema(schema).await?;
        self.subscribe_nowait(schema).await
    }

    /// Subscribes to every object of type `T`. Returns once the data is visible locally.
    pub async fn subscribe_type<T: Object>(&self) -> Result<Tid> {
        self.define_schema(T::schema()).await?;
        self.subscribe_type_nowait::<T>().await
    }

    /// Subscribes to the objects whose index has a value (made by the generated
    /// `Type::NAME_index(value)`), including objects that get that value later. Returns once
    /// the data is visible locally.
    pub async fn subscribe_index(&self, value: IndexValue) -> Result<Tid> {
        self.define_schema(value.schema).await?;
        self.subscribe_index_nowait(value).await
    }

    /// Subscribes to one object. Returns once the data is visible locally.
    pub async fn subscribe_object<H: Handle>(&self, object: H) -> Result<Tid> {
        self.define_schema(<H::Object as Object>::schema()).await?;
        self.subscribe_object_nowait(object).await
    }

    /// Starts subscribing to every type of a schema without waiting.
    ///
    /// The request is sent at once (after the schema's definition, if this client has not
    /// defined it yet: that round trip then runs on a spawned task). Nothing of the data is
    /// visible until the subscription completes; it then becomes visible atomically, even if
    /// the returned [`PendingSubscription`] is never awaited. Awaiting it gives the tid at
    /// which the data became visible, or the error.
    pub fn subscribe_nowait(&self, schema: &'static Schema) -> PendingSubscription {
        let targets = schema
            .types()
            .iter()
            .map(|&t| Target::Type(TypeKey(t)))
            .collect();
        self.with_schema(schema, targets)
    }

    /// Starts subscribing to every object of type `T` without waiting; see
    /// [`Client::subscribe_nowait`].
    pub fn subscribe_type_nowait<T: Object>(&self) -> PendingSubscription {
        self.with_schema(T::schema(), vec![Target::Type(TypeKey(T::type_def()))])
    }

    /// Starts subscribing to the objects with an index value without waiting; see
    /// [`Client::subscribe_index`] and [`Client::subscribe_nowait`].
    pub fn subscribe_index_nowait(&self, value: IndexValue) -> PendingSubscription {
        match index_target(&value) {
            Ok(target) => self.with_schema(value.schema, vec![target]),
            Err(e) => PendingSubscription::ready(Err(e)),
        }
    }

    /// Starts subscribing to one object without waiting; see [`Client::subscribe_nowait`].
    pub fn subscribe_object_nowait<H: Handle>(&self, object: H) -> PendingSubscription {
        let target = Target::Object {
            ty: TypeKey(<H::Object as Object>::type_def()),
            id: object.id(),
        };
        self.with_schema(<H::Object as Object>::schema(), vec![target])
    }

    /// Sends the subscription now if `schema` is defined here, else after defining it on a
    /// spawned task (or, outside a tokio runtime, when the result is first polled).
    fn with_schema(&self, schema: &'static Schema, targets: Vec<Target>) -> PendingSubscription {
        if self.inner.shared.registry.read().has_types(schema.types()) {
            return self.send_subscription(targets);
        }
        let client = self.clone();
        PendingSubscription::spawn(async move {
            client.define_schema(schema).await?;
            client.send_subscription(targets).await
        })
    }

    fn send_subscription(&self, targets: Vec<Target>) -> PendingSubscription {
        match self.inner.session.start(|core| core.subscribe(&targets)) {
            Ok(answer) => PendingSubscription::sent(self.inner.session.clone(), answer),
            Err(e) => PendingSubscription::ready(Err(e)),
        }
    }

    /// Cancels the subscription to a whole schema made with [`Client::subscribe`]. Objects
    /// this client then sees through no other subscription (and did not create) are removed
    /// from its replica and receive no more commits. Returns the tid at which they were
    /// removed.
    pub async fn unsubscribe(&self, schema: &'static Schema) -> Result<Tid> {
        self.define_schema(schema).await?;
        let targets = schema
            .types()
            .iter()
            .map(|&t| Target::Type(TypeKey(t)))
            .collect();
        self.unsubscribe_targets(targets).await
    }

    /// Cancels a type subscription made with [`Client::subscribe_type`]. Objects of `T` this
    /// client then sees through no other subscription (and did not create) are removed from
    /// its replica and receive no more commits.
    pub async fn unsubscribe_type<T: Object>(&self) -> Result<Tid> {
        self.define_schema(T::schema()).await?;
        self.unsubscribe_targets(vec![Target::Type(TypeKey(T::type_def()))])
            .await
    }

    /// Cancels an index subscription made with [`Client::subscribe_index`]; see
    /// [`Client::unsubscribe`] for what happens to the objects.
    pub async fn unsubscribe_index(&self, value: IndexValue) -> Result<Tid> {
        self.define_schema(value.schema).await?;
        let target = index_target(&value)?;
        self.unsubscribe_targets(vec![target]).await
    }

    /// Cancels an object subscription made with [`Client::subscribe_object`]; see
    /// [`Client::unsubscribe`] for what happens to the object.
    pub async fn unsubscribe_object<H: Handle>(&self, object: H) -> Result<Tid> {
        self.define_schema(<H::Object as Object>::schema()).await?;
        let target = Target::Object {
            ty: TypeKey(<H::Object as Object>::type_def()),
            id: object.id(),
        };
        self.unsubscribe_targets(vec![target]).await
    }

    async fn unsubscribe_targets(&self, targets: Vec<Target>) -> Result<Tid> {
        match self
            .inner
            .session
            .request(|core| core.unsubscribe(&targets))
            .await?
        {
            Reply::Unsubscribed(tid) => Ok(tid),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) fn known_type(&self, ty: &'static crate::TypeDef) -> Result<Arc<TypeInfo>> {
        self.inner.shared.type_info(ty).ok_or_else(|| {
            Error::Invalid(format!(
                "type {} is not part of its schema's declaration",
                ty.qualified_name()
            ))
        })
    }

    /// Declares a schema on the server (done automatically on first use).
    pub async fn define_schema(&self, schema: &'static Schema) -> Result<()> {
        if self.inner.shared.registry.read().has_types(schema.types()) {
            return Ok(());
        }
        match self
            .inner
            .session
            .request(|core| core.define_schema(schema))
            .await?
        {
            Reply::Schema => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// The subscription target of an index value.
fn index_target(value: &IndexValue) -> Result<Target> {
    if value.index >= value.ty.indices.len() {
        return Err(Error::Invalid(format!(
            "no index #{} in {}",
            value.index, value.ty.name
        )));
    }
    Ok(Target::Index {
        ty: TypeKey(value.ty),
        index: value.index,
        value: value.value.clone().map_err(Error::Encode)?,
    })
}
