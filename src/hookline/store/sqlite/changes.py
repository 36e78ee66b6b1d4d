"""The change feed: one row per change of a delivery's state.

SQLite has one writer, so numbers are handed out in commit order and a reader that resumes
after the last number it saw misses nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from hookline.models import ChangeKind, Delivery, DeliveryChange, DeliveryStatus
from hookline.store.base import ChangeFilter

CHANGE_COLUMNS = (
    "seq, delivery_id, event_id, endpoint_id, event_type, change, status, attempt, detail, "
    "next_attempt_at, at"
)

# (delivery id, event id, endpoint id, event type, attempt)
DeliveryRef = tuple[str, str, str, str, int]
# A DeliveryRef, then change, status, detail, next attempt at, at.
ChangeRow = tuple[str, str, str, str, int, str, str, str | None, float | None, float]


def note(
    conn: sqlite3.Connection,
    deliveries: Iterable[DeliveryRef],
    change: ChangeKind,
    status: DeliveryStatus,
    at: float,
    detail: str | None = None,
    next_attempt_at: float | None = None,
) -> None:
    """Record the same change for each delivery."""
    record(
        conn,
        [(*ref, change.value, status.value, detail, next_attempt_at, at) for ref in deliveries],
    )


def record(conn: sqlite3.Connection, rows: list[ChangeRow]) -> None:
    """Record changes that differ from one delivery to the next."""
    conn.executemany(
        "INSERT INTO delivery_changes (delivery_id, event_id, endpoint_id, event_type, attempt, "
        "change, status, detail, next_attempt_at, at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        rows,
    )


def ref(delivery: Delivery) -> DeliveryRef:
    return (
        delivery.id,
        delivery.event_id,
        delivery.endpoint_id,
        delivery.event_type,
        delivery.attempt_count,
    )


def since(
    conn: sqlite3.Connection, after_seq: int, where: ChangeFilter, limit: int
) -> list[DeliveryChange]:
    clauses, params = ["seq > ?"], [after_seq]
    if where.endpoint_id is not None:
        clauses.append("endpoint_id = ?")
        params.append(where.endpoint_id)  # type: ignore[arg-type]
    if where.event_type is not None:
        clauses.append("event_type = ?")
        params.append(where.event_type)  # type: ignore[arg-type]
    rows = conn.execute(
        f"SELECT {CHANGE_COLUMNS} FROM delivery_changes WHERE {' AND '.join(clauses)} "
        "ORDER BY seq LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [_change(row) for row in rows]


def _change(row: Any) -> DeliveryChange:
    return DeliveryChange(
        seq=row[0],
        delivery_id=row[1],
        event_id=row[2],
        endpoint_id=row[3],
        event_type=row[4],
        change=ChangeKind(row[5]),
        status=DeliveryStatus(row[6]),
        attempt=row[7],
        detail=row[8],
        next_attempt_at=row[9],
        at=row[10],
    )
