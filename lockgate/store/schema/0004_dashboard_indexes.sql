-- Indexes for the dashboard's run list and health page (and the REST queries they share).
-- Runs are listed newest first with a (created_at, run_id) keyset cursor; each filter has an
-- index ending in those two columns so a page is an index range scan, never a sort.
CREATE INDEX IF NOT EXISTS runs_created_keyset ON runs (created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_status_keyset ON runs (status, created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_function_keyset ON runs (function_id, created_at, run_id);
-- Counts by status for one function, and per-function status counts, from the index alone.
CREATE INDEX IF NOT EXISTS runs_function_status_keyset ON runs (function_id, status, created_at, run_id);
-- Throughput and latency of the last minutes (health page, /metrics).
CREATE INDEX IF NOT EXISTS runs_ended ON runs (ended_at);
-- A run page links the runs it invoked (their correlation id is "<parent run id>.<step id>").
CREATE INDEX IF NOT EXISTS runs_correlation ON runs (correlation_id);

