"""The embedded store: everything in one SQLite file in WAL mode."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from hookline.errors import Conflict, NotFound, StoreUnavailable
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
)
from hookline.store.sqlite import changes
from hookline.store.sqlite.claims import claim
from hookline.store.sqlite.connection import Readers, Writer, connect, migrate
from hookline.store.sqlite.outcomes import record
from hookline.store.sqlite.queries import (
    dead_letter_clauses,
    delivery_values,
    fetch_dead_letter,
    fetch_delivery,
    fetch_endpoint,
    idempotent_repeat,
    new_round,
    page,
    percentile,
    replay_message,
)
from hookline.store.sqlite.rows import (
    ATTEMPT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    DELIVERY_COLUMNS,
    ENDPOINT_COLUMNS,
    attempt_from_row,
    dead_letter_from_row,
    delivery_from_row,
    endpoint_from_row,
    endpoint_values,
    placeholders,
)
from hookline.subscriptions import Subscription

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
_JSON_FIELDS = {"events", "metadata", "headers"}
_FRESH_HEALTH = {
    "circuit_state": "closed",
    "consecutive_failures": 0,
    "paused_until": None,
    "failing_since": None,
    "disabled_reason": None,
    "disabled_at": None,
}


class SQLiteStore:
    """A :class:`~hookline.store.base.Store` in one SQLite database file."""

    def __init__(self, path: Path, synchronous: str = "full") -> None:
        self.path = path
        self.description = f"SQLite database {path.resolve()} (synchronous={synchronous})"
        self._synchronous = synchronous
        self._writer = Writer(path, synchronous)
        self._readers = Readers(path, synchronous)
        self._subscriptions: dict[tuple[str, str], Subscription] = {}

    # Lifecycle

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = connect(self.path, self._synchronous)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"Cannot open SQLite database {self.path}: {exc}.") from exc
        try:
            migrate(conn)
        finally:
            conn.close()
        self._writer.start()

    async def close(self) -> None:
        self._writer.stop()
        self._readers.close()

    async def ping(self) -> None:
        await self._readers.run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def watch_for_work(self, wake: Callable[[], None]) -> None:
        """Nothing to watch: one process owns a SQLite file, and it wakes its own engine."""

    # Endpoints

    async def create_endpoint(self, endpoint: Endpoint) -> Endpoint:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO endpoints ({ENDPOINT_COLUMNS}) VALUES ({placeholders(21)})",
                endpoint_values(endpoint),
            )

        await self._writer.run(insert)
        return endpoint

    async def get_endpoint(self, endpoint_id: str) -> Endpoint:
        return await self._readers.run(fetch_endpoint, endpoint_id)

    async def list_endpoints(self, cursor: str | None, limit: int) -> Page:
        after = decode_cursor(cursor) or ""
        rows = await self._readers.run(
            lambda conn: conn.execute(
                f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit + 1),
            ).fetchall()
        )
        return page([endpoint_from_row(row) for row in rows], limit)

    async def update_endpoint(
        self, endpoint_id: str, changes: dict[str, Any], now: float
    ) -> Endpoint:
        unknown = set(changes) - _ENDPOINT_FIELDS
        if unknown:
            raise ValueError(f"not endpoint fields: {sorted(unknown)}")

        def update(conn: sqlite3.Connection) -> Endpoint:
            fetch_endpoint(conn, endpoint_id)
            values = {
                name: orjson.dumps(value).decode() if name in _JSON_FIELDS else value
                for name, value in changes.items()
            }
            values["updated_at"] = now
            if changes.get("enabled") is True:
                # Enabling through the API is a person saying "try again": start afresh.
                values.update(_FRESH_HEALTH)
                conn.execute(
                    "UPDATE deliveries SET next_attempt_at = ? WHERE endpoint_id = ? "
                    "AND status = 'pending' AND lease_token IS NULL",
                    (now, endpoint_id),
                )
            if "rate_limit" in changes or "rate_limit_burst" in changes:
                conn.execute("DELETE FROM rate_buckets WHERE key = ?", (endpoint_id,))
            assignments = ", ".join(f"{name} = ?" for name in values)
            conn.execute(
                f"UPDATE endpoints SET {assignments} WHERE id = ?",
                (*values.values(), endpoint_id),
            )
            return fetch_endpoint(conn, endpoint_id)

        return await self._writer.run(update)

    async def delete_endpoint(self, endpoint_id: str, now: float) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            fetch_endpoint(conn, endpoint_id)
            pending = conn.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries "
                "WHERE endpoint_id = ? AND status = 'pending'",
                (endpoint_id,),
            ).fetchall()
            changes.note(
                conn,
                (changes.ref(delivery_from_row(row)) for row in pending),
                ChangeKind.CANCELLED,
                DeliveryStatus.FAILED,
                now,
                detail="The endpoint was deleted.",
            )
            conn.execute(
                "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, "
                "lease_token = NULL, last_error = 'The endpoint was deleted.', updated_at = ? "
                "WHERE endpoint_id = ? AND status = 'pending'",
                (now, endpoint_id),
            )
            conn.execute("DELETE FROM dead_letters WHERE endpoint_id = ?", (endpoint_id,))
            conn.execute("DELETE FROM endpoints WHERE id = ?", (endpoint_id,))

        await self._writer.run(delete)

    # Events and fan-out

    async def accept_events(
        self, events: Sequence[NewEvent], idempotency: IdempotencyKey | None, now: float
    ) -> list[AcceptedEvent]:
        return await self._writer.run(self._accept, list(events), idempotency, now)

    def _accept(
        self,
        conn: sqlite3.Connection,
        events: list[NewEvent],
        idempotency: IdempotencyKey | None,
        now: float,
    ) -> list[AcceptedEvent]:
        if idempotency is not None:
            repeat = idempotent_repeat(conn, idempotency)
            if repeat is not None:
                return repeat

        endpoints = self._enabled_subscriptions(conn)
        accepted = [
            AcceptedEvent(
                event.id,
                [
                    pending_delivery(event, endpoint_id, now)
                    for endpoint_id, subscription in endpoints
                    if subscription.matches(event.event_type)
                ],
                created=True,
            )
            for event in events
        ]
        # One statement per table for the whole request: per-statement overhead, not SQLite's
        # own work, is most of the cost of small rows.
        inserted_before = conn.total_changes
        try:
            conn.executemany(
                "INSERT INTO events (id, event_type, created_at, body) VALUES (?, ?, ?, ?)",
                [(event.id, event.event_type, event.created_at, event.body) for event in events],
            )
        except sqlite3.IntegrityError as exc:
            # The rows before the clash went in (the savepoint undoes them); the next one clashed.
            clash = events[conn.total_changes - inserted_before].id
            raise Conflict(
                f"An event with id {clash!r} already exists; choose another id, or send an "
                "Idempotency-Key header to make repeats safe.",
                code="event_exists",
            ) from exc
        deliveries = [delivery for item in accepted for delivery in item.deliveries]
        conn.executemany(
            f"INSERT INTO deliveries ({DELIVERY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [delivery_values(delivery) for delivery in deliveries],
        )
        changes.note(
            conn, map(changes.ref, deliveries), ChangeKind.ACCEPTED, DeliveryStatus.PENDING, now
        )

        if idempotency is not None:
            conn.execute(
                "INSERT INTO idempotency_keys (key, request_hash, event_ids, created_at) "
                "VALUES (?, ?, ?, ?)",
                (
                    idempotency.key,
                    idempotency.request_hash,
                    orjson.dumps([a.event_id for a in accepted]).decode(),
                    now,
                ),
            )
        return accepted

    def _enabled_subscriptions(self, conn: sqlite3.Connection) -> list[tuple[str, Subscription]]:
        rows = conn.execute("SELECT id, events FROM endpoints WHERE enabled = 1").fetchall()
        found = []
        for endpoint_id, patterns in rows:
            key = (endpoint_id, patterns)
            subscription = self._subscriptions.get(key)
            if subscription is None:
                subscription = Subscription(orjson.loads(patterns))
                self._subscriptions[key] = subscription
            found.append((endpoint_id, subscription))
        if len(self._subscriptions) > 4 * len(rows) + 64:
            # Endpoints changed their patterns or went away; forget the stale compilations.
            live = {(endpoint_id, patterns) for endpoint_id, patterns in rows}
            self._subscriptions = {k: v for k, v in self._subscriptions.items() if k in live}
        return found

    async def find_repeat(self, idempotency: IdempotencyKey) -> list[AcceptedEvent] | None:
        return await self._readers.run(idempotent_repeat, idempotency)

    async def get_event(self, event_id: str) -> tuple[Event, list[Delivery]]:
        def fetch(conn: sqlite3.Connection) -> tuple[Event, list[Delivery]]:
            row = conn.execute(
                "SELECT id, event_type, created_at, body FROM events WHERE id = ?", (event_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"No event has id {event_id!r}.")
            deliveries = conn.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ? ORDER BY id",
                (event_id,),
            ).fetchall()
            return Event(*row), [delivery_from_row(d) for d in deliveries]

        return await self._readers.run(fetch)

    # The delivery engine

    async def claim_due(
        self, now: float, limit: int, busy: Mapping[str, int], rules: ClaimRules
    ) -> list[ClaimedDelivery]:
        return await self._writer.run(claim, now, limit, dict(busy), rules, durable=False)

    async def record_verdicts(
        self, verdicts: Sequence[AttemptVerdict], rules: HealthRules
    ) -> Recorded:
        return await self._writer.run(record, list(verdicts), rules, durable=False)

    async def release(self, claims: Sequence[ClaimedDelivery], now: float) -> None:
        def give_back(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE deliveries SET lease_token = NULL, next_attempt_at = ?, "
                "attempt_count = attempt_count - 1, updated_at = ? "
                "WHERE id = ? AND lease_token = ?",
                [(now, now, c.delivery_id, c.lease_token) for c in claims],
            )

        await self._writer.run(give_back, durable=False)

    async def next_due_at(self) -> float | None:
        row = await self._readers.run(
            lambda conn: conn.execute(
                "SELECT MIN(next_attempt_at) FROM deliveries INDEXED BY deliveries_due "
                "WHERE status = 'pending'"
            ).fetchone()
        )
        return None if row is None else row[0]

    async def count_pending(self) -> int:
        row = await self._readers.run(
            lambda conn: conn.execute(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'"
            ).fetchone()
        )
        return int(row[0])

    async def endpoint_health(self, endpoint_id: str, since: float, now: float) -> HealthWindow:
        def summarize(conn: sqlite3.Connection) -> HealthWindow:
            fetch_endpoint(conn, endpoint_id)
            where = "FROM attempts WHERE endpoint_id = ? AND started_at >= ?"
            count, succeeded = conn.execute(
                f"SELECT COUNT(*), COALESCE(SUM(outcome = 'success'), 0) {where}",
                (endpoint_id, since),
            ).fetchone()
            p50, p95, p99 = (
                percentile(conn, where, (endpoint_id, since), count, share)
                for share in (0.50, 0.95, 0.99)
            )
            last = conn.execute(
                f"SELECT error, started_at {where} AND outcome != 'success' "
                "ORDER BY started_at DESC LIMIT 1",
                (endpoint_id, since),
            ).fetchone()
            return HealthWindow(
                seconds=now - since,
                attempts=count,
                succeeded=succeeded,
                p50_ms=p50,
                p95_ms=p95,
                p99_ms=p99,
                last_error=last[0] if last else None,
                last_error_at=last[1] if last else None,
            )

        return await self._readers.run(summarize)

    # Tracking

    async def get_delivery(self, delivery_id: str) -> tuple[Delivery, list[Attempt]]:
        def fetch(conn: sqlite3.Connection) -> tuple[Delivery, list[Attempt]]:
            delivery = fetch_delivery(conn, delivery_id)
            attempts = conn.execute(
                f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ? ORDER BY number",
                (delivery_id,),
            ).fetchall()
            return delivery, [attempt_from_row(a) for a in attempts]

        return await self._readers.run(fetch)

    async def list_deliveries(self, where: DeliveryFilter, cursor: str | None, limit: int) -> Page:
        clauses, params = ["id > ?"], [decode_cursor(cursor) or ""]
        for column, value in (
            ("event_id", where.event_id),
            ("endpoint_id", where.endpoint_id),
            ("status", where.status),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(str(value))
        sql = (
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {' AND '.join(clauses)} "
            "ORDER BY id LIMIT ?"
        )
        rows = await self._readers.run(
            lambda conn: conn.execute(sql, (*params, limit + 1)).fetchall()
        )
        return page([delivery_from_row(row) for row in rows], limit)

    async def retry_delivery(self, delivery_id: str, now: float) -> Delivery:
        def retry(conn: sqlite3.Connection) -> Delivery:
            delivery = fetch_delivery(conn, delivery_id)
            if delivery.status is DeliveryStatus.PENDING:
                if delivery.leased:
                    raise Conflict(
                        f"Delivery {delivery_id} is being attempted right now; "
                        "look at it again when the attempt has finished.",
                        code="delivery_in_flight",
                    )
                conn.execute(
                    "UPDATE deliveries SET next_attempt_at = ?, updated_at = ? WHERE id = ?",
                    (now, now, delivery_id),
                )
                changes.note(
                    conn,
                    [changes.ref(delivery)],
                    ChangeKind.RESCHEDULED,
                    DeliveryStatus.PENDING,
                    now,
                    next_attempt_at=now,
                )
                return fetch_delivery(conn, delivery_id)
            conn.execute("DELETE FROM dead_letters WHERE delivery_id = ?", (delivery_id,))
            return new_round(conn, delivery.event_id, delivery.endpoint_id, now)

        return await self._writer.run(retry)

    # Dead-letter queue

    async def list_dead_letters(
        self, where: DeadLetterFilter, cursor: str | None, limit: int
    ) -> Page:
        clauses, params = dead_letter_clauses(where)
        clauses.append("d.id > ?")
        params.append(decode_cursor(cursor) or "")
        sql = (
            f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters d JOIN events e "
            f"ON e.id = d.event_id WHERE {' AND '.join(clauses)} ORDER BY d.id LIMIT ?"
        )
        rows = await self._readers.run(
            lambda conn: conn.execute(sql, (*params, limit + 1)).fetchall()
        )
        return page([dead_letter_from_row(row) for row in rows], limit)

    async def get_dead_letter(self, dead_letter_id: str) -> DeadLetter:
        return await self._readers.run(fetch_dead_letter, dead_letter_id)

    async def replay_dead_letter(self, dead_letter_id: str, now: float) -> Delivery:
        def replay(conn: sqlite3.Connection) -> Delivery:
            message = fetch_dead_letter(conn, dead_letter_id)
            return replay_message(conn, message, now)

        return await self._writer.run(replay)

    async def replay_dead_letters(
        self, where: DeadLetterFilter, limit: int, now: float
    ) -> list[Delivery]:
        clauses, params = dead_letter_clauses(where)
        sql = (
            f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters d JOIN events e "
            f"ON e.id = d.event_id JOIN endpoints p ON p.id = d.endpoint_id "
            f"WHERE p.enabled = 1 AND {' AND '.join(clauses)} ORDER BY d.id LIMIT ?"
        )

        def replay(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(sql, (*params, limit)).fetchall()
            return [replay_message(conn, dead_letter_from_row(row), now) for row in rows]

        return await self._writer.run(replay)

    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            if (
                conn.execute("DELETE FROM dead_letters WHERE id = ?", (dead_letter_id,)).rowcount
                == 0
            ):
                raise NotFound(f"No dead-letter message has id {dead_letter_id!r}.")

        await self._writer.run(delete)

    # The change feed

    async def changes_since(
        self, after_seq: int, where: ChangeFilter, limit: int
    ) -> list[DeliveryChange]:
        return await self._readers.run(changes.since, after_seq, where, limit)

    async def latest_change_seq(self) -> int:
        row = await self._readers.run(
            lambda conn: conn.execute("SELECT MAX(seq) FROM delivery_changes").fetchone()
        )
        return int(row[0] or 0)

    # Housekeeping

    async def purge_expired(
        self, now: float, idempotency_cutoff: float, changes_cutoff: float
    ) -> Purged:
        def purge(conn: sqlite3.Connection) -> Purged:
            letters = conn.execute("DELETE FROM dead_letters WHERE expires_at <= ?", (now,))
            keys = conn.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ?", (idempotency_cutoff,)
            )
            feed = conn.execute("DELETE FROM delivery_changes WHERE at < ?", (changes_cutoff,))
            return Purged(letters.rowcount, keys.rowcount, feed.rowcount)

        return await self._writer.run(purge)

    async def stats(self, now: float) -> Stats:
        def count(conn: sqlite3.Connection) -> Stats:
            by_status = dict(
                conn.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status").fetchall()
            )
            in_flight = conn.execute(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' "
                "AND lease_token IS NOT NULL AND next_attempt_at > ?",
                (now,),
            ).fetchone()[0]
            letters = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
            endpoints, enabled, circuits_open = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(enabled), 0), "
                "COALESCE(SUM(enabled = 1 AND circuit_state != 'closed'), 0) FROM endpoints"
            ).fetchone()
            return Stats(
                pending=by_status.get("pending", 0),
                in_flight=in_flight,
                delivered=by_status.get("delivered", 0),
                failed=by_status.get("failed", 0),
                dead_letters=letters,
                endpoints=endpoints,
                endpoints_enabled=enabled,
                circuits_open=circuits_open,
            )

        return await self._readers.run(count)
