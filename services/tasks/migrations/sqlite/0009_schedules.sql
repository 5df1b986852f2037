-- Cron schedules. Each due tick creates one task carrying (schedule_id, schedule_tick), which a
-- unique index makes the tick's fire record: however many replicas see the tick due, one
-- insert wins and the others create nothing. The replica that fired then moves the schedule
-- on, only from the tick it fired (compare and set).
CREATE TABLE schedules (
    id          BLOB PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    cron        TEXT NOT NULL,
    timezone    TEXT NOT NULL,
    task        TEXT NOT NULL,
    user_id     TEXT,
    paused      INTEGER NOT NULL,
    next_run_at INTEGER NOT NULL,
    last_run_at INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;
-- Names are unique per tenant (admin callers share one scope), so one tenant's names tell
-- nothing of another's.
CREATE UNIQUE INDEX schedules_name_idx ON schedules (COALESCE(user_id, ''), name);
CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE NOT paused;
CREATE INDEX schedules_user_idx ON schedules (user_id, created_at);

ALTER TABLE tasks ADD COLUMN schedule_id BLOB;
ALTER TABLE tasks ADD COLUMN schedule_tick INTEGER;
CREATE UNIQUE INDEX tasks_schedule_tick_idx ON tasks (schedule_id, schedule_tick)
    WHERE schedule_id IS NOT NULL;
