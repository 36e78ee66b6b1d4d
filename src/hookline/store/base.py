"""The interface every store implements, and the small value types its methods take.

The store is the source of truth: an event counts as accepted only once it and its deliveries
are committed, and every change of a delivery's state is fenced by the lease that was granted
when it was claimed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hookline.errors import InvalidInput
from hookline.models import (
    AcceptedEvent,
    Attempt,
    AttemptVerdict,
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
)
from hookline.protection.breaker import BreakerPolicy


@dataclass(frozen=True, slots=True)
class ClaimRules:
    """The limits a claim applies besides each endpoint's own settings."""

    max_in_flight: int
    """Attempts in flight per endpoint in one process, unless the endpoint sets its own."""
    lease_margin_seconds: float
    global_rate_limit: float | None = None
    """Attempts per second across all endpoints and instances; None for no limit."""
    global_rate_burst: float | None = None
    claim_ahead: int = 0
    """Deliveries per endpoint a process may hold claimed beyond that cap (never more than the
    cap itself), ready to start the moment an attempt finishes; ``busy`` counts those too."""


@dataclass(frozen=True, slots=True)
class HealthRules:
    """How attempt outcomes move an endpoint's circuit and when it is disabled."""

    breaker: BreakerPolicy
    disable_after_seconds: float | None
    """Disable an endpoint that failed every attempt for this long; None never does."""
    dead_letter_seconds: float
    """How long the dead letters of a disabled endpoint's pending deliveries are kept."""


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    event_id: str | None = None
    endpoint_id: str | None = None
    status: DeliveryStatus | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    endpoint_id: str | None = None
    event_type: str | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A caller's key for a request, with a hash of the request it first came with."""

    key: str
    request_hash: str


@dataclass(frozen=True, slots=True)
class ChangeFilter:
    endpoint_id: str | None = None
    event_type: str | None = None


@dataclass(frozen=True, slots=True)
class Purged:
    dead_letters: int
    idempotency_keys: int
    changes: int = 0


