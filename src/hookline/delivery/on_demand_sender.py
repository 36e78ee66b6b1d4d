"""Sending in the main process until the load calls for a sending process, then handing over.

A sending process costs about 30 MB of memory and only pays off when sending keeps a core busy.
A quiet server therefore makes its attempts itself; the first second in which it makes
:data:`START_RATE_PER_SECOND` attempts starts a :class:`ProcessSender`, and from the moment it
is up every new attempt goes there. The process then stays: load that came once tends to come
again, and starting it takes a few hundred milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from hookline.delivery.http_sender import HttpSender
from hookline.delivery.process_sender import ProcessSender
from hookline.errors import SenderProcessError
from hookline.models import AttemptResult, ClaimedDelivery

START_RATE_PER_SECOND = 200
"""Attempts within one second that start the sending process."""
RATE_WINDOW_SECONDS = 1.0

log = structlog.get_logger(__name__)


class OnDemandSender:
    """An :class:`HttpSender` here, and a :class:`ProcessSender` once the rate calls for one."""

    def __init__(self, local: HttpSender, start_processes: Callable[[], ProcessSender]) -> None:
        self._local = local
        self._start_processes = start_processes
        self._remote: ProcessSender | None = None
        self._starting: asyncio.Task[None] | None = None
        self._window_started = 0.0
        self._window_attempts = 0

    @property
    def handed_over(self) -> bool:
        """True once attempts go to the sending process."""
        return self._remote is not None

    async def wait_for_hand_over(self) -> bool:
        """Let a hand-over under way finish; say whether attempts now go to the process."""
        if self._starting is not None:
            await asyncio.shield(self._starting)
        return self.handed_over

    async def start(self) -> None:
        await self._local.start()

    async def send(self, claim: ClaimedDelivery) -> AttemptResult:
        if self._remote is not None:
            return await self._remote.send(claim)
        self._count_attempt()
        return await self._local.send(claim)

    def problems(self) -> list[str]:
        remote = [] if self._remote is None else self._remote.problems()
        return self._local.problems() + remote

    async def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self._remote is not None:
            await self._remote.close()
        await self._local.close()

    def _count_attempt(self) -> None:
        now = time.monotonic()
        if now - self._window_started >= RATE_WINDOW_SECONDS:
            self._window_started, self._window_attempts = now, 0
        self._window_attempts += 1
        if self._window_attempts >= START_RATE_PER_SECOND and self._starting is None:
            self._starting = asyncio.create_task(self._hand_over(), name="hookline-hand-over")

    async def _hand_over(self) -> None:
        processes = self._start_processes()
        try:
            await processes.start()
        except SenderProcessError as exc:
            # Sending goes on here; the attempt rate does not depend on the child.
            log.error(str(exc), action="sender_process_failed")
            return
        self._remote = processes
        log.info(
            "attempts now go out from a sending process",
            action="sender_process_started",
            pids=processes.pids,
        )
