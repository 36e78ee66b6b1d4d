"""Accepting events: build each body once, apply backpressure, and commit before answering.

Fan-out happens inside the store's transaction (one delivery per enabled endpoint whose
patterns match), so an event is never stored without its deliveries.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from hookline.errors import QueueFull
from hookline.ids import new_id
from hookline.logs import delivery_keys
from hookline.models import AcceptedEvent, NewEvent
from hookline.observers import Observers
from hookline.store.base import IdempotencyKey, Store

PENDING_COUNT_MAX_AGE_SECONDS = 1.0
QUEUE_FULL_RETRY_AFTER_SECONDS = 5

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class EventRequest:
    """One event as the API validated it."""

    event_type: str
    payload: Any
    id: str | None = None


def webhook_body(event_id: str, event_type: str, timestamp: str, payload: Any) -> bytes:
    """Return the JSON body every endpoint receives for this event.

    ``timestamp`` comes from :func:`webhook_timestamp`; a batch's events share one moment, so
    it is formatted once per request.
    """
    return orjson.dumps(
        {"id": event_id, "event": event_type, "timestamp": timestamp, "data": payload}
    )


def webhook_timestamp(created_at: float) -> str:
    """The moment as the body's ``timestamp``: UTC, milliseconds, a ``Z`` suffix."""
    moment = datetime.datetime.fromtimestamp(created_at, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_hash(raw_body: bytes) -> str:
    """Fingerprint a request body, so a reused idempotency key with another body is caught."""
    return hashlib.sha256(raw_body).hexdigest()


class Intake:
    """The one way events enter hookline."""

    def __init__(
        self,
        store: Store,
        max_pending: int,
        on_accepted: Callable[[], None],
        observers: Observers,
    ) -> None:
        self._store = store
        self._max_pending = max_pending
        self._on_accepted = on_accepted
        self._observers = observers
        self._pending_estimate = 0
        self._estimated_at = 0.0

    async def accept(
        self, requests: Sequence[EventRequest], idempotency: IdempotencyKey | None
    ) -> list[AcceptedEvent]:
        """Store the events with their deliveries; return once they are committed."""
        try:
            await self._check_backpressure()
        except QueueFull:
            # A repeat of a request we already accepted adds nothing to the queue: answer it.
            repeat = None if idempotency is None else await self._store.find_repeat(idempotency)
            if repeat is None:
                raise
            self._log_accepted(repeat)
            return repeat
        now = time.time()
        timestamp = webhook_timestamp(now)
        events = [
            NewEvent(
                id=(event_id := request.id or new_id("evt")),
                event_type=request.event_type,
                created_at=now,
                body=webhook_body(event_id, request.event_type, timestamp, request.payload),
            )
            for request in requests
        ]
        accepted = await self._store.accept_events(events, idempotency, now)

        created = sum(len(a.deliveries) for a in accepted if a.created)
        if created:
            self._pending_estimate += created
            self._on_accepted()
        self._observers.on_accepted(events, accepted)
        self._log_accepted(accepted)
        return accepted

    def _log_accepted(self, accepted: list[AcceptedEvent]) -> None:
        for item in accepted:
            log.info(
                "event accepted" if item.created else "event repeated with its idempotency key",
                action="accepted" if item.created else "accepted_again",
                event_id=item.event_id,
                deliveries=len(item.deliveries),
            )
            # A line per delivery would multiply the log by the fan-out, so only at DEBUG.
            if item.created and log.is_enabled_for(logging.DEBUG):
                for delivery in item.deliveries:
                    log.debug("delivery queued", action="queued", **delivery_keys(delivery))

    async def _check_backpressure(self) -> None:
        if self._max_pending == 0:
            return
        now = time.monotonic()
        # Counting pending rows on every request would cost more than the insert itself, so
        # the count is refreshed at most once a second and our own inserts are added to it.
        if now - self._estimated_at > PENDING_COUNT_MAX_AGE_SECONDS:
            self._pending_estimate = await self._store.count_pending()
            self._estimated_at = now
        if self._pending_estimate >= self._max_pending:
            raise QueueFull(
                f"{self._pending_estimate} deliveries are pending, which reaches "
                f"WEBHOOK_MAX_QUEUE_SIZE={self._max_pending}; retry after "
                f"{QUEUE_FULL_RETRY_AFTER_SECONDS} seconds.",
                retry_after_seconds=QUEUE_FULL_RETRY_AFTER_SECONDS,
            )
