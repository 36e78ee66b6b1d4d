"""Claiming due deliveries across instances: leases, in-flight caps, rate limits and circuit
probes, decided in one transaction.

Rows are locked in one order everywhere: the service-wide rate bucket, then deliveries, then
endpoints, then their buckets. Claims take deliveries and endpoints with ``SKIP LOCKED``, so
instances claiming at the same moment pass over each other's rows instead of queueing behind
them, and a claim never waits on a row that an attempt's result is being written to. Endpoints
whose limits are shared state (a rate limit, or a circuit that is not closed) are locked before
their room is decided, so two instances cannot both spend the last token or both send the one
probe of a half-open circuit.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

from hookline.models import CircuitState, ClaimedDelivery, EndpointHealth
from hookline.protection import breaker
from hookline.protection.ratelimit import GLOBAL_BUCKET, Bucket, new_bucket
from hookline.store.base import ClaimRules
from hookline.store.postgres.connection import PooledConnection
from hookline.store.postgres.rows import HEALTH_COLUMNS, health_from_row, health_values

CLAIM_OVERSCAN = 4
"""The head of the queue is read a few times deeper than the claim needs, so that passing over
endpoints that may not receive now still leaves enough work for the free slots."""

_COLUMNS = (
    "d.id, d.event_id, d.event_type, v.body, d.endpoint_id, e.url, e.secret, "
    "e.timeout_seconds, e.headers, e.max_retries, d.attempt_count, d.created_at, "
    "d.next_attempt_at, e.enabled, e.max_in_flight, e.rate_limit, e.rate_limit_burst, "
    "e.circuit_state, e.consecutive_failures, e.paused_until, e.failing_since"
)
# Endpoint conditions are left to the gate rather than the WHERE clause, so the LIMIT bounds the
# rows read even when the head of the queue is all held back.
_HEAD_SQL = f"""
SELECT {_COLUMNS}
FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id JOIN events v ON v.id = d.event_id
WHERE d.status = 'pending' AND d.next_attempt_at <= $1
ORDER BY d.next_attempt_at
LIMIT $2
FOR UPDATE OF d SKIP LOCKED
"""
# Past the head: the oldest due rows of each endpoint that has room, up to its room ($3).
_PER_ENDPOINT_SQL = f"""
SELECT {_COLUMNS}
FROM unnest($2::text[], $3::int[]) AS r (endpoint_id, room)
CROSS JOIN LATERAL (
    SELECT * FROM deliveries
    WHERE endpoint_id = r.endpoint_id AND status = 'pending' AND next_attempt_at <= $1
        AND id <> ALL($4::text[])
    ORDER BY next_attempt_at
    LIMIT r.room
    FOR UPDATE SKIP LOCKED
) d
JOIN endpoints e ON e.id = d.endpoint_id JOIN events v ON v.id = d.event_id
"""
_LEASE_SQL = """
UPDATE deliveries d
SET lease_token = r.lease_token, attempt_count = d.attempt_count + 1,
    next_attempt_at = r.lease_until, updated_at = $1
