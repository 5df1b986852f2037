//! Statements both backends share (SQLite accepts PostgreSQL's `$n` placeholders), and the
//! macro that implements [`TaskStore`](super::TaskStore) over them for one backend, given that
//! backend's own claim and lease-sweep statements.

/// Starts a statement that inserts tasks; the caller appends their values and
/// [`INSERT_TASKS_END`].
pub const INSERT_TASKS: &str = "INSERT INTO tasks (id, title, kind, payload, status, priority, \
    required_capabilities, agent_id, pinned_agent_id, user_id, attempts, max_attempts, \
    timeout_seconds, progress_percent, available_at, created_at, updated_at, trace_parent, \
    idempotency_key, request_hash, dependency_count, workflow_id, workflow_key, schedule_id, \
    schedule_tick, execution_timeout_seconds) ";

/// The lease of an attempt that started at `$start`, renewed at `$now`: `timeout_seconds`
/// from then, but never past the attempt's execution bound, so the lease sweep ends an attempt
/// that overruns it.
macro_rules! lease_until {
    ($now:literal, $start:literal) => {
        concat!(
            "CASE WHEN execution_timeout_seconds IS NOT NULL AND ",
            $start,
            " + execution_timeout_seconds * 1000 < ",
            $now,
            " + timeout_seconds * 1000 THEN ",
            $start,
            " + execution_timeout_seconds * 1000 ELSE ",
            $now,
            " + timeout_seconds * 1000 END"
        )
    };
}
pub(crate) use lease_until;

/// Records a schedule.
pub const INSERT_SCHEDULE: &str = "INSERT INTO schedules (id, name, cron, timezone, task, \
    user_id, paused, next_run_at, last_run_at, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $9) RETURNING *";

/// Rewrites what may change of schedule `$1`.
pub const UPDATE_SCHEDULE: &str = "UPDATE schedules SET name = $2, cron = $3, timezone = $4, \
    task = $5, paused = $6, next_run_at = $7, updated_at = $8 WHERE id = $1 RETURNING *";

/// Finds a schedule.
pub const SCHEDULE_BY_ID: &str = "SELECT * FROM schedules WHERE id = $1";

/// Deletes a schedule.
pub const DELETE_SCHEDULE: &str = "DELETE FROM schedules WHERE id = $1";

/// Schedules of user `$1` (any when NULL), newest first.
pub const LIST_SCHEDULES: &str = "SELECT * FROM schedules WHERE ($1 IS NULL OR user_id = $1) \
    ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3";

/// Counts the schedules of user `$1` (any when NULL).
pub const COUNT_SCHEDULES: &str =
    "SELECT COUNT(*) FROM schedules WHERE ($1 IS NULL OR user_id = $1)";

/// Up to `$2` running schedules due by `$1`, earliest first.
pub const DUE_SCHEDULES: &str = "SELECT * FROM schedules WHERE NOT paused AND next_run_at <= $1 \
    ORDER BY next_run_at LIMIT $2";

/// When the next running schedule is due.
pub const NEXT_SCHEDULE_DUE: &str = "SELECT MIN(next_run_at) FROM schedules WHERE NOT paused";

/// Moves schedule `$1` from tick `$2`, which fired, to tick `$3`; nothing if another replica
/// moved it first.
pub const ADVANCE_SCHEDULE: &str = "UPDATE schedules SET next_run_at = $3, last_run_at = $2, \
    updated_at = $4 WHERE id = $1 AND next_run_at = $2";

/// Records a workflow.
pub const INSERT_WORKFLOW: &str =
    "INSERT INTO workflows (id, name, user_id, created_at) VALUES ($1, $2, $3, $4)";

/// Workflows with the status and times their tasks give them; the caller appends conditions
/// on `w.` columns, then [`WORKFLOW_GROUP`].
pub const WORKFLOW_SUMMARY: &str = "SELECT w.id, w.name, w.user_id, w.created_at, \
    CASE WHEN SUM(CASE WHEN t.status = 'failed' THEN 1 ELSE 0 END) > 0 THEN 'failed' \
    WHEN SUM(CASE WHEN t.status = 'cancelled' THEN 1 ELSE 0 END) > 0 THEN 'cancelled' \
    WHEN SUM(CASE WHEN t.status = 'completed' THEN 1 ELSE 0 END) = COUNT(t.id) THEN 'completed' \
    ELSE 'running' END AS status, \
    MAX(t.updated_at) AS updated_at, \
    CASE WHEN SUM(CASE WHEN t.finished_at IS NULL THEN 1 ELSE 0 END) > 0 \
        AND SUM(CASE WHEN t.status IN ('failed', 'cancelled') THEN 1 ELSE 0 END) = 0 THEN NULL \
    ELSE MAX(t.finished_at) END AS finished_at \
    FROM workflows w JOIN tasks t ON t.workflow_id = w.id WHERE TRUE";

/// Ends [`WORKFLOW_SUMMARY`].
pub const WORKFLOW_GROUP: &str = " GROUP BY w.id, w.name, w.user_id, w.created_at";

/// A workflow's tasks, in the order they were planned.
pub const WORKFLOW_TASKS: &str = "SELECT * FROM tasks WHERE workflow_id = $1 ORDER BY id";

/// The edges of workflow `$1`, by key: each task's key and the key of a task it waits for.
pub const WORKFLOW_DEPENDENCIES: &str = "SELECT t.workflow_key, p.workflow_key \
    FROM task_dependencies d JOIN tasks t ON t.id = d.task_id JOIN tasks p ON p.id = d.depends_on \
    WHERE t.workflow_id = $1 AND p.workflow_id = $1 ORDER BY t.workflow_key, p.workflow_key";

/// Cancels every unfinished task of workflow `$1`.
pub const CANCEL_WORKFLOW: &str = "UPDATE tasks SET status = 'cancelled', lease_id = NULL, \
    lease_expires_at = NULL, finished_at = $2, updated_at = $2, attempt_outcome = 'cancelled' \
    WHERE workflow_id = $1 AND status IN ('waiting', 'scheduled', 'queued', 'active') RETURNING *";

/// Deletes up to `$2` workflows created before `$1` whose tasks were all pruned.
pub const PRUNE_WORKFLOWS: &str = "DELETE FROM workflows WHERE id IN (SELECT id FROM workflows \
    WHERE created_at < $1 \
    AND NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.workflow_id = workflows.id) LIMIT $2)";

/// Ends [`INSERT_TASKS`]: a task whose idempotency key exists already, or whose schedule tick
/// created a task already, is left out.
pub const INSERT_TASKS_END: &str = " ON CONFLICT DO NOTHING RETURNING *";

