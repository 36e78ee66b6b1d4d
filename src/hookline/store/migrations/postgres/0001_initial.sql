-- Endpoints, events, their deliveries, every attempt, the dead-letter queue and idempotency keys:
-- the same tables, with the same meaning, as version 1 of the SQLite schema.
-- Times are UNIX seconds (double precision), as everywhere in hookline.
-- Ids that listings page through are compared byte-wise (COLLATE "C"), so a cursor resumes in
-- the same order whatever the database's locale.

CREATE TABLE endpoints (
    id TEXT COLLATE "C" PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events JSONB NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    max_retries INTEGER,
    timeout_seconds DOUBLE PRECISION NOT NULL,
    description TEXT,
    metadata JSONB NOT NULL DEFAULT '{}',
    headers JSONB NOT NULL DEFAULT '{}',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE events (
    id TEXT COLLATE "C" PRIMARY KEY,
    event_type TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    body BYTEA NOT NULL
);

CREATE TABLE deliveries (
    id TEXT COLLATE "C" PRIMARY KEY,
    event_id TEXT COLLATE "C" NOT NULL REFERENCES events (id),
    endpoint_id TEXT COLLATE "C" NOT NULL,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt_count INTEGER NOT NULL DEFAULT 0,
    -- While a worker holds the lease this is when the lease runs out, so an expired lease makes
    -- the delivery due again without a separate sweep.
    next_attempt_at DOUBLE PRECISION,
    lease_token TEXT,
    last_error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION
);

CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_due_by_endpoint ON deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX deliveries_by_event ON deliveries (event_id);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, id);
CREATE INDEX deliveries_by_status ON deliveries (status, id);

CREATE TABLE attempts (
    delivery_id TEXT COLLATE "C" NOT NULL,
    number INTEGER NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    outcome TEXT NOT NULL,
    status_code INTEGER,
    error TEXT,
    response_body TEXT,
    response_truncated BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (delivery_id, number)
);

CREATE TABLE dead_letters (
    id TEXT COLLATE "C" PRIMARY KEY,
    delivery_id TEXT COLLATE "C" NOT NULL UNIQUE,
    event_id TEXT COLLATE "C" NOT NULL,
    endpoint_id TEXT COLLATE "C" NOT NULL,
    event_type TEXT NOT NULL,
    endpoint_url TEXT NOT NULL,
    failure_reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);

CREATE INDEX dead_letters_by_expiry ON dead_letters (expires_at);
CREATE INDEX dead_letters_by_endpoint ON dead_letters (endpoint_id, id);

CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    event_ids JSONB NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
