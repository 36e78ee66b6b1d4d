"""Statements that several of the store's methods run inside their transactions: fetching
one record, creating deliveries, and settling idempotency keys.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg

from hookline.errors import Conflict, NotFound
from hookline.models import (
    AcceptedEvent,
    Delivery,
    Endpoint,
    Event,
    NewEvent,
    pending_delivery,
)
from hookline.store.base import DeadLetterFilter, IdempotencyKey
from hookline.store.postgres.connection import PooledConnection
from hookline.store.postgres.rows import (
    DELIVERY_COLUMNS,
    ENDPOINT_COLUMNS,
    delivery_from_row,
    endpoint_from_row,
)

INSERT_DELIVERIES = f"""
INSERT INTO deliveries ({DELIVERY_COLUMNS})
SELECT id, event_id, endpoint_id, 'pending', 0, $4, NULL, NULL, $4, $4, NULL, event_type
FROM unnest($1::text[], $2::text[], $3::text[], $5::text[])
    AS d (id, event_id, endpoint_id, event_type)
"""


def first_refused(events: Sequence[NewEvent], stored: list[asyncpg.Record]) -> str:
    """Name the first event the insert passed over: its id was taken, or repeated in the batch."""
    unclaimed = Counter(row["id"] for row in stored)
    for event in events:
        if unclaimed[event.id] == 0:
            return event.id
        unclaimed[event.id] -= 1
    raise AssertionError("every event was stored")


async def fetch_endpoint(conn: PooledConnection, endpoint_id: str) -> Endpoint:
    row = await conn.fetchrow(
        f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = $1", endpoint_id
    )
    if row is None:
        raise NotFound(f"No endpoint has id {endpoint_id!r}.")
    return endpoint_from_row(row)


async def fetch_delivery(
    conn: PooledConnection, delivery_id: str, *, for_update: bool = False
) -> Delivery:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1{lock}", delivery_id
    )
    if row is None:
        raise NotFound(f"No delivery has id {delivery_id!r}.")
    return delivery_from_row(row)


def dead_letter_clauses(where: DeadLetterFilter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = ["TRUE"]
    params: list[Any] = []
    if where.endpoint_id is not None:
        params.append(where.endpoint_id)
        clauses.append(f"d.endpoint_id = ${len(params)}")
    if where.event_type is not None:
        params.append(where.event_type)
        clauses.append(f"d.event_type = ${len(params)}")
    return clauses, params


async def claim_idempotency_key(
    conn: PooledConnection,
    idempotency: IdempotencyKey,
    events: Sequence[NewEvent],
    now: float,
) -> list[AcceptedEvent] | None:
    """Record the key for this request, or return what its first request created.

    Inserting first makes a concurrent request with the same key, on any instance, wait for
    this transaction; it then finds the key taken and answers as a repeat.
    """
    inserted = await conn.fetchval(
        "INSERT INTO idempotency_keys (key, request_hash, event_ids, created_at) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING RETURNING key",
        idempotency.key,
        idempotency.request_hash,
        [event.id for event in events],
        now,
    )
    if inserted is not None:
        return None
    repeat = await repeat_of(conn, idempotency)
    assert repeat is not None, "the key was there a moment ago and only a purge removes it"
    return repeat


async def repeat_of(
    conn: PooledConnection, idempotency: IdempotencyKey
) -> list[AcceptedEvent] | None:
    """What the first request with this key created, or None; Conflict for another body."""
    row = await conn.fetchrow(
        "SELECT request_hash, event_ids FROM idempotency_keys WHERE key = $1", idempotency.key
    )
    if row is None:
        return None
    if row["request_hash"] != idempotency.request_hash:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body; "
            "use a new key for a new request.",
            code="idempotency_key_reused",
        )
    repeated = []
    for event_id in row["event_ids"]:
        rows = await conn.fetch(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = $1 ORDER BY id",
            event_id,
        )
        repeated.append(AcceptedEvent(event_id, [delivery_from_row(r) for r in rows], False))
    return repeated


async def new_round(
    conn: PooledConnection, event_id: str, endpoint_id: str, now: float
) -> Delivery:
    """Create a fresh delivery; the caller holds the fan-out lock, taken before any row lock."""
    endpoint = await fetch_endpoint(conn, endpoint_id)
    if not endpoint.enabled:
        raise Conflict(
            f"Endpoint {endpoint_id} is disabled; enable it before delivering to it again.",
            code="endpoint_disabled",
        )
    row = await conn.fetchrow("SELECT event_type FROM events WHERE id = $1", event_id)
    assert row is not None, "deliveries reference their event"
    delivery = pending_delivery(Event(event_id, row["event_type"], now, b""), endpoint_id, now)
    await conn.execute(
        INSERT_DELIVERIES,
        [delivery.id],
        [event_id],
        [endpoint_id],
        now,
        [delivery.event_type],
    )
    return delivery
