//! The server's limits, by name. A request refused for a limit carries the [`Limit`] as a value
//! next to its human-readable reason, so that clients tell a limit apart from other refusals
//! without reading the text.

use serde::{Deserialize, Serialize};

/// A limit the server enforces on requests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Limit {
    /// Field writes, index writes and deletes in one commit.
    WritesPerCommit,
    /// Field reads and index lookups recorded in one commit.
    ReadsPerCommit,
    /// Bytes of one encoded field value or index value.
    ValueSize,
    /// Subscription targets held by one connection.
    SubscriptionsPerConnection,
    /// Bytes one commit writes.
    CommitSize,
    /// Bytes of one object, its fields and index values together.
    ObjectSize,
    /// Objects and index values the whole store can hold.
    StoreSize,
    /// Bytes of one frame.
    FrameSize,
}

impl Limit {
    /// Every limit.
    pub const ALL: [Limit; 8] = [
        Limit::WritesPerCommit,
        Limit::ReadsPerCommit,
        Limit::ValueSize,
        Limit::SubscriptionsPerConnection,
        Limit::CommitSize,
        Limit::ObjectSize,
        Limit::StoreSize,
        Limit::FrameSize,
    ];

    /// The limit's name in words, as it starts a refusal's reason (`"writes per commit"`).
    pub fn name(self) -> &'static str {
        match self {
            Limit::WritesPerCommit => "writes per commit",
            Limit::ReadsPerCommit => "reads per commit",
            Limit::ValueSize => "value size",
            Limit::SubscriptionsPerConnection => "subscriptions per connection",
            Limit::CommitSize => "commit size",
            Limit::ObjectSize => "object size",
            Limit::StoreSize => "store size",
            Limit::FrameSize => "frame size",
        }
    }

    /// A refusal's reason for this limit: `"<name>: <detail>"`.
    pub fn reason(self, detail: impl std::fmt::Display) -> String {
        format!("{}: {detail}", self.name())
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_start_the_reason() {
        let mut names: Vec<_> = Limit::ALL.iter().map(|l| l.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Limit::ALL.len());
        assert_eq!(
            Limit::WritesPerCommit.reason("3 writes, over the limit of 2"),
            "writes per commit: 3 writes, over the limit of 2"
        );
    }
}