/// A task row to insert, every value worked out.
pub struct NewRow {
    pub id: uuid::Uuid,
    pub title: String,
    pub kind: String,
    pub payload: String,
    pub status: &'static str,
    pub priority: i32,
    /// The required capabilities, as a JSON array.
    pub capabilities: String,
    pub pinned_agent_id: Option<uuid::Uuid>,
    pub user_id: Option<String>,
    pub max_attempts: i32,
    pub timeout_seconds: i32,
    pub available_at: i64,
    pub trace_parent: Option<String>,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    pub dependency_count: i32,
    pub workflow_id: Option<uuid::Uuid>,
    pub workflow_key: Option<String>,
    pub schedule_id: Option<uuid::Uuid>,
    pub schedule_tick: Option<i64>,
    pub execution_timeout_seconds: Option<i32>,
}

/// The rows of `tasks` under `ids`, submitted at `now` (with the fingerprint of their request
/// and their workflow, if any): waiting when `waits` says a task waits for others, else in
/// the status it starts in.
pub fn new_rows(
    ids: &[uuid::Uuid],
    tasks: &[crate::domain::NewTask],
    waits: impl Fn(&crate::domain::NewTask) -> bool,
    fingerprint: Option<&str>,
    workflow: Option<&super::WorkflowRecord>,
    now: i64,
) -> Vec<NewRow> {
    ids.iter()
        .zip(tasks)
        .map(|(id, task)| {
            let status = if waits(task) {
                crate::domain::TaskStatus::Waiting
            } else {
                task.initial_status(now)
            };
            NewRow::of(*id, task, status, fingerprint, workflow, now)
        })
        .collect()
}

/// Puts `created`, the tasks of ids `ids` as an insert returned them (`RETURNING` promises no
/// order), in the order of `ids`.
pub fn in_order(
    ids: &[uuid::Uuid],
    mut created: Vec<crate::domain::Task>,
) -> Vec<crate::domain::Task> {
    let order: std::collections::HashMap<uuid::Uuid, usize> =
        ids.iter().enumerate().map(|(at, id)| (*id, at)).collect();
    created.sort_by_key(|task| order.get(&task.id).copied());
    created
}

impl NewRow {
    /// The row of `task`, submitted at `now` in `status` (with the fingerprint of its request
    /// and the workflow it is part of, if any).
    pub fn of(
        id: uuid::Uuid,
        task: &crate::domain::NewTask,
        status: crate::domain::TaskStatus,
        fingerprint: Option<&str>,
        workflow: Option<&super::WorkflowRecord>,
        now: i64,
    ) -> Self {
        Self {
            id,
            title: task.title.clone(),
            kind: task.kind.clone(),
            payload: task.payload.clone(),
            status: status.as_str(),
            priority: task.priority,
            capabilities: serde_json::to_string(&task.required_capabilities)
                .unwrap_or_else(|_| "[]".to_owned()),
            pinned_agent_id: task.pinned_agent_id,
            user_id: task.user_id.clone(),
            max_attempts: task.max_attempts,
            timeout_seconds: task.timeout_seconds,
            execution_timeout_seconds: task.execution_timeout_seconds,
            available_at: task.available_at(now),
            trace_parent: task.trace_parent.clone(),
            idempotency_key: task
                .idempotency_key
                .as_ref()
                .map(crate::domain::IdempotencyKey::storage_key),
            request_hash: fingerprint.map(str::to_owned),
            dependency_count: i32::try_from(task.dependency_count()).unwrap_or(i32::MAX),
            workflow_id: workflow.map(|workflow| workflow.id),
            workflow_key: task.workflow_key.clone(),
            schedule_id: task.schedule_tick.map(|(schedule, _)| schedule),
            schedule_tick: task.schedule_tick.map(|(_, tick)| tick),
        }
    }
}

/// Starts a statement that records dependencies; the caller appends `(task, parent)` values.
pub const INSERT_DEPENDENCIES: &str = "INSERT INTO task_dependencies (task_id, depends_on) ";

/// Counts, on each parent among the caller's list, the dependents just recorded; `$1..` are
/// the new tasks' ids and the caller closes both lists.
pub const COUNT_DEPENDENTS: &str = "UPDATE tasks SET dependent_count = dependent_count + \
    (SELECT COUNT(*) FROM task_dependencies d WHERE d.depends_on = tasks.id AND d.task_id IN ";

/// The results of the tasks that the caller's tasks depend on; the caller closes the list.
pub const DEPENDENCY_RESULTS: &str = "SELECT d.task_id, parent.id, parent.result \
    FROM task_dependencies d JOIN tasks parent ON parent.id = d.depends_on WHERE d.task_id IN ";

/// The tasks that depend on task `$1`.
pub const DEPENDENTS: &str = "SELECT tasks.* FROM tasks JOIN task_dependencies d \
    ON d.task_id = tasks.id WHERE d.depends_on = $1";

/// Finds the task a stored (tenant-scoped) idempotency key created.
pub const BY_IDEMPOTENCY_KEY: &str = "SELECT * FROM tasks WHERE idempotency_key = $1";

/// Finds a task by id.
pub const BY_ID: &str = "SELECT * FROM tasks WHERE id = $1";

/// What queued tasks that became claimable in `($1, $2]` ask of their taker, at most `$3`.
pub const READY_BETWEEN: &str = "SELECT id, pinned_agent_id, required_capabilities, available_at \
    FROM tasks WHERE status = 'queued' AND available_at > $1 AND available_at <= $2 \
    ORDER BY available_at, id LIMIT $3";

/// Cancels a task that is not final yet.
pub const CANCEL: &str = "UPDATE tasks SET status = 'cancelled', lease_id = NULL, \
    lease_expires_at = NULL, finished_at = $2, updated_at = $2, attempt_outcome = 'cancelled' \
    WHERE id = $1 AND status IN ('waiting', 'scheduled', 'queued', 'active') RETURNING *";

/// Queues a failed or cancelled task again with a fresh attempt budget, as it was submitted:
/// waiting again while a task it depends on has not completed; not at all while one of them
/// failed or was cancelled.
pub const RETRY: &str = "UPDATE tasks SET status = CASE WHEN EXISTS (SELECT 1 \
    FROM task_dependencies d JOIN tasks parent ON parent.id = d.depends_on \
    WHERE d.task_id = tasks.id AND parent.status <> 'completed') THEN 'waiting' ELSE 'queued' END, \
    attempts = 0, \
    agent_id = pinned_agent_id, lease_id = NULL, lease_expires_at = NULL, result = NULL, \
    error = NULL, progress_percent = 0, progress_message = NULL, attempt_outcome = NULL, \
    available_at = $2, started_at = NULL, finished_at = NULL, updated_at = $2 \
    WHERE id = $1 AND status IN ('failed', 'cancelled') AND NOT EXISTS (SELECT 1 \
    FROM task_dependencies d JOIN tasks parent ON parent.id = d.depends_on \
    WHERE d.task_id = tasks.id AND parent.status IN ('failed', 'cancelled')) RETURNING *";

