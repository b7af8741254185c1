-- Finished runs counted by function and status, so that the Health page, /v1/stats, /metrics and
-- the Functions page do not group every stored run (seconds at millions of runs).
-- run_counts holds, for each function and final status, the number of stored runs whose ended_at
-- lies in [ended_from, ended_before) of run_counts_range's one row. Housekeeping raises
-- ended_before (adding the runs that ended since, a safety margin behind now so that late commits
-- are not missed) and ended_from (taking away the runs it is about to delete, a lead ahead of the
-- retention cutoff so that a previous release's sweep never deletes a counted run), and a retention
-- delete of a counted run takes it away in its own transaction. Readers add a live count of the
-- runs outside the range (ended before ended_from or since ended_before: small ranges of
-- runs_ended_set) and of the unfinished ones (runs_status_keyset).
-- The previous release neither reads nor writes these tables. Both start empty: counting
-- everything live is right until housekeeping has filled them, batch by batch.
CREATE TABLE IF NOT EXISTS run_counts (
    function_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    n           BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (function_id, status)
);
CREATE TABLE IF NOT EXISTS run_counts_range (
    name         TEXT PRIMARY KEY,
    ended_from   BIGINT NOT NULL DEFAULT 0,
    ended_before BIGINT NOT NULL DEFAULT 0
);
INSERT INTO run_counts_range (name, ended_from, ended_before) VALUES ('finished', 0, 0) ON CONFLICT DO NOTHING;
