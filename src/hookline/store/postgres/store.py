"""The shared store: PostgreSQL, for several hookline instances on one database."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg

from hookline.errors import Conflict, NotFound
from hookline.ids import new_id
from hookline.models import (
    AcceptedEvent,
    Attempt,
    AttemptVerdict,
    ClaimedDelivery,
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    NewEvent,
    Page,
    Stats,
)
from hookline.store.base import (
    DeadLetterFilter,
    DeliveryFilter,
    IdempotencyKey,
    Purged,
    decode_cursor,
    encode_cursor,
)
from hookline.store.postgres import claims
from hookline.store.postgres.connection import (
    Database,
    Lock,
    migrate,
    redact,
    take_lock,
    try_lock,
)
from hookline.store.postgres.notify import WorkSignal
from hookline.store.postgres.rows import (
    ATTEMPT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    DELIVERY_COLUMNS,
    ENDPOINT_COLUMNS,
    attempt_from_row,
    dead_letter_from_row,
    delivery_from_row,
    endpoint_from_row,
    endpoint_values,
)
from hookline.subscriptions import Subscription

PING_TIMEOUT_SECONDS = 2.0

_ENDPOINT_FIELDS = {
    "url",
    "secret",
    "events",
    "enabled",
    "max_retries",
    "timeout_seconds",
    "description",
    "metadata",
    "headers",
}

_INSERT_DELIVERIES = f"""
INSERT INTO deliveries ({DELIVERY_COLUMNS})
SELECT id, event_id, endpoint_id, 'pending', 0, $4, NULL, NULL, $4, $4, NULL, event_type
FROM unnest($1::text[], $2::text[], $3::text[], $5::text[])
    AS d (id, event_id, endpoint_id, event_type)
