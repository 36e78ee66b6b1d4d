"""Turning PostgreSQL records into domain records and back.

JSONB columns arrive as Python values (the pool installs the codec), booleans as booleans and
times as floats, so little is left to convert.
"""

from __future__ import annotations

from typing import Any

import asyncpg
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
    "response_truncated"
)
DEAD_LETTER_COLUMNS = (
    "d.id, d.delivery_id, d.event_id, d.endpoint_id, d.event_type, e.body, d.endpoint_url, "
    "d.failure_reason, d.attempts, d.created_at, d.expires_at"
)


def endpoint_from_row(row: asyncpg.Record) -> Endpoint:
    return Endpoint(
        id=row["id"],
        url=row["url"],
        secret=row["secret"],
        events=row["events"],
        enabled=row["enabled"],
        max_retries=row["max_retries"],
        timeout_seconds=row["timeout_seconds"],
        description=row["description"],
        metadata=row["metadata"],
        headers=row["headers"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        rate_limit=row["rate_limit"],
        rate_limit_burst=row["rate_limit_burst"],
        max_in_flight=row["max_in_flight"],
        health=health_from_row(row),
        disabled_reason=row["disabled_reason"],
        disabled_at=row["disabled_at"],
    )


def health_from_row(row: asyncpg.Record) -> EndpointHealth:
    """The endpoint's health from a record that has the :data:`HEALTH_COLUMNS`."""
    return EndpointHealth(
        CircuitState(row["circuit_state"]),
        row["consecutive_failures"],
        row["paused_until"],
        row["failing_since"],
    )


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
        endpoint.events,
        endpoint.enabled,
        endpoint.max_retries,
        endpoint.timeout_seconds,
        endpoint.description,
        endpoint.metadata,
        endpoint.headers,
        endpoint.created_at,
        endpoint.updated_at,
        endpoint.rate_limit,
        endpoint.rate_limit_burst,
        endpoint.max_in_flight,
        *health_values(endpoint.health),
        endpoint.disabled_reason,
        endpoint.disabled_at,
    )


def delivery_from_row(row: asyncpg.Record) -> Delivery:
    return Delivery(
        id=row["id"],
        event_id=row["event_id"],
        endpoint_id=row["endpoint_id"],
        status=DeliveryStatus(row["status"]),
        attempt_count=row["attempt_count"],
        next_attempt_at=row["next_attempt_at"],
        leased=row["lease_token"] is not None,
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        delivered_at=row["delivered_at"],
        event_type=row["event_type"],
    )


def attempt_from_row(row: asyncpg.Record) -> Attempt:
    return Attempt(
        delivery_id=row["delivery_id"],
        number=row["number"],
        started_at=row["started_at"],
        duration_ms=row["duration_ms"],
        outcome=AttemptOutcome(row["outcome"]),
        status_code=row["status_code"],
        error=row["error"],
        response_body=row["response_body"],
        response_truncated=row["response_truncated"],
    )


def dead_letter_from_row(row: asyncpg.Record) -> DeadLetter:
    return DeadLetter(
        id=row["id"],
        delivery_id=row["delivery_id"],
        event_id=row["event_id"],
        endpoint_id=row["endpoint_id"],
        event_type=row["event_type"],
        payload=orjson.loads(row["body"])["data"],
        endpoint_url=row["endpoint_url"],
        failure_reason=row["failure_reason"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )
