//! The messages exchanged between a client and the server.
//!
//! A connection starts with [`ClientMessage::Hello`], answered by [`ServerMessage::Welcome`]
//! or [`ServerMessage::Rejected`] (after which the server closes the connection). Every other
//! request carries a [`RequestId`] chosen by the client and is answered by exactly one final
//! message with the same id. Pushed commits ([`ServerMessage::Commit`]) arrive in tid order and
//! always before any answer that mentions a later tid.

use crate::describe::TypeDesc;
use crate::ids::{
    CommitId, DatabaseId, FieldId, IdBlock, IndexId, Key, ObjectId, RequestId, Tid, TypeId,
};
use crate::limits::Limit;
use crate::refusal::Refusal;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The newest protocol version spoken by this crate.
///
/// Version 3 adds [`CommitOutcome::CommittedAsSent`]: a commit that changed only what its
/// request says is answered without pushing it back to its committer. A connection that speaks
/// version 2 gets the push and [`CommitOutcome::Committed`] as before.
pub const PROTOCOL_VERSION: u32 = 3;

/// The first protocol version with [`CommitOutcome::CommittedAsSent`].
pub const COMMITTED_AS_SENT_VERSION: u32 = 3;

/// The oldest protocol version spoken by this crate. A client says in its `Hello` which
/// versions it speaks (`oldest_protocol_version ..= protocol_version`); the server answers with
/// the newest version both speak, or refuses when there is none.
pub const OLDEST_PROTOCOL_VERSION: u32 = 2;

/// A message sent by a client.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum ClientMessage {
    /// First message of every connection; nothing else is accepted before it.
    Hello {
        /// The newest protocol version the client speaks (kept first, so that any server can
        /// read it whatever the version).
        protocol_version: u32,
        /// The service token; compared by the server in constant time.
        token: String,
        /// A free-form name for logs (program name, host).
        client_name: String,
        /// The oldest protocol version the client speaks.
        oldest_protocol_version: u32,
    },
    /// Declares a schema; answered by [`ServerMessage::SchemaDefined`] with its ids.
    DefineSchema {
        /// Correlation id.
        request_id: RequestId,
        /// The schema as the client knows it.
        schema: SchemaDef,
    },
    /// Asks for another block of object ids; answered by [`ServerMessage::Ids`].
    RequestIds {
        /// Correlation id.
        request_id: RequestId,
        /// How many ids the client wants at least.
        count: u64,
    },
    /// Subscribes to data; answered by zero or more [`ServerMessage::SubscriptionData`] chunks
    /// and then [`ServerMessage::SubscriptionComplete`].
    Subscribe {
        /// Correlation id.
        request_id: RequestId,
        /// Everything to subscribe to, as one consistent snapshot.
        targets: Vec<SubscriptionTarget>,
    },
    /// Cancels subscriptions; answered by [`ServerMessage::Unsubscribed`]. Objects that are
    /// then visible through no remaining subscription (and were not created by this client)
    /// are no longer sent, and the answer lists them so the client can drop them.
    Unsubscribe {
        /// Correlation id.
        request_id: RequestId,
        /// Targets previously passed to [`ClientMessage::Subscribe`].
        targets: Vec<SubscriptionTarget>,
    },
    /// Commits a transaction; answered by [`ServerMessage::CommitResult`].
    Commit {
        /// Correlation id.
        request_id: RequestId,
        /// The transaction.
        commit: CommitRequest,
    },
    /// A round trip: answered by [`ServerMessage::Flushed`] once every commit the server made
    /// before it has been sent to this connection.
    Flush {
        /// Correlation id.
        request_id: RequestId,
    },
    /// Liveness signal; the server never answers it.
    Heartbeat,
    /// Restores a session on a new connection: subscribes to every target at one snapshot, and
    /// makes the objects created with ids of the `own` blocks visible, as a connection's own
    /// creations are. Answered like [`ClientMessage::Subscribe`], by zero or more
    /// [`ServerMessage::SubscriptionData`] chunks, then [`ServerMessage::Resumed`].
    Resume {
        /// Correlation id.
        request_id: RequestId,
        /// Everything the session was subscribed to.
        targets: Vec<SubscriptionTarget>,
        /// The id blocks granted to the session on earlier connections.
        own: Vec<IdBlock>,
        /// The tid the client last applied, from a connection to the same database: the server
        /// may then send only what changed since. `None` asks for the full data.
        since: Option<Tid>,
    },
    /// Asks what became of commits whose answer the client did not receive (its connection
    /// broke first); answered by [`ServerMessage::CommitStatuses`]. A commit reported as not
    /// applied can no longer be applied: the server refuses its id from then on.
    QueryCommits {
        /// Correlation id.
        request_id: RequestId,
        /// Each commit's id and the base tid it was sent with.
        commits: Vec<(CommitId, Tid)>,
    },
    /// Declares a schema like [`ClientMessage::DefineSchema`], with a description of each
    /// field's type for tools that decode values without the Rust types; answered by
    /// [`ServerMessage::SchemaDefined`]. The server keeps the latest description of each field
    /// (identity stays by name); fields declared without one keep theirs.
    DefineDescribedSchema {
        /// Correlation id.
        request_id: RequestId,
        /// The schema as the client knows it.
        schema: SchemaDef,
        /// `descriptions[t][f]` describes field `f` of type `t` of `schema`; missing entries
        /// leave fields undescribed.
        descriptions: Vec<Vec<TypeDesc>>,
    },
    /// Asks for the server's figures; answered by [`ServerMessage::Stats`].
    Stats {
        /// Correlation id.
        request_id: RequestId,
    },
    /// Asks for every schema the server knows; answered by [`ServerMessage::Schemas`].
    ListSchemas {
        /// Correlation id.
        request_id: RequestId,
    },
}

