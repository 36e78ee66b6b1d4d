-- Rate limits, concurrency caps, circuit breakers and automatic disabling, per endpoint.

ALTER TABLE endpoints ADD COLUMN rate_limit REAL;
ALTER TABLE endpoints ADD COLUMN rate_limit_burst REAL;
ALTER TABLE endpoints ADD COLUMN max_in_flight INTEGER;
ALTER TABLE endpoints ADD COLUMN circuit_state TEXT NOT NULL DEFAULT 'closed';
ALTER TABLE endpoints ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN paused_until REAL;
ALTER TABLE endpoints ADD COLUMN failing_since REAL;
ALTER TABLE endpoints ADD COLUMN disabled_reason TEXT;
ALTER TABLE endpoints ADD COLUMN disabled_at REAL;

-- Token buckets, keyed by endpoint id, or '*' for the service-wide limit.
CREATE TABLE rate_buckets (
    key TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated_at REAL NOT NULL
);

-- Attempts by endpoint and time, for the endpoint health summary.
ALTER TABLE attempts ADD COLUMN endpoint_id TEXT;
CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, started_at);