/// The tasks task `$1` depends on, for the caller to lock.
pub const PARENT_IDS: &str = "SELECT depends_on FROM task_dependencies WHERE task_id = $1";

/// Selects up to `$2` scheduled tasks due by `$1`, earliest first; the caller appends locking.
pub const DUE_IDS: &str = "SELECT id FROM tasks WHERE status = 'scheduled' \
    AND available_at <= $1 ORDER BY available_at, id LIMIT $2";

/// Queues the scheduled tasks among the caller's selection (`$1` now).
/// A task queued late (no replica ran at its time) becomes available when it is queued.
pub const QUEUE_DUE: &str = "UPDATE tasks SET status = 'queued', available_at = $1, \
    updated_at = $1 WHERE id IN (";

/// When the next scheduled task is due.
pub const NEXT_DUE: &str = "SELECT MIN(available_at) FROM tasks WHERE status = 'scheduled'";

/// One task's attempts, oldest first.
pub const TASK_ATTEMPTS: &str = "SELECT attempt, agent_id, started_at, finished_at, outcome, \
    error FROM task_attempts WHERE task_id = $1 ORDER BY attempt LIMIT $2 OFFSET $3";

/// Counts one task's attempts.
pub const COUNT_TASK_ATTEMPTS: &str = "SELECT COUNT(*) FROM task_attempts WHERE task_id = $1";

/// Matches the current attempt: `$1` task, `$2` agent, `$3` lease or NULL for "any lease".
const HELD: &str = "WHERE id = $1 AND status = 'active' AND agent_id = $2 \
    AND ($3 IS NULL OR lease_id = $3) RETURNING *";

/// Records progress and renews the lease of the current attempt.
pub const PROGRESS: &str = const_format::concatcp!(
    "UPDATE tasks SET progress_percent = $4, progress_message = $5, lease_expires_at = ",
    lease_until!("$6", "started_at"),
    ", updated_at = $6 ",
    HELD
);

/// Completes the attempts that a list of reports names. The backend appends the time (as
/// `finished_at`, then `updated_at`), then `FROM` the reports as a table `done` whose columns
/// are named as a `VALUES` list names them: `column1` the task, `column2` the agent, `column3`
/// the lease (NULL: any lease of that agent), `column4` the result; then [`COMPLETE_END`]. The
/// lease id stays, naming the attempt that reported, so a repeated report of it is recognised.
pub const COMPLETE: &str = "UPDATE tasks SET status = 'completed', result = done.column4, \
    progress_percent = 100, lease_expires_at = NULL, attempt_outcome = 'completed', \
    finished_at = ";

/// Ends [`COMPLETE`]: only the attempt each report names (both backends return the task's
/// columns under `*`; PostgreSQL adds the report's, which nothing reads).
pub const COMPLETE_END: &str = " WHERE tasks.id = done.column1 AND tasks.status = 'active' \
    AND tasks.agent_id = done.column2 AND (done.column3 IS NULL OR tasks.lease_id = done.column3) \
    RETURNING *";

/// Ends the attempt holding lease `$2` as requeued or failed; the lease id stays, as on
/// completion.
pub const RELEASE: &str = "UPDATE tasks SET status = $3, error = $4, available_at = $5, \
    agent_id = $6, lease_expires_at = NULL, attempt_outcome = 'failed', \
    finished_at = CASE WHEN $3 = 'queued' THEN NULL ELSE $7 END, updated_at = $7 \
    WHERE id = $1 AND status = 'active' AND lease_id = $2 RETURNING *";

/// Ends an abandoned attempt (`$1` now): requeued while attempts remain, failed otherwise.
/// The caller appends the error and how the attempt ended, then the row selection.
const REQUEUE_SET: &str = "UPDATE tasks SET \
    status = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'failed' END, \
    agent_id = CASE WHEN attempts < max_attempts THEN pinned_agent_id ELSE agent_id END, \
    available_at = $1, lease_id = NULL, lease_expires_at = NULL, \
    finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE $1 END, updated_at = $1, ";

/// Whether an expired lease was the attempt's execution bound (see [`lease_until`]).
const TIMED_OUT: &str = "execution_timeout_seconds IS NOT NULL \
    AND lease_expires_at >= started_at + execution_timeout_seconds * 1000";

/// The error recorded on attempts that overran their execution bound.
pub const EXECUTION_TIMED_OUT: &str = "execution timed out";

/// [`REQUEUE_SET`] for attempts whose lease expired (`$3` the error), or whose execution bound
/// passed; the caller appends the row selection.
pub const REQUEUE_EXPIRED_SET: &str = const_format::concatcp!(
    REQUEUE_SET,
    "error = CASE WHEN ",
    TIMED_OUT,
    " THEN '",
    EXECUTION_TIMED_OUT,
    "' ELSE $3 END, attempt_outcome = CASE WHEN ",
    TIMED_OUT,
    " THEN 'timed_out' ELSE 'lease_expired' END "
);

/// [`REQUEUE_SET`] for attempts whose agent is lost (`$3` the error); the caller appends the
/// row selection.
const REQUEUE_LOST_SET: &str =
    const_format::concatcp!(REQUEUE_SET, "error = $3, attempt_outcome = 'agent_lost' ");

/// Ends every active attempt of agent `$2`.
pub const REQUEUE_AGENT: &str = const_format::concatcp!(
    REQUEUE_LOST_SET,
    "WHERE status = 'active' AND agent_id = $2 RETURNING *"
);

/// Renews the leases of the tasks agent `$2` holds among `$3..` (appended by the caller).
pub const RENEW_LISTED: &str = const_format::concatcp!(
    "UPDATE tasks SET lease_expires_at = ",
    lease_until!("$1", "started_at"),
    " WHERE status = 'active' AND agent_id = $2 AND id IN "
);

/// Ends the attempts agent `$2` began before `$4` on tasks it does not list (the caller appends
/// `AND id NOT IN (..)` when it lists any).
pub const RELEASE_UNLISTED: &str = const_format::concatcp!(
    REQUEUE_LOST_SET,
    "WHERE status = 'active' AND agent_id = $2 AND started_at < $4"
);

/// The tasks among `$2..` (appended by the caller) that agent `$1` lists but no longer holds:
/// cancelled, timed out or taken back, so its work on them no longer counts.
pub const DROPPED_LISTED: &str =
    "SELECT id FROM tasks WHERE NOT (status = 'active' AND agent_id = $1) AND id IN ";

