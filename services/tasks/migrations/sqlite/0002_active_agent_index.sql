-- Claims count the tasks an agent holds, and sweeps look for agents holding tasks: index only
-- active tasks by agent, so neither walks an agent's finished history.
CREATE INDEX tasks_active_agent_idx ON tasks (agent_id) WHERE status = 'active';