FROM unnest($2::text[], $3::text[], $4::float8[]) AS r (id, lease_token, lease_until)
WHERE d.id = r.id
"""


@dataclass
class _Gate:
    """How many more attempts each endpoint may start in this claim."""

    conn: PooledConnection
    now: float
    busy: Mapping[str, int]
    rules: ClaimRules
    room: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, Bucket] = field(default_factory=dict)
    taken: dict[str, int] = field(default_factory=dict)
    probes: dict[str, EndpointHealth] = field(default_factory=dict)
    global_room: int | None = None

    async def open_global(self) -> None:
        rate = self.rules.global_rate_limit
        if rate is not None:
            [bucket] = await self._lock_buckets(
                [(GLOBAL_BUCKET, rate, self.rules.global_rate_burst)]
            )
            self.global_room = bucket.available(self.now)

    async def weigh(self, rows: list[asyncpg.Record]) -> None:
        """Decide the room of every endpoint these rows belong to that has none decided yet."""
        first: dict[str, asyncpg.Record] = {}
        for row in rows:
            first.setdefault(row["endpoint_id"], row)
        fresh = [row for endpoint_id, row in first.items() if endpoint_id not in self.room]
        shared = sorted(row["endpoint_id"] for row in fresh if _shares_state(row))

        healths: dict[str, EndpointHealth] = {}
        if shared:
            locked = await self.conn.fetch(
                f"SELECT id, {HEALTH_COLUMNS} FROM endpoints WHERE id = ANY($1::text[]) "
                "AND enabled ORDER BY id FOR NO KEY UPDATE SKIP LOCKED",
                shared,
            )
            healths = {row["id"]: health_from_row(row) for row in locked}
        limited = [
            (row["endpoint_id"], row["rate_limit"], row["rate_limit_burst"])
            for row in fresh
            if row["rate_limit"] is not None and row["endpoint_id"] in healths
        ]
        await self._lock_buckets(limited)

        for row in fresh:
            endpoint_id = row["endpoint_id"]
            if endpoint_id in shared and endpoint_id not in healths:
                # Another transaction is changing this endpoint; leave it for the next claim.
                self.room[endpoint_id] = 0
                continue
            self.room[endpoint_id] = self._room_for(row, healths.get(endpoint_id))

    def admit(self, row: asyncpg.Record) -> bool:
        """Count the row against its endpoint's room if there is any; say whether it fits."""
        endpoint_id = row["endpoint_id"]
        if self.global_room is not None and self.global_room <= 0:
            return False
        if self.room.get(endpoint_id, 0) <= 0:
            return False
        self.room[endpoint_id] -= 1
        self.taken[endpoint_id] = self.taken.get(endpoint_id, 0) + 1
        if self.global_room is not None:
            self.global_room -= 1
        return True

    def _room_for(self, row: asyncpg.Record, locked_health: EndpointHealth | None) -> int:
        endpoint_id = row["endpoint_id"]
        if not row["enabled"]:
            return 0
        cap = row["max_in_flight"] or self.rules.max_in_flight
        room = cap + min(cap, self.rules.claim_ahead) - self.busy.get(endpoint_id, 0)
        health = locked_health or health_from_row(row)
        probe_room = breaker.claim_room(health, self.now)
        if probe_room is not None:
            room = min(room, probe_room)
            if room > 0:
                self.probes[endpoint_id] = health
        bucket = self.buckets.get(endpoint_id)
        if bucket is not None and room > 0:
            room = min(room, bucket.available(self.now))
        return max(room, 0)

    async def _lock_buckets(self, wanted: list[tuple[str, float, float | None]]) -> list[Bucket]:
        """Lock the buckets (key, rate, burst), creating full ones that do not exist yet."""
        if not wanted:
            return []
        fresh = {key: new_bucket(rate, burst, self.now) for key, rate, burst in wanted}
        keys = sorted(fresh)
        await self.conn.execute(
            "INSERT INTO rate_buckets (key, tokens, updated_at) "
            "SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[]) "
            "ON CONFLICT (key) DO NOTHING",
            keys,
            [fresh[key].tokens for key in keys],
            [self.now] * len(keys),
        )
        rows = await self.conn.fetch(
            "SELECT key, tokens, updated_at FROM rate_buckets WHERE key = ANY($1::text[]) "
            "ORDER BY key FOR UPDATE",
            keys,
        )
        stored = {row["key"]: row for row in rows}
        buckets = []
        for key, rate, _ in wanted:
            row = stored[key]
            buckets.append(Bucket(rate, fresh[key].burst, row["tokens"], row["updated_at"]))
            self.buckets[key] = buckets[-1]
        return buckets

    async def save_buckets(self) -> None:
        spent = dict(self.taken)
        if self.global_room is not None:
            spent[GLOBAL_BUCKET] = sum(self.taken.values())
        if not self.buckets:
            return
        keys = sorted(self.buckets)
        await self.conn.execute(
            "UPDATE rate_buckets b SET tokens = r.tokens, updated_at = $1 "
            "FROM unnest($2::text[], $3::float8[]) AS r (key, tokens) WHERE b.key = r.key",
            self.now,
            keys,
            [self.buckets[key].take(spent.get(key, 0), self.now).tokens for key in keys],
        )


def _shares_state(row: asyncpg.Record) -> bool:
    """Whether deciding this endpoint's room reads state that other instances also write."""
    return (
        row["rate_limit"] is not None
        or row["circuit_state"] != CircuitState.CLOSED
        or row["paused_until"] is not None
    )


