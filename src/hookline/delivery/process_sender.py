"""Sending from child processes, so HTTP work runs on cores the main process cannot use.

A Python process runs its code on one core at a time. With sending in the same process, the
API, the store's writer and every attempt's HTTP work share that core. A :class:`ProcessSender`
starts ``processes`` children (:mod:`hookline.delivery.sender_worker`), each with its own event
loop and aiohttp session, and passes attempts to them over a local socket, in batches. Each
attempt goes to the child with the fewest unanswered, so one busy endpoint can use them all;
every child keeps its own keep-alive connections.

Nothing durable lives in a child: claims, verdicts and the store stay in the main process. A
child that dies takes only its attempts in flight with it; they come back as connection
errors, are retried like any other failed attempt, and a new child is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import sys
import time

import structlog

from hookline.delivery.wire import (
    FrameWriter,
    WorkerConfig,
    attempt_message,
    read_frame,
    result_from_message,
)
from hookline.errors import SenderProcessError
from hookline.models import AttemptOutcome, AttemptResult, ClaimedDelivery

WORKER_MODULE = "hookline.delivery.sender_worker"
RESTART_DELAY_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 5.0
LOST_ATTEMPT_ERROR = (
    "The sending process stopped during the attempt; whether the receiver got the request is "
    "unknown, so it will be retried."
)

log = structlog.get_logger(__name__)


class ProcessSender:
    """Makes attempts in ``processes`` child processes; see the module docstring."""

    def __init__(self, config: WorkerConfig, processes: int) -> None:
        if processes < 1:
            raise ValueError("a ProcessSender needs at least one process")
        self._children = [SendingProcess(config) for _ in range(processes)]

    @property
    def pids(self) -> list[int]:
        """The children's process ids, for tests and diagnostics."""
        return [child.pid for child in self._children if child.pid is not None]

    async def start(self) -> None:
        await asyncio.gather(*(child.start() for child in self._children))

    async def send(self, claim: ClaimedDelivery) -> AttemptResult:
        # The child with the fewest attempts waiting: one busy endpoint still uses them all.
        child = min(self._children, key=SendingProcess.waiting)
        return await child.send(claim)

    def problems(self) -> list[str]:
        down = sum(not child.connected for child in self._children)
        if not down:
            return []
        return [f"{down} of {len(self._children)} sending processes not running; restarting"]

    async def close(self) -> None:
        await asyncio.gather(*(child.close() for child in self._children))


class SendingProcess:
    """One child process, the socket to it, and the attempts waiting for its answers."""

    def __init__(self, config: WorkerConfig) -> None:
        self._config = config
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._frames: FrameWriter | None = None
        self._waiting: dict[int, asyncio.Future[AttemptResult]] = {}
        self._request_ids = itertools.count()
        self._connected = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def waiting(self) -> int:
        """Attempts sent to this child and not answered yet."""
        return len(self._waiting)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        try:
            await self._spawn()
        except OSError as exc:
            raise SenderProcessError(
                f"Could not start a sending process ({exc}); set WEBHOOK_SENDER_PROCESSES=0 "
                "to send from the main process."
            ) from exc
        self._supervisor = asyncio.create_task(self._supervise(), name="hookline-sender-process")

    async def send(self, claim: ClaimedDelivery) -> AttemptResult:
        await self._connected.wait()
        assert self._frames is not None
        request_id = next(self._request_ids)
        answer: asyncio.Future[AttemptResult] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answer
        self._frames.put(attempt_message(request_id, claim))
        try:
            return await answer
        finally:
            self._waiting.pop(request_id, None)

    async def close(self) -> None:
        """Close the socket, which stops the child; kill it if it does not stop in time."""
        if self._supervisor is not None:
            # Stopped first, so it cannot start a replacement while we stop this child.
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._frames is not None:
            self._frames.close()
        if self._process is not None and self._process.returncode is None:
            try:
                await asyncio.wait_for(self._process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self._give_up_waiting()

    async def _spawn(self) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                WORKER_MODULE,
                str(child_end.fileno()),
                self._config.to_json(),
                pass_fds=(child_end.fileno(),),
            )
        except OSError:
            parent_end.close()
            raise
        finally:
            child_end.close()
        self._reader, writer = await asyncio.open_unix_connection(sock=parent_end)
        self._frames = FrameWriter(writer)
        self._connected.set()

    async def _supervise(self) -> None:
        while True:
            await self._read_results()
            # The stream ended, so the child is gone: nobody will answer what is waiting.
            self._connected.clear()
            assert self._frames is not None and self._process is not None
            self._frames.close()
            self._give_up_waiting()
            log.error(
                "sending process exited; starting another",
                action="sender_process_exited",
                pid=self._process.pid,
                exit_code=await self._process.wait(),
            )
            await self._respawn()

    async def _respawn(self) -> None:
        while True:
            await asyncio.sleep(RESTART_DELAY_SECONDS)
            try:
                await self._spawn()
                return
            except OSError as exc:
                log.error(
                    "could not start a sending process; trying again",
                    action="sender_process_failed",
                    error=str(exc),
                )

    async def _read_results(self) -> None:
        assert self._reader is not None, "read only after a successful _spawn()"
        try:
            while (frame := await read_frame(self._reader)) is not None:
                for message in frame:
                    request_id, result = result_from_message(message)
                    answer = self._waiting.get(request_id)
                    if answer is not None and not answer.done():
                        answer.set_result(result)
        except ConnectionError:
            pass  # the same as the end of the stream: the child is gone
        finally:
            self._reader = None

    def _give_up_waiting(self) -> None:
        lost_at = time.time()
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_result(
                    AttemptResult(
                        AttemptOutcome.CONNECTION_ERROR, lost_at, 0.0, error=LOST_ATTEMPT_ERROR
                    )
                )
        self._waiting.clear()
