//! API keys: what a key may do ([`Role`]), who holds a request ([`Caller`]), and the
//! [`KeyRegistry`] that issues keys, keeps only their SHA-256, checks presented keys (with a
//! short-lived cache in front of the store) and revokes them.

use std::sync::Arc;
use std::time::Duration;

use swarm_kit::page::Page;
use swarm_kit::time::now_millis;
use swarm_kit::validate::check_text;
use uuid::Uuid;

use super::identity::{ApiKey, Caller, Role};
use super::storage::{KeyStore, StoredKey};

/// How every key starts, so a leaked one is easy to recognise and scan for.
pub const KEY_PREFIX: &str = "swarm_";
/// The shortest key accepted from `SWARM_ADMIN_KEY`.
pub const MIN_KEY_CHARS: usize = 32;
/// The longest key accepted: no key we issue or take is longer.
pub const MAX_KEY_CHARS: usize = 256;
/// How long a checked key is trusted without asking the store again; revocation through this
/// gateway takes effect at once, through another replica within this time.
const CHECK_CACHE_TTL: Duration = Duration::from_secs(5);
/// How many checked keys the cache holds.
const CHECK_CACHE_ENTRIES: u64 = 100_000;
/// How many key lookups may wait on the store at once: keys that miss the cache (a flood of
/// made-up keys does nothing else) never hold more of the store's connections than this.
const STORE_LOOKUPS: usize = 4;
/// How long a key lookup waits for its turn before the key counts as uncheckable for now.
const LOOKUP_WAIT: Duration = Duration::from_secs(2);
/// How many characters of a key lists show.
const SHOWN_CHARS: usize = 12;

/// A key to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// Who or what it is for, 1 to 128 characters.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The agent, required for agent keys and refused for others.
    pub agent_id: Option<Uuid>,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The request breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("key store: {0}")]
    Store(#[from] swarm_kit::StoreError),
    /// Too many keys wait to be looked up.
    #[error("too many api keys are being checked at once")]
    Busy,
}

/// Issues, checks and revokes keys.
#[derive(Clone)]
pub struct KeyRegistry {
    store: Arc<dyn KeyStore>,
    checked: moka::sync::Cache<String, Option<Caller>>,
    lookups: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for KeyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRegistry").finish_non_exhaustive()
    }
}

impl KeyRegistry {
    /// Keeps keys in `store`.
    pub fn new(store: Arc<dyn KeyStore>) -> Self {
        Self {
            store,
            checked: moka::sync::Cache::builder()
                .max_capacity(CHECK_CACHE_ENTRIES)
                .time_to_live(CHECK_CACHE_TTL)
                .build(),
            lookups: Arc::new(tokio::sync::Semaphore::new(STORE_LOOKUPS)),
        }
    }

    /// Issues a key; returns it with its secret, which is shown this once and kept nowhere.
    pub async fn create(&self, key: NewKey) -> Result<(ApiKey, String), KeyError> {
        let name = key.name.trim();
        if name.is_empty() || name.chars().count() > 128 {
            return Err(KeyError::Invalid("name must be 1 to 128 characters".into()));
        }
        check_text("name", name).map_err(|invalid| KeyError::Invalid(invalid.0))?;
        match (key.role, key.agent_id) {
            (Role::Agent, None) => {
                return Err(KeyError::Invalid("agent keys need an agent_id".into()));
            }
            (Role::Admin | Role::Client, Some(_)) => {
                return Err(KeyError::Invalid("only agent keys have an agent_id".into()));
            }
            _ => {}
        }
        let secret = new_secret();
        let stored = StoredKey {
            id: Uuid::now_v7(),
            name: name.to_owned(),
            role: key.role,
            agent_id: key.agent_id,
            hash: hash(&secret),
            prefix: secret.chars().take(SHOWN_CHARS).collect(),
        };
        let now = now_millis();
        self.store.insert(&stored, now).await?;
        let issued = ApiKey {
            id: stored.id,
            name: stored.name,
            role: stored.role,
            agent_id: stored.agent_id,
            prefix: stored.prefix,
            created_at: now,
            revoked_at: None,
        };
        Ok((issued, secret))
    }

    /// Makes sure the first admin key exists: `given` (from `SWARM_ADMIN_KEY`) is stored as an
    /// admin key unless it was stored before (even if revoked since); without one, a key is
    /// issued when no admin key is active. Returns the secret of an issued key.
    pub async fn bootstrap(&self, given: Option<&str>) -> Result<Option<String>, KeyError> {
        if let Some(secret) = given {
            if !is_well_formed(secret) {
                return Err(KeyError::Invalid(format!(
                    "SWARM_ADMIN_KEY must be {MIN_KEY_CHARS} to {MAX_KEY_CHARS} visible ascii \
                     characters"
                )));
            }
            let stored = StoredKey {
                id: Uuid::now_v7(),
                name: "admin".to_owned(),
                role: Role::Admin,
                agent_id: None,
                hash: hash(secret),
                prefix: secret.chars().take(SHOWN_CHARS).collect(),
            };
            self.store.insert(&stored, now_millis()).await?;
            return Ok(None);
        }
        if self.store.count_active_admins().await? > 0 {
            return Ok(None);
        }
        let (_, secret) = self
            .create(NewKey {
                name: "admin".to_owned(),
                role: Role::Admin,
                agent_id: None,
            })
            .await?;
        Ok(Some(secret))
    }

