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
    EndpointChange,
    EndpointHealth,
    Recorded,
)
from hookline.protection import breaker
from hookline.protection.disabling import disable_reason
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
    """Apply every verdict whose lease is still current; track endpoint health as we go.

    The rows of the whole batch are written with one statement per table, not one per
    verdict: at thousands of attempts per second the per-statement overhead is what counts.
    """
    current = _current_leases(conn, [verdict.claim.delivery_id for verdict in verdicts])
    applied = [current.get(v.claim.delivery_id) == v.claim.lease_token for v in verdicts]
    _write(conn, [verdict for verdict, ok in zip(verdicts, applied, strict=True) if ok])

    outcome = Recorded(applied=applied)
    stored: dict[str, EndpointHealth] = {}
    healths: dict[str, EndpointHealth] = {}
    for verdict, ok in zip(verdicts, applied, strict=True):
        if ok:
            _update_health(conn, verdict, rules, (stored, healths), outcome)
    # Only where each endpoint ended up is written: with failures and successes mixed, the
    # states in between would cost a write per verdict and nobody could ever read them.
    conn.executemany(
        "UPDATE endpoints SET circuit_state = ?, consecutive_failures = ?, "
        "paused_until = ?, failing_since = ? WHERE id = ?",
        [
            (*health_values(health), endpoint_id)
            for endpoint_id, health in healths.items()
            if health != stored[endpoint_id]
        ],
    )
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
                _finished_at(verdict),
                verdict.dead_letter_expires_at,
            )


def _finished_at(verdict: AttemptVerdict) -> float:
    return verdict.result.started_at + verdict.result.duration_ms / 1000


def _delivery_values(verdict: AttemptVerdict) -> tuple[Any, ...]:
    finished_at = _finished_at(verdict)
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
        _finished_at(verdict),
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


def _update_health(
    conn: sqlite3.Connection,
    verdict: AttemptVerdict,
    rules: HealthRules,
    states: tuple[dict[str, EndpointHealth], dict[str, EndpointHealth]],
    outcome: Recorded,
) -> None:
    """Move the endpoint's health past one outcome; ``states`` is (as stored, as now)."""
    stored, healths = states
    claim, result = verdict.claim, verdict.result
    endpoint_id = claim.endpoint_id
    now = result.started_at + result.duration_ms / 1000
    before = healths.get(endpoint_id)
    if before is None:
        before = _load_health(conn, endpoint_id)
        if before is None:  # deleted or disabled while the attempt was in flight
            return
        stored[endpoint_id] = before

    after = breaker.after_attempt(before, result.succeeded, now, rules.breaker)
    if result.retry_after_seconds is not None:
        after = breaker.paused_by_receiver(after, result.retry_after_seconds, now)
    healths[endpoint_id] = after
    if after.circuit is not before.circuit:
        outcome.changes.append(
            EndpointChange(endpoint_id, before.circuit, after.circuit, after.paused_until)
        )

    reason = disable_reason(result.status_code, after, rules.disable_after_seconds, now)
    if reason is not None:
        _disable(conn, endpoint_id, claim.url, reason, now, rules)
        outcome.changes.append(
            EndpointChange(endpoint_id, after.circuit, after.circuit, disabled_reason=reason)
        )


def _load_health(conn: sqlite3.Connection, endpoint_id: str) -> EndpointHealth | None:
    row = conn.execute(
        f"SELECT {HEALTH_COLUMNS} FROM endpoints WHERE id = ? AND enabled = 1", (endpoint_id,)
    ).fetchone()
    return None if row is None else health_from_row(row)


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
