"""A sending process: runs an :class:`HttpSender` for the main process over an inherited socket.

Started by :class:`hookline.delivery.process_sender.ProcessSender` as
``python -m hookline.delivery.sender_worker FD CONFIG``, never by hand. It lives exactly as
long as the socket: when the main process closes it (shutdown) or dies, this process stops.
It ignores SIGINT and SIGTERM, which a terminal or a service manager sends to the whole
process group, so that the main process can let attempts in flight finish before closing.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
import traceback

import uvloop

from hookline.delivery.http_sender import HttpSender
from hookline.delivery.wire import (
    AttemptMessage,
    FrameWriter,
    WorkerConfig,
    claim_from_message,
    read_frame,
    result_message,
)
from hookline.models import AttemptOutcome, AttemptResult
from hookline.runtime import tune_garbage_collector


async def serve(sock: socket.socket, config: WorkerConfig) -> None:
    """Make every attempt that arrives on ``sock`` and answer with its result."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    results = FrameWriter(writer)
    sender = HttpSender(config.destinations(), config.max_connections)
    await sender.start()
    attempts: set[asyncio.Task[None]] = set()

    async def attempt(message: AttemptMessage) -> None:
        request_id, claim = claim_from_message(message)
        try:
            result = await sender.send(claim)
        except Exception as exc:
            # A bug here must not leave the main process waiting for an answer forever.
            traceback.print_exc()
            result = AttemptResult(
                AttemptOutcome.CONNECTION_ERROR,
                time.time(),
                0.0,
                error=f"The sending process failed: {type(exc).__name__}: {exc}"[:1000],
            )
        results.put(result_message(request_id, result))

    try:
        while (frame := await read_frame(reader)) is not None:
            for message in frame:
                task = asyncio.create_task(attempt(message))
                attempts.add(task)
                task.add_done_callback(attempts.discard)
    finally:
        # The main process is gone or has stopped waiting: nobody will read these results.
        for task in attempts:
            task.cancel()
        await asyncio.gather(*attempts, return_exceptions=True)
        await sender.close()
        results.close()


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd, config = int(argv[0]), WorkerConfig.from_json(argv[1])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)
    tune_garbage_collector()
    uvloop.run(serve(sock, config))


if __name__ == "__main__":
    main(sys.argv[1:])
