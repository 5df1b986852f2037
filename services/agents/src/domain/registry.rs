//! The agent registry: registers, updates and removes agents, records heartbeats, and derives
//! each agent's liveness from its last heartbeat (offline after the TTL); how busy an agent is
//! depends on the tasks it holds, which the gateway learns from the tasks service, so this
//! service never calls the tasks service. Agent configs and lists are
//! served through the cache service (and its near cache); every registration, update or delete
//! invalidates what it changes before it answers, so a change is visible at once (and again a
//! second later, for a copy a racing reader stored meanwhile). Cached lists
//! live one second, so a status that moves with time (a missed heartbeat) shows within it.

use std::sync::Arc;
use std::time::Duration;

use swarm_kit::StoreError;
use swarm_kit::cache_client::CacheClient;
use swarm_kit::cache_keys;
use swarm_kit::clock::Clock;
use swarm_kit::page::Page;
use uuid::Uuid;

use crate::domain::{Agent, AgentFilter, AgentUpdate, AgentView, Liveness, NewAgent};
use crate::error::AgentError;
use crate::storage::{AgentStore, HeartbeatFilter};

/// The most agents one batch lookup may name.
pub const MAX_BATCH: usize = 1000;

/// How long a cached agent config lives when nothing invalidates it sooner.
const CONFIG_CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a cached agent list lives (statuses move with time, so briefly).
const LIST_CACHE_TTL: Duration = Duration::from_secs(1);

/// The registry of one agents-service process.
#[derive(Clone)]
pub struct AgentRegistry {
    store: Arc<dyn AgentStore>,
    cache: Option<CacheClient>,
    ttl: Duration,
    clock: Arc<Clock>,
}

