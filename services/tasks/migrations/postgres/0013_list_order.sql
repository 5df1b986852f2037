-- Task lists are ordered by creation time, newest first, with the id breaking ties. The list
-- indexes end with the id too, so a page is read off the index in order instead of sorting
-- every matching task to find the newest few: a first page costs the same at 10^3 tasks and
-- at 10^6. Their leading columns are unchanged, so they still serve what they served.
DROP INDEX tasks_status_created_idx;
CREATE INDEX tasks_status_created_idx ON tasks (status, created_at, id);
DROP INDEX tasks_user_created_idx;
CREATE INDEX tasks_user_created_idx ON tasks (user_id, created_at, id);
DROP INDEX tasks_created_idx;
CREATE INDEX tasks_created_idx ON tasks (created_at, id);