class Store(Protocol):
    """Durable storage for endpoints, events, deliveries, attempts and the dead-letter queue."""

    description: str
    """Where the data lives, for the startup log line."""

    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None:
        """Finish pending writes and disconnect."""

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers now."""

    async def watch_for_work(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever another process adds due work, until :meth:`close`.

        Returns at once; watching goes on in the background and survives reconnects. Work this
        process adds is its own to announce (the intake wakes the engine directly).
        """

    # Endpoints

    async def create_endpoint(self, endpoint: Endpoint) -> Endpoint: ...

    async def get_endpoint(self, endpoint_id: str) -> Endpoint:
        """Return the endpoint or raise :class:`NotFound`."""

    async def list_endpoints(self, cursor: str | None, limit: int) -> Page: ...

    async def update_endpoint(
        self, endpoint_id: str, changes: dict[str, Any], now: float
    ) -> Endpoint:
        """Apply ``changes`` (field name to new value) and return the endpoint as stored."""

    async def delete_endpoint(self, endpoint_id: str, now: float) -> None:
        """Delete the endpoint; its pending deliveries fail and its dead letters go with it."""

    # Events and fan-out

    async def accept_events(
        self, events: Sequence[NewEvent], idempotency: IdempotencyKey | None, now: float
    ) -> list[AcceptedEvent]:
        """Store the events and one pending delivery per matching enabled endpoint, atomically.

        A repeat of an idempotency key with the same request hash returns what the first request
        created; with another hash it raises :class:`Conflict`, as does an event id that exists.
        """

    async def find_repeat(self, idempotency: IdempotencyKey) -> list[AcceptedEvent] | None:
        """Return what the first request with this key created, or None for a new key.

        Raises :class:`Conflict` when the key came with a different request hash.
        """

    async def get_event(self, event_id: str) -> tuple[Event, list[Delivery]]: ...

    # The delivery engine

    async def claim_due(
        self, now: float, limit: int, busy: Mapping[str, int], rules: ClaimRules
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries that their endpoints may receive now.

        An endpoint may receive one only while it is enabled, not paused (open circuit or a
        receiver's Retry-After), below its in-flight cap (``busy`` counts this process's
        attempts in flight per endpoint) and within its rate limit and the global one. An open
        circuit whose cool-down is over lets one probe through and turns half-open. Endpoints
        that may not receive are passed over, so their backlog cannot crowd out the others.

        Each claim counts as an attempt and carries a fresh lease token; the lease lasts the
        endpoint's timeout plus ``rules.lease_margin_seconds``, after which another worker may
        take the delivery over.
        """

    async def record_verdicts(
        self, verdicts: Sequence[AttemptVerdict], rules: HealthRules
    ) -> Recorded:
        """Write each attempt, its delivery's new state and its endpoint's health, atomically.

        A verdict whose lease had been taken over is discarded, so that a late result never
        overwrites newer state. Endpoint health follows :mod:`hookline.protection.breaker`; an
        endpoint that answered 410 Gone, or has failed every attempt for
        ``rules.disable_after_seconds``, is disabled and its pending deliveries go to the DLQ.
        """

    async def release(self, claims: Sequence[ClaimedDelivery], now: float) -> None:
        """Give back leases that were never attempted, without charging an attempt."""

    async def next_due_at(self) -> float | None:
        """Return when the earliest pending delivery becomes due, or None if none is pending."""

    async def count_pending(self) -> int: ...

    # Tracking

    async def endpoint_health(self, endpoint_id: str, since: float, now: float) -> HealthWindow:
        """Summarize the attempts to the endpoint that started at or after ``since``."""

    async def get_delivery(self, delivery_id: str) -> tuple[Delivery, list[Attempt]]: ...

    async def list_deliveries(
        self, where: DeliveryFilter, cursor: str | None, limit: int
    ) -> Page: ...

    async def retry_delivery(self, delivery_id: str, now: float) -> Delivery:
        """Make a pending delivery due now, or start a fresh round for a finished one."""

    # Dead-letter queue

    async def list_dead_letters(
        self, where: DeadLetterFilter, cursor: str | None, limit: int
    ) -> Page: ...

    async def get_dead_letter(self, dead_letter_id: str) -> DeadLetter: ...

    async def replay_dead_letter(self, dead_letter_id: str, now: float) -> Delivery:
        """Start a fresh round of attempts for the same event and endpoint; drop the message."""

    async def replay_dead_letters(
        self, where: DeadLetterFilter, limit: int, now: float
    ) -> list[Delivery]: ...

    async def delete_dead_letter(self, dead_letter_id: str) -> None: ...

    # The change feed

    async def changes_since(
        self, after_seq: int, where: ChangeFilter, limit: int
    ) -> list[DeliveryChange]:
        """Return up to ``limit`` changes numbered above ``after_seq``, oldest first.

        A change is visible here only once every change numbered below it is visible too, so
        a reader that remembers the last number it saw never skips one.
        """

    async def latest_change_seq(self) -> int:
        """Return the number of the newest change, or 0 when there is none."""

    # Housekeeping

    async def purge_expired(
        self, now: float, idempotency_cutoff: float, changes_cutoff: float
    ) -> Purged: ...

    async def stats(self, now: float) -> Stats: ...


def encode_cursor(last_id: str) -> str:
    """Return an opaque cursor that resumes a listing after ``last_id``."""
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """Return the id a cursor resumes after, or raise :class:`InvalidInput` for a bad one."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        # Strict decoding: a cursor with stray characters must not quietly mean "start over".
        decoded = base64.b64decode(padded.encode(), altchars=b"-_", validate=True).decode()
        if not decoded:
            raise ValueError("empty cursor")
        return decoded
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(
            "The cursor is not one this API returned; pass next_cursor from the previous page."
        ) from exc
