-- lockgate schema, written once for SQLite and PostgreSQL. Times are BIGINT milliseconds; JSON is TEXT.
-- Portable DDL only: TEXT, BIGINT, INTEGER, DOUBLE PRECISION; "INTEGER PRIMARY KEY" is the one
-- auto-numbered column form (SQLite rowid; the PostgreSQL backend turns it into an identity column).

CREATE TABLE IF NOT EXISTS apps (
    name        TEXT PRIMARY KEY,           -- the SDK's app id
    url         TEXT NOT NULL,
    sdk         TEXT,
    framework   TEXT,
    checksum    TEXT,                       -- of the last good sync, for modified:false
    error       TEXT,                       -- why the last sync failed, shown to users
    synced_at   BIGINT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS functions (
    id          TEXT PRIMARY KEY,           -- internal uuid
    slug        TEXT NOT NULL UNIQUE,       -- "<app id>-<function id>"
    app_name    TEXT NOT NULL,
    name        TEXT NOT NULL,
    url         TEXT NOT NULL,
    config      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    archived    INTEGER NOT NULL DEFAULT 0, -- dropped by a re-sync; old runs stay readable
    updated_at  BIGINT NOT NULL
);

-- Every accepted event, duplicates included (a retried send reuses its internal id).
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    internal_id TEXT NOT NULL,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    data        TEXT NOT NULL,
    user_data   TEXT NOT NULL,
    v           TEXT,
    ts          BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_internal_id ON events (internal_id);
CREATE INDEX IF NOT EXISTS events_name ON events (name, seq);
-- Lookback for waits: recent events of one name.
CREATE INDEX IF NOT EXISTS events_name_received ON events (name, received_at);

CREATE TABLE IF NOT EXISTS runs (
    run_id            TEXT PRIMARY KEY,
    function_id       TEXT NOT NULL,
    function_slug     TEXT NOT NULL,
    function_version  INTEGER NOT NULL,
    status            TEXT NOT NULL,
    events            TEXT NOT NULL,        -- trigger payloads, as sent to the SDK
    event_ids         TEXT NOT NULL,
    reason            TEXT,
    request_version   INTEGER NOT NULL DEFAULT -1,
    disable_immediate INTEGER NOT NULL DEFAULT 0,
    pending_steps     TEXT NOT NULL DEFAULT '[]',
    stack             TEXT NOT NULL DEFAULT '[]',
    output            TEXT,
    error             TEXT,
    cron              TEXT,
    correlation_id    TEXT,
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    ended_at          BIGINT
);
CREATE INDEX IF NOT EXISTS runs_function ON runs (function_id, created_at);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created_at);

-- Which events started which run (a batch has several).
CREATE TABLE IF NOT EXISTS run_triggers (
    event_internal_id TEXT NOT NULL,
    run_id            TEXT NOT NULL,
    PRIMARY KEY (event_internal_id, run_id)
);

CREATE TABLE IF NOT EXISTS steps (
    run_id       TEXT NOT NULL,
    step_id      TEXT NOT NULL,             -- hashed id
    display_name TEXT,
    op           TEXT NOT NULL,
    status       TEXT NOT NULL,             -- completed | failed | sleeping | planned
    memo         TEXT,
    position     INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    started_at   BIGINT,
    ended_at     BIGINT,
    PRIMARY KEY (run_id, step_id)
);

-- Due work. Timers are jobs whose due_at lies ahead; leases make a crash harmless.
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,      -- deterministic where enqueueing must be idempotent
    kind             TEXT NOT NULL,
    run_id           TEXT,
    step_id          TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0,
    due_at           BIGINT NOT NULL,       -- not before this time
    rank_at          BIGINT NOT NULL,       -- queue order: due_at shifted by priority

    payload          TEXT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    created_at       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_rank ON jobs (rank_at);
