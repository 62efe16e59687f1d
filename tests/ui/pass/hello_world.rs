//! The schema of the API documentation compiles without warnings, and its generated API can
//! be used as documented.
#![deny(warnings, missing_docs)]

use serde::{Deserialize, Serialize};

/// The example schema.
#[odb::schema]
pub mod hello_world {
    use super::*;

    /// How urgent a message is.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    pub enum Priority {
        /// Not urgent.
        #[default]
        Low,
        /// Urgent.
        High,
    }

    /// A chat message.
    #[derive(odb::Object, Debug, Clone)]
    pub struct Message {
        /// The channel it was posted to.
        #[index]
        pub channel: String,
        /// Its text.
        pub message: String,
        /// When it was posted.
        pub timestamp: f64,
        /// How urgent it is.
        #[odb(default)]
        pub priority: Priority,
        /// The message it answers.
        pub reply_to: Option<odb::Ref<Message>>,
    }

    /// Visits of a user on a day.
    #[derive(odb::Object, Debug, Clone)]
    #[odb(index(user_day = (user, day)))]
    pub struct Visit {
        /// Who visited.
        pub user: String,
        /// On which day.
        pub day: u32,
        /// How many times.
        pub count: u64,
    }
}

use hello_world::{Message, MessageRef, Priority, Visit};

#[allow(dead_code)]
fn post(tx: &mut odb::Transaction<'_>, reply_to: Option<MessageRef>) -> odb::Result<MessageRef> {
    let msg = Message::create(
        tx,
        Message {
            channel: "general".into(),
            message: "hi".into(),
            timestamp: 1.5,
            priority: Priority::Low,
            reply_to,
        },
    )?;
    let text: String = msg.message(tx)?;
    msg.set_message(tx, format!("{text}!"))?;
    let _: Priority = msg.priority(tx)?;
    let _: Option<odb::Ref<Message>> = msg.reply_to(tx)?;
    Ok(msg)
}

#[allow(dead_code)]
fn read(v: &impl odb::Read, msg: MessageRef) -> odb::Result<()> {
    let _: Vec<MessageRef> = Message::lookup_all(v)?;
    let _: Option<MessageRef> = Message::lookup_any(v)?;
    let _: Vec<MessageRef> = Message::lookup_all_by_channel(v, "general")?;
    let _: Option<MessageRef> = Message::lookup_any_by_channel(v, "general")?;
    let _: MessageRef = Message::lookup_one_by_channel(v, String::from("general"))?;
    let _: Option<MessageRef> = Message::lookup_unique_by_channel(v, "general")?;
    let _: Option<odb::Ref<Visit>> = Visit::lookup_unique_by_user_day(v, ("ann", 3))?;
    let _: Vec<hello_world::VisitRef> = Visit::lookup_all_by_user_day(v, ("ann", 3))?;
    let whole: Message = msg.get(v)?;
    let _: bool = msg.exists(v)?;
    let _: f64 = whole.timestamp;
    Ok(())
}

#[allow(dead_code)]
fn write(
    tx: &mut odb::Transaction<'_>,
    msg: MessageRef,
    visit: odb::Ref<Visit>,
) -> odb::Result<()> {
    let count = visit.count(tx)?;
    visit.set_count(tx, count + 1)?;
    msg.delete(tx)
}

fn main() {
    let schema: &'static odb::Schema = hello_world::schema();
    let _ = schema;
    let msg = Message::from_id(odb::ObjectId(42));
    assert_eq!(format!("{msg:?}"), "Message(42)");
    assert_eq!(msg.id(), odb::ObjectId(42));
    assert_eq!(<Message as odb::Object>::type_def().fields.len(), 5);
    let _index: odb::IndexValue = Message::channel_index("general");
    let _index = Visit::user_day_index(("ann".to_string(), 3));
}

/// A view's tid needs no import: it is an inherent method.
#[allow(dead_code)]
fn view_tid(v: &odb::View<'_>) -> odb::Tid {
    v.tid()
}

/// A transaction's tid needs no import either.
#[allow(dead_code)]
fn transaction_tid(tx: &odb::Transaction<'_>) -> odb::Tid {
    tx.tid()
}
