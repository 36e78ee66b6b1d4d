"""Waking idle workers in every instance when new work is committed (LISTEN/NOTIFY).

The announcement is sent after the work's own transaction has committed, from a short
transaction of its own, and at most one is in flight per instance: PostgreSQL serializes the
commits of all transactions that NOTIFY, so notifying from inside every ingestion transaction
would make ingestion commit one transaction at a time. Announcements that are lost (an instance
dies between its commit and its NOTIFY, or a listener is reconnecting) cost no work: every
instance still polls at the engine's idle interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from hookline.errors import StoreUnavailable
from hookline.store.postgres.connection import (
    CONNECT_TIMEOUT_SECONDS,
    DRIVER_ERRORS,
    Database,
)

CHANNEL = "hookline_work"
LISTEN_CHECK_SECONDS = 5.0
"""How often the listening connection is checked; a half-open TCP connection says nothing."""
RECONNECT_PAUSE_SECONDS = 1.0

log = structlog.get_logger(__name__)


class WorkSignal:
    """Announces new work to the other instances and listens for theirs."""

    def __init__(self, database: Database) -> None:
        self._database = database
        # The announcement carries this, so an instance does not wake itself a second time.
        self._instance = secrets.token_hex(8)
        self._announcing: asyncio.Task[None] | None = None
        self._announce_again = False
        self._listening: asyncio.Task[None] | None = None

    def announce(self) -> None:
        """Tell every other instance that work became due; returns at once."""
        if self._announcing is not None and not self._announcing.done():
            self._announce_again = True
            return
        self._announcing = asyncio.create_task(self._notify(), name="hookline-notify")

    def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` on each announcement from another instance, until :meth:`close`."""
        if self._listening is None:
            self._listening = asyncio.create_task(self._listen(wake), name="hookline-listen")

    async def close(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listening
            self._listening = None
        if self._announcing is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcing

    async def _notify(self) -> None:
        while True:
            self._announce_again = False
            try:
                async with self._database.connection() as conn:
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, self._instance)
            except StoreUnavailable as exc:
                log.debug("work announcement not sent", action="notify_failed", error=str(exc))
                return
            if not self._announce_again:
                return

    async def _listen(self, wake: Callable[[], None]) -> None:
        while True:
            try:
                await self._listen_once(wake)
            except DRIVER_ERRORS as exc:
                log.warning(
                    "lost the PostgreSQL connection that listens for new work, reconnecting",
                    action="listen_reconnect",
                    error=str(exc) or type(exc).__name__,
                )
            await asyncio.sleep(RECONNECT_PAUSE_SECONDS)

    async def _listen_once(self, wake: Callable[[], None]) -> None:
        # A connection of its own: LISTEN belongs to a session, and the pool resets sessions.
        conn = await asyncpg.connect(self._database.url, timeout=CONNECT_TIMEOUT_SECONDS)
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _: closed.set())

        def on_notification(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            if payload != self._instance:
                wake()

        try:
            await conn.add_listener(CHANNEL, on_notification)
            # Whatever was announced while we were not listening is lost; look once anyway.
            wake()
            while not closed.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closed.wait(), LISTEN_CHECK_SECONDS)
                if not closed.is_set():
                    await conn.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT_SECONDS)
            raise asyncpg.ConnectionDoesNotExistError("the listening connection was closed")
        finally:
            if not conn.is_closed():
                conn.terminate()