/// A message sent by the server.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The token was accepted.
    Welcome {
        /// The protocol version the server speaks.
        protocol_version: u32,
        /// The id of this connection (its `Connection` object in the `core` schema).
        connection: ObjectId,
        /// A first block of object ids for this client.
        ids: IdBlock,
        /// The server's current tid.
        tid: Tid,
        /// How often the server expects a heartbeat, in milliseconds.
        heartbeat_interval_ms: u64,
        /// The largest frame the server accepts or sends, in bytes.
        max_frame: u64,
        /// The identity of the database behind the server: the same across restarts of a
        /// durable server, new for each start of an in-memory one. Tids, ids and commit ids
        /// only carry over between connections to the same database.
        database: DatabaseId,
    },
    /// The hello was refused; the server closes the connection after sending this.
    Rejected {
        /// Why; its `Display` is fit for the user.
        reason: Refusal,
    },
    /// Answer to [`ClientMessage::DefineSchema`].
    SchemaDefined {
        /// Correlation id.
        request_id: RequestId,
        /// Ids of every type, field and index of the schema, in the order they were declared.
        schema: SchemaIds,
    },
    /// Answer to [`ClientMessage::RequestIds`].
    Ids {
        /// Correlation id.
        request_id: RequestId,
        /// The granted block.
        block: IdBlock,
    },
    /// One chunk of a subscription's initial data. Not visible until the completion arrives.
    SubscriptionData {
        /// Correlation id.
        request_id: RequestId,
        /// Complete current data of each object in the chunk, encoded as a
        /// `Vec<ObjectData>` is and read in place.
        objects: crate::codec::ObjectList,
    },
    /// The subscription's initial data is complete and consistent as of `tid`.
    SubscriptionComplete {
        /// Correlation id.
        request_id: RequestId,
        /// The snapshot's tid.
        tid: Tid,
    },
    /// Answer to [`ClientMessage::Unsubscribe`].
    Unsubscribed {
        /// Correlation id.
        request_id: RequestId,
        /// The tid from which the cancelled subscriptions no longer apply.
        tid: Tid,
        /// Objects this connection no longer sees.
        dropped: Vec<ObjectId>,
    },
    /// A commit, filtered to what this connection can see.
    Commit(CommitData),
    /// Answer to [`ClientMessage::Commit`]. If [`CommitOutcome::Committed`], the commit itself
    /// was pushed before (as far as the committer sees it); if
    /// [`CommitOutcome::CommittedAsSent`], it was not, and the committer applies its request.
    CommitResult {
        /// Correlation id.
        request_id: RequestId,
        /// What happened.
        outcome: CommitOutcome,
    },
    /// Answer to [`ClientMessage::Flush`].
    Flushed {
        /// Correlation id.
        request_id: RequestId,
        /// The server's tid when the flush was processed.
        tid: Tid,
    },
    /// A request was refused (bad arguments, limits). The connection stays open.
    RequestFailed {
        /// Correlation id.
        request_id: RequestId,
        /// Why.
        reason: String,
        /// The limit the request exceeded, if that is why it was refused.
        limit: Option<Limit>,
    },
    /// The server is about to close the connection, and says why.
    Closing {
        /// Why.
        reason: Refusal,
    },
    /// Liveness signal.
    Heartbeat,
    /// Answer to [`ClientMessage::Resume`], after the chunks of its data: the session's data
    /// is complete and consistent as of `tid`.
    Resumed {
        /// Correlation id.
        request_id: RequestId,
        /// The snapshot's tid.
        tid: Tid,
        /// `false`: the chunks hold every object the connection sees, and any other object the
        /// client holds is gone. `true`: the chunks hold only the visible objects that changed
        /// since the resume's `since` tid, and `visible` says which objects the connection sees.
        delta: bool,
        /// With `delta`, every object the connection sees, as ascending, disjoint id ranges: any
        /// other object the client holds was deleted or is no longer visible. Empty otherwise.
        visible: Vec<IdBlock>,
    },
    /// Answer to [`ClientMessage::QueryCommits`]: one status per asked commit, in order.
    CommitStatuses {
        /// Correlation id.
        request_id: RequestId,
        /// What became of each commit.
        statuses: Vec<CommitStatus>,
    },
    /// Answer to [`ClientMessage::Stats`].
    Stats {
        /// Correlation id.
        request_id: RequestId,
        /// The figures.
        stats: StatsData,
    },
    /// Answer to [`ClientMessage::ListSchemas`].
    Schemas {
        /// Correlation id.
        request_id: RequestId,
        /// Every schema, sorted by name.
        schemas: Vec<SchemaInfo>,
    },
}

