-- Connect (worker mode): replicas serving the gateway, the workers connected to them, and calls
-- relayed between replicas (a call leased on one replica, run by a worker on another).

CREATE TABLE IF NOT EXISTS connect_gateways (
    gateway_id    TEXT PRIMARY KEY,
    endpoint      TEXT NOT NULL,      -- ws(s) URL workers dial
    draining      INTEGER NOT NULL DEFAULT 0,
    heartbeat_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS connect_workers (
    connection_id     TEXT NOT NULL,
    app_name          TEXT NOT NULL,
    gateway_id        TEXT NOT NULL,
    instance_id       TEXT,
    app_version       TEXT,
    sdk_language      TEXT,
    sdk_version       TEXT,
    status            TEXT NOT NULL,  -- ready | paused | draining
    max_concurrency   BIGINT,
    connected_at      BIGINT NOT NULL,
    last_heartbeat_at BIGINT NOT NULL,
    PRIMARY KEY (connection_id, app_name)
);
CREATE INDEX IF NOT EXISTS connect_workers_by_app ON connect_workers (app_name, status);

CREATE TABLE IF NOT EXISTS connect_requests (
    request_id        TEXT PRIMARY KEY,
    origin_id         TEXT,           -- replica waiting for the reply (NULL: a stray reply or lease extension)
    gateway_id        TEXT,           -- replica asked to hand the call to one of its workers
    app_name          TEXT,
    request           TEXT,           -- base64 GatewayExecutorRequestData
    claimed_at        BIGINT,
    lease_expires_at  BIGINT,
    reply             TEXT,           -- base64 SDKResponse
    created_at        BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS connect_requests_by_gateway ON connect_requests (gateway_id, claimed_at);
