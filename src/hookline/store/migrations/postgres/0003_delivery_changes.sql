-- Every change of a delivery's state, in commit order, for the live stream and its replays:
-- version 3, as in the SQLite schema. Numbers are handed out under an advisory lock held until
-- commit (see store/postgres/changes.py), so they follow the order of the commits.

CREATE TABLE delivery_changes (
    seq BIGSERIAL PRIMARY KEY,
    delivery_id TEXT COLLATE "C" NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    endpoint_id TEXT COLLATE "C" NOT NULL,
    event_type TEXT NOT NULL,
    change TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    detail TEXT,
    next_attempt_at DOUBLE PRECISION,
    at DOUBLE PRECISION NOT NULL
);

CREATE INDEX delivery_changes_by_time ON delivery_changes (at);
