"""Queries shared by the SQLite store's methods; they run on the writer or a reader thread,
inside the caller's transaction.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

import orjson

from hookline.errors import Conflict, NotFound
from hookline.models import (
    AcceptedEvent,
    ChangeKind,
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    Page,
    pending_delivery,
)
from hookline.store.base import DeadLetterFilter, IdempotencyKey, encode_cursor
from hookline.store.sqlite import changes
from hookline.store.sqlite.rows import (
    DEAD_LETTER_COLUMNS,
    DELIVERY_COLUMNS,
    ENDPOINT_COLUMNS,
    dead_letter_from_row,
    delivery_from_row,
    endpoint_from_row,
)


def page(items: list[Any], limit: int) -> Page:
    if len(items) > limit:
        return Page(items[:limit], encode_cursor(items[limit - 1].id))
    return Page(items, None)


def fetch_endpoint(conn: sqlite3.Connection, endpoint_id: str) -> Endpoint:
    row = conn.execute(
        f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = ?", (endpoint_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"No endpoint has id {endpoint_id!r}.")
    return endpoint_from_row(row)


def fetch_delivery(conn: sqlite3.Connection, delivery_id: str) -> Delivery:
    row = conn.execute(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"No delivery has id {delivery_id!r}.")
    return delivery_from_row(row)


def fetch_dead_letter(conn: sqlite3.Connection, dead_letter_id: str) -> DeadLetter:
    row = conn.execute(
        f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters d JOIN events e ON e.id = d.event_id "
        "WHERE d.id = ?",
        (dead_letter_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"No dead-letter message has id {dead_letter_id!r}.")
    return dead_letter_from_row(row)


def dead_letter_clauses(where: DeadLetterFilter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = ["1 = 1"]
    params: list[Any] = []
    if where.endpoint_id is not None:
        clauses.append("d.endpoint_id = ?")
        params.append(where.endpoint_id)
    if where.event_type is not None:
        clauses.append("d.event_type = ?")
        params.append(where.event_type)
    return clauses, params


def delivery_values(delivery: Delivery) -> tuple[Any, ...]:
    return (
        delivery.id,
        delivery.event_id,
        delivery.endpoint_id,
        str(delivery.status),
        delivery.attempt_count,
        delivery.next_attempt_at,
        None,
        delivery.last_error,
        delivery.created_at,
        delivery.updated_at,
        delivery.delivered_at,
        delivery.event_type,
    )


def idempotent_repeat(
    conn: sqlite3.Connection, idempotency: IdempotencyKey
) -> list[AcceptedEvent] | None:
    row = conn.execute(
        "SELECT request_hash, event_ids FROM idempotency_keys WHERE key = ?", (idempotency.key,)
    ).fetchone()
    if row is None:
        return None
    if row[0] != idempotency.request_hash:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body; "
            "use a new key for a new request.",
            code="idempotency_key_reused",
        )
    repeated = []
    for event_id in orjson.loads(row[1]):
        rows = conn.execute(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ? ORDER BY id",
            (event_id,),
        ).fetchall()
        repeated.append(AcceptedEvent(event_id, [delivery_from_row(r) for r in rows], False))
    return repeated


def new_round(conn: sqlite3.Connection, event_id: str, endpoint_id: str, now: float) -> Delivery:
    row = conn.execute(
        "SELECT id, event_type, created_at, body FROM events WHERE id = ?", (event_id,)
    ).fetchone()
    endpoint = fetch_endpoint(conn, endpoint_id)
    if not endpoint.enabled:
        raise Conflict(
            f"Endpoint {endpoint_id} is disabled; enable it before delivering to it again.",
            code="endpoint_disabled",
        )
    delivery = pending_delivery(Event(*row), endpoint_id, now)
    conn.execute(
        f"INSERT INTO deliveries ({DELIVERY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        delivery_values(delivery),
    )
    changes.note(conn, [changes.ref(delivery)], ChangeKind.REPLAYED, DeliveryStatus.PENDING, now)
    return delivery


def replay_message(conn: sqlite3.Connection, message: DeadLetter, now: float) -> Delivery:
    delivery = new_round(conn, message.event_id, message.endpoint_id, now)
    conn.execute("DELETE FROM dead_letters WHERE id = ?", (message.id,))
    return delivery


def percentile(
    conn: sqlite3.Connection, where: str, params: tuple[Any, ...], count: int, share: float
) -> float | None:
    """The attempt duration below which ``share`` of the attempts fall (nearest rank)."""
    if count == 0:
        return None
    rank = max(math.ceil(share * count) - 1, 0)
    row = conn.execute(
        f"SELECT duration_ms {where} ORDER BY duration_ms LIMIT 1 OFFSET ?", (*params, rank)
    ).fetchone()
    return None if row is None else float(row[0])
