"""Claiming due deliveries: leases, in-flight caps, rate limits and circuit probes.

Runs on the writer thread inside one transaction, so the buckets and circuits it reads are the
ones it writes back.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from hookline.models import ClaimedDelivery, EndpointHealth
from hookline.protection import breaker
from hookline.protection.ratelimit import GLOBAL_BUCKET, Bucket, new_bucket
from hookline.store.base import ClaimRules
from hookline.store.sqlite.rows import (
    HEALTH_COLUMNS,
    MAX_PARAMETERS,
    health_from_row,
    health_values,
)

# Claims read a few more due rows than they need, so that passing over endpoints that may not
# receive now still leaves work for the free slots; endpoints further back are reached one by
# one when the head of the queue is held back.
CLAIM_EXTRA_ROWS = 16

# The body is read afterwards, only for the rows admitted.
_CLAIM_SELECT = (
    "SELECT d.id, d.event_id, d.event_type, NULL, d.endpoint_id, e.url, e.secret, "
    "e.timeout_seconds, e.headers, e.max_retries, d.attempt_count, d.created_at, "
    f"e.enabled, e.max_in_flight, e.rate_limit, e.rate_limit_burst, {HEALTH_COLUMNS} "
    "FROM deliveries d INDEXED BY {index} JOIN endpoints e ON e.id = d.endpoint_id "
    "WHERE d.status = 'pending' AND d.next_attempt_at <= ? "
)
# INDEXED BY pins the partial indexes: the planner would otherwise pick the status index and
# sort every pending row. Endpoint conditions are checked in Python, not in the WHERE clause,
# so the LIMIT bounds the rows read even when the head of the queue is all held back.
_CLAIM_HEAD = _CLAIM_SELECT.format(index="deliveries_due") + "ORDER BY d.next_attempt_at LIMIT ?"
_CLAIM_FOR_ENDPOINT = (
    _CLAIM_SELECT.format(index="deliveries_due_by_endpoint")
    + "AND d.endpoint_id = ? ORDER BY d.next_attempt_at LIMIT ?"
)
_ENDPOINT = 4
_ENABLED, _MAX_IN_FLIGHT, _RATE, _BURST, _HEALTH = 12, 13, 14, 15, slice(16, 20)


@dataclass
class _Gate:
    """How many more attempts each endpoint may start in this claim."""

    conn: sqlite3.Connection
    now: float
    busy: dict[str, int]
    rules: ClaimRules
    room: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, Bucket] = field(default_factory=dict)
    taken: dict[str, int] = field(default_factory=dict)
    probes: dict[str, EndpointHealth] = field(default_factory=dict)
    global_room: int | None = None

    def admit(self, row: Any) -> bool:
        """Count the row against its endpoint's room if there is any; say whether it fits."""
        endpoint_id = row[_ENDPOINT]
        if self.global_room is not None and self.global_room <= 0:
            return False
        if endpoint_id not in self.room:
            self.room[endpoint_id] = self._room_for(row)
        if self.room[endpoint_id] <= 0:
            return False
        self.room[endpoint_id] -= 1
        self.taken[endpoint_id] = self.taken.get(endpoint_id, 0) + 1
        if self.global_room is not None:
            self.global_room -= 1
        return True

    def _room_for(self, row: Any) -> int:
        endpoint_id = row[_ENDPOINT]
        if not row[_ENABLED]:
            return 0
        cap = row[_MAX_IN_FLIGHT] or self.rules.max_in_flight
        room = cap + min(cap, self.rules.claim_ahead) - self.busy.get(endpoint_id, 0)
        health = health_from_row(row[_HEALTH])
        probe_room = breaker.claim_room(health, self.now)
        if probe_room is not None:
            room = min(room, probe_room)
            if room > 0:
                self.probes[endpoint_id] = health
        if row[_RATE] is not None and room > 0:
            bucket = self._bucket(endpoint_id, row[_RATE], row[_BURST])
            room = min(room, bucket.available(self.now))
        return max(room, 0)

    def _bucket(self, key: str, rate: float, burst: float | None) -> Bucket:
        if key not in self.buckets:
            stored = self.conn.execute(
                "SELECT tokens, updated_at FROM rate_buckets WHERE key = ?", (key,)
            ).fetchone()
            fresh = new_bucket(rate, burst, self.now)
            self.buckets[key] = (
                fresh if stored is None else Bucket(rate, fresh.burst, stored[0], stored[1])
            )
        return self.buckets[key]

    def open_global(self) -> None:
        rate = self.rules.global_rate_limit
        if rate is not None:
            bucket = self._bucket(GLOBAL_BUCKET, rate, self.rules.global_rate_burst)
            self.global_room = bucket.available(self.now)

    def save_buckets(self) -> None:
        spent = dict(self.taken)
        if self.global_room is not None:
            spent[GLOBAL_BUCKET] = sum(self.taken.values())
        self.conn.executemany(
            "INSERT INTO rate_buckets (key, tokens, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, "
            "updated_at = excluded.updated_at",
            [
                (key, bucket.take(spent.get(key, 0), self.now).tokens, self.now)
                for key, bucket in self.buckets.items()
            ],
        )


