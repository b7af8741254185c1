-- 0004's keyset indexes begin with the same columns as 0001's runs_function (function_id,
-- created_at) and runs_status (status, created_at), so they serve every query those did. Two
-- indexes fewer to write per run and to keep on disk (about 100 bytes a run on PostgreSQL at
-- 5 million runs, see bench/README.md). No code names either index, so replicas of any release
-- keep working while they go.
DROP INDEX IF EXISTS runs_function;
DROP INDEX IF EXISTS runs_status;
