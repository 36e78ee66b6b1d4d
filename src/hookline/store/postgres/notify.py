"""Waking idle workers in every instance when new work is committed (LISTEN/NOTIFY), and
choosing the one instance that keeps house.

The announcement is sent after the work's own transaction has committed, from a short
transaction of its own, and at most one is in flight per instance: PostgreSQL serializes the
commits of all transactions that NOTIFY, so notifying from inside every ingestion transaction
would make ingestion commit one transaction at a time. Announcements that are lost (an instance
dies between its commit and its NOTIFY, or a listener is reconnecting) cost no work: every
instance still polls at the engine's idle interval.

The listening session is also how instances agree on who purges expired records: whichever
session holds the purge advisory lock keeps house, and when its instance dies, the session ends,
the lock is free, and another instance's listener takes it at its next check.
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
    LOCK_NAMESPACE,
    Database,
    Lock,
)

CHANNEL = "hookline_work"
LISTENER_APPLICATION_NAME = "hookline-listener"
"""How the listening session shows in ``pg_stat_activity``."""
LISTEN_CHECK_SECONDS = 5.0
"""How often the listening connection is checked (a half-open TCP connection says nothing),
and how soon after a housekeeper dies another instance takes over."""
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
        self.keeps_house = False
        """True while this instance's listening session holds the purge lock."""

    @property
    def listening(self) -> bool:
        return self._listening is not None

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
        conn = await asyncpg.connect(
            self._database.url,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={"application_name": LISTENER_APPLICATION_NAME},
        )
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _: closed.set())

        def on_notification(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
            if payload != self._instance:
                wake()

        try:
            await conn.add_listener(CHANNEL, on_notification)
            # Whatever was announced while we were not listening is lost; look once anyway.
            wake()
            while not closed.is_set():
                # Doubles as the check that the connection is alive.
                await self._claim_housekeeping(conn)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closed.wait(), LISTEN_CHECK_SECONDS)
            raise asyncpg.ConnectionDoesNotExistError("the listening connection was closed")
        finally:
            self.keeps_house = False
            if not conn.is_closed():
                conn.terminate()

    async def _claim_housekeeping(self, conn: asyncpg.Connection) -> None:
        if self.keeps_house:
            await conn.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT_SECONDS)
            return
        # A session lock, held for as long as this connection lives; taken once, not stacked.
        self.keeps_house = await conn.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)",
            LOCK_NAMESPACE,
            int(Lock.PURGE),
            timeout=CONNECT_TIMEOUT_SECONDS,
        )
