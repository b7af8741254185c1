-- 0004's runs_created_keyset (created_at, run_id) serves every query 0007's runs_created
-- (created_at) did; one index less to write per run. No code names either index, so replicas
-- of any release keep working while it goes.
DROP INDEX IF EXISTS runs_created;
