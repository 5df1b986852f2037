//! Idempotency keys: scoped to the tenant that sent them and bound to the request they came
//! with. The tenant is part of the stored key itself, so no caller can reach another tenant's
//! task by reusing its key, whatever route it comes through; a fingerprint of the request tells
//! a genuine resubmission from a different request that reuses a key.

use super::NewTask;

/// A client's idempotency key within its tenant's scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// A client's user id, or empty for the scope admin callers share.
    pub tenant: String,
    /// The key the client chose.
    pub key: String,
}

impl IdempotencyKey {
    /// Returns the key as stored, unique across tenants: `<tenant length>:<tenant>:<key>`
    /// (the length, in characters, keeps `a:b` + `c` apart from `a` + `b:c`).
    pub fn storage_key(&self) -> String {
        format!(
            "{}:{}:{}",
            self.tenant.chars().count(),
            self.tenant,
            self.key
        )
    }

    /// Returns the client's own key out of a stored one (a stored key in another shape is
    /// returned whole).
    pub fn client_part(stored: &str) -> &str {
        let Some((length, rest)) = stored.split_once(':') else {
            return stored;
        };
        let Ok(length) = length.parse::<usize>() else {
            return stored;
        };
        let tenant_bytes = rest
            .char_indices()
            .nth(length)
            .map_or(rest.len(), |(at, _)| at);
        rest[tenant_bytes..].strip_prefix(':').unwrap_or(stored)
    }
}

/// Returns the fingerprint of what a validated task asks for (SHA-256 over its fields, the
/// payload in canonical JSON form, so key order and spacing do not count), hex.
pub fn fingerprint(task: &NewTask) -> String {
    let payload = serde_json::from_str::<serde_json::Value>(&task.payload)
        .map_or_else(|_| task.payload.clone(), |value| value.to_string());
    let mut fields = serde_json::json!([
        task.title,
        task.kind,
        payload,
        task.priority,
        task.required_capabilities,
        task.pinned_agent_id,
        task.user_id,
        task.max_attempts,
        task.timeout_seconds,
    ]);
    // Fields added later count only when set, so requests made before keep their fingerprint.
    let later = task.run_at.is_some() || task.delay_seconds.is_some();
    if let Some(fields) = fields.as_array_mut() {
        if later || !task.depends_on.is_empty() {
            fields.extend([
                task.run_at.into(),
                task.delay_seconds.into(),
                serde_json::json!(task.depends_on),
            ]);
        }
        if let Some(bound) = task.execution_timeout_seconds {
            fields.push(bound.into());
        }
    }
    swarm_kit::digest::sha256_hex(fields.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_keep_tenants_apart_and_give_the_client_key_back() {
        let key = |tenant: &str, key: &str| IdempotencyKey {
            tenant: tenant.into(),
            key: key.into(),
        };
        assert_ne!(key("a:b", "c").storage_key(), key("a", "b:c").storage_key());
        assert_ne!(key("", "k").storage_key(), key("ada", "k").storage_key());
        for (tenant, client) in [("", "k"), ("ada", "k:1"), ("é:x", "order-7")] {
            let stored = key(tenant, client).storage_key();
            assert_eq!(IdempotencyKey::client_part(&stored), client);
        }
        assert_eq!(IdempotencyKey::client_part("legacy"), "legacy");
    }

    #[test]
    fn fingerprints_ignore_json_layout_but_not_content() {
        let task = |payload: &str| NewTask {
            title: "t".into(),
            payload: payload.into(),
            ..NewTask::default()
        };
        assert_eq!(
            fingerprint(&task(r#"{"a":1,"b":2}"#)),
            fingerprint(&task(r#"{ "b": 2, "a": 1 }"#))
        );
        assert_ne!(
            fingerprint(&task(r#"{"a":1}"#)),
            fingerprint(&task(r#"{"a":2}"#))
        );
        let other_title = NewTask {
            title: "u".into(),
            ..task("null")
        };
        assert_ne!(fingerprint(&task("null")), fingerprint(&other_title));
    }
}