/// A server's figures, as of one moment.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct StatsData {
    /// The tid of the last commit.
    pub tid: Tid,
    /// Live authenticated connections.
    pub connections: u64,
    /// Live objects.
    pub objects: u64,
    /// Distinct index values with members.
    pub index_values: u64,
    /// Bytes of the objects' records in memory.
    pub store_bytes: u64,
    /// Conflict keys in the conflict history.
    pub conflict_stamps: u64,
    /// What the messages queued for all open connections cost in memory, in bytes (their bytes
    /// plus what holding each costs), as counted against the server's outbound limits.
    pub outbound_bytes: u64,
    /// Subscription targets held: whole types, index values, single objects.
    pub subscriptions: (u64, u64, u64),
}

/// One schema as the server knows it: every type, field and index ever declared, with ids.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SchemaInfo {
    /// The schema's name.
    pub name: String,
    /// Its types, sorted by id.
    pub types: Vec<TypeInfo>,
}

/// One type of a [`SchemaInfo`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TypeInfo {
    /// The type's name.
    pub name: String,
    /// Its id.
    pub type_id: TypeId,
    /// Its existence field.
    pub exists_field: FieldId,
    /// Its index of all live objects.
    pub all_index: IndexId,
    /// Live objects of the type.
    pub count: u64,
    /// Its fields, sorted by id.
    pub fields: Vec<FieldInfo>,
    /// Its indices, sorted by id.
    pub indices: Vec<IndexInfo>,
}

