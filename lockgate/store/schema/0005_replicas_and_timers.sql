-- The live `lockgate start` replicas on one database. Each one touches its row every second;
-- a row left untouched for the replica timeout belongs to a dead process, whose leased calls
-- its peers hand back to the queue at once instead of waiting for the leases to lapse.
CREATE TABLE IF NOT EXISTS replicas (
    owner        TEXT PRIMARY KEY,          -- the lease owner of this process: "<name>#<incarnation>"
    name         TEXT NOT NULL,             -- stable across restarts (host:port, or --replica-name)
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS replicas_name ON replicas (name);

-- Due timers (sleeps, wait timeouts, flow windows, cron) are applied in bulk by kind, apart
-- from the calls queued beside them.
CREATE INDEX IF NOT EXISTS jobs_kind_rank ON jobs (kind, rank_at);
