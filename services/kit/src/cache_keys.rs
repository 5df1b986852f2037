//! The keys services keep their own entries under in the cache service's internal namespace,
//! named once here because one service writes an entry that another reads or invalidates: the
//! agents service owns everything under [`AGENTS`] and invalidates an agent's entries by its
//! [`agent`] prefix, while the tasks service keeps agent profiles there too.

use uuid::Uuid;

/// The prefix of every entry about agents; near caches of agent data watch it.
pub const AGENTS: &str = "agents:";

/// The prefix of every cached agent list.
pub const AGENT_LISTS: &str = "agents:list:";

/// Returns the prefix of every entry about agent `id`.
pub fn agent(id: Uuid) -> String {
    format!("{AGENTS}{id}:")
}

/// Returns the key of agent `id`'s config object.
pub fn agent_config(id: Uuid) -> String {
    format!("{AGENTS}{id}:config")
}

/// Returns the key of agent `id`'s profile (capabilities, concurrency, liveness) as the tasks
/// service routes by it.
pub fn agent_profile(id: Uuid) -> String {
    format!("{AGENTS}{id}:profile")
}

/// Returns the key of one cached agent list, named by its query.
pub fn agent_list(query: &str) -> String {
    format!("{AGENT_LISTS}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_an_agent_falls_under_its_prefix_and_the_agents_prefix() {
        let id = Uuid::now_v7();
        for key in [agent_config(id), agent_profile(id)] {
            assert!(key.starts_with(&agent(id)), "{key}");
            assert!(key.starts_with(AGENTS), "{key}");
        }
        assert!(agent_list("page=1").starts_with(AGENT_LISTS));
        assert!(!agent_list("page=1").starts_with(&agent(id)));
    }
}
