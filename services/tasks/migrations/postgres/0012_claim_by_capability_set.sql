-- Claims look for work one set of required capabilities at a time (and among the tasks pinned
-- to the claiming agent), so tasks that need a capability the agent lacks cost a claim one index
-- probe for their whole set, not a row each: the claim index leads with the set, and pinned
-- tasks have their own.
DROP INDEX tasks_claim_idx;
CREATE INDEX tasks_claim_set_idx ON tasks (required_capabilities, priority DESC, created_at, id)
    WHERE status = 'queued' AND pinned_agent_id IS NULL;
CREATE INDEX tasks_claim_pinned_idx ON tasks (pinned_agent_id, priority DESC, created_at, id)
    WHERE status = 'queued' AND pinned_agent_id IS NOT NULL;