/// Returns the `LIKE` pattern (with `\` as its escape) that matches text containing `text`:
/// its own `%`, `_` and `\` match only themselves.
pub fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for letter in text.chars() {
        if matches!(letter, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(letter);
    }
    pattern.push('%');
    pattern
}

/// Returns `($first, $first+1, ..)` for `count` bound values.
pub fn placeholders(first: usize, count: usize) -> String {
    let list: Vec<String> = (first..first + count).map(|n| format!("${n}")).collect();
    format!("({})", list.join(", "))
}

/// The error recorded on attempts whose lease expired.
pub const LEASE_EXPIRED: &str = "lease expired";

/// Agents holding active tasks.
pub const ACTIVE_AGENTS: &str =
    "SELECT DISTINCT agent_id FROM tasks WHERE status = 'active' AND agent_id IS NOT NULL";

/// Counts tasks per status, from the counts that triggers keep.
pub const COUNT_BY_STATUS: &str =
    "SELECT status, CAST(SUM(n) AS BIGINT) FROM task_counts GROUP BY status";

/// Counts the tasks of a list filtered by status and user at most, from the counts that
/// triggers keep; a filter follows.
const KEPT_COUNT: &str = "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM task_counts";

/// Counts the tasks of any other list, row by row; a filter follows.
const ROW_COUNT: &str = "SELECT COUNT(*) FROM tasks";

/// The count of a task list under `filter`: read from the kept counts when they can answer
/// it (the filter names no more than a status and a user), else counted row by row. An empty
/// user is counted row by row, as SQLite keeps the tasks without a user under that name.
pub fn count_for(filter: &crate::domain::TaskFilter) -> &'static str {
    let kept = filter.agent_id.is_none()
        && filter.kind.is_none()
        && filter.title_contains.is_none()
        && filter.user_id.as_deref() != Some("");
    if kept { KEPT_COUNT } else { ROW_COUNT }
}

/// How many tasks agent `$2` holds; claims subtract it from the agent's concurrency.
pub const HELD_BY_AGENT: &str =
    "(SELECT COUNT(*) FROM tasks WHERE status = 'active' AND agent_id = $2)";

/// The distinct sets of required capabilities among queued tasks that are not pinned, found by
/// one probe of `tasks_claim_set_idx` a set (a skip scan), so a claim's cost follows how many
/// kinds of work wait, not how many tasks: 10⁶ queued tasks that need a capability the claiming
/// agent lacks are one probe, not 10⁶ rows walked. Sets are stored sorted and deduplicated, so
/// one set is one value. `$tasks` names the table, with whatever the backend needs to be sure
/// the probes use that index.
macro_rules! capability_sets {
    ($tasks:literal) => {
        concat!(
            "WITH RECURSIVE capability_sets (capabilities) AS ( \
                SELECT (SELECT required_capabilities FROM ",
            $tasks,
            " WHERE status = 'queued' AND pinned_agent_id IS NULL \
                ORDER BY required_capabilities LIMIT 1) \
            UNION ALL \
                SELECT (SELECT required_capabilities FROM ",
            $tasks,
            " WHERE status = 'queued' AND pinned_agent_id IS NULL \
                AND required_capabilities > capability_sets.capabilities \
                ORDER BY required_capabilities LIMIT 1) \
                FROM capability_sets WHERE capability_sets.capabilities IS NOT NULL) "
        )
    };
}

pub(crate) use capability_sets;

/// The claimable tasks of one capability set (`capability_sets.capabilities`) or pinned to agent
/// `$2`, best first, at `$1`, up to `$4`; each backend selects and locks them its own way.
pub const CLAIMABLE_OF_SET: &str = "FROM tasks \
    WHERE status = 'queued' AND pinned_agent_id IS NULL \
    AND required_capabilities = capability_sets.capabilities AND available_at <= $1 \
    ORDER BY priority DESC, created_at, id LIMIT $4";

/// See [`CLAIMABLE_OF_SET`].
pub const CLAIMABLE_PINNED: &str = "FROM tasks \
    WHERE status = 'queued' AND pinned_agent_id = $2 AND available_at <= $1 \
    ORDER BY priority DESC, created_at, id LIMIT $4";

/// Selects up to `$2` attempts whose lease expired before `$1`; the caller appends locking.
pub const EXPIRED_IDS: &str = "SELECT id FROM tasks WHERE status = 'active' \
    AND lease_expires_at < $1 ORDER BY lease_expires_at LIMIT $2";

/// Deletes up to `$2` final tasks that finished before `$1`, those that finished first.
pub const PRUNE: &str = "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks \
    WHERE finished_at IS NOT NULL AND finished_at < $1 ORDER BY finished_at LIMIT $2)";

/// Adds a message to an existing task.
pub const INSERT_MESSAGE: &str = "INSERT INTO task_messages (id, task_id, sender, role, \
    content, created_at) SELECT $1, $2, $3, $4, $5, $6 \
    WHERE EXISTS (SELECT 1 FROM tasks WHERE id = $2) RETURNING *";

/// One task's messages, oldest first.
pub const TASK_MESSAGES: &str = "SELECT * FROM task_messages WHERE task_id = $1 \
    ORDER BY created_at, id LIMIT $2 OFFSET $3";

/// Counts one task's messages.
pub const COUNT_TASK_MESSAGES: &str = "SELECT COUNT(*) FROM task_messages WHERE task_id = $1";

/// Keeps to the messages of tasks user `$1` submitted, unless `$1` is NULL.
const OF_USER: &str = "WHERE ($1 IS NULL OR task_id IN (SELECT id FROM tasks WHERE user_id = $1))";

/// Recent messages (of user `$1`'s tasks, unless NULL), newest first.
pub const RECENT_MESSAGES: &str = const_format::concatcp!(
    "SELECT * FROM task_messages ",
    OF_USER,
    " ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
);

/// Counts recent messages (of user `$1`'s tasks, unless NULL).
pub const COUNT_MESSAGES: &str =
    const_format::concatcp!("SELECT COUNT(*) FROM task_messages ", OF_USER);

