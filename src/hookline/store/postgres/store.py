"""The shared store: PostgreSQL, for several hookline instances on one database."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from hookline.errors import Conflict, NotFound
from hookline.models import (
    AcceptedEvent,
    Attempt,
    AttemptVerdict,
    ChangeKind,
    ClaimedDelivery,
    DeadLetter,
    Delivery,
    DeliveryChange,
    DeliveryStatus,
    Endpoint,
    Event,
    HealthWindow,
    NewEvent,
    Page,
    Recorded,
    Stats,
    pending_delivery,
)
from hookline.store.base import (
    ChangeFilter,
    ClaimRules,
    DeadLetterFilter,
    DeliveryFilter,
    HealthRules,
    IdempotencyKey,
    Purged,
    decode_cursor,
    encode_cursor,
)
from hookline.store.postgres import changes, claims, outcomes, statements
from hookline.store.postgres.connection import (
    Database,
    Lock,
    PooledConnection,
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
    "rate_limit",
    "rate_limit_burst",
    "max_in_flight",
}
_FRESH_HEALTH = {
    "circuit_state": "closed",
    "consecutive_failures": 0,
    "paused_until": None,
    "failing_since": None,
    "disabled_reason": None,
    "disabled_at": None,
}

_ENDPOINT_DELETED = "The endpoint was deleted."


class PostgresStore:
    """A :class:`~hookline.store.base.Store` in a PostgreSQL database that instances share."""

    def __init__(self, url: str, pool_min_size: int = 2, pool_max_size: int = 10) -> None:
        self.url = url
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
                f"INSERT INTO endpoints ({ENDPOINT_COLUMNS}) VALUES ({_placeholders(21)})",
                *endpoint_values(endpoint),
            )
        return endpoint

    async def get_endpoint(self, endpoint_id: str) -> Endpoint:
        async with self._database.connection() as conn:
            return await statements.fetch_endpoint(conn, endpoint_id)

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
        enabling = changes.get("enabled") is True
        if enabling:
            # Enabling through the API is a person saying "try again": start afresh.
            values.update(_FRESH_HEALTH)
        # Column names come from the fixed set above, never from the caller's text.
        assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(values, start=2))
        async with self._database.transaction() as conn:
            # Deliveries before endpoints, then buckets: the order every writer locks them in.
            if enabling:
                await conn.execute(
                    "UPDATE deliveries SET next_attempt_at = $1 WHERE endpoint_id = $2 "
                    "AND status = 'pending' AND lease_token IS NULL",
                    now,
                    endpoint_id,
                )
            row = await conn.fetchrow(
                f"UPDATE endpoints SET {assignments} WHERE id = $1 RETURNING {ENDPOINT_COLUMNS}",
                endpoint_id,
                *values.values(),
            )
            if row is None:
                raise NotFound(f"No endpoint has id {endpoint_id!r}.")
            if "rate_limit" in changes or "rate_limit_burst" in changes:
                await conn.execute("DELETE FROM rate_buckets WHERE key = $1", endpoint_id)
        if enabling:
            self._signal.announce()
        return endpoint_from_row(row)

    async def delete_endpoint(self, endpoint_id: str, now: float) -> None:
        async with self._database.transaction() as conn:
            # Waits for fan-outs in progress, so none adds a delivery after ours are failed.
            await take_lock(conn, Lock.FAN_OUT)
            await statements.fetch_endpoint(conn, endpoint_id)
            cancelled = await conn.fetch(
                "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, "
                f"lease_token = NULL, last_error = $3, updated_at = $1 "
                f"WHERE endpoint_id = $2 AND status = 'pending' RETURNING {DELIVERY_COLUMNS}",
                now,
                endpoint_id,
                _ENDPOINT_DELETED,
            )
            await conn.execute("DELETE FROM dead_letters WHERE endpoint_id = $1", endpoint_id)
            await conn.execute("DELETE FROM endpoints WHERE id = $1", endpoint_id)
            await changes.note(
                conn,
                (
                    changes.of(delivery_from_row(row), ChangeKind.CANCELLED, now, _ENDPOINT_DELETED)
                    for row in cancelled
                ),
            )

    # Events and fan-out

    async def accept_events(
        self, events: Sequence[NewEvent], idempotency: IdempotencyKey | None, now: float
    ) -> list[AcceptedEvent]:
        async with self._database.transaction() as conn:
            # The fan-out lock comes first in every transaction that takes it, so two of them
            # never wait on each other in opposite orders.
            await take_lock(conn, Lock.FAN_OUT, shared=True)
            if idempotency is not None:
                repeat = await statements.claim_idempotency_key(conn, idempotency, events, now)
                if repeat is not None:
                    return repeat
            accepted = await self._insert(conn, events, now)
            await changes.note(
                conn,
                (
                    changes.of(delivery, ChangeKind.ACCEPTED, now)
                    for item in accepted
                    for delivery in item.deliveries
                ),
            )
        if any(a.deliveries for a in accepted):
            self._signal.announce()
        return accepted

    async def _insert(
        self, conn: PooledConnection, events: Sequence[NewEvent], now: float
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
            taken = statements.first_refused(events, stored)
            raise Conflict(
                f"An event with id {taken!r} already exists; choose another id, or send "
                "an Idempotency-Key header to make repeats safe.",
                code="event_exists",
            )

        endpoints = await self._enabled_subscriptions(conn)
        accepted = []
        for event in events:
            deliveries = [
                pending_delivery(event, endpoint_id, now)
                for endpoint_id, subscription in endpoints
                if subscription.matches(event.event_type)
            ]
            accepted.append(AcceptedEvent(event.id, deliveries, created=True))
        created = [d for a in accepted for d in a.deliveries]
        if created:
            await conn.execute(
                statements.INSERT_DELIVERIES,
                [d.id for d in created],
                [d.event_id for d in created],
                [d.endpoint_id for d in created],
                now,
                [d.event_type for d in created],
            )
        return accepted

    async def _enabled_subscriptions(
        self, conn: PooledConnection
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

    async def find_repeat(self, idempotency: IdempotencyKey) -> list[AcceptedEvent] | None:
        async with self._database.connection() as conn:
            return await statements.repeat_of(conn, idempotency)

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
        event = Event(row["id"], row["event_type"], row["created_at"], row["body"])
        return event, [delivery_from_row(d) for d in deliveries]

    # The delivery engine

    async def claim_due(
        self, now: float, limit: int, busy: Mapping[str, int], rules: ClaimRules
    ) -> list[ClaimedDelivery]:
        async with self._database.transaction() as conn:
            await _skip_commit_flush(conn)
            return await claims.claim(conn, now, limit, busy, rules)

    async def record_verdicts(
        self, verdicts: Sequence[AttemptVerdict], rules: HealthRules
    ) -> Recorded:
        if not verdicts:
            return Recorded(applied=[])
        async with self._database.transaction() as conn:
            await _skip_commit_flush(conn)
            return await outcomes.record(conn, verdicts, rules)

    async def release(self, claims_given_back: Sequence[ClaimedDelivery], now: float) -> None:
        if not claims_given_back:
            return
        async with self._database.transaction() as conn:
            await _skip_commit_flush(conn)
            await claims.release(conn, list(claims_given_back), now)
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

    async def endpoint_health(self, endpoint_id: str, since: float, now: float) -> HealthWindow:
        async with self._database.connection() as conn:
            await statements.fetch_endpoint(conn, endpoint_id)
            # percentile_disc is the nearest-rank percentile, as the SQLite store computes it.
            summary = await conn.fetchrow(
                "SELECT COUNT(*) AS attempts, COUNT(*) FILTER (WHERE outcome = 'success') AS ok, "
                "percentile_disc(0.50) WITHIN GROUP (ORDER BY duration_ms) AS p50, "
                "percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95, "
                "percentile_disc(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99 "
                "FROM attempts WHERE endpoint_id = $1 AND started_at >= $2",
                endpoint_id,
                since,
            )
            last = await conn.fetchrow(
                "SELECT error, started_at FROM attempts WHERE endpoint_id = $1 "
                "AND started_at >= $2 AND outcome <> 'success' ORDER BY started_at DESC LIMIT 1",
                endpoint_id,
                since,
            )
        assert summary is not None, "an aggregate always returns a row"
        return HealthWindow(
            seconds=now - since,
            attempts=summary["attempts"],
            succeeded=summary["ok"],
            p50_ms=summary["p50"],
            p95_ms=summary["p95"],
            p99_ms=summary["p99"],
            last_error=last["error"] if last else None,
            last_error_at=last["started_at"] if last else None,
        )

    # Tracking

    async def get_delivery(self, delivery_id: str) -> tuple[Delivery, list[Attempt]]:
        async with self._database.connection() as conn:
            delivery = await statements.fetch_delivery(conn, delivery_id)
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
            await take_lock(conn, Lock.FAN_OUT, shared=True)
            delivery = await statements.fetch_delivery(conn, delivery_id, for_update=True)
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
                change = changes.of(retried, ChangeKind.RESCHEDULED, now, next_attempt_at=now)
            else:
                await conn.execute("DELETE FROM dead_letters WHERE delivery_id = $1", delivery_id)
                retried = await statements.new_round(
                    conn, delivery.event_id, delivery.endpoint_id, now
                )
                change = changes.of(retried, ChangeKind.REPLAYED, now)
            await changes.note(conn, [change])
        self._signal.announce()
        return retried

    # Dead-letter queue

    async def list_dead_letters(
        self, where: DeadLetterFilter, cursor: str | None, limit: int
    ) -> Page:
        clauses, params = statements.dead_letter_clauses(where)
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
            await take_lock(conn, Lock.FAN_OUT, shared=True)
            # Deleting first claims the message: a concurrent replay of it finds nothing.
            row = await conn.fetchrow(
                "DELETE FROM dead_letters WHERE id = $1 RETURNING event_id, endpoint_id",
                dead_letter_id,
            )
            if row is None:
                raise NotFound(f"No dead-letter message has id {dead_letter_id!r}.")
            delivery = await statements.new_round(conn, row["event_id"], row["endpoint_id"], now)
            await changes.note(conn, [changes.of(delivery, ChangeKind.REPLAYED, now)])
        self._signal.announce()
        return delivery

    async def replay_dead_letters(
        self, where: DeadLetterFilter, limit: int, now: float
    ) -> list[Delivery]:
        clauses, params = statements.dead_letter_clauses(where)
        # SKIP LOCKED: two bulk replays at once each take different messages.
        sql = (
            "SELECT d.id, d.event_id, d.endpoint_id FROM dead_letters d "
            "JOIN endpoints p ON p.id = d.endpoint_id "
            f"WHERE p.enabled AND {' AND '.join(clauses)} ORDER BY d.id "
            f"LIMIT ${len(params) + 1} FOR UPDATE OF d SKIP LOCKED"
        )
        async with self._database.transaction() as conn:
            await take_lock(conn, Lock.FAN_OUT, shared=True)
            rows = await conn.fetch(sql, *params, limit)
            replayed = [
                await statements.new_round(conn, row["event_id"], row["endpoint_id"], now)
                for row in rows
            ]
            await conn.execute(
                "DELETE FROM dead_letters WHERE id = ANY($1::text[])", [row["id"] for row in rows]
            )
            await changes.note(
                conn, (changes.of(delivery, ChangeKind.REPLAYED, now) for delivery in replayed)
            )
        if replayed:
            self._signal.announce()
        return replayed

    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        async with self._database.connection() as conn:
            status = await conn.execute("DELETE FROM dead_letters WHERE id = $1", dead_letter_id)
        if status == "DELETE 0":
            raise NotFound(f"No dead-letter message has id {dead_letter_id!r}.")

    # The change feed

    async def changes_since(
        self, after_seq: int, where: ChangeFilter, limit: int
    ) -> list[DeliveryChange]:
        async with self._database.connection() as conn:
            return await changes.since(conn, after_seq, where, limit)

    async def latest_change_seq(self) -> int:
        row = await self._database.fetchrow("SELECT COALESCE(MAX(seq), 0) FROM delivery_changes")
        return 0 if row is None else int(row[0])

    # Housekeeping

    async def purge_expired(
        self, now: float, idempotency_cutoff: float, changes_cutoff: float
    ) -> Purged:
        # Every instance calls this on its own timer, but one instance keeps house: the one
        # whose listening session holds the purge lock. A store that is not listening (a
        # tool, a test) takes the same lock for the length of its purge instead.
        if self._signal.listening and not self._signal.keeps_house:
            return Purged(0, 0)
        async with self._database.transaction() as conn:
            if not self._signal.keeps_house and not await try_lock(conn, Lock.PURGE):
                return Purged(0, 0)
            letters = await conn.execute("DELETE FROM dead_letters WHERE expires_at <= $1", now)
            keys = await conn.execute(
                "DELETE FROM idempotency_keys WHERE created_at < $1", idempotency_cutoff
            )
            feed = await conn.execute("DELETE FROM delivery_changes WHERE at < $1", changes_cutoff)
        return Purged(_row_count(letters), _row_count(keys), _row_count(feed))

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
                "SELECT COUNT(*) AS total, COUNT(*) FILTER (WHERE enabled) AS enabled, "
                "COUNT(*) FILTER (WHERE enabled AND circuit_state <> 'closed') AS open "
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
            circuits_open=endpoints["open"],
        )


# The functions below run on a connection the caller holds, most inside its transaction.


def _page(items: list[Any], limit: int) -> Page:
    if len(items) > limit:
        return Page(items[:limit], encode_cursor(items[limit - 1].id))
    return Page(items, None)


def _placeholders(count: int) -> str:
    return ", ".join(f"${n}" for n in range(1, count + 1))


async def _skip_commit_flush(conn: PooledConnection) -> None:
    # Claims, lease returns and attempt results may be lost in a crash of the database server
    # at no cost but a repeated attempt, which at-least-once delivery allows; not waiting for
    # their commit to reach the disk keeps them off the path of every delivery.
    await conn.execute("SET LOCAL synchronous_commit TO OFF")


def _row_count(status: str) -> int:
    # asyncpg answers with the command tag, such as "DELETE 3".
    return int(status.rsplit(" ", 1)[-1])


def _json_list(text: str) -> list[str]:
    return [str(item) for item in orjson.loads(text)]
