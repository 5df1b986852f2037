//! Namespaces: every key a caller names is stored under its owner, so tenants never reach each
//! other's entries and no tenant reaches the entries the services keep for themselves (agent
//! configs and profiles). The rule lives in the stored key, here, so no route of any caller can
//! forget it: a call must name its owner, and the owner is part of what is stored.

use swarm_kit::validate::InvalidInput;
use swarm_proto::cache::v1 as pb;
use tonic::Status;

/// Where the services' own entries live.
const INTERNAL: &str = "svc:";
/// Where tenants' entries live: `app:<tenant length>:<tenant>:<key>`.
const TENANTS: &str = "app:";

/// Whose entries a call reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A tenant (empty: the namespace admin callers share).
    Tenant(String),
    /// The services themselves.
    Internal,
}

impl Owner {
    /// Reads the owner a call names; naming none is refused.
    pub fn from_proto(namespace: Option<pb::Namespace>) -> Result<Self, Status> {
        match namespace.and_then(|namespace| namespace.owner) {
            Some(pb::namespace::Owner::Tenant(tenant)) => Ok(Self::Tenant(tenant)),
            Some(pb::namespace::Owner::Internal(_)) => Ok(Self::Internal),
            None => Err(InvalidInput::new(
                "namespace is required: a tenant, or internal for the services' own entries",
            )
            .into()),
        }
    }

    /// Returns the key as stored for `key` of this owner.
    pub fn storage_key(&self, key: &str) -> String {
        match self {
            Self::Internal => format!("{INTERNAL}{key}"),
            Self::Tenant(tenant) => {
                format!("{TENANTS}{}:{tenant}:{key}", tenant.chars().count())
            }
        }
    }
}

/// Returns the key a service named, from a stored key in the internal namespace; `None` for a
/// tenant's key.
pub fn internal_key(stored: &str) -> Option<&str> {
    stored.strip_prefix(INTERNAL)
}

/// Returns the prefix of the services' keys that a stored `prefix` covers: what follows the
/// internal namespace, or all of them (`""`) for a prefix of the namespace itself (a flush);
/// `None` when it covers none of them.
pub fn internal_prefix(stored: &str) -> Option<&str> {
    internal_key(stored).or_else(|| INTERNAL.starts_with(stored).then_some(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_covers_every_service_key_and_a_tenant_prefix_none() {
        assert_eq!(internal_prefix(""), Some(""));
        assert_eq!(internal_prefix("svc:agents:"), Some("agents:"));
        assert_eq!(
            internal_prefix(&Owner::Tenant("ada".into()).storage_key("")),
            None
        );
    }

    #[test]
    fn owners_never_share_a_stored_key() {
        let keys = [
            Owner::Internal.storage_key("agents:1:config"),
            Owner::Tenant(String::new()).storage_key("agents:1:config"),
            Owner::Tenant("ada".into()).storage_key("agents:1:config"),
            Owner::Tenant("a:b".into()).storage_key("c"),
            Owner::Tenant("a".into()).storage_key("b:c"),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(internal_key(&keys[0]), Some("agents:1:config"));
        assert_eq!(internal_key(&keys[1]), None);
        assert_eq!(internal_key(&keys[2]), None);
    }

    #[test]
    fn a_call_must_name_its_owner() {
        assert_eq!(
            Owner::from_proto(None).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let internal = pb::Namespace {
            owner: Some(pb::namespace::Owner::Internal(pb::Internal {})),
        };
        assert_eq!(Owner::from_proto(Some(internal)).unwrap(), Owner::Internal);
    }
}
