"""Recording attempt verdicts: the delivery's new state, the attempt, the dead letter, and what
the outcomes mean for each endpoint's circuit and whether it stays enabled.

The deliveries, attempts and dead letters of a whole batch are written in one statement, each
only if the verdict's lease is still the delivery's current one. The endpoints concerned are then
locked in id order (every writer takes them in that order, so two instances never deadlock on
them), and their health is moved through the batch's outcomes in the order they were given.
The change feed is written last.
"""

from __future__ import annotations

from collections.abc import Sequence

from hookline.ids import new_id
from hookline.models import (
    CHANGE_AFTER_ATTEMPT,
    AttemptVerdict,
    ChangeKind,
    DeliveryStatus,
    EndpointHealth,
    Recorded,
)
from hookline.protection.health import follow_outcomes
from hookline.store.base import HealthRules
from hookline.store.postgres import changes
from hookline.store.postgres.changes import Change
from hookline.store.postgres.connection import PooledConnection
from hookline.store.postgres.rows import HEALTH_COLUMNS, health_from_row, health_values

# One row per verdict. `applied` writes the deliveries whose lease is still the one the verdict
# names; the attempt and any dead letter are written for those rows alone.
_RECORD_SQL = """
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
        error, response_body, response_truncated, endpoint_id)
    SELECT delivery_id, number, started_at, duration_ms, outcome, status_code, last_error,
        response_body, response_truncated, endpoint_id
    FROM applied
    ON CONFLICT (delivery_id, number) DO UPDATE SET
        started_at = excluded.started_at, duration_ms = excluded.duration_ms,
        outcome = excluded.outcome, status_code = excluded.status_code, error = excluded.error,
        response_body = excluded.response_body,
        response_truncated = excluded.response_truncated, endpoint_id = excluded.endpoint_id
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
_COLUMN_COUNT = 20


async def record(
    conn: PooledConnection, verdicts: Sequence[AttemptVerdict], rules: HealthRules
) -> Recorded:
    """Apply every verdict whose lease is still current, then track endpoint health.

    The caller holds a transaction on ``conn``.
    """
    rows = await conn.fetch(_RECORD_SQL, *_columns(verdicts))
    current = {(row["delivery_id"], row["lease_token"]) for row in rows}
    outcome = Recorded(
        applied=[(v.claim.delivery_id, v.claim.lease_token) in current for v in verdicts]
    )
    applied = [v for v, ok in zip(verdicts, outcome.applied, strict=True) if ok]
    if applied:
        feed = [_change(verdict) for verdict in applied]
        feed += await _update_health(conn, applied, rules, outcome)
        await changes.note(conn, feed)
    return outcome


def _change(verdict: AttemptVerdict) -> Change:
    claim, result = verdict.claim, verdict.result
    return Change(
        claim.delivery_id,
        claim.event_id,
        claim.endpoint_id,
        claim.event_type,
        claim.attempt,
        CHANGE_AFTER_ATTEMPT[verdict.status],
        verdict.status,
        result.finished_at,
        result.error,
        verdict.next_attempt_at,
    )


def _columns(verdicts: Sequence[AttemptVerdict]) -> list[list[object]]:
    columns: list[list[object]] = [[] for _ in range(_COLUMN_COUNT)]
    for verdict in verdicts:
        claim, result = verdict.claim, verdict.result
        finished_at = result.finished_at
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
    return columns


async def _update_health(
    conn: PooledConnection,
    applied: list[AttemptVerdict],
    rules: HealthRules,
    outcome: Recorded,
) -> list[Change]:
    """Move each endpoint's health; return the changes of deliveries that disabling failed."""
    endpoint_ids = sorted({v.claim.endpoint_id for v in applied})
    # An endpoint deleted or disabled while the attempt was in flight keeps its health as is.
    rows = await conn.fetch(
        f"SELECT id, {HEALTH_COLUMNS} FROM endpoints WHERE id = ANY($1::text[]) AND enabled "
        "ORDER BY id FOR NO KEY UPDATE",
        endpoint_ids,
    )
    moves = follow_outcomes({row["id"]: health_from_row(row) for row in rows}, applied, rules)
    outcome.changes += moves.transitions
    if moves.changed:
        await _save_health(conn, moves.changed)
    feed = []
    for endpoint_id, disabling in sorted(moves.disabled.items()):
        feed += await _disable(
            conn, endpoint_id, disabling.url, disabling.reason, disabling.at, rules
        )
    return feed


async def _save_health(conn: PooledConnection, healths: dict[str, EndpointHealth]) -> None:
    values = [health_values(health) for health in healths.values()]
    await conn.execute(
        "UPDATE endpoints e SET circuit_state = h.circuit_state, "
        "consecutive_failures = h.consecutive_failures, paused_until = h.paused_until, "
        "failing_since = h.failing_since "
        "FROM unnest($1::text[], $2::text[], $3::int[], $4::float8[], $5::float8[]) "
        "AS h (id, circuit_state, consecutive_failures, paused_until, failing_since) "
        "WHERE e.id = h.id",
        list(healths),
        *([value[n] for value in values] for n in range(4)),
    )


async def _disable(
    conn: PooledConnection,
    endpoint_id: str,
    url: str,
    reason: str,
    now: float,
    rules: HealthRules,
) -> list[Change]:
    """Disable the endpoint and move every delivery still pending for it to the DLQ."""
    await conn.execute(
        "UPDATE endpoints SET enabled = FALSE, disabled_reason = $1, disabled_at = $2, "
        "updated_at = $2 WHERE id = $3",
        reason,
        now,
        endpoint_id,
    )
    failed = await conn.fetch(
        "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, lease_token = NULL, "
        "last_error = $1, updated_at = $2 WHERE endpoint_id = $3 AND status = 'pending' "
        "RETURNING id, event_id, event_type, attempt_count",
        reason,
        now,
        endpoint_id,
    )
    if not failed:
        return []
    await conn.execute(
        "INSERT INTO dead_letters (id, delivery_id, event_id, endpoint_id, event_type, "
        "endpoint_url, failure_reason, attempts, created_at, expires_at) "
        "SELECT l.id, l.delivery_id, l.event_id, $1, l.event_type, $2, $3, l.attempts, $4, $5 "
        "FROM unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::int[]) "
        "AS l (id, delivery_id, event_id, event_type, attempts) "
        "ON CONFLICT (delivery_id) DO UPDATE SET id = excluded.id, "
        "failure_reason = excluded.failure_reason, attempts = excluded.attempts, "
        "created_at = excluded.created_at, expires_at = excluded.expires_at",
        endpoint_id,
        url,
        reason,
        now,
        now + rules.dead_letter_seconds,
        [new_id("dlq") for _ in failed],
        [row["id"] for row in failed],
        [row["event_id"] for row in failed],
        [row["event_type"] for row in failed],
        [row["attempt_count"] for row in failed],
    )
    return [
        Change(
            row["id"],
            row["event_id"],
            endpoint_id,
            row["event_type"],
            row["attempt_count"],
            ChangeKind.DEAD_LETTERED,
            DeliveryStatus.FAILED,
            now,
            reason,
        )
        for row in failed
    ]
