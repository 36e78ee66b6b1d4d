"""The delivery engine's statements: claim due deliveries, record verdicts, give leases back.

Each is one statement, so one round trip, however large the batch. Claims lock the rows they
take with ``FOR UPDATE SKIP LOCKED``: instances claiming at the same moment pass over each
other's rows instead of queueing behind them. Every later write names the lease token it was
granted, so a result that arrives after its lease was taken over changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from hookline.ids import new_id
from hookline.models import AttemptVerdict, ClaimedDelivery, DeliveryStatus

CLAIM_OVERSCAN = 4
"""Claims look at a few more due rows than they need, so that passing over endpoints that are
at their concurrency cap still leaves enough work for the free slots."""

# `candidates` locks due rows, oldest first, skipping rows another instance holds and
# endpoints at their cap. `chosen` keeps, per endpoint, only as many as its free slots.
# The UPDATE leases them; the lease lasts the endpoint's timeout plus the margin, so a
# lease whose holder died runs out and the row becomes due again.
CLAIM_SQL = """
WITH candidates AS (
    SELECT d.id, d.endpoint_id, d.next_attempt_at, e.timeout_seconds
    FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND e.enabled
        AND d.endpoint_id <> ALL($3::text[])
    ORDER BY d.next_attempt_at
    LIMIT $2 * $8::int
    FOR UPDATE OF d SKIP LOCKED
),
ranked AS (
    SELECT c.*, row_number() OVER (
        PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at, c.id
    ) AS place
    FROM candidates c
),
chosen AS (
    SELECT r.id, r.timeout_seconds, r.next_attempt_at AS due_at
    FROM ranked r
    LEFT JOIN unnest($4::text[], $5::int[]) AS b (endpoint_id, in_flight)
        ON b.endpoint_id = r.endpoint_id
    WHERE r.place <= $6 - COALESCE(b.in_flight, 0)
    ORDER BY r.next_attempt_at
    LIMIT $2
)
UPDATE deliveries d
SET lease_token = replace(gen_random_uuid()::text, '-', ''),
    attempt_count = d.attempt_count + 1,
    next_attempt_at = $1 + c.timeout_seconds + $7,
    updated_at = $1
FROM chosen c, endpoints e, events v
WHERE d.id = c.id AND e.id = d.endpoint_id AND v.id = d.event_id
RETURNING d.id, d.event_id, d.event_type, v.body, d.endpoint_id, e.url, e.secret,
    e.timeout_seconds, e.headers, e.max_retries, d.attempt_count, d.lease_token, d.created_at,
    c.due_at
"""

# One row per verdict. `applied` writes the deliveries whose lease is still the one the verdict
# names; the attempt and any dead letter are written for those rows alone.
RECORD_SQL = """
WITH verdict AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::float8[],
        $7::float8[], $8::int[], $9::float8[], $10::float8[], $11::text[], $12::int[],
        $13::text[], $14::bool[], $15::text[], $16::float8[], $17::text[], $18::text[],
        $19::text[], $20::text[]
    ) AS v (
        delivery_id, lease_token, status, next_attempt_at, last_error, finished_at,
        delivered_at, number, started_at, duration_ms, outcome, status_code,
        response_body, response_truncated, dead_letter_id, dead_letter_expires_at,
        event_id, endpoint_id, event_type, endpoint_url
    )
),
applied AS (
    UPDATE deliveries d
    SET status = v.status, next_attempt_at = v.next_attempt_at, lease_token = NULL,
        last_error = v.last_error, updated_at = v.finished_at, delivered_at = v.delivered_at
    FROM verdict v
    WHERE d.id = v.delivery_id AND d.lease_token = v.lease_token
    RETURNING v.*
),
attempt AS (
    INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome, status_code,
        error, response_body, response_truncated)
    SELECT delivery_id, number, started_at, duration_ms, outcome, status_code, last_error,
        response_body, response_truncated
    FROM applied
    ON CONFLICT (delivery_id, number) DO UPDATE SET
        started_at = excluded.started_at, duration_ms = excluded.duration_ms,
        outcome = excluded.outcome, status_code = excluded.status_code, error = excluded.error,
        response_body = excluded.response_body,
        response_truncated = excluded.response_truncated
),
dead_letter AS (
    INSERT INTO dead_letters (id, delivery_id, event_id, endpoint_id, event_type, endpoint_url,
        failure_reason, attempts, created_at, expires_at)
    SELECT dead_letter_id, delivery_id, event_id, endpoint_id, event_type, endpoint_url,
        COALESCE(last_error, 'unknown failure'), number, finished_at, dead_letter_expires_at
    FROM applied
    WHERE dead_letter_expires_at IS NOT NULL
    ON CONFLICT (delivery_id) DO UPDATE SET
        id = excluded.id, failure_reason = excluded.failure_reason,
        attempts = excluded.attempts, created_at = excluded.created_at,
        expires_at = excluded.expires_at
)
SELECT delivery_id, lease_token FROM applied
"""

RELEASE_SQL = """
UPDATE deliveries d
SET lease_token = NULL, next_attempt_at = $1, attempt_count = d.attempt_count - 1,
    updated_at = $1