-- For the dispatcher's next wake-up: the earliest free job, the earliest lease to lapse.
CREATE INDEX IF NOT EXISTS jobs_free_due ON jobs (due_at) WHERE lease_owner IS NULL;
CREATE INDEX IF NOT EXISTS jobs_lease_expiry ON jobs (lease_expires_at) WHERE lease_owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_run ON jobs (run_id);

-- Time-boxed uniqueness: event-id dedupe per function, idempotency keys.
CREATE TABLE IF NOT EXISTS unique_keys (
    key        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

-- Runs paused on step.waitForEvent or step.invoke, and runs' cancel-on-event listeners,
-- indexed by the event they await and by one equality key of their condition, so an
-- event finds its waiters in O(1).
CREATE TABLE IF NOT EXISTS waits (
    id           TEXT PRIMARY KEY,          -- "<run id>:<step id>"
    run_id       TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    kind         TEXT NOT NULL,             -- wait | invoke | cancel
    event_name   TEXT NOT NULL,
    match_path   TEXT,                      -- e.g. "data.id" of the incoming event
    match_value  TEXT,                      -- JSON of the value it must equal
    expression   TEXT,                      -- full condition, checked on candidates
    trigger      TEXT NOT NULL,             -- the run's first event, as `event` in the condition
    display_name TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS waits_match ON waits (event_name, match_path, match_value);

-- The index keys pending waits of each event name use ('' for none), so matching an event
-- probes only those. Rows are never deleted: a stale one costs one empty index lookup, and
-- deleting would race with a concurrent registration on PostgreSQL.
CREATE TABLE IF NOT EXISTS wait_keys (
    event_name TEXT NOT NULL,
    match_path TEXT NOT NULL,
    PRIMARY KEY (event_name, match_path)
);

-- Flow control (lockgate/engine/flow). Keys are evaluated once, at run creation.
-- The concurrency limits a run's calls must fit in: JSON [[limit key, capacity, label], ...].
CREATE TABLE IF NOT EXISTS flow_runs (
    run_id      TEXT PRIMARY KEY,
    limits      TEXT NOT NULL,
    priority_ms BIGINT NOT NULL DEFAULT 0   -- how far ahead (+) or behind (-) its calls queue
);

-- One row per concurrency key; locking it serialises admissions to that key across replicas.
CREATE TABLE IF NOT EXISTS flow_limits (
    limit_key TEXT PRIMARY KEY,
    capacity  INTEGER NOT NULL
);

-- A call in flight holds one slot per limit. A slot counts only while its job is leased by the
-- same owner, so a settled, retried or crashed call frees it without any cleanup.
CREATE TABLE IF NOT EXISTS flow_slots (
    limit_key TEXT NOT NULL,
    job_id    TEXT NOT NULL,
    owner     TEXT NOT NULL,
    PRIMARY KEY (limit_key, job_id)
);
CREATE INDEX IF NOT EXISTS flow_slots_job ON flow_slots (job_id);
-- Calls waiting for a slot are parked with lease_owner = 'flow:<limit key>'.
CREATE INDEX IF NOT EXISTS jobs_lease_owner ON jobs (lease_owner, rank_at);

-- Throttle and rate limit state (GCRA): the theoretical arrival time per key.
CREATE TABLE IF NOT EXISTS flow_buckets (
    bucket_key TEXT PRIMARY KEY,
    tat        BIGINT NOT NULL
);

-- Open debounce and batch windows: the events collected so far.
CREATE TABLE IF NOT EXISTS flow_windows (
    window_key  TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    kind        TEXT NOT NULL,              -- debounce | batch
    events      TEXT NOT NULL,              -- JSON list of stored event records
    first_at    BIGINT NOT NULL
);

-- Singleton: the latest run started per key (active while that run has not ended).
CREATE TABLE IF NOT EXISTS flow_singletons (
    singleton_key TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL
);

-- Why an event started no run of a function (rate limit, idempotency, singleton skip).
CREATE TABLE IF NOT EXISTS flow_skips (
    event_internal_id TEXT NOT NULL,
    function_id       TEXT NOT NULL,
    function_slug     TEXT NOT NULL,
    reason            TEXT NOT NULL,
    at                BIGINT NOT NULL,
    PRIMARY KEY (event_internal_id, function_id)
);

-- QStash v2 surface. Deliveries are jobs (kind qstash_delivery) in the shared jobs table;
-- these tables hold what the QStash API shows and filters on. `spec` is the full record as JSON.
CREATE TABLE IF NOT EXISTS qstash_messages (
    seq              INTEGER PRIMARY KEY,   -- FIFO order within a queue
    message_id       TEXT NOT NULL UNIQUE,
    state            TEXT NOT NULL,         -- pending | active | delivered | failed | canceled
    url              TEXT NOT NULL,
    queue_name       TEXT,
    topic_name       TEXT,
    schedule_id      TEXT,
    label            TEXT,
    flow_control_key TEXT,
    caller_ip        TEXT,
    retried          INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    not_before       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    spec             TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS qstash_messages_queue ON qstash_messages (queue_name, state, seq);
CREATE INDEX IF NOT EXISTS qstash_messages_flow ON qstash_messages (flow_control_key, state, seq);
CREATE INDEX IF NOT EXISTS qstash_messages_state ON qstash_messages (state, finished_at);

CREATE TABLE IF NOT EXISTS qstash_events (
    seq          INTEGER PRIMARY KEY,
    message_id   TEXT NOT NULL,
    state        TEXT NOT NULL,             -- CREATED, ACTIVE, RETRY, ERROR, DELIVERED, FAILED, CANCEL_REQUESTED, CANCELED
    logged_at    BIGINT NOT NULL,
    url          TEXT NOT NULL,
    queue_name   TEXT,
    topic_name   TEXT,
    schedule_id  TEXT,
    label        TEXT,
    data         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS qstash_events_message ON qstash_events (message_id, seq);

CREATE TABLE IF NOT EXISTS qstash_dlq (
    dlq_id          TEXT PRIMARY KEY,
    message_id      TEXT NOT NULL,
    url             TEXT NOT NULL,
    queue_name      TEXT,
    topic_name      TEXT,
    schedule_id     TEXT,
    label           TEXT,
    flow_control_key TEXT,
    caller_ip       TEXT,
    response_status INTEGER NOT NULL,
    created_at      BIGINT NOT NULL,
    data            TEXT NOT NULL,          -- the entry as the API shows it
    spec            TEXT NOT NULL           -- the failed message, to publish it again on retry
);
CREATE INDEX IF NOT EXISTS qstash_dlq_created ON qstash_dlq (created_at);

CREATE TABLE IF NOT EXISTS qstash_schedules (
    schedule_id TEXT PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    last_time   BIGINT,
    next_time   BIGINT,
    last_states TEXT NOT NULL DEFAULT '{}',
    spec        TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS qstash_queues (
    name        TEXT PRIMARY KEY,
    parallelism INTEGER NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS qstash_url_groups (
    name       TEXT PRIMARY KEY,
    endpoints  TEXT NOT NULL,               -- JSON list of {url, name?}
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Signing keys survive restarts so rotation sticks.
CREATE TABLE IF NOT EXISTS qstash_keys (
    owner       TEXT PRIMARY KEY,
    current_key TEXT NOT NULL,
    next_key    TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS qstash_dedup (
    dedup_key  TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Flow-control keys: limits from the latest message unless pinned, and the current rate window.
CREATE TABLE IF NOT EXISTS qstash_flow_control (
    flow_key           TEXT PRIMARY KEY,
    parallelism        INTEGER,
    rate               INTEGER,
    period             INTEGER NOT NULL DEFAULT 1, -- seconds
    paused             INTEGER NOT NULL DEFAULT 0,
    pinned_parallelism INTEGER NOT NULL DEFAULT 0,
    pinned_rate        INTEGER NOT NULL DEFAULT 0,
    rate_count         INTEGER NOT NULL DEFAULT 0,
    rate_period_start  BIGINT NOT NULL DEFAULT 0
);