async def claim(
    conn: PooledConnection, now: float, limit: int, busy: Mapping[str, int], rules: ClaimRules
) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` due deliveries within every endpoint's limits.

    The caller holds a transaction on ``conn``; every lock taken here lasts until it ends.
    """
    gate = _Gate(conn, now, busy, rules)
    await gate.open_global()
    if gate.global_room is not None:
        limit = min(limit, gate.global_room)
    if limit <= 0:
        return []

    window = limit * CLAIM_OVERSCAN
    head = await conn.fetch(_HEAD_SQL, now, window)
    await gate.weigh(head)
    picked = _admitted(head, gate, limit)
    if len(head) == window and len(picked) < limit and len(picked) < len(head):
        # The head of the queue belongs to endpoints that may not receive more now, and more
        # is due behind it. Look endpoint by endpoint so their backlog cannot starve the rest.
        picked += await _past_the_head(conn, gate, limit - len(picked), [r["id"] for r in head])

    claims = [_claimed(row, rules) for row in picked]
    await _lease(conn, claims, now, rules.lease_margin_seconds)
    await _start_probes(conn, gate, claims, now, rules.lease_margin_seconds)
    await gate.save_buckets()
    # RETURNING would follow no particular order; attempts start oldest-due first.
    return claims


def _admitted(rows: list[asyncpg.Record], gate: _Gate, limit: int) -> list[asyncpg.Record]:
    picked: list[asyncpg.Record] = []
    for row in rows:
        if len(picked) == limit:
            break
        if gate.admit(row):
            picked.append(row)
    return picked


async def _past_the_head(
    conn: PooledConnection, gate: _Gate, wanted: int, seen: list[str]
) -> list[asyncpg.Record]:
    # One row per endpoint that may have room, so the gate can weigh the ones it has not seen.
    candidates = await conn.fetch(
        "SELECT e.id AS endpoint_id, e.enabled, e.max_in_flight, "
        f"e.rate_limit, e.rate_limit_burst, {HEALTH_COLUMNS} FROM endpoints e "
        "WHERE e.enabled AND (e.paused_until IS NULL OR e.paused_until <= $1) ORDER BY e.id",
        gate.now,
    )
    await gate.weigh([row for row in candidates if row["endpoint_id"] not in gate.room])
    with_room = [endpoint_id for endpoint_id, room in gate.room.items() if room > 0]
    random.shuffle(with_room)  # no endpoint is always first in line
    sizes = [min(gate.room[e], wanted, gate.rules.max_in_flight) for e in with_room]
    rows = await conn.fetch(_PER_ENDPOINT_SQL, gate.now, with_room, sizes, seen)
    return _admitted(rows, gate, wanted)


def _claimed(row: asyncpg.Record, rules: ClaimRules) -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id=row["id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        body=row["body"],
        endpoint_id=row["endpoint_id"],
        url=row["url"],
        secret=row["secret"],
        timeout_seconds=row["timeout_seconds"],
        headers=row["headers"],
        max_retries=row["max_retries"],
        attempt=row["attempt_count"] + 1,
        lease_token=uuid.uuid4().hex,
        accepted_at=row["created_at"],
        max_in_flight=row["max_in_flight"] or rules.max_in_flight,
    )


async def _lease(
    conn: PooledConnection, claims: list[ClaimedDelivery], now: float, margin: float
) -> None:
    # The lease lasts the endpoint's timeout plus the margin, so a lease whose holder died
    # runs out and the delivery becomes due again.
    if not claims:
        return
    await conn.execute(
        _LEASE_SQL,
        now,
        [c.delivery_id for c in claims],
        [c.lease_token for c in claims],
        [now + c.timeout_seconds + margin for c in claims],
    )


async def _start_probes(
    conn: PooledConnection,
    gate: _Gate,
    claims: list[ClaimedDelivery],
    now: float,
    margin: float,
) -> None:
    for item in claims:
        health = gate.probes.pop(item.endpoint_id, None)
        if health is None:
            continue
        item.probe = True
        probing = breaker.probe_started(health, now + item.timeout_seconds + margin)
        await conn.execute(
            "UPDATE endpoints SET circuit_state = $1, consecutive_failures = $2, "
            "paused_until = $3, failing_since = $4 WHERE id = $5",
            *health_values(probing),
            item.endpoint_id,
        )


async def release(conn: PooledConnection, claims: list[ClaimedDelivery], now: float) -> None:
    """Give back leases that were never attempted, without charging an attempt."""
    await conn.execute(
        "UPDATE deliveries d SET lease_token = NULL, next_attempt_at = $1, "
        "attempt_count = d.attempt_count - 1, updated_at = $1 "
        "FROM unnest($2::text[], $3::text[]) AS r (id, lease_token) "
        "WHERE d.id = r.id AND d.lease_token = r.lease_token",
        now,
        [claim.delivery_id for claim in claims],
        [claim.lease_token for claim in claims],
    )
