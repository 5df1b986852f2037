-- Task counts by user and status, so a list's total and the queue-depth gauge read a few rows
-- instead of counting every task. Triggers keep them in the transaction that changes the
-- tasks, so a count read from here is as exact as a COUNT(*). SQLite has one writer, so one
-- row per user and status serves; tasks without a user count under ''.
CREATE TABLE task_counts (
    user_id TEXT NOT NULL,
    status  TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (user_id, status)
) WITHOUT ROWID;

CREATE TRIGGER tasks_count_inserted AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_counts (user_id, status, n) VALUES (COALESCE(NEW.user_id, ''), NEW.status, 1)
    ON CONFLICT (user_id, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tasks_count_updated AFTER UPDATE OF status, user_id ON tasks
WHEN OLD.status <> NEW.status OR OLD.user_id IS NOT NEW.user_id
BEGIN
    UPDATE task_counts SET n = n - 1
    WHERE user_id = COALESCE(OLD.user_id, '') AND status = OLD.status;
    INSERT INTO task_counts (user_id, status, n) VALUES (COALESCE(NEW.user_id, ''), NEW.status, 1)
    ON CONFLICT (user_id, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tasks_count_deleted AFTER DELETE ON tasks
BEGIN
    UPDATE task_counts SET n = n - 1
    WHERE user_id = COALESCE(OLD.user_id, '') AND status = OLD.status;
END;

INSERT INTO task_counts (user_id, status, n)
SELECT COALESCE(user_id, ''), status, COUNT(*) FROM tasks GROUP BY COALESCE(user_id, ''), status;
