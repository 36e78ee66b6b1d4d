-- Rate limits, concurrency caps, circuit breakers and automatic disabling, per endpoint:
-- version 2, as in the SQLite schema.

ALTER TABLE endpoints ADD COLUMN rate_limit DOUBLE PRECISION;
ALTER TABLE endpoints ADD COLUMN rate_limit_burst DOUBLE PRECISION;
ALTER TABLE endpoints ADD COLUMN max_in_flight INTEGER;
ALTER TABLE endpoints ADD COLUMN circuit_state TEXT NOT NULL DEFAULT 'closed';
ALTER TABLE endpoints ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN paused_until DOUBLE PRECISION;
ALTER TABLE endpoints ADD COLUMN failing_since DOUBLE PRECISION;
ALTER TABLE endpoints ADD COLUMN disabled_reason TEXT;
ALTER TABLE endpoints ADD COLUMN disabled_at DOUBLE PRECISION;

-- Token buckets, keyed by endpoint id, or '*' for the service-wide limit. Every instance draws
-- from the same rows.
CREATE TABLE rate_buckets (
    key TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

-- Attempts by endpoint and time, for the endpoint health summary.
ALTER TABLE attempts ADD COLUMN endpoint_id TEXT COLLATE "C";
CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, started_at);