/// One field of a [`TypeInfo`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct FieldInfo {
    /// The field's name.
    pub name: String,
    /// Its id.
    pub id: FieldId,
    /// The latest description of its values, if a client sent one.
    pub desc: Option<TypeDesc>,
}

/// One index of a [`TypeInfo`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct IndexInfo {
    /// The index's name.
    pub name: String,
    /// Its id.
    pub id: IndexId,
    /// The names of the fields it covers, in order.
    pub fields: Vec<String>,
}

/// What became of a commit, as answered to [`ClientMessage::QueryCommits`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum CommitStatus {
    /// It was applied at this tid.
    Applied {
        /// The commit's tid.
        tid: Tid,
    },
    /// It was not applied and never will be.
    NotApplied,
    /// The server cannot tell: the commit is older than the window of commit ids it keeps.
    Unknown,
}

/// A schema as declared by a client: names only. Identity is by name.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SchemaDef {
    /// The schema's name, e.g. `hello_world`.
    pub name: String,
    /// Its object types.
    pub types: Vec<TypeDef>,
}

/// One object type of a [`SchemaDef`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TypeDef {
    /// The type's name, e.g. `Message`.
    pub name: String,
    /// Field names, in declaration order.
    pub fields: Vec<String>,
    /// Indices, in declaration order.
    pub indices: Vec<IndexDef>,
}

/// One index of a [`TypeDef`]: its value is the concatenated encoding of its fields.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct IndexDef {
    /// The index's name.
    pub name: String,
    /// The names of the fields it covers, in order.
    pub fields: Vec<String>,
}

/// The ids the server assigned to a schema, in the order of the request's [`SchemaDef`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SchemaIds {
    /// The schema's name.
    pub name: String,
    /// One entry per requested type, in request order.
    pub types: Vec<TypeIds>,
}

/// The value of a live object's existence field ([`TypeIds::exists_field`]): empty. An object
/// exists exactly while this field has a value; creating an object writes it, deleting removes
/// it.
pub const EXISTS_VALUE: Bytes = Bytes::new();

/// The value every live object has in its type's all-objects index ([`TypeIds::all_index`]):
/// empty. The server maintains this index itself from the existence field; a commit that
/// writes it is refused. Subscribing to a type is subscribing to this value.
pub const ALL_OBJECTS_VALUE: Bytes = Bytes::new();

/// The ids of one type.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TypeIds {
    /// The type.
    pub type_id: TypeId,
    /// The implicit existence field: present on every live object of the type.
    pub exists_field: FieldId,
    /// The implicit index of all live objects of the type; every member has the empty value.
    pub all_index: IndexId,
    /// Field ids, in the order of the request's field names.
    pub fields: Vec<FieldId>,
    /// Index ids, in the order of the request's indices.
    pub indices: Vec<IndexId>,
}

/// What a subscription covers.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum SubscriptionTarget {
    /// Every object of a type.
    Type(TypeId),
    /// Every object whose index has this value now or later; objects stay visible after they
    /// leave the value.
    Index {
        /// The index.
        index: IndexId,
        /// The encoded index value.
        value: Bytes,
    },
    /// One object.
    Object(ObjectId),
}

/// The complete current state of one object.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ObjectData {
    /// The object.
    pub id: ObjectId,
    /// Every field that has a value (including the existence field).
    pub fields: Vec<(FieldId, Bytes)>,
    /// Every index the object is a member of, with its value.
    pub indices: Vec<(IndexId, Bytes)>,
}

/// A write to one field: `None` removes the field.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct FieldWrite {
    /// The object.
    pub object: ObjectId,
    /// The field.
    pub field: FieldId,
    /// The new encoded value, or `None` to remove it.
    pub value: Option<Bytes>,
}

