"""Turning SQLite rows into domain records and back."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from hookline.models import (
    Attempt,
    AttemptOutcome,
    CircuitState,
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Endpoint,
    EndpointHealth,
)

ENDPOINT_COLUMNS = (
    "id, url, secret, events, enabled, max_retries, timeout_seconds, description, metadata, "
    "headers, created_at, updated_at, rate_limit, rate_limit_burst, max_in_flight, "
    "circuit_state, consecutive_failures, paused_until, failing_since, disabled_reason, "
    "disabled_at"
)
HEALTH_COLUMNS = "circuit_state, consecutive_failures, paused_until, failing_since"
DELIVERY_COLUMNS = (
    "id, event_id, endpoint_id, status, attempt_count, next_attempt_at, lease_token, last_error, "
    "created_at, updated_at, delivered_at, event_type"
)
ATTEMPT_COLUMNS = (
    "delivery_id, number, started_at, duration_ms, outcome, status_code, error, response_body, "
    "response_truncated, endpoint_id"
)
DEAD_LETTER_COLUMNS = (
    "d.id, d.delivery_id, d.event_id, d.endpoint_id, d.event_type, e.body, d.endpoint_url, "
    "d.failure_reason, d.attempts, d.created_at, d.expires_at"
)


def endpoint_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Endpoint:
    return Endpoint(
        id=row[0],
        url=row[1],
        secret=row[2],
        events=orjson.loads(row[3]),
        enabled=bool(row[4]),
        max_retries=row[5],
        timeout_seconds=row[6],
        description=row[7],
        metadata=orjson.loads(row[8]),
        headers=orjson.loads(row[9]),
        created_at=row[10],
        updated_at=row[11],
        rate_limit=row[12],
        rate_limit_burst=row[13],
        max_in_flight=row[14],
        health=health_from_row(row[15:19]),
        disabled_reason=row[19],
        disabled_at=row[20],
    )


def health_from_row(row: sqlite3.Row | tuple[Any, ...]) -> EndpointHealth:
    return EndpointHealth(CircuitState(row[0]), row[1], row[2], row[3])


def health_values(health: EndpointHealth) -> tuple[Any, ...]:
    return (
        str(health.circuit),
        health.consecutive_failures,
        health.paused_until,
        health.failing_since,
    )


def endpoint_values(endpoint: Endpoint) -> tuple[Any, ...]:
    return (
        endpoint.id,
        endpoint.url,
        endpoint.secret,
        orjson.dumps(endpoint.events).decode(),
        int(endpoint.enabled),
        endpoint.max_retries,
        endpoint.timeout_seconds,
        endpoint.description,
        orjson.dumps(endpoint.metadata).decode(),
        orjson.dumps(endpoint.headers).decode(),
        endpoint.created_at,
        endpoint.updated_at,
        endpoint.rate_limit,
        endpoint.rate_limit_burst,
        endpoint.max_in_flight,
        *health_values(endpoint.health),
        endpoint.disabled_reason,
        endpoint.disabled_at,
    )


def delivery_from_row(row: tuple[Any, ...]) -> Delivery:
    return Delivery(
        id=row[0],
        event_id=row[1],
        endpoint_id=row[2],
        status=DeliveryStatus(row[3]),
        attempt_count=row[4],
        next_attempt_at=row[5],
        leased=row[6] is not None,
        last_error=row[7],
        created_at=row[8],
        updated_at=row[9],
        delivered_at=row[10],
        event_type=row[11],
    )


def attempt_from_row(row: tuple[Any, ...]) -> Attempt:
    return Attempt(
        delivery_id=row[0],
        number=row[1],
        started_at=row[2],
        duration_ms=row[3],
        outcome=AttemptOutcome(row[4]),
        status_code=row[5],
        error=row[6],
        response_body=row[7],
        response_truncated=bool(row[8]),
    )


def dead_letter_from_row(row: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        id=row[0],
        delivery_id=row[1],
        event_id=row[2],
        endpoint_id=row[3],
        event_type=row[4],
        payload=orjson.loads(row[5])["data"],
        endpoint_url=row[6],
        failure_reason=row[7],
        attempts=row[8],
        created_at=row[9],
        expires_at=row[10],
    )


MAX_PARAMETERS = 500
"""Values bound in one statement at most; SQLite builds before 3.32 allow only 999."""


def placeholders(count: int) -> str:
    """``?, ?, …`` for an INSERT of ``count`` columns."""
    return ", ".join("?" * count)
