//! How each stored type is read out of a row, on both backends: which column holds JSON, which
//! holds an enum by name, and which fields the row does not carry.

use crate::domain::{Attempt, Message, ReadyWork, Schedule, Task, Workflow};
use crate::storage::TaskVersion;

swarm_kit::from_row!(Task {
    id,
    title,
    kind,
    payload,
    status text,
    priority,
    required_capabilities json,
    agent_id,
    pinned_agent_id,
    user_id,
    attempts,
    max_attempts,
    timeout_seconds,
    execution_timeout_seconds,
    progress_percent,
    progress_message,
    result,
    error,
    lease_id,
    lease_expires_at,
    available_at,
    idempotency_key,
    request_hash,
    created_at,
    updated_at,
    started_at,
    finished_at,
    trace_parent,
    dependency_count,
    dependent_count,
    workflow_id,
    workflow_key,
    schedule_id,
    schedule_tick,
    dependency_results skip,
});

swarm_kit::from_row!(TaskVersion {
    id,
    updated_at,
    status text,
    progress_percent,
});

swarm_kit::from_row!(ReadyWork {
    id,
    pinned_agent_id,
    required_capabilities json,
    available_at,
});

swarm_kit::from_row!(Attempt {
    attempt,
    agent_id,
    started_at,
    finished_at,
    outcome text,
    error,
});

swarm_kit::from_row!(Message {
    id,
    task_id,
    sender,
    role text,
    content,
    created_at,
});

swarm_kit::from_row!(Workflow {
    id,
    name,
    user_id,
    status text,
    created_at,
    updated_at,
    finished_at,
});

swarm_kit::from_row!(Schedule {
    id,
    name,
    cron,
    timezone,
    task json,
    user_id,
    paused,
    next_run_at,
    last_run_at,
    created_at,
    updated_at,
});