"""


class PostgresStore:
    """A :class:`~hookline.store.base.Store` in a PostgreSQL database that instances share."""

    def __init__(self, url: str, pool_min_size: int = 2, pool_max_size: int = 10) -> None:
        self.description = (
            f"PostgreSQL database {redact(url)} (pool of {pool_min_size} to {pool_max_size})"
        )
        self._database = Database(url, pool_min_size, pool_max_size)
        self._signal = WorkSignal(self._database)
        self._subscriptions: dict[tuple[str, str], Subscription] = {}

    # Lifecycle

    async def open(self) -> None:
        await self._database.open()
        async with self._database.connection() as conn:
            await migrate(conn)

    async def close(self) -> None:
        await self._signal.close()
        await self._database.close()

    async def ping(self) -> None:
        async with self._database.connection() as conn:
            await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_SECONDS)

    async def watch_for_work(self, wake: Callable[[], None]) -> None:
        self._signal.listen(wake)

    # Endpoints

    async def create_endpoint(self, endpoint: Endpoint) -> Endpoint:
        async with self._database.connection() as conn:
            await conn.execute(
                f"INSERT INTO endpoints ({ENDPOINT_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                *endpoint_values(endpoint),
            )
        return endpoint

    async def get_endpoint(self, endpoint_id: str) -> Endpoint:
        async with self._database.connection() as conn:
            return await _fetch_endpoint(conn, endpoint_id)

    async def list_endpoints(self, cursor: str | None, limit: int) -> Page:
        rows = await self._database.fetch(
            f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id > $1 ORDER BY id LIMIT $2",
            decode_cursor(cursor) or "",
            limit + 1,
        )
        return _page([endpoint_from_row(row) for row in rows], limit)

    async def update_endpoint(
        self, endpoint_id: str, changes: dict[str, Any], now: float
    ) -> Endpoint:
        unknown = set(changes) - _ENDPOINT_FIELDS
        if unknown:
            raise ValueError(f"not endpoint fields: {sorted(unknown)}")
        values = {**changes, "updated_at": now}
        # Column names come from the fixed set above, never from the caller's text.
        assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(values, start=2))
        async with self._database.connection() as conn:
            row = await conn.fetchrow(
                f"UPDATE endpoints SET {assignments} WHERE id = $1 RETURNING {ENDPOINT_COLUMNS}",
                endpoint_id,
                *values.values(),
            )
        if row is None:
            raise NotFound(f"No endpoint has id {endpoint_id!r}.")
        return endpoint_from_row(row)

    async def delete_endpoint(self, endpoint_id: str, now: float) -> None:
        async with self._database.transaction() as conn:
            # Waits for fan-outs in progress, so none adds a delivery after ours are failed.
            await take_lock(conn, Lock.FAN_OUT)
            await _fetch_endpoint(conn, endpoint_id)
            await conn.execute(
                "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, "
                "lease_token = NULL, last_error = 'The endpoint was deleted.', updated_at = $1 "
                "WHERE endpoint_id = $2 AND status = 'pending'",
                now,
                endpoint_id,
            )
            await conn.execute("DELETE FROM dead_letters WHERE endpoint_id = $1", endpoint_id)
            await conn.execute("DELETE FROM endpoints WHERE id = $1", endpoint_id)

    # Events and fan-out

    async def accept_events(
        self, events: Sequence[NewEvent], idempotency: IdempotencyKey | None, now: float
    ) -> list[AcceptedEvent]:
        async with self._database.transaction() as conn:
            if idempotency is not None:
                repeat = await _claim_idempotency_key(conn, idempotency, events, now)
                if repeat is not None:
                    return repeat
            await take_lock(conn, Lock.FAN_OUT, shared=True)
            accepted = await self._insert(conn, events, now)
        if any(a.deliveries for a in accepted):
            self._signal.announce()
        return accepted

    async def _insert(
        self, conn: asyncpg.Connection, events: Sequence[NewEvent], now: float
    ) -> list[AcceptedEvent]:
        stored = await conn.fetch(
            "INSERT INTO events (id, event_type, created_at, body) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::bytea[]) "
            "ON CONFLICT (id) DO NOTHING RETURNING id",
            [e.id for e in events],
            [e.event_type for e in events],
            [e.created_at for e in events],
            [e.body for e in events],
        )
        if len(stored) < len(events):
            # Leaving the block with an exception rolls back the whole batch.
            inserted = [row["id"] for row in stored]
            taken = next(e.id for e in events if e.id not in inserted or inserted.remove(e.id))
            raise Conflict(
                f"An event with id {taken!r} already exists; choose another id, or send "
                "an Idempotency-Key header to make repeats safe.",
                code="event_exists",
            )

        endpoints = await self._enabled_subscriptions(conn)
        accepted = []
        for event in events:
            deliveries = [
                _new_delivery(event, endpoint_id, now)
                for endpoint_id, subscription in endpoints
                if subscription.matches(event.event_type)
            ]
            accepted.append(AcceptedEvent(event.id, deliveries, created=True))
        created = [d for a in accepted for d in a.deliveries]
        if created:
            await conn.execute(
                _INSERT_DELIVERIES,
                [d.id for d in created],
                [d.event_id for d in created],
                [d.endpoint_id for d in created],
                now,
                [d.event_type for d in created],
            )
        return accepted

    async def _enabled_subscriptions(
        self, conn: asyncpg.Connection
    ) -> list[tuple[str, Subscription]]:
        rows = await conn.fetch("SELECT id, events::text AS patterns FROM endpoints WHERE enabled")
        found = []
        for row in rows:
            key = (row["id"], row["patterns"])
            subscription = self._subscriptions.get(key)
            if subscription is None:
                subscription = Subscription(_json_list(row["patterns"]))
                self._subscriptions[key] = subscription
            found.append((row["id"], subscription))
        if len(self._subscriptions) > 4 * len(rows) + 64:
            # Endpoints changed their patterns or went away; forget the stale compilations.
            live = {(row["id"], row["patterns"]) for row in rows}
            self._subscriptions = {k: v for k, v in self._subscriptions.items() if k in live}
        return found

    async def get_event(self, event_id: str) -> tuple[Event, list[Delivery]]:
        async with self._database.connection() as conn:
            row = await conn.fetchrow(
                "SELECT id, event_type, created_at, body FROM events WHERE id = $1", event_id
            )
            if row is None:
                raise NotFound(f"No event has id {event_id!r}.")
            deliveries = await conn.fetch(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = $1 ORDER BY id",
                event_id,
            )
        return Event(*row), [delivery_from_row(d) for d in deliveries]

    # The delivery engine

    async def claim_due(
        self,
        now: float,
        limit: int,
        busy: Mapping[str, int],
        per_endpoint: int,
        lease_margin_seconds: float,
    ) -> list[ClaimedDelivery]:
        async with self._database.connection() as conn:
            return await claims.claim_due(
                conn, now, limit, busy, per_endpoint, lease_margin_seconds
            )

    async def record_verdicts(self, verdicts: Sequence[AttemptVerdict]) -> list[bool]:
        if not verdicts:
            return []
        async with self._database.connection() as conn:
            return await claims.record_verdicts(conn, verdicts)

    async def release(self, claims_given_back: Sequence[ClaimedDelivery], now: float) -> None:
        if not claims_given_back:
            return
        async with self._database.connection() as conn:
            await claims.release(conn, claims_given_back, now)
        # Another instance may have free workers for what this one gave back.
        self._signal.announce()

    async def next_due_at(self) -> float | None:
        row = await self._database.fetchrow(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'"
        )
        return None if row is None else row[0]

    async def count_pending(self) -> int:
        row = await self._database.fetchrow(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'"
        )
        return 0 if row is None else int(row[0])

    # Tracking

    async def get_delivery(self, delivery_id: str) -> tuple[Delivery, list[Attempt]]:
        async with self._database.connection() as conn:
            delivery = await _fetch_delivery(conn, delivery_id)
            attempts = await conn.fetch(
                f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 ORDER BY number",
                delivery_id,
            )
        return delivery, [attempt_from_row(a) for a in attempts]

    async def list_deliveries(self, where: DeliveryFilter, cursor: str | None, limit: int) -> Page:
        clauses, params = ["id > $1"], [decode_cursor(cursor) or ""]
        for column, value in (
            ("event_id", where.event_id),
            ("endpoint_id", where.endpoint_id),
            ("status", where.status),
        ):
            if value is not None:
                params.append(str(value))
                clauses.append(f"{column} = ${len(params)}")
        rows = await self._database.fetch(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {' AND '.join(clauses)} "
            f"ORDER BY id LIMIT ${len(params) + 1}",
            *params,
            limit + 1,
        )
        return _page([delivery_from_row(row) for row in rows], limit)

    async def retry_delivery(self, delivery_id: str, now: float) -> Delivery:
        async with self._database.transaction() as conn:
            delivery = await _fetch_delivery(conn, delivery_id, for_update=True)
            if delivery.status is DeliveryStatus.PENDING:
                if delivery.leased:
                    raise Conflict(
                        f"Delivery {delivery_id} is being attempted right now; "
                        "look at it again when the attempt has finished.",
                        code="delivery_in_flight",
                    )
                row = await conn.fetchrow(
                    "UPDATE deliveries SET next_attempt_at = $1, updated_at = $1 WHERE id = $2 "
                    f"RETURNING {DELIVERY_COLUMNS}",
                    now,
                    delivery_id,
                )
                assert row is not None, "the row is locked by this transaction"
                retried = delivery_from_row(row)
            else:
                await conn.execute("DELETE FROM dead_letters WHERE delivery_id = $1", delivery_id)
                retried = await _new_round(conn, delivery.event_id, delivery.endpoint_id, now)
        self._signal.announce()
        return retried

    # Dead-letter queue

    async def list_dead_letters(
        self, where: DeadLetterFilter, cursor: str | None, limit: int
    ) -> Page:
        clauses, params = _dead_letter_clauses(where)
        params.append(decode_cursor(cursor) or "")
        clauses.append(f"d.id > ${len(params)}")
        rows = await self._database.fetch(
            f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters d JOIN events e "
            f"ON e.id = d.event_id WHERE {' AND '.join(clauses)} "
            f"ORDER BY d.id LIMIT ${len(params) + 1}",
            *params,
            limit + 1,
        )
        return _page([dead_letter_from_row(row) for row in rows], limit)

    async def get_dead_letter(self, dead_letter_id: str) -> DeadLetter:
        row = await self._database.fetchrow(
            f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters d JOIN events e "
            "ON e.id = d.event_id WHERE d.id = $1",
            dead_letter_id,
        )
        if row is None:
            raise NotFound(f"No dead-letter message has id {dead_letter_id!r}.")
        return dead_letter_from_row(row)

    async def replay_dead_letter(self, dead_letter_id: str, now: float) -> Delivery:
        async with self._database.transaction() as conn:
            # Deleting first claims the message: a concurrent replay of it finds nothing.
            row = await conn.fetchrow(
                "DELETE FROM dead_letters WHERE id = $1 RETURNING event_id, endpoint_id",
                dead_letter_id,
            )
            if row is None:
                raise NotFound(f"No dead-letter message has id {dead_letter_id!r}.")
            delivery = await _new_round(conn, row["event_id"], row["endpoint_id"], now)
        self._signal.announce()
        return delivery

    async def replay_dead_letters(
        self, where: DeadLetterFilter, limit: int, now: float
    ) -> list[Delivery]:
        clauses, params = _dead_letter_clauses(where)
        # SKIP LOCKED: two bulk replays at once each take different messages.
        sql = (
            "SELECT d.id, d.event_id, d.endpoint_id FROM dead_letters d "
            "JOIN endpoints p ON p.id = d.endpoint_id "
            f"WHERE p.enabled AND {' AND '.join(clauses)} ORDER BY d.id "
            f"LIMIT ${len(params) + 1} FOR UPDATE OF d SKIP LOCKED"
        )
        async with self._database.transaction() as conn:
            rows = await conn.fetch(sql, *params, limit)
            replayed = [
                await _new_round(conn, row["event_id"], row["endpoint_id"], now) for row in rows
            ]
            await conn.execute(
                "DELETE FROM dead_letters WHERE id = ANY($1::text[])", [row["id"] for row in rows]
            )
        if replayed:
            self._signal.announce()
        return replayed

    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        async with self._database.connection() as conn:
            status = await conn.execute("DELETE FROM dead_letters WHERE id = $1", dead_letter_id)
        if status == "DELETE 0":
            raise NotFound(f"No dead-letter message has id {dead_letter_id!r}.")

    # Housekeeping

    async def purge_expired(self, now: float, idempotency_cutoff: float) -> Purged:
        async with self._database.transaction() as conn:
            # Every instance purges on its own timer; whoever comes while one purge is running
            # leaves the work to it instead of deleting the same rows alongside.
            if not await try_lock(conn, Lock.PURGE):
                return Purged(0, 0)
            letters = await conn.execute("DELETE FROM dead_letters WHERE expires_at <= $1", now)
            keys = await conn.execute(
                "DELETE FROM idempotency_keys WHERE created_at < $1", idempotency_cutoff
            )
        return Purged(_row_count(letters), _row_count(keys))

    async def stats(self, now: float) -> Stats:
        async with self._database.connection() as conn:
            by_status = {
                row["status"]: row["count"]
                for row in await conn.fetch(
                    "SELECT status, COUNT(*) AS count FROM deliveries GROUP BY status"
                )
            }
            in_flight = await conn.fetchval(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' "
                "AND lease_token IS NOT NULL AND next_attempt_at > $1",
                now,
            )
            letters = await conn.fetchval("SELECT COUNT(*) FROM dead_letters")
            endpoints = await conn.fetchrow(
                "SELECT COUNT(*) AS total, COUNT(*) FILTER (WHERE enabled) AS enabled "
                "FROM endpoints"
            )
        assert endpoints is not None, "an aggregate always returns a row"
        return Stats(
            pending=by_status.get("pending", 0),
            in_flight=in_flight,
            delivered=by_status.get("delivered", 0),
            failed=by_status.get("failed", 0),
            dead_letters=letters,
            endpoints=endpoints["total"],
            endpoints_enabled=endpoints["enabled"],
        )


# The functions below run on a connection the caller holds, most inside its transaction.


def _page(items: list[Any], limit: int) -> Page:
    if len(items) > limit:
        return Page(items[:limit], encode_cursor(items[limit - 1].id))
    return Page(items, None)


def _row_count(status: str) -> int:
    # asyncpg answers with the command tag, such as "DELETE 3".
    return int(status.rsplit(" ", 1)[-1])


def _json_list(text: str) -> list[str]:
    import orjson

    value = orjson.loads(text)
    return [str(item) for item in value]


async def _fetch_endpoint(conn: asyncpg.Connection, endpoint_id: str) -> Endpoint:
    row = await conn.fetchrow(
        f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = $1", endpoint_id
    )
    if row is None:
        raise NotFound(f"No endpoint has id {endpoint_id!r}.")
    return endpoint_from_row(row)


async def _fetch_delivery(
    conn: asyncpg.Connection, delivery_id: str, *, for_update: bool = False
) -> Delivery:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1{lock}", delivery_id
    )
    if row is None:
        raise NotFound(f"No delivery has id {delivery_id!r}.")
    return delivery_from_row(row)


def _dead_letter_clauses(where: DeadLetterFilter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = ["TRUE"]
    params: list[Any] = []
    if where.endpoint_id is not None:
        params.append(where.endpoint_id)
        clauses.append(f"d.endpoint_id = ${len(params)}")
    if where.event_type is not None:
        params.append(where.event_type)
        clauses.append(f"d.event_type = ${len(params)}")
    return clauses, params


def _new_delivery(event: NewEvent | Event, endpoint_id: str, now: float) -> Delivery:
    return Delivery(
        id=new_id("dlv"),
        event_id=event.id,
        endpoint_id=endpoint_id,
        status=DeliveryStatus.PENDING,
        attempt_count=0,
        next_attempt_at=now,
        leased=False,
        last_error=None,
        created_at=now,
        updated_at=now,
        event_type=event.event_type,
    )


async def _claim_idempotency_key(
    conn: asyncpg.Connection,
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
    row = await conn.fetchrow(
        "SELECT request_hash, event_ids FROM idempotency_keys WHERE key = $1", idempotency.key
    )
    assert row is not None, "the key was there a moment ago and only a purge removes it"
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


async def _new_round(
    conn: asyncpg.Connection, event_id: str, endpoint_id: str, now: float
) -> Delivery:
    await take_lock(conn, Lock.FAN_OUT, shared=True)
    endpoint = await _fetch_endpoint(conn, endpoint_id)
    if not endpoint.enabled:
        raise Conflict(
            f"Endpoint {endpoint_id} is disabled; enable it before delivering to it again.",
            code="endpoint_disabled",
        )
    row = await conn.fetchrow("SELECT event_type FROM events WHERE id = $1", event_id)
    assert row is not None, "deliveries reference their event"
    delivery = _new_delivery(Event(event_id, row["event_type"], now, b""), endpoint_id, now)
    await conn.execute(
        _INSERT_DELIVERIES,
        [delivery.id],
        [event_id],
        [endpoint_id],
        now,
        [delivery.event_type],
    )
    return delivery
