-- Retention and expiry (lockgate/engine/retention.py) delete in small batches; these indexes let
-- each batch find its rows without scanning a table. Additive only: older replicas ignore them.

-- Deleting a finished run's trigger rows, and asking whether any kept run still needs an event.
CREATE INDEX IF NOT EXISTS run_triggers_run ON run_triggers (run_id);

-- Expired idempotency / event-id windows, QStash deduplication ids and idle rate-limit buckets.
CREATE INDEX IF NOT EXISTS unique_keys_expiry ON unique_keys (expires_at);
CREATE INDEX IF NOT EXISTS qstash_dedup_expiry ON qstash_dedup (expires_at);
CREATE INDEX IF NOT EXISTS flow_buckets_tat ON flow_buckets (tat);

-- The dashboard's unfiltered "newest runs first" at millions of runs.
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);
