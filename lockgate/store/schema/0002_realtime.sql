-- Realtime messages kept for resuming (PostgreSQL broker; the SQLite dev server keeps them in
-- memory). Ids come from realtime_messages.id: unique, never reused, and increasing per channel
-- because a publish holds its channel's row until it commits.
CREATE TABLE IF NOT EXISTS realtime_channels (
    channel     TEXT PRIMARY KEY,
    last_id     BIGINT NOT NULL,
    held        BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS realtime_messages (
    id          INTEGER PRIMARY KEY,
    channel     TEXT NOT NULL,
    prev_id     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    body        TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS realtime_messages_by_channel ON realtime_messages (channel, id);
CREATE INDEX IF NOT EXISTS realtime_messages_by_age ON realtime_messages (created_at);
