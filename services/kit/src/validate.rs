//! Input rules shared by every service: short names (kinds, capabilities, senders), free text
//! (titles, notes, filters) and JSON documents with a size bound.

/// The longest name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// The most capabilities an agent may have or a task may require.
pub const MAX_CAPABILITIES: usize = 64;

/// A request value that breaks a rule, with a message fit for the client. It becomes the
/// shared [`Error`](crate::Error) with code `invalid_argument`, and so a gRPC
/// `INVALID_ARGUMENT` or an HTTP 400, through the one mapping of [`crate::error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

impl InvalidInput {
    /// A broken rule, explained by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<InvalidInput> for crate::Error {
    fn from(invalid: InvalidInput) -> Self {
        Self::invalid(invalid.0)
    }
}

impl From<InvalidInput> for tonic::Status {
    fn from(invalid: InvalidInput) -> Self {
        crate::Error::from(invalid).into()
    }
}

/// Parses the UUID in request field `field`, or explains that it must be one.
pub fn parse_uuid(field: &str, text: &str) -> Result<uuid::Uuid, InvalidInput> {
    uuid::Uuid::parse_str(text).map_err(|_| InvalidInput(format!("{field} must be a uuid")))
}

/// Checks a short identifier-like text: 1 to 128 characters, no control characters.
pub fn check_name(what: &str, value: &str) -> Result<(), InvalidInput> {
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || value.chars().any(char::is_control) {
        return Err(InvalidInput(format!(
            "{what} must be 1 to {MAX_NAME_CHARS} printable characters"
        )));
    }
    Ok(())
}

/// Checks free text (a title, a note, a filter): anything but the NUL character, which
/// PostgreSQL cannot store, so that both backends accept the same text.
pub fn check_text(what: &str, value: &str) -> Result<(), InvalidInput> {
    if value.contains('\0') {
        return Err(InvalidInput(format!(
            "{what} must not contain the NUL character"
        )));
    }
    Ok(())
}

/// Checks a list of names (at most `max` of them) and returns it sorted without duplicates.
pub fn name_set(
    what: &str,
    mut values: Vec<String>,
    max: usize,
) -> Result<Vec<String>, InvalidInput> {
    if values.len() > max {
        return Err(InvalidInput(format!("at most {max} {what} entries")));
    }
    for value in &values {
        check_name(what, value)?;
    }
    values.sort_unstable();
    values.dedup();
    Ok(values)
}

/// The deepest nesting of arrays and objects accepted in stored JSON: deeper documents could
/// not be read back by common JSON parsers (serde_json stops at 128).
pub const MAX_JSON_DEPTH: usize = 64;

/// Checks that `text` is JSON of at most `max_bytes`, nested at most [`MAX_JSON_DEPTH`] deep;
/// empty text means `empty_means`.
pub fn json_text(
    what: &str,
    text: String,
    max_bytes: usize,
    empty_means: &str,
) -> Result<String, InvalidInput> {
    if text.is_empty() {
        return Ok(empty_means.to_owned());
    }
    if text.len() > max_bytes {
        return Err(InvalidInput(format!(
            "{what} must be at most {max_bytes} bytes"
        )));
    }
    if nesting_depth(&text) > MAX_JSON_DEPTH {
        return Err(InvalidInput(format!(
            "{what} must be nested at most {MAX_JSON_DEPTH} levels deep"
        )));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|error| InvalidInput(format!("{what} is not valid json: {error}")))?;
    Ok(text)
}

/// Returns how deep arrays and objects nest in JSON `text` (brackets inside strings aside).
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for byte in text.bytes() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') | (false, _, b'"') => in_string = !in_string,
            (false, _, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(check_name("kind", "echo").is_ok());
        assert!(check_name("kind", "").is_err());
        assert!(check_name("kind", "a\nb").is_err());
        assert!(check_name("kind", &"é".repeat(128)).is_ok());
        assert!(check_name("kind", &"é".repeat(129)).is_err());
    }

    #[test]
    fn text_is_anything_but_nul() {
        assert!(check_text("title", "résumé\n\t✓").is_ok());
        assert!(check_text("title", "").is_ok());
        assert!(check_text("title", "a\0b").is_err());
    }

    #[test]
    fn name_sets_are_sorted_and_deduplicated() {
        let set = name_set("capability", vec!["b".into(), "a".into(), "b".into()], 4).unwrap();
        assert_eq!(set, ["a", "b"]);
        assert!(name_set("capability", vec!["a".into(); 5], 4).is_err());
    }

    #[test]
    fn json_text_checks_syntax_and_size() {
        assert_eq!(
            json_text("payload", String::new(), 10, "null").unwrap(),
            "null"
        );
        assert!(json_text("payload", "{".into(), 10, "null").is_err());
        assert!(json_text("payload", "\"0123456789\"".into(), 10, "null").is_err());
    }

    #[test]
    fn json_text_bounds_nesting_outside_strings() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        assert!(json_text("payload", nested(MAX_JSON_DEPTH), 1 << 20, "null").is_ok());
        assert!(json_text("payload", nested(MAX_JSON_DEPTH + 1), 1 << 20, "null").is_err());
        let brackets_in_text = format!(r#"{{"text": "{}\" ["}}"#, "[".repeat(500));
        assert!(json_text("payload", brackets_in_text, 1 << 20, "null").is_ok());
    }
}
