"""The live delivery stream: every change of a delivery's state as Server-Sent Events.

Changes are read from the store's change feed, so a client that reconnects with the last id it
saw (``Last-Event-ID``) gets everything it missed that is still retained. New changes made in
this process wake waiting streams at once; changes made by other instances sharing the
database are picked up by a poll every :data:`POLL_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import orjson

from hookline.models import AcceptedEvent, AttemptVerdict, DeliveryChange, NewEvent
from hookline.store.base import ChangeFilter, Store

POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 15.0
PAGE_SIZE = 500


class ChangeSignal:
    """Wakes every waiting stream when this process records a change (an observer)."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        # Wake the current waiters, then re-arm: each waiter clears nothing of its own.
        self._changed.set()
        self._changed = asyncio.Event()

    def next_change(self) -> asyncio.Event:
        """The event the next notification sets; take it *before* reading the feed, so a
        change committed between the read and the wait still wakes the reader."""
        return self._changed

    def on_accepted(self, events: Sequence[NewEvent], accepted: Sequence[AcceptedEvent]) -> None:
        self.notify()

    def on_verdict(self, verdict: AttemptVerdict) -> None:
        self.notify()


def render_change(change: DeliveryChange, iso: Callable[[float | None], str | None]) -> bytes:
    """One SSE message: the change number as its id, the change as JSON data."""
    data = {
        "seq": change.seq,
        "change": str(change.change),
        "delivery_id": change.delivery_id,
        "event_id": change.event_id,
        "endpoint_id": change.endpoint_id,
        "event_type": change.event_type,
        "status": str(change.status),
        "attempt": change.attempt,
        "detail": change.detail,
        "next_attempt_at": iso(change.next_attempt_at),
        "at": iso(change.at),
    }
    return b"id: %d\nevent: delivery\ndata: %s\n\n" % (change.seq, orjson.dumps(data))


async def stream_changes(
    store: Store,
    signal: ChangeSignal,
    after_seq: int,
    where: ChangeFilter,
    iso: Callable[[float | None], str | None],
    stopping: Callable[[], bool],
) -> AsyncIterator[bytes]:
    """Yield SSE messages for every change after ``after_seq``, then for each new one."""
    # Tell EventSource clients how soon to reconnect after a drop.
    yield b"retry: 2000\n\n"
    loop = asyncio.get_running_loop()
    last_sent = loop.time()
    while not stopping():
        changed = signal.next_change()
        changes = await store.changes_since(after_seq, where, PAGE_SIZE)
        for change in changes:
            yield render_change(change, iso)
            after_seq = change.seq
        if changes:
            last_sent = loop.time()
            if len(changes) == PAGE_SIZE:
                continue
        elif loop.time() - last_sent >= HEARTBEAT_SECONDS:
            yield b": heartbeat\n\n"
            last_sent = loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), POLL_SECONDS)


def parse_position(last_event_id: str | None, since: int | None, latest: int) -> int:
    """Where a stream starts: after Last-Event-ID, else after ``since``, else at the end."""
    if last_event_id and last_event_id.strip().isdigit():
        return int(last_event_id)
    if since is not None:
        return since
    return latest
