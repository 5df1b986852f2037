//! Schemas of the rules the services hold requests to (names, free text, fixed vocabularies,
//! JSON objects), for the OpenAPI document: a request that fits its schema is one the API
//! accepts, so clients and fuzzers tell a good request from a bad one without trying it. The
//! schemas are never looser than the rules; where a rule is hard to state they are stricter.

use swarm_kit::validate::{MAX_CAPABILITIES, MAX_NAME_CHARS};
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, Type};

use crate::auth::Role;
use swarm_proto::agents::v1::AgentStatus;
use swarm_proto::tasks::v1 as pb;

/// Each task status with its REST name, in the order of a task's life.
pub const TASK_STATUSES: [(pb::TaskStatus, &str); 7] = [
    (pb::TaskStatus::Waiting, "waiting"),
    (pb::TaskStatus::Scheduled, "scheduled"),
    (pb::TaskStatus::Queued, "queued"),
    (pb::TaskStatus::Active, "active"),
    (pb::TaskStatus::Completed, "completed"),
    (pb::TaskStatus::Failed, "failed"),
    (pb::TaskStatus::Cancelled, "cancelled"),
];

/// The REST names in `table`, in its order.
pub fn names<E, const N: usize>(table: &[(E, &'static str); N]) -> [&'static str; N] {
    std::array::from_fn(|index| table[index].1)
}

/// The REST names of workflow statuses.
pub const WORKFLOW_STATUSES: [&str; 4] = ["running", "completed", "failed", "cancelled"];
/// Each agent status with its REST name.
pub const AGENT_STATUSES: [(AgentStatus, &str); 3] = [
    (AgentStatus::Idle, "idle"),
    (AgentStatus::Busy, "busy"),
    (AgentStatus::Offline, "offline"),
];
/// Each message role with its REST name.
pub const MESSAGE_ROLES: [(pb::MessageRole, &str); 3] = [
    (pb::MessageRole::User, "user"),
    (pb::MessageRole::Agent, "agent"),
    (pb::MessageRole::System, "system"),
];

/// A character class of everything but control characters (Unicode `Cc`, what
/// `char::is_control` means).
const PRINTABLE: &str = r"[^\u0000-\u001f\u007f-\u009f]";
/// Text without NUL, which no backend stores.
const FREE_TEXT: &str = r"^[^\u0000]*$";
/// Free text with at least one character that is neither white space nor NUL.
const NOT_BLANK: &str = r"^\s*[^\s\u0000][^\u0000]*$";

/// A name (kind, capability, sender, user): 1 to 128 characters, no control character.
pub fn name() -> Object {
    string(
        &format!("^{PRINTABLE}{{1,{MAX_NAME_CHARS}}}$"),
        Some(MAX_NAME_CHARS),
        "1 to 128 characters, no control characters.",
    )
}

/// A set of capabilities: at most 64 names (duplicates are dropped).
pub fn capabilities() -> Array {
    ArrayBuilder::new()
        .items(name())
        .max_items(Some(MAX_CAPABILITIES))
        .description(Some("At most 64 names; duplicates are dropped."))
        .build()
}

/// Free text: anything but the NUL character.
pub fn text() -> Object {
    string(FREE_TEXT, None, "Any text without NUL.")
}

/// A task title: 1 to 256 characters, not only white space.
pub fn title() -> Object {
    string(
        NOT_BLANK,
        Some(256),
        "1 to 256 characters, not only white space.",
    )
}

/// An api key's name: not only white space, at most 128 characters once trimmed.
pub fn key_name() -> Object {
    string(
        NOT_BLANK,
        Some(MAX_NAME_CHARS),
        "1 to 128 characters, not only white space.",
    )
}

/// Why a task attempt failed: any text that is not only white space (kept up to 4,096
/// characters).
pub fn failure() -> Object {
    string(
        NOT_BLANK,
        None,
        "Not only white space; kept up to 4,096 characters.",
    )
}

/// A progress note: at most 1,024 characters, no NUL.
pub fn progress_note() -> Object {
    string(FREE_TEXT, Some(1024), "At most 1,024 characters, no NUL.")
}

/// A message's content: 1 byte to 64 KiB, no NUL.
pub fn message_content() -> Object {
    string(
        FREE_TEXT,
        Some(16 * 1024),
        "1 byte to 64 KiB of text, no NUL.",
    )
}

/// A task status filter.
pub fn task_status() -> Object {
    one_of(&names(&TASK_STATUSES))
}

/// A workflow status filter.
pub fn workflow_status() -> Object {
    one_of(&WORKFLOW_STATUSES)
}

/// An agent status filter.
pub fn agent_status() -> Object {
    one_of(&names(&AGENT_STATUSES))
}

/// A message role.
pub fn message_role() -> Object {
    one_of(&names(&MESSAGE_ROLES))
}

/// An api key's role.
pub fn key_role() -> Object {
    one_of(&Role::ALL.map(Role::as_str))
}

/// An agent's config: a JSON object.
pub fn config() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("A JSON object, at most 64 KiB."))
        .build()
}

/// A string matching `pattern`, at least one character long, at most `max_chars` when given.
fn string(pattern: &str, max_chars: Option<usize>, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(max_chars)
        .pattern(Some(pattern))
        .description(Some(description))
        .build()
}

fn one_of(names: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names.iter().copied()))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{agent_status_from_name, role_from_name, status_from_name, status_name};

    #[test]
    fn every_listed_name_is_one_the_api_takes() {
        for (status, name) in TASK_STATUSES {
            assert_eq!(status_name(status), name);
            assert_eq!(status_from_name(name).unwrap(), status);
        }
        for (status, name) in AGENT_STATUSES {
            assert_eq!(agent_status_from_name(name).unwrap(), status);
        }
        for (role, name) in MESSAGE_ROLES {
            assert_eq!(role_from_name(name).unwrap(), role);
        }
        assert!(status_from_name("running").is_err());
    }

    #[test]
    fn every_task_status_has_a_rest_name() {
        let statuses = (0..).map_while(|value| pb::TaskStatus::try_from(value).ok());
        for status in statuses.filter(|status| *status != pb::TaskStatus::Unspecified) {
            assert!(
                TASK_STATUSES.iter().any(|(listed, _)| *listed == status),
                "{status:?} has no REST name"
            );
        }
    }
}
