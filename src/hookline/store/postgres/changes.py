"""The change feed: one row per change of a delivery's state, numbered in commit order.

A sequence alone hands out numbers in the order transactions ask for them, not the order they
commit: a reader could see number 11 before 10 commits, resume after 11, and never see 10.
So every transaction takes one advisory lock right before it writes its changes and holds it
until it has committed; the next writer gets its numbers only once this one is visible. The
changes are written last in each transaction, after every row lock it takes, so the lock never
sits inside a cycle of waits; what it costs is that those transactions commit one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from hookline.models import ChangeKind, Delivery, DeliveryChange, DeliveryStatus
from hookline.store.base import ChangeFilter
from hookline.store.postgres.connection import Lock, PooledConnection, take_lock

CHANGE_COLUMNS = (
    "seq, delivery_id, event_id, endpoint_id, event_type, change, status, attempt, detail, "
    "next_attempt_at, at"
)


@dataclass(frozen=True, slots=True)
class Change:
    """A change about to be written; the store numbers it."""

    delivery_id: str
    event_id: str
    endpoint_id: str
    event_type: str
    attempt: int
    change: ChangeKind
    status: DeliveryStatus
    at: float
    detail: str | None = None
    next_attempt_at: float | None = None


def of(
    delivery: Delivery,
    change: ChangeKind,
    at: float,
    detail: str | None = None,
    next_attempt_at: float | None = None,
) -> Change:
    return Change(
        delivery.id,
        delivery.event_id,
        delivery.endpoint_id,
        delivery.event_type,
        delivery.attempt_count,
        change,
        delivery.status,
        at,
        detail,
        next_attempt_at,
    )


async def note(conn: PooledConnection, changes: Iterable[Change]) -> None:
    """Write the changes, numbered after every change already committed; call it last."""
    batch = list(changes)
    if not batch:
        return
    await take_lock(conn, Lock.CHANGE_FEED)
    await conn.execute(
        "INSERT INTO delivery_changes (delivery_id, event_id, endpoint_id, event_type, attempt, "
        "change, status, detail, next_attempt_at, at) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], "
        "$6::text[], $7::text[], $8::text[], $9::float8[], $10::float8[])",
        [c.delivery_id for c in batch],
        [c.event_id for c in batch],
        [c.endpoint_id for c in batch],
        [c.event_type for c in batch],
        [c.attempt for c in batch],
        [str(c.change) for c in batch],
        [str(c.status) for c in batch],
        [c.detail for c in batch],
        [c.next_attempt_at for c in batch],
        [c.at for c in batch],
    )


async def since(
    conn: PooledConnection, after_seq: int, where: ChangeFilter, limit: int
) -> list[DeliveryChange]:
    clauses, params = ["seq > $1"], [after_seq]
    if where.endpoint_id is not None:
        params.append(where.endpoint_id)  # type: ignore[arg-type]
        clauses.append(f"endpoint_id = ${len(params)}")
    if where.event_type is not None:
        params.append(where.event_type)  # type: ignore[arg-type]
        clauses.append(f"event_type = ${len(params)}")
    rows = await conn.fetch(
        f"SELECT {CHANGE_COLUMNS} FROM delivery_changes WHERE {' AND '.join(clauses)} "
        f"ORDER BY seq LIMIT ${len(params) + 1}",
        *params,
        limit,
    )
    return [_change(row) for row in rows]


def _change(row: asyncpg.Record) -> DeliveryChange:
    return DeliveryChange(
        seq=row["seq"],
        delivery_id=row["delivery_id"],
        event_id=row["event_id"],
        endpoint_id=row["endpoint_id"],
        event_type=row["event_type"],
        change=ChangeKind(row["change"]),
        status=DeliveryStatus(row["status"]),
        attempt=row["attempt"],
        detail=row["detail"],
        next_attempt_at=row["next_attempt_at"],
        at=row["at"],
    )