/// Implements `TaskStore` for `$store` (a struct with `readers` and `writer` pools of `$db` and a
/// `claim_rows` method), using the shared statements above and the backend's `REQUEUE_EXPIRED`
/// from `$dialect`.
macro_rules! impl_task_store {
    ($store:ty, $db:ty, $dialect:path) => {
        #[async_trait::async_trait]
        impl $crate::storage::TaskStore for $store {
            async fn insert(
                &self,
                task: &$crate::domain::NewTask,
                fingerprint: Option<&str>,
                now: i64,
            ) -> Result<$crate::storage::Insertion, swarm_kit::StoreError> {
                self.insert_all(std::slice::from_ref(task), fingerprint, None, now).await
            }

            async fn insert_many(
                &self,
                tasks: &[$crate::domain::NewTask],
                now: i64,
            ) -> Result<$crate::storage::Insertion, swarm_kit::StoreError> {
                self.insert_all(tasks, None, None, now).await
            }

            async fn insert_workflow(
                &self,
                workflow: &$crate::storage::WorkflowRecord,
                tasks: &[$crate::domain::NewTask],
                now: i64,
            ) -> Result<$crate::storage::Insertion, swarm_kit::StoreError> {
                self.insert_all(tasks, None, Some(workflow), now).await
            }

            async fn workflow(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<$crate::domain::WorkflowGraph>, swarm_kit::StoreError> {
                use $crate::storage::sql;
                let mut query = sqlx::QueryBuilder::<$db>::new(sql::WORKFLOW_SUMMARY);
                query.push(" AND w.id = ").push_bind(id).push(sql::WORKFLOW_GROUP);
                let Some(workflow) = query.build_query_as().fetch_optional(&self.readers).await? else {
                    return Ok(None);
                };
                let tasks = sqlx::query_as(sql::WORKFLOW_TASKS)
                    .bind(id)
                    .fetch_all(&self.readers)
                    .await?;
                let dependencies = sqlx::query_as(sql::WORKFLOW_DEPENDENCIES)
                    .bind(id)
                    .fetch_all(&self.readers)
                    .await?;
                Ok(Some($crate::domain::WorkflowGraph {
                    workflow,
                    tasks,
                    dependencies,
                }))
            }

            async fn list_workflows(
                &self,
                filter: &$crate::domain::WorkflowFilter,
                page: swarm_kit::page::Page,
            ) -> Result<(Vec<$crate::domain::Workflow>, u64), swarm_kit::StoreError> {
                let summary = |select: &str| {
                    let mut query = sqlx::QueryBuilder::<$db>::new(select);
                    query.push($crate::storage::sql::WORKFLOW_SUMMARY);
                    if let Some(user_id) = &filter.user_id {
                        query.push(" AND w.user_id = ").push_bind(user_id.clone());
                    }
                    query.push($crate::storage::sql::WORKFLOW_GROUP).push(") AS summary");
                    if let Some(status) = filter.status {
                        query.push(" WHERE status = ").push_bind(status.as_str());
                    }
                    query
                };
                let total: i64 = summary("SELECT COUNT(*) FROM (")
                    .build_query_scalar()
                    .fetch_one(&self.readers)
                    .await?;
                let mut select = summary("SELECT * FROM (");
                select
                    .push(" ORDER BY created_at DESC, id DESC LIMIT ")
                    .push_bind(page.limit())
                    .push(" OFFSET ")
                    .push_bind(page.offset());
                let workflows = select.build_query_as().fetch_all(&self.readers).await?;
                Ok((workflows, total.unsigned_abs()))
            }

            async fn insert_schedule(
                &self,
                schedule: &$crate::domain::Schedule,
            ) -> Result<$crate::domain::Schedule, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::INSERT_SCHEDULE)
                    .bind(schedule.id)
                    .bind(&schedule.name)
                    .bind(&schedule.cron)
                    .bind(&schedule.timezone)
                    .bind(sqlx::types::Json(&schedule.task))
                    .bind(&schedule.user_id)
                    .bind(schedule.paused)
                    .bind(schedule.next_run_at)
                    .bind(schedule.created_at)
                    .fetch_one(&self.writer)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn update_schedule(
                &self,
                schedule: &$crate::domain::Schedule,
            ) -> Result<Option<$crate::domain::Schedule>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::UPDATE_SCHEDULE)
                    .bind(schedule.id)
                    .bind(&schedule.name)
                    .bind(&schedule.cron)
                    .bind(&schedule.timezone)
                    .bind(sqlx::types::Json(&schedule.task))
                    .bind(schedule.paused)
                    .bind(schedule.next_run_at)
                    .bind(schedule.updated_at)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn schedule(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<$crate::domain::Schedule>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::SCHEDULE_BY_ID)
                    .bind(id)
                    .fetch_optional(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn delete_schedule(&self, id: uuid::Uuid) -> Result<bool, swarm_kit::StoreError> {
                let done = sqlx::query($crate::storage::sql::DELETE_SCHEDULE)
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_schedules(
                &self,
                user_id: Option<&str>,
                page: swarm_kit::page::Page,
            ) -> Result<(Vec<$crate::domain::Schedule>, u64), swarm_kit::StoreError> {
                use $crate::storage::sql;
                let schedules = sqlx::query_as(sql::LIST_SCHEDULES)
                    .bind(user_id)
                    .bind(page.limit())
                    .bind(page.offset())
                    .fetch_all(&self.readers)
                    .await?;
                let total: i64 = sqlx::query_scalar(sql::COUNT_SCHEDULES)
                    .bind(user_id)
                    .fetch_one(&self.readers)
                    .await?;
                Ok((schedules, total.unsigned_abs()))
            }

            async fn due_schedules(
                &self,
                now: i64,
                limit: u32,
            ) -> Result<Vec<$crate::domain::Schedule>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::DUE_SCHEDULES)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn next_schedule_due(&self) -> Result<Option<i64>, swarm_kit::StoreError> {
                sqlx::query_scalar($crate::storage::sql::NEXT_SCHEDULE_DUE)
                    .fetch_one(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn advance_schedule(
                &self,
                id: uuid::Uuid,
                fired: i64,
                next: i64,
                now: i64,
            ) -> Result<bool, swarm_kit::StoreError> {
                let done = sqlx::query($crate::storage::sql::ADVANCE_SCHEDULE)
                    .bind(id)
                    .bind(fired)
                    .bind(next)
                    .bind(now)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn cancel_workflow(
                &self,
                id: uuid::Uuid,
                now: i64,
            ) -> Result<Vec<$crate::domain::Task>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::CANCEL_WORKFLOW)
                    .bind(id)
                    .bind(now)
                    .fetch_all(&self.writer)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn dependents(
                &self,
                id: uuid::Uuid,
            ) -> Result<Vec<$crate::domain::Task>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::DEPENDENTS)
                    .bind(id)
                    .fetch_all(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn get(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<$crate::domain::Task>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::BY_ID)
                    .bind(id)
                    .fetch_optional(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn get_many(
                &self,
                ids: &[uuid::Uuid],
            ) -> Result<Vec<$crate::domain::Task>, swarm_kit::StoreError> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                by_ids("SELECT * FROM tasks", ids)
                    .build_query_as()
                    .fetch_all(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn versions(
                &self,
                ids: &[uuid::Uuid],
            ) -> Result<Vec<$crate::storage::TaskVersion>, swarm_kit::StoreError> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                by_ids("SELECT id, updated_at, status, progress_percent FROM tasks", ids)
                    .build_query_as()
                    .fetch_all(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn ready_between(
                &self,
                after: i64,
                until: i64,
                limit: u32,
            ) -> Result<Vec<$crate::domain::ReadyWork>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::READY_BETWEEN)
                    .bind(after)
                    .bind(until)
                    .bind(i64::from(limit))
                    .fetch_all(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn list(
                &self,
                filter: &$crate::domain::TaskFilter,
                page: swarm_kit::page::Page,
            ) -> Result<(Vec<$crate::domain::Task>, u64), swarm_kit::StoreError> {
                let mut count =
                    sqlx::QueryBuilder::<$db>::new($crate::storage::sql::count_for(filter));
                push_task_filter(&mut count, filter);
                let mut select = sqlx::QueryBuilder::<$db>::new("SELECT * FROM tasks");
                push_task_filter(&mut select, filter);
                select
                    .push(" ORDER BY created_at DESC, id DESC LIMIT ")
                    .push_bind(page.limit())
                    .push(" OFFSET ")
                    .push_bind(page.offset());
                // The page and its count go to the database at once.
                let (tasks, total) = tokio::try_join!(
                    select.build_query_as().fetch_all(&self.readers),
                    count.build_query_scalar::<i64>().fetch_one(&self.readers),
                )?;
                Ok((tasks, total.unsigned_abs()))
            }

            async fn cancel(
                &self,
                id: uuid::Uuid,
                now: i64,
            ) -> Result<Option<$crate::domain::Task>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::CANCEL)
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn retry(
                &self,
                id: uuid::Uuid,
                now: i64,
            ) -> Result<Option<$crate::domain::Task>, swarm_kit::StoreError> {
                use $crate::storage::sql;
                use $dialect as dialect;
                // Lock what it waits on first, so a parent completing meanwhile sees it waiting.
                let mut transaction = self.writer.begin().await?;
                let parents: Vec<uuid::Uuid> = sqlx::query_scalar(sql::PARENT_IDS)
                    .bind(id)
                    .fetch_all(&mut *transaction)
                    .await?;
                if !parents.is_empty() {
                    let mut lock = by_ids("SELECT id FROM tasks", &parents);
                    lock.push(dialect::LOCK_PARENTS);
                    lock.build().execute(&mut *transaction).await?;
                }
                let retried = sqlx::query_as(sql::RETRY)
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&mut *transaction)
                    .await?;
                transaction.commit().await?;
                Ok(retried)
            }

            async fn queue_due(
                &self,
                now: i64,
                limit: u32,
            ) -> Result<Vec<$crate::domain::Task>, swarm_kit::StoreError> {
                use $dialect as dialect;
                sqlx::query_as(dialect::QUEUE_DUE)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&self.writer)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn next_due(&self) -> Result<Option<i64>, swarm_kit::StoreError> {
                sqlx::query_scalar($crate::storage::sql::NEXT_DUE)
                    .fetch_one(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn attempts(
                &self,
                task_id: uuid::Uuid,
                page: swarm_kit::page::Page,
            ) -> Result<(Vec<$crate::domain::Attempt>, u64), swarm_kit::StoreError> {
                use $crate::storage::sql;
                let attempts = sqlx::query_as(sql::TASK_ATTEMPTS)
                    .bind(task_id)
                    .bind(page.limit())
                    .bind(page.offset())
                    .fetch_all(&self.readers)
                    .await?;
                let total: i64 = sqlx::query_scalar(sql::COUNT_TASK_ATTEMPTS)
                    .bind(task_id)
                    .fetch_one(&self.readers)
                    .await?;
                Ok((attempts, total.unsigned_abs()))
            }

            async fn claim(
                &self,
                claim: &$crate::domain::Claim,
                now: i64,
            ) -> Result<Vec<$crate::domain::Task>, swarm_kit::StoreError> {
                let mut tasks = self.claim_rows(claim, now).await?;
                self.add_dependency_results(&mut tasks).await?;
                // UPDATE .. RETURNING gives rows in no particular order.
                tasks.sort_by(|a, b| {
                    b.priority
                        .cmp(&a.priority)
                        .then(a.created_at.cmp(&b.created_at))
                        .then(a.id.cmp(&b.id))
                });
                Ok(tasks)
            }

            async fn sync_held(
                &self,
                agent_id: uuid::Uuid,
                listed: &[uuid::Uuid],
                claimed_before: i64,
                error: &str,
                now: i64,
            ) -> Result<(Vec<$crate::domain::Task>, Vec<uuid::Uuid>), swarm_kit::StoreError> {
                use $crate::storage::sql;
                use $dialect as dialect;
                // The statements are fixed text plus numbered placeholders: nothing from the
                // caller reaches the SQL but through binds.
                let mut transaction = self.writer.begin().await?;
                dialect::lock_held_in_id_order(&mut transaction, agent_id).await?;
                let mut cancelled = Vec::new();
                if !listed.is_empty() {
                    let renew = format!("{}{}", sql::RENEW_LISTED, sql::placeholders(3, listed.len()));
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(renew)).bind(now).bind(agent_id);
                    for id in listed {
                        query = query.bind(*id);
                    }
                    query.execute(&mut *transaction).await?;
                    let select =
                        format!("{}{}", sql::DROPPED_LISTED, sql::placeholders(2, listed.len()));
                    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(select)).bind(agent_id);
                    for id in listed {
                        query = query.bind(*id);
                    }
                    cancelled = query.fetch_all(&mut *transaction).await?;
                }
                let mut release = sql::RELEASE_UNLISTED.to_owned();
                if !listed.is_empty() {
                    release.push_str(" AND id NOT IN ");
                    release.push_str(&sql::placeholders(5, listed.len()));
                }
                release.push_str(" RETURNING *");
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(release))
                    .bind(now)
                    .bind(agent_id)
                    .bind(error)
                    .bind(claimed_before);
                for id in listed {
                    query = query.bind(*id);
                }
                let released = query.fetch_all(&mut *transaction).await?;
                transaction.commit().await?;
                Ok((released, cancelled))
            }

            async fn progress(
                &self,
                id: uuid::Uuid,
                lease: &$crate::domain::LeaseRef,
                percent: i32,
                message: Option<&str>,
                now: i64,
            ) -> Result<Option<$crate::domain::Task>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::PROGRESS)
                    .bind(id)
                    .bind(lease.agent_id)
                    .bind(lease.lease_id)
                    .bind(percent)
                    .bind(message)
                    .bind(now)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn complete_many(
                &self,
                completions: &[$crate::domain::Completion],
                now: i64,
            ) -> Result<Vec<$crate::domain::Task>, swarm_kit::StoreError> {
                if completions.is_empty() {
                    return Ok(Vec::new());
                }
                use $dialect as dialect;
                dialect::complete_rows(&self.writer, completions, now)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn release(
                &self,
                id: uuid::Uuid,
                lease_id: uuid::Uuid,
                release: &$crate::storage::Release,
                now: i64,
            ) -> Result<Option<$crate::domain::Task>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::RELEASE)
                    .bind(id)
                    .bind(lease_id)
                    .bind(release.status.as_str())
                    .bind(&release.error)
                    .bind(release.available_at)
                    .bind(release.agent_id)
                    .bind(now)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn requeue_expired(
                &self,
                now: i64,
                limit: u32,
            ) -> Result<Vec<$crate::domain::Task>, swarm_kit::StoreError> {
                use $dialect as dialect;
                sqlx::query_as(dialect::REQUEUE_EXPIRED)
                    .bind(now)
                    .bind(i64::from(limit))
                    .bind($crate::storage::sql::LEASE_EXPIRED)
                    .fetch_all(&self.writer)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn active_agents(&self) -> Result<Vec<uuid::Uuid>, swarm_kit::StoreError> {
                sqlx::query_scalar($crate::storage::sql::ACTIVE_AGENTS)
                    .fetch_all(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn count_by_status(&self) -> Result<Vec<(String, i64)>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::COUNT_BY_STATUS)
                    .fetch_all(&self.readers)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn fold_counts(&self) -> Result<(), swarm_kit::StoreError> {
                use $dialect as dialect;
                if let Some(fold) = dialect::FOLD_COUNTS {
                    sqlx::query(fold).execute(&self.writer).await?;
                }
                Ok(())
            }

            async fn count_active(
                &self,
                agent_ids: &[uuid::Uuid],
            ) -> Result<Vec<(uuid::Uuid, i64)>, swarm_kit::StoreError> {
                if agent_ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "SELECT agent_id, COUNT(*) FROM tasks WHERE status = 'active' AND agent_id IN (",
                );
                let mut ids = query.separated(", ");
                for id in agent_ids {
                    ids.push_bind(*id);
                }
                query.push(") GROUP BY agent_id");
                query.build_query_as().fetch_all(&self.readers).await
                .map_err(swarm_kit::StoreError::from)
            }

            async fn requeue_agent_tasks(
                &self,
                agent_id: uuid::Uuid,
                error: &str,
                now: i64,
            ) -> Result<Vec<$crate::domain::Task>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::REQUEUE_AGENT)
                    .bind(now)
                    .bind(agent_id)
                    .bind(error)
                    .fetch_all(&self.writer)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn prune_finished(&self, before: i64, limit: u32) -> Result<u64, swarm_kit::StoreError> {
                let done = sqlx::query($crate::storage::sql::PRUNE)
                    .bind(before)
                    .bind(i64::from(limit))
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                // Workflows are looked at once the tasks are done, not after every batch.
                if done < u64::from(limit) {
                    sqlx::query($crate::storage::sql::PRUNE_WORKFLOWS)
                        .bind(before)
                        .bind(i64::from(limit))
                        .execute(&self.writer)
                        .await?;
                }
                Ok(done)
            }

            async fn add_message(
                &self,
                message: &$crate::domain::NewMessage,
                now: i64,
            ) -> Result<Option<$crate::domain::Message>, swarm_kit::StoreError> {
                sqlx::query_as($crate::storage::sql::INSERT_MESSAGE)
                    .bind(uuid::Uuid::now_v7())
                    .bind(message.task_id)
                    .bind(&message.sender)
                    .bind(message.role.as_str())
                    .bind(&message.content)
                    .bind(now)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(swarm_kit::StoreError::from)
            }

            async fn list_messages(
                &self,
                scope: &$crate::domain::MessageScope,
                page: swarm_kit::page::Page,
            ) -> Result<(Vec<$crate::domain::Message>, u64), swarm_kit::StoreError> {
                use $crate::domain::MessageScope;
                use $crate::storage::sql;
                let (messages, total): (Vec<$crate::domain::Message>, i64) = match scope {
                    MessageScope::Task(task_id) => (
                        sqlx::query_as(sql::TASK_MESSAGES)
                            .bind(task_id)
                            .bind(page.limit())
                            .bind(page.offset())
                            .fetch_all(&self.readers)
                            .await?,
                        sqlx::query_scalar(sql::COUNT_TASK_MESSAGES)
                            .bind(task_id)
                            .fetch_one(&self.readers)
                            .await?,
                    ),
                    MessageScope::Recent { user_id } => (
                        sqlx::query_as(sql::RECENT_MESSAGES)
                            .bind(user_id)
                            .bind(page.limit())
                            .bind(page.offset())
                            .fetch_all(&self.readers)
                            .await?,
                        sqlx::query_scalar(sql::COUNT_MESSAGES)
                            .bind(user_id)
                            .fetch_one(&self.readers)
                            .await?,
                    ),
                };
                Ok((messages, total.unsigned_abs()))
            }
        }

        impl $store {
            /// Inserts `tasks` in one transaction, all or none, with their dependencies (the
            /// parents outside the batch locked first, so none ends unseen meanwhile), and
            /// returns them in the order given. A task that depends on anything not yet
            /// completed starts waiting.
            async fn insert_all(
                &self,
                tasks: &[$crate::domain::NewTask],
                fingerprint: Option<&str>,
                workflow: Option<&$crate::storage::WorkflowRecord>,
                now: i64,
            ) -> Result<$crate::storage::Insertion, swarm_kit::StoreError> {
                use $crate::domain::TaskStatus;
                use $crate::storage::{Insertion, sql};
                use $dialect as dialect;
                let ids: Vec<uuid::Uuid> = tasks.iter().map(|_| uuid::Uuid::now_v7()).collect();
                if workflow.is_none() && tasks.iter().all($crate::domain::NewTask::stands_alone) {
                    // One statement stores them all or none: no transaction is needed, which
                    // spares the database two round trips (begin, commit) per group of creates.
                    let rows = sql::new_rows(&ids, tasks, |_| false, fingerprint, None, now);
                    let mut connection = self.writer.acquire().await?;
                    let created = dialect::insert_rows(&mut connection, &rows, now).await?;
                    return Ok(Insertion::Created(sql::in_order(&ids, created)));
                }
                let parents: std::collections::BTreeSet<uuid::Uuid> =
                    tasks.iter().flat_map(|task| task.depends_on.iter().copied()).collect();
                let mut transaction = self.writer.begin().await?;
                let seen_key = tasks
                    .first()
                    .and_then(|task| task.idempotency_key.as_ref())
                    .map($crate::domain::IdempotencyKey::storage_key);
                if let Some(key) = &seen_key {
                    // A repeated submission answers what the first one created, whatever
                    // became of what it depends on since.
                    let existing: Option<$crate::domain::Task> = sqlx::query_as(sql::BY_IDEMPOTENCY_KEY)
                        .bind(key)
                        .fetch_optional(&mut *transaction)
                        .await?;
                    if let Some(existing) = existing {
                        transaction.commit().await?;
                        return Ok(Insertion::Existing(Box::new(existing)));
                    }
                }
                let mut parent_status = std::collections::HashMap::new();
                if !parents.is_empty() {
                    let mut lock = by_ids("SELECT id, status FROM tasks", &Vec::from_iter(parents.iter().copied()));
                    lock.push(dialect::LOCK_PARENTS);
                    let found: Vec<(uuid::Uuid, String)> =
                        lock.build_query_as().fetch_all(&mut *transaction).await?;
                    parent_status.extend(found);
                }
                for parent in &parents {
                    match parent_status.get(parent).map(|status| status.parse::<TaskStatus>()) {
                        None => return Ok(Insertion::MissingDependency(*parent)),
                        Some(Ok(status @ (TaskStatus::Failed | TaskStatus::Cancelled))) => {
                            return Ok(Insertion::EndedDependency(*parent, status));
                        }
                        Some(_) => {}
                    }
                }
                let waits = |task: &$crate::domain::NewTask| {
                    !task.after.is_empty()
                        || task.depends_on.iter().any(|parent| {
                            parent_status.get(parent).map(String::as_str) != Some("completed")
                        })
                };
                if let Some(workflow) = workflow {
                    sqlx::query(sql::INSERT_WORKFLOW)
                        .bind(workflow.id)
                        .bind(&workflow.name)
                        .bind(&workflow.user_id)
                        .bind(now)
                        .execute(&mut *transaction)
                        .await?;
                }
                let rows = sql::new_rows(&ids, tasks, waits, fingerprint, workflow, now);
                let created = dialect::insert_rows(&mut transaction, &rows, now).await?;
                if created.len() < tasks.len()
                    && let Some(key) = seen_key
                {
                    // A single task whose idempotency key was seen before is left out.
                    let existing = sqlx::query_as(sql::BY_IDEMPOTENCY_KEY)
                        .bind(key)
                        .fetch_one(&mut *transaction)
                        .await?;
                    transaction.commit().await?;
                    return Ok(Insertion::Existing(Box::new(existing)));
                }
                let edges: Vec<(uuid::Uuid, uuid::Uuid)> = ids
                    .iter()
                    .zip(tasks)
                    .flat_map(|(id, task)| {
                        let siblings = task.after.iter().map(|sibling| ids[*sibling]);
                        task.depends_on.iter().copied().chain(siblings).map(|parent| (*id, parent))
                    })
                    .collect();
                if !edges.is_empty() {
                    let mut record = sqlx::QueryBuilder::<$db>::new(sql::INSERT_DEPENDENCIES);
                    record.push_values(&edges, |mut row, (child, parent)| {
                        row.push_bind(*child).push_bind(*parent);
                    });
                    record.build().execute(&mut *transaction).await?;
                    let parent_ids: std::collections::BTreeSet<uuid::Uuid> =
                        edges.iter().map(|(_, parent)| *parent).collect();
                    let mut count = sqlx::QueryBuilder::<$db>::new(sql::COUNT_DEPENDENTS);
                    push_id_list(&mut count, &ids);
                    count.push(") WHERE id IN ");
                    push_id_list(&mut count, &Vec::from_iter(parent_ids));
                    count.build().execute(&mut *transaction).await?;
                }
                transaction.commit().await?;
                Ok(Insertion::Created(sql::in_order(&ids, created)))
            }

            /// Hands each claimed task that depends on others their results.
            async fn add_dependency_results(
                &self,
                tasks: &mut [$crate::domain::Task],
            ) -> Result<(), swarm_kit::StoreError> {
                let dependent: Vec<uuid::Uuid> = tasks
                    .iter()
                    .filter(|task| task.dependency_count > 0)
                    .map(|task| task.id)
                    .collect();
                if dependent.is_empty() {
                    return Ok(());
                }
                let mut query =
                    sqlx::QueryBuilder::<$db>::new($crate::storage::sql::DEPENDENCY_RESULTS);
                push_id_list(&mut query, &dependent);
                let results: Vec<(uuid::Uuid, uuid::Uuid, Option<String>)> =
                    query.build_query_as().fetch_all(&self.writer).await?;
                let mut budget = $crate::domain::task::MAX_HANDED_DOWN_BYTES;
                for (child, parent, result) in results {
                    let size = result.as_ref().map_or(0, String::len);
                    if size > budget {
                        continue;
                    }
                    budget -= size;
                    if let Some(task) = tasks.iter_mut().find(|task| task.id == child) {
                        task.dependency_results.push((parent, result));
                    }
                }
                Ok(())
            }
        }

        /// Appends `(id, id, ..)` as bound values.
        fn push_id_list(query: &mut sqlx::QueryBuilder<$db>, ids: &[uuid::Uuid]) {
            query.push("(");
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            query.push(")");
        }

        /// Starts `select` over the tasks among `ids`.
        fn by_ids(select: &str, ids: &[uuid::Uuid]) -> sqlx::QueryBuilder<$db> {
            let mut query = sqlx::QueryBuilder::<$db>::new(select);
            query.push(" WHERE id IN ");
            push_id_list(&mut query, ids);
            query
        }

        /// Appends the `WHERE` clause of a task list filter.
        fn push_task_filter(
            query: &mut sqlx::QueryBuilder<$db>,
            filter: &$crate::domain::TaskFilter,
        ) {
            query.push(" WHERE TRUE");
            if let Some(status) = filter.status {
                query.push(" AND status = ").push_bind(status.as_str());
            }
            if let Some(agent_id) = filter.agent_id {
                query.push(" AND agent_id = ").push_bind(agent_id);
            }
            if let Some(user_id) = &filter.user_id {
                query.push(" AND user_id = ").push_bind(user_id.clone());
            }
            if let Some(kind) = &filter.kind {
                query.push(" AND kind = ").push_bind(kind.clone());
            }
            if let Some(text) = &filter.title_contains {
                use $dialect as dialect;
                query
                    .push(" AND title ")
                    .push(dialect::LIKE_ANY_CASE)
                    .push_bind($crate::storage::sql::contains_pattern(text))
                    .push(" ESCAPE '\\'");
            }
        }
    };
}

pub(crate) use impl_task_store;