impl std::fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRegistry")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl AgentRegistry {
    /// Builds a registry; agents without a heartbeat for `ttl` by `clock` (the database's)
    /// are offline.
    pub fn new(store: Arc<dyn AgentStore>, ttl: Duration, clock: Arc<Clock>) -> Self {
        Self {
            store,
            cache: None,
            ttl,
            clock,
        }
    }

    /// Serves agent configs through `cache`.
    #[must_use]
    pub fn with_cache(mut self, cache: CacheClient) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Drops what the cache holds about agent `id` (if any) and every cached list.
    async fn invalidate(&self, id: Option<Uuid>) {
        if let Some(cache) = &self.cache {
            if let Some(id) = id {
                cache.invalidate_prefix(&cache_keys::agent(id)).await;
            }
            cache.invalidate_prefix(cache_keys::AGENT_LISTS).await;
        }
    }

    /// Registers an agent (registration counts as a heartbeat); a taken name is refused.
    pub async fn register(&self, agent: NewAgent) -> Result<AgentView, AgentError> {
        let agent = agent.validated()?;
        let name = agent.name.clone();
        let stored = self
            .store
            .insert(&agent, self.clock.now_millis())
            .await
            .map_err(|error| name_conflict(error, &name))?;
        self.invalidate(None).await;
        Ok(self.view(stored))
    }

    /// Registers an agent or, when its name is taken, resumes that agent: its kind,
    /// capabilities and concurrency become the declared ones (its config stays), and the
    /// resumption counts as a heartbeat, so a restarted worker claims at once.
    pub async fn register_or_resume(&self, agent: NewAgent) -> Result<AgentView, AgentError> {
        let agent = agent.validated()?;
        let name = match self.register(agent.clone()).await {
            Err(AgentError::NameTaken(name)) => name,
            registered => return registered,
        };
        // Deleted since the conflict: the name is free again, but nobody can be resumed.
        let existing = self
            .store
            .by_name(&name)
            .await?
            .ok_or(AgentError::NameTaken(name))?;
        let declared = AgentUpdate {
            kind: Some(agent.kind),
            capabilities: Some(agent.capabilities),
            max_concurrency: Some(agent.max_concurrency),
            ..AgentUpdate::default()
        };
        self.update(existing.id, declared).await?;
        self.heartbeat(existing.id).await
    }

    /// Returns one agent with its liveness.
    pub async fn get(&self, id: Uuid) -> Result<AgentView, AgentError> {
        let agent = self.store.get(id).await?.ok_or(AgentError::NotFound(id))?;
        Ok(self.view(agent))
    }

    /// Returns the agents that exist among `ids`, with their liveness.
    pub async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<AgentView>, AgentError> {
        if ids.len() > MAX_BATCH {
            return Err(AgentError::Invalid(format!(
                "at most {MAX_BATCH} agent ids"
            )));
        }
        let agents = self.store.get_many(ids).await?;
        Ok(self.views(agents))
    }

    /// Returns a page of agents (with no page, every match), oldest first, and how many match.
    pub async fn list(
        &self,
        filter: &AgentFilter,
        page: Option<Page>,
    ) -> Result<(Vec<AgentView>, u64), AgentError> {
        filter.check()?;
        let Some(cache) = &self.cache else {
            return self.list_uncached(filter, page).await;
        };
        let liveness = filter.liveness.map_or("any", Liveness::as_str);
        let capability = filter.capability.as_deref().unwrap_or("");
        let page_key = page.map_or_else(
            || "all".to_owned(),
            |page| format!("{}:{}", page.page, page.per_page),
        );
        // The free-text capability goes last, so distinct filters never share a key.
        let key = cache_keys::agent_list(&format!("{liveness}:{page_key}:{capability}"));
        if let Some(cached) = cache.get(&key).await
            && let Ok(answer) = serde_json::from_slice(&cached)
        {
            return Ok(answer);
        }
        let answer = self.list_uncached(filter, page).await?;
        if let Ok(encoded) = serde_json::to_vec(&answer) {
            cache.set(&key, encoded, LIST_CACHE_TTL).await;
        }
        Ok(answer)
    }

    async fn list_uncached(
        &self,
        filter: &AgentFilter,
        page: Option<Page>,
    ) -> Result<(Vec<AgentView>, u64), AgentError> {
        let online_since = self.online_since();
        let heartbeat = filter.liveness.map(|liveness| match liveness {
            Liveness::Online => HeartbeatFilter::Since(online_since),
            Liveness::Offline => HeartbeatFilter::Before(online_since),
        });
        let (agents, total) = self
            .store
            .list(filter.capability.as_deref(), heartbeat, page)
            .await?;
        Ok((self.views(agents), total))
    }

    /// Changes an agent.
    pub async fn update(&self, id: Uuid, update: AgentUpdate) -> Result<AgentView, AgentError> {
        let update = update.validated()?;
        let name = update.name.clone().unwrap_or_default();
        let agent = self
            .store
            .update(id, &update, self.clock.now_millis())
            .await
            .map_err(|error| name_conflict(error, &name))?
            .ok_or(AgentError::NotFound(id))?;
        self.invalidate(Some(id)).await;
        Ok(self.view(agent))
    }

    /// Removes an agent; the tasks service takes back the tasks it held.
    pub async fn delete(&self, id: Uuid) -> Result<(), AgentError> {
        if self.store.delete(id).await? {
            self.invalidate(Some(id)).await;
            Ok(())
        } else {
            Err(AgentError::NotFound(id))
        }
    }

    /// Records a sign of life.
    pub async fn heartbeat(&self, id: Uuid) -> Result<AgentView, AgentError> {
        let agent = self
            .store
            .heartbeat(id, self.clock.now_millis())
            .await?
            .ok_or(AgentError::NotFound(id))?;
        Ok(self.view(agent))
    }

    /// Returns an agent's config object (JSON text).
    pub async fn config(&self, id: Uuid) -> Result<String, AgentError> {
        let key = cache_keys::agent_config(id);
        if let Some(cache) = &self.cache
            && let Some(cached) = cache.get(&key).await
            && let Ok(config) = std::str::from_utf8(&cached)
        {
            return Ok(config.to_owned());
        }
        let config = self
            .store
            .get(id)
            .await?
            .ok_or(AgentError::NotFound(id))?
            .config;
        if let Some(cache) = &self.cache {
            cache
                .set(&key, config.clone().into_bytes(), CONFIG_CACHE_TTL)
                .await;
        }
        Ok(config)
    }

    /// Returns the current time on the registry's clock.
    pub fn now_millis(&self) -> i64 {
        self.clock.now_millis()
    }

    fn online_since(&self) -> i64 {
        self.now_millis() - i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX / 2)
    }

    fn view(&self, agent: Agent) -> AgentView {
        AgentView {
            liveness: Liveness::derive(&agent, self.online_since()),
            agent,
        }
    }

    fn views(&self, agents: Vec<Agent>) -> Vec<AgentView> {
        agents.into_iter().map(|agent| self.view(agent)).collect()
    }
}

fn name_conflict(error: StoreError, name: &str) -> AgentError {
    match error {
        StoreError::Conflict(_) => AgentError::NameTaken(name.to_owned()),
        other => AgentError::Storage(other),
    }
}