FROM unnest($2::text[], $3::text[]) AS r (delivery_id, lease_token)
WHERE d.id = r.delivery_id AND d.lease_token = r.lease_token
"""


async def claim_due(
    conn: asyncpg.Connection,
    now: float,
    limit: int,
    busy: Mapping[str, int],
    per_endpoint: int,
    lease_margin_seconds: float,
) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` due deliveries within each endpoint's cap (see the Store protocol)."""
    at_cap = [endpoint_id for endpoint_id, count in busy.items() if count >= per_endpoint]
    in_flight = [(endpoint_id, count) for endpoint_id, count in busy.items() if count > 0]
    rows = await conn.fetch(
        CLAIM_SQL,
        now,
        limit,
        at_cap,
        [endpoint_id for endpoint_id, _ in in_flight],
        [count for _, count in in_flight],
        per_endpoint,
        lease_margin_seconds,
        CLAIM_OVERSCAN,
    )
    # RETURNING follows no particular order; attempts start oldest-due first.
    rows.sort(key=lambda row: row["due_at"])
    return [
        ClaimedDelivery(
            delivery_id=row["id"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            body=row["body"],
            endpoint_id=row["endpoint_id"],
            url=row["url"],
            secret=row["secret"],
            timeout_seconds=row["timeout_seconds"],
            headers=row["headers"],
            max_retries=row["max_retries"],
            attempt=row["attempt_count"],
            lease_token=row["lease_token"],
            accepted_at=row["created_at"],
        )
        for row in rows
    ]


async def record_verdicts(
    conn: asyncpg.Connection, verdicts: Sequence[AttemptVerdict]
) -> list[bool]:
    """Write every verdict whose lease is still current; say, per verdict, whether it was."""
    columns: list[list[object]] = [[] for _ in range(20)]
    for verdict in verdicts:
        claim, result = verdict.claim, verdict.result
        finished_at = result.started_at + result.duration_ms / 1000
        dead_lettered = verdict.dead_letter_expires_at is not None
        row = (
            claim.delivery_id,
            claim.lease_token,
            str(verdict.status),
            verdict.next_attempt_at,
            result.error,
            finished_at,
            finished_at if verdict.status is DeliveryStatus.DELIVERED else None,
            claim.attempt,
            result.started_at,
            result.duration_ms,
            str(result.outcome),
            result.status_code,
            result.response_body,
            result.response_truncated,
            new_id("dlq") if dead_lettered else None,
            verdict.dead_letter_expires_at,
            claim.event_id,
            claim.endpoint_id,
            claim.event_type,
            claim.url,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)

    rows = await conn.fetch(RECORD_SQL, *columns)
    applied = {(row["delivery_id"], row["lease_token"]) for row in rows}
    return [(v.claim.delivery_id, v.claim.lease_token) in applied for v in verdicts]


async def release(
    conn: asyncpg.Connection, claims: Sequence[ClaimedDelivery], now: float
) -> None:
    """Give back leases that were never attempted, without charging an attempt."""
    await conn.execute(
        RELEASE_SQL,
        now,
        [claim.delivery_id for claim in claims],
        [claim.lease_token for claim in claims],
    )