    /// Returns who holds `secret`, or `None` for a key that is unknown or revoked. Answers,
    /// unknown keys included, are cached for a few seconds; lookups in the store take turns
    /// ([`STORE_LOOKUPS`] at once), and one that waits too long is [`KeyError::Busy`].
    pub async fn check(&self, secret: &str) -> Result<Option<Caller>, KeyError> {
        let hash = hash(secret);
        if let Some(known) = self.checked.get(&hash) {
            return Ok(known);
        }
        let _turn = tokio::time::timeout(LOOKUP_WAIT, self.lookups.acquire())
            .await
            .map_err(|_| KeyError::Busy)?
            .expect("the lookup semaphore is never closed");
        // The same key may have been looked up while this one waited.
        if let Some(known) = self.checked.get(&hash) {
            return Ok(known);
        }
        let caller = self.store.find_active(&hash).await?.map(Caller::from);
        self.checked.insert(hash, caller.clone());
        Ok(caller)
    }

    /// Returns keys, oldest first, and how many there are.
    pub async fn list(&self, page: Page) -> Result<(Vec<ApiKey>, u64), KeyError> {
        Ok(self.store.list(page).await?)
    }

    /// Revokes a key at once (on this gateway; on others within seconds); `None` when no key
    /// has that id.
    pub async fn revoke(&self, id: Uuid) -> Result<Option<ApiKey>, KeyError> {
        let revoked = self.store.revoke(id, now_millis()).await?;
        if revoked.is_some() {
            self.checked.invalidate_all();
        }
        Ok(revoked)
    }
}

/// Tells whether `secret` could be a key at all (issued keys, and `SWARM_ADMIN_KEY`, are 32 to
/// 256 visible ASCII characters), so the rest are refused without asking the key store.
pub fn is_well_formed(secret: &str) -> bool {
    (MIN_KEY_CHARS..=MAX_KEY_CHARS).contains(&secret.len())
        && secret.bytes().all(|byte| byte.is_ascii_graphic())
}

/// Returns a new secret: the prefix and 244 random bits from the operating system.
fn new_secret() -> String {
    format!(
        "{KEY_PREFIX}{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

/// Returns the SHA-256 of `secret`, hex: random keys need no slow hash.
fn hash(secret: &str) -> String {
    swarm_kit::digest::sha256_hex(secret.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_hashed_apart() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 64);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a), hash(&a.clone()));
    }

    /// A store that knows no key and takes a while to say so, counting lookups in flight.
    #[derive(Default)]
    struct SlowStore {
        lookups: std::sync::atomic::AtomicUsize,
        in_flight: std::sync::atomic::AtomicUsize,
        most_in_flight: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl KeyStore for SlowStore {
        async fn insert(&self, _: &StoredKey, _: i64) -> Result<bool, swarm_kit::StoreError> {
            Ok(true)
        }

        async fn find_active(&self, _: &str) -> Result<Option<ApiKey>, swarm_kit::StoreError> {
            use std::sync::atomic::Ordering::SeqCst;
            self.lookups.fetch_add(1, SeqCst);
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most_in_flight.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.in_flight.fetch_sub(1, SeqCst);
            Ok(None)
        }

        async fn list(&self, _: Page) -> Result<(Vec<ApiKey>, u64), swarm_kit::StoreError> {
            Ok((Vec::new(), 0))
        }

        async fn revoke(&self, _: Uuid, _: i64) -> Result<Option<ApiKey>, swarm_kit::StoreError> {
            Ok(None)
        }

        async fn count_active_admins(&self) -> Result<u64, swarm_kit::StoreError> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn a_flood_of_unknown_keys_holds_few_store_connections() {
        let store = Arc::new(SlowStore::default());
        let registry = KeyRegistry::new(store.clone());
        let flood = (0..64).map(|_| {
            let registry = registry.clone();
            tokio::spawn(async move { registry.check(&new_secret()).await })
        });
        for answer in futures_util::future::join_all(flood).await {
            assert!(matches!(answer.unwrap(), Ok(None) | Err(KeyError::Busy)));
        }
        use std::sync::atomic::Ordering::SeqCst;
        let most = store.most_in_flight.load(SeqCst);
        assert!(
            (1..=STORE_LOOKUPS).contains(&most),
            "{most} lookups at once"
        );
        let repeated = new_secret();
        assert_eq!(registry.check(&repeated).await.unwrap(), None);
        let lookups = store.lookups.load(SeqCst);
        assert_eq!(registry.check(&repeated).await.unwrap(), None);
        assert_eq!(
            store.lookups.load(SeqCst),
            lookups,
            "an unknown key is remembered"
        );
    }

    #[test]
    fn roles_round_trip_by_name() {
        for role in [Role::Admin, Role::Client, Role::Agent] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
