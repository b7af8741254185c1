-- Only a run started by step.invoke has a correlation_id, and only an ended run an ended_at, yet
-- 0001's runs_correlation and 0004's runs_ended took an entry for every version of every run: a
-- run's status changes (queued, running, ended) are not HOT updates, so each one wrote a NULL
-- entry into both (measured: about a fifth of the index entries a noop run writes on `runs`). These partial indexes hold
-- only the rows the queries can match: `correlation_id >= ?`, `ended_at >= ?` and
-- `MAX(ended_at) ... WHERE ended_at IS NOT NULL` all imply IS NOT NULL, and PostgreSQL's own
-- MAX(ended_at) rewrite adds it, so the planner picks them for this release's queries and the
-- previous release's alike. No code names an index, so the full ones go in the same step.
-- With millions of runs on a busy PostgreSQL store, build both beforehand with
-- CREATE INDEX CONCURRENTLY under these names (lockgate/store/README.md, rule 5).
CREATE INDEX IF NOT EXISTS runs_correlation_set ON runs (correlation_id) WHERE correlation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_ended_set ON runs (ended_at) WHERE ended_at IS NOT NULL;
DROP INDEX IF EXISTS runs_correlation;
DROP INDEX IF EXISTS runs_ended;
