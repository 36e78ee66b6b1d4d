-- Endpoints, events, their deliveries, every attempt, the dead-letter queue and idempotency keys.
-- Times are UNIX seconds (REAL).

CREATE TABLE endpoints (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    max_retries INTEGER,
    timeout_seconds REAL NOT NULL,
    description TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    headers TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    created_at REAL NOT NULL,
    body BLOB NOT NULL
);

CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events (id),
    endpoint_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt_count INTEGER NOT NULL DEFAULT 0,
    -- While a worker holds the lease this is when the lease runs out, so an expired lease makes
    -- the delivery due again without a separate sweep.
    next_attempt_at REAL,
    lease_token TEXT,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    delivered_at REAL
);

CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_due_by_endpoint ON deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX deliveries_by_event ON deliveries (event_id);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, id);
CREATE INDEX deliveries_by_status ON deliveries (status, id);

CREATE TABLE attempts (
    delivery_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    started_at REAL NOT NULL,
    duration_ms REAL NOT NULL,
    outcome TEXT NOT NULL,
    status_code INTEGER,
    error TEXT,
    response_body TEXT,
    response_truncated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (delivery_id, number)
) WITHOUT ROWID;

CREATE TABLE dead_letters (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    endpoint_url TEXT NOT NULL,
    failure_reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);

CREATE INDEX dead_letters_by_expiry ON dead_letters (expires_at);
CREATE INDEX dead_letters_by_endpoint ON dead_letters (endpoint_id, id);

CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    event_ids TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
