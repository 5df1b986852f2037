//! Input rules shared by every service: short names (titles, kinds, capabilities, senders) and
//! JSON documents with a size bound.

/// The longest name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// A request value that breaks a rule, with a message fit for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

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

/// Checks that `text` is JSON of at most `max_bytes`; empty text means `empty_means`.
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
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|error| InvalidInput(format!("{what} is not valid json: {error}")))?;
    Ok(text)
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
}