/// A change of one object's value in one index: `None` removes it from the index.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct IndexWrite {
    /// The object.
    pub object: ObjectId,
    /// The index.
    pub index: IndexId,
    /// The new encoded index value, or `None` when the object leaves the index.
    pub value: Option<Bytes>,
}

/// A transaction as sent by a client.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct CommitRequest {
    /// The tid of the snapshot the transaction read.
    pub base_tid: Tid,
    /// Field writes (creates write the existence field).
    pub writes: Vec<FieldWrite>,
    /// New index values of the objects written.
    pub index_writes: Vec<IndexWrite>,
    /// Objects deleted: every field and index membership is removed by the server.
    pub deletes: Vec<ObjectId>,
    /// Fields read (including existence reads).
    pub reads: Vec<(ObjectId, FieldId)>,
    /// Index values looked up.
    pub index_reads: Vec<(IndexId, Bytes)>,
    /// The commit's id, chosen by the client, unique in its session. The server records the
    /// ids of applied commits (with the data, in durable storage) for a window of time and
    /// count, answers a repeated id "already applied" without applying it again, and answers
    /// [`ClientMessage::QueryCommits`] from the record.
    pub commit_id: Option<CommitId>,
}

/// A commit as pushed to a subscriber: only the parts it can see.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct CommitData {
    /// The commit's tid.
    pub tid: Tid,
    /// Field writes; objects that became visible with this commit come with all their fields.
    pub writes: Vec<FieldWrite>,
    /// Index changes.
    pub index_writes: Vec<IndexWrite>,
    /// Deleted objects.
    pub deletes: Vec<ObjectId>,
}

/// The result of a commit.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum CommitOutcome {
    /// Applied at this tid.
    Committed {
        /// The commit's tid.
        tid: Tid,
    },
    /// Something the transaction read was changed after its base tid. Nothing was applied.
    Conflict {
        /// The first conflicting key found.
        key: Key,
        /// The tid that last wrote it.
        written_at: Tid,
    },
    /// The base tid is older than the server's conflict history. Nothing was applied.
    TooOld {
        /// The transaction's base tid.
        base_tid: Tid,
        /// The oldest base tid the server can still validate.
        horizon: Tid,
    },
    /// The request was invalid (unknown ids, limits). Nothing was applied.
    Invalid {
        /// Why.
        reason: String,
        /// The limit the commit exceeded, if that is why it was refused.
        limit: Option<Limit>,
    },
    /// The server could not store the commit (or, while its storage is down, did not try).
    /// Nothing was applied; the same commit may succeed once the storage is back.
    StorageUnavailable {
        /// What the storage said.
        reason: String,
    },
    /// The server tried to store the commit, and cannot tell whether it was stored: the storage
    /// failed at a point where the batch may have landed. The commit was not applied in memory
    /// and pushed to no one; it may still be found in the storage after a restart.
    OutcomeUnknown {
        /// What the storage said.
        reason: String,
    },
    /// A commit with this commit id was already applied, at this tid; it was not applied again.
    AlreadyApplied {
        /// The tid at which it was applied.
        tid: Tid,
    },
    /// Applied at this tid, exactly as the request says, and not pushed back to the committer:
    /// the commit touched only objects the committer sees, so what it changed is what the
    /// request holds (with each created object in its type's all-objects index). The committer
    /// applies its own request at this tid, in the place of the push; every commit before it
    /// that the committer sees was pushed before this answer. Sent only on connections that
    /// speak protocol version 3 or later.
    CommittedAsSent {
        /// The commit's tid.
        tid: Tid,
    },
}

impl CommitOutcome {
    /// The tid the commit was applied at by this request: `Some` for
    /// [`CommitOutcome::Committed`] and [`CommitOutcome::CommittedAsSent`].
    pub fn committed_at(&self) -> Option<Tid> {
        match self {
            CommitOutcome::Committed { tid } | CommitOutcome::CommittedAsSent { tid } => Some(*tid),
            _ => None,
        }
    }
}
