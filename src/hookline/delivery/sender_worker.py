"""A sending process: runs an :class:`HttpSender` for the main process over an inherited socket.

Started by :class:`hookline.delivery.process_sender.ProcessSender` as
``python -m hookline.delivery.sender_worker FD CONFIG``, never by hand. It lives exactly as
long as the socket: when the main process closes it (shutdown) or dies, this process stops.
It ignores SIGINT and SIGTERM, which a terminal or a service manager sends to the whole
process group, so that the main process can let attempts in flight finish before closing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any

import uvloop

from hookline.delivery.sender import HttpSender
from hookline.delivery.wire import (
    AttemptMessage,
    FrameWriter,
    claim_from_message,
    read_frame,
    result_message,
)
from hookline.destinations import DestinationPolicy
from hookline.runtime import tune_garbage_collector


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a sending process needs from the main process's settings."""

    allowed_networks: tuple[str, ...]
    https_only: bool
    max_connections: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "allowed_networks": list(self.allowed_networks),
                "https_only": self.https_only,
                "max_connections": self.max_connections,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        values: dict[str, Any] = json.loads(text)
        return cls(
            tuple(values["allowed_networks"]), values["https_only"], values["max_connections"]
        )

    def destinations(self) -> DestinationPolicy:
        networks = [ipaddress.ip_network(network) for network in self.allowed_networks]
        return DestinationPolicy(networks, https_only=self.https_only)


async def serve(sock: socket.socket, config: WorkerConfig) -> None:
    """Make every attempt that arrives on ``sock`` and answer with its result."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    results = FrameWriter(writer)
    sender = HttpSender(config.destinations(), config.max_connections)
    await sender.start()
    attempts: set[asyncio.Task[None]] = set()

    async def attempt(message: AttemptMessage) -> None:
        request_id, claim = claim_from_message(message)
        result = await sender.send(claim)
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
