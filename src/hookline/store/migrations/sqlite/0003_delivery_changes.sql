-- Every change of a delivery's state, in commit order, for the live stream and its replays.

CREATE TABLE delivery_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    change TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    detail TEXT,
    next_attempt_at REAL,
    at REAL NOT NULL
);

CREATE INDEX delivery_changes_by_time ON delivery_changes (at);
