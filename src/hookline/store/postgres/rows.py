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
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Endpoint,
)

ENDPOINT_COLUMNS = (
    "id, url, secret, events, enabled, max_retries, timeout_seconds, description, metadata, "
    "headers, created_at, updated_at"
)
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
