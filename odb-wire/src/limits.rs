//! Names of the server's limits. A request refused for a limit carries a reason that starts
//! with the limit's name and a colon (`"writes per commit: ..."`), so that clients can tell a
//! limit apart from other refusals without parsing the rest of the text.

/// Field writes, index writes and deletes in one commit.
pub const WRITES_PER_COMMIT: &str = "writes per commit";
/// Field reads and index lookups recorded in one commit.
pub const READS_PER_COMMIT: &str = "reads per commit";
/// Bytes of one encoded field value or index value.
pub const VALUE_SIZE: &str = "value size";
/// Subscription targets held by one connection.
pub const SUBSCRIPTIONS_PER_CONNECTION: &str = "subscriptions per connection";
/// Bytes one commit writes.
pub const COMMIT_SIZE: &str = "commit size";
/// Bytes of one object, its fields and index values together.
pub const OBJECT_SIZE: &str = "object size";

/// Every limit name.
pub const ALL: &[&str] = &[
    WRITES_PER_COMMIT,
    READS_PER_COMMIT,
    VALUE_SIZE,
    SUBSCRIPTIONS_PER_CONNECTION,
    COMMIT_SIZE,
    OBJECT_SIZE,
];

/// Formats a refusal for `limit`: `"<limit>: <detail>"`.
pub fn reason(limit: &str, detail: impl std::fmt::Display) -> String {
    format!("{limit}: {detail}")
}

/// The limit a refusal reason names, if it names one.
pub fn named_in(reason: &str) -> Option<&'static str> {
    ALL.iter().copied().find(|limit| {
        reason
            .strip_prefix(limit)
            .is_some_and(|rest| rest.starts_with(':'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recognised_only_as_a_prefix() {
        let r = reason(WRITES_PER_COMMIT, "3 writes, over the limit of 2");
        assert_eq!(named_in(&r), Some(WRITES_PER_COMMIT));
        assert_eq!(named_in("unknown field id 3"), None);
        assert_eq!(named_in("writes per commitment"), None);
    }
}
