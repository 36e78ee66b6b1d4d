"""Recording attempt verdicts: the delivery's new state, the attempt, the dead letter, and
what the outcome means for the endpoint's circuit and whether it stays enabled.

Runs on the writer thread inside one transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Any

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
from hookline.store.sqlite import changes
from hookline.store.sqlite.rows import (
    ATTEMPT_COLUMNS,
    HEALTH_COLUMNS,
    MAX_PARAMETERS,
    health_from_row,
    health_values,
    placeholders,
)


def record(
    conn: sqlite3.Connection, verdicts: list[AttemptVerdict], rules: HealthRules
) -> Recorded:
    """Apply every verdict whose lease is still current, then move the endpoints' health.

    The rows of the whole batch are written with one statement per table, not one per
    verdict: at thousands of attempts per second the per-statement overhead is what counts.
    """
    current = _current_leases(conn, [verdict.claim.delivery_id for verdict in verdicts])
    applied = [current.get(v.claim.delivery_id) == v.claim.lease_token for v in verdicts]

    leased = [verdict for verdict, ok in zip(verdicts, applied, strict=True) if ok]
    _write(conn, leased)

    outcome = Recorded(applied=applied)
    moves = follow_outcomes(_load_healths(conn, leased), leased, rules)
    outcome.changes += moves.transitions
    conn.executemany(
        "UPDATE endpoints SET circuit_state = ?, consecutive_failures = ?, "
        "paused_until = ?, failing_since = ? WHERE id = ?",
        [(*health_values(health), endpoint_id) for endpoint_id, health in moves.changed.items()],
    )
    for endpoint_id, disabling in moves.disabled.items():
        _disable(conn, endpoint_id, disabling.url, disabling.reason, disabling.at, rules)
    return outcome


def _current_leases(conn: sqlite3.Connection, delivery_ids: list[str]) -> dict[str, str | None]:
    leases: dict[str, str | None] = {}
    for start in range(0, len(delivery_ids), MAX_PARAMETERS):
        chunk = delivery_ids[start : start + MAX_PARAMETERS]
        leases.update(
            conn.execute(
                f"SELECT id, lease_token FROM deliveries WHERE id IN ({placeholders(len(chunk))})",
                chunk,
            ).fetchall()
        )
    return leases


def _write(conn: sqlite3.Connection, verdicts: list[AttemptVerdict]) -> None:
    """The deliveries' new states, their attempts, change-feed rows and dead letters."""
    conn.executemany(
        "UPDATE deliveries SET status = ?, next_attempt_at = ?, lease_token = NULL, "
        "last_error = ?, updated_at = ?, delivered_at = ? WHERE id = ?",
        [_delivery_values(verdict) for verdict in verdicts],
    )
    changes.record(conn, [_change_row(verdict) for verdict in verdicts])
    conn.executemany(
        f"INSERT OR REPLACE INTO attempts ({ATTEMPT_COLUMNS}) VALUES ({placeholders(10)})",
        [_attempt_values(verdict) for verdict in verdicts],
    )
    for verdict in verdicts:
        if verdict.dead_letter_expires_at is not None:
            claim = verdict.claim
            _dead_letter(
                conn,
                [(claim.delivery_id, claim.event_id, claim.event_type, claim.attempt)],
                claim.endpoint_id,
                claim.url,
                verdict.result.error or "unknown failure",
                verdict.result.finished_at,
                verdict.dead_letter_expires_at,
            )


def _delivery_values(verdict: AttemptVerdict) -> tuple[Any, ...]:
    finished_at = verdict.result.finished_at
    delivered = verdict.status is DeliveryStatus.DELIVERED
    return (
        verdict.status.value,
        verdict.next_attempt_at,
        verdict.result.error,
        finished_at,
        finished_at if delivered else None,
        verdict.claim.delivery_id,
    )


def _change_row(verdict: AttemptVerdict) -> changes.ChangeRow:
    claim = verdict.claim
    return (
        claim.delivery_id,
        claim.event_id,
        claim.endpoint_id,
        claim.event_type,
        claim.attempt,
        CHANGE_AFTER_ATTEMPT[verdict.status].value,
        verdict.status.value,
        verdict.result.error,
        verdict.next_attempt_at,
        verdict.result.finished_at,
    )


def _attempt_values(verdict: AttemptVerdict) -> tuple[Any, ...]:
    claim, result = verdict.claim, verdict.result
    return (
        claim.delivery_id,
        claim.attempt,
        result.started_at,
        result.duration_ms,
        result.outcome.value,
        result.status_code,
        result.error,
        result.response_body,
        int(result.response_truncated),
        claim.endpoint_id,
    )


def _load_healths(
    conn: sqlite3.Connection, verdicts: list[AttemptVerdict]
) -> dict[str, EndpointHealth]:
    """The health of the enabled endpoints among the verdicts'; the others keep theirs."""
    endpoint_ids = sorted({verdict.claim.endpoint_id for verdict in verdicts})
    healths: dict[str, EndpointHealth] = {}
    for start in range(0, len(endpoint_ids), MAX_PARAMETERS):
        chunk = endpoint_ids[start : start + MAX_PARAMETERS]
        rows = conn.execute(
            f"SELECT id, {HEALTH_COLUMNS} FROM endpoints "
            f"WHERE id IN ({placeholders(len(chunk))}) AND enabled = 1",
            chunk,
        )
        healths.update((row[0], health_from_row(row[1:])) for row in rows)
    return healths


def _disable(
    conn: sqlite3.Connection,
    endpoint_id: str,
    url: str,
    reason: str,
    now: float,
    rules: HealthRules,
) -> None:
    """Disable the endpoint and move every delivery still pending for it to the DLQ."""
    conn.execute(
        "UPDATE endpoints SET enabled = 0, disabled_reason = ?, disabled_at = ?, "
        "updated_at = ? WHERE id = ?",
        (reason, now, now, endpoint_id),
    )
    pending = conn.execute(
        "SELECT id, event_id, event_type, attempt_count FROM deliveries "
        "WHERE endpoint_id = ? AND status = 'pending'",
        (endpoint_id,),
    ).fetchall()
    conn.execute(
        "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, lease_token = NULL, "
        "last_error = ?, updated_at = ? WHERE endpoint_id = ? AND status = 'pending'",
        (reason, now, endpoint_id),
    )
    changes.note(
        conn,
        [(d[0], d[1], endpoint_id, d[2], d[3]) for d in pending],
        ChangeKind.DEAD_LETTERED,
        DeliveryStatus.FAILED,
        now,
        detail=reason,
    )
    _dead_letter(conn, pending, endpoint_id, url, reason, now, now + rules.dead_letter_seconds)


def _dead_letter(
    conn: sqlite3.Connection,
    deliveries: list[Any],
    endpoint_id: str,
    url: str,
    reason: str,
    now: float,
    expires_at: float,
) -> None:
    """Park deliveries (id, event id, event type, attempts) in the dead-letter queue."""
    conn.executemany(
        "INSERT OR REPLACE INTO dead_letters (id, delivery_id, event_id, endpoint_id, "
        "event_type, endpoint_url, failure_reason, attempts, created_at, expires_at) "
        f"VALUES ({placeholders(10)})",
        [
            (new_id("dlq"), d[0], d[1], endpoint_id, d[2], url, reason, d[3], now, expires_at)
            for d in deliveries
        ],
    )