def claim(
    conn: sqlite3.Connection, now: float, limit: int, busy: dict[str, int], rules: ClaimRules
) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` due deliveries within every endpoint's limits."""
    gate = _Gate(conn, now, busy, rules)
    gate.open_global()
    if gate.global_room is not None:
        limit = min(limit, gate.global_room)
    if limit <= 0:
        return []

    window = limit + CLAIM_EXTRA_ROWS
    head = conn.execute(_CLAIM_HEAD, (now, window)).fetchall()
    picked = _admitted(head, gate, limit)
    if len(head) == window and len(picked) < limit and len(picked) < len(head):
        # The head of the queue belongs to endpoints that may not receive more now, and more
        # is due behind it. Look endpoint by endpoint so their backlog cannot starve the rest.
        picked += _past_the_head(conn, gate, limit - len(picked), {row[0] for row in picked})

    claims = _with_bodies(conn, [_claimed(row, rules) for row in picked])
    _lease(conn, claims, now, rules.lease_margin_seconds)
    _start_probes(conn, gate, claims, now, rules.lease_margin_seconds)
    gate.save_buckets()
    return claims


def _admitted(rows: list[Any], gate: _Gate, limit: int) -> list[Any]:
    picked: list[Any] = []
    for row in rows:
        if len(picked) == limit:
            break
        if gate.admit(row):
            picked.append(row)
    return picked


def _past_the_head(conn: sqlite3.Connection, gate: _Gate, wanted: int, seen: set[str]) -> list[Any]:
    endpoint_ids = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM endpoints WHERE enabled = 1 "
            "AND (paused_until IS NULL OR paused_until <= ?)",
            (gate.now,),
        )
    ]
    random.shuffle(endpoint_ids)  # no endpoint is always first in line
    picked: list[Any] = []
    for endpoint_id in endpoint_ids:
        if len(picked) >= wanted:
            break
        if gate.room.get(endpoint_id, 1) <= 0:
            continue
        size = min(wanted - len(picked), gate.rules.max_in_flight)
        rows = conn.execute(_CLAIM_FOR_ENDPOINT, (gate.now, endpoint_id, size)).fetchall()
        picked += _admitted([r for r in rows if r[0] not in seen], gate, wanted - len(picked))
    return picked


def _with_bodies(conn: sqlite3.Connection, claims: list[ClaimedDelivery]) -> list[ClaimedDelivery]:
    event_ids = list({c.event_id for c in claims})
    bodies: dict[str, bytes] = {}
    for start in range(0, len(event_ids), MAX_PARAMETERS):
        chunk = event_ids[start : start + MAX_PARAMETERS]
        bodies.update(
            conn.execute(
                f"SELECT id, body FROM events WHERE id IN ({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        )
    for item in claims:
        item.body = bodies[item.event_id]
    return claims


def _claimed(row: Any, rules: ClaimRules) -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id=row[0],
        event_id=row[1],
        event_type=row[2],
        body=b"",
        endpoint_id=row[4],
        url=row[5],
        secret=row[6],
        timeout_seconds=row[7],
        headers=orjson.loads(row[8]),
        max_retries=row[9],
        attempt=row[10] + 1,
        lease_token=uuid.uuid4().hex,
        accepted_at=row[11],
        max_in_flight=row[_MAX_IN_FLIGHT] or rules.max_in_flight,
    )


def _lease(
    conn: sqlite3.Connection, claims: list[ClaimedDelivery], now: float, margin: float
) -> None:
    conn.executemany(
        "UPDATE deliveries SET lease_token = ?, attempt_count = ?, next_attempt_at = ?, "
        "updated_at = ? WHERE id = ?",
        [
            (c.lease_token, c.attempt, now + c.timeout_seconds + margin, now, c.delivery_id)
            for c in claims
        ],
    )


def _start_probes(
    conn: sqlite3.Connection,
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
        conn.execute(
            "UPDATE endpoints SET circuit_state = ?, consecutive_failures = ?, "
            "paused_until = ?, failing_since = ? WHERE id = ?",
            (*health_values(probing), item.endpoint_id),
        )
