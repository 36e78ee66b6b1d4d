"""A receiver that is up but slow: it holds every request for a set time, then answers 200.

It stands in for a struggling customer endpoint when checking that one slow endpoint does not
hold back the others. Framing and bookkeeping come from ``receiver.py``: each webhook is
recorded when it arrives, and only the answer waits. A held request costs one timer, not a task
or a thread, so hundreds can wait at once. It normally runs in a child process started by
``protection_benchmark.py``; ``python tests/load/slow_receiver.py --port 9001 --delay 10`` runs
it on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import receiver

DEFAULT_DELAY_SECONDS = 10.0


@dataclass(slots=True)
class Holding:
    """How many requests are waiting for their answer now, and the most at any one time."""

    now: int = 0
    peak: int = 0

    def hold(self, count: int) -> None:
        self.now += count
        self.peak = max(self.peak, self.now)

    def release(self, count: int) -> None:
        self.now -= count

    def restart_peak(self) -> None:
        """Begin a new measurement; requests still held from the last one count toward it."""
        self.peak = self.now

    def snapshot(self) -> dict[str, int]:
        return {"holding": self.now, "peak": self.peak}


class DelayedReceiverProtocol(receiver.ReceiverProtocol):
    """The fast receiver's protocol, except that answers leave ``delay_seconds`` late.

    Answers stay in request order on a connection: each read's answers are scheduled after the
    previous read's, with the same delay.
    """

    def __init__(self, ledger: receiver.Ledger, holding: Holding, delay_seconds: float) -> None:
        super().__init__(ledger)
        self.holding = holding
        self.delay_seconds = delay_seconds
        self.held_here = 0
        self.lost = False

    def data_received(self, data: bytes) -> None:
        received_at = time.time()
        self.buffer += data
        responses: list[bytes] = []
        requests_before = self.ledger.requests
        try:
            keep_open = self.answer_complete_requests(received_at, responses)
        except receiver.BadRequest as exc:
            responses.append(exc.response)
            keep_open = False
        if not responses and keep_open:
            return

        held = self.ledger.requests - requests_before
        self.held_here += held
        self.holding.hold(held)
        loop = asyncio.get_running_loop()
        loop.call_later(self.delay_seconds, self.answer_late, b"".join(responses), keep_open, held)

    def answer_late(self, response: bytes, keep_open: bool, held: int) -> None:
        """Send what was held back, unless the client gave up on the connection meanwhile."""
        if self.lost:
            return
        self.held_here -= held
        self.holding.release(held)
        assert self.transport is not None
        self.transport.write(response)
        if not keep_open:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # A client that hung up (a server stopping, a timeout) waits for nothing any more;
        # counting its requests as held until their timers fire would inflate the next peak.
        self.lost = True
        self.holding.release(self.held_here)
        self.held_here = 0


async def start_listening(
    ledger: receiver.Ledger, holding: Holding, port: int, delay_seconds: float
) -> asyncio.Server:
    """Bind on 127.0.0.1; port 0 picks a free one."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: DelayedReceiverProtocol(ledger, holding, delay_seconds),
        receiver.LISTEN_HOST,
        port,
        backlog=receiver.LISTEN_BACKLOG,
        reuse_address=True,
    )


def handle_command(
    ledger: receiver.Ledger, holding: Holding, command: tuple[Any, ...]
) -> tuple[bool, Any]:
    """The fast receiver's commands, plus ``holding``; a reset also restarts the peak."""
    if command[0] == "holding":
        return True, holding.snapshot()
    if command[0] == "reset":
        holding.restart_peak()
    return receiver.handle_command(ledger, command)


async def serve_parent(conn: Connection, core: int | None, delay_seconds: float) -> None:
    """Serve until the parent says stop or goes away, answering its commands meanwhile."""
    ledger = receiver.Ledger()
    holding = Holding()
    server = await start_listening(ledger, holding, 0, delay_seconds)
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def on_command() -> None:
        # Same reason as in receiver.py: a large report must go out whole on a blocking pipe.
        os.set_blocking(conn.fileno(), True)
        try:
            command = conn.recv()
        except (EOFError, OSError):
            receiver.settle(stopped)
            return
        keep_running, answer = handle_command(ledger, holding, command)
        conn.send(answer)
        if not keep_running:
            receiver.settle(stopped)

    loop.add_reader(conn.fileno(), on_command)
    conn.send(("ready", receiver.listening_port(server), core))
    try:
        await stopped
    finally:
        loop.remove_reader(conn.fileno())
        server.close()


def run_child(conn: Connection, core: int | None, delay_seconds: float) -> None:
    """Entry point of the slow receiver process started by the benchmark."""
    # Ctrl-C reaches the whole process group; the parent decides when this process stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pinned = receiver.pin_to_core(core)
    receiver.install_fast_loop()
    asyncio.run(serve_parent(conn, pinned, delay_seconds))
    conn.close()


async def serve_standalone(port: int, delay_seconds: float) -> None:
    """Serve until interrupted, printing how many requests are held every few seconds."""
    ledger = receiver.Ledger()
    holding = Holding()
    server = await start_listening(ledger, holding, port, delay_seconds)
    address = f"http://{receiver.LISTEN_HOST}:{receiver.listening_port(server)}/"
    print(f"slow receiver listening on {address}, answering after {delay_seconds:g} s", flush=True)

    loop = asyncio.get_running_loop()
    stopped = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, receiver.settle, stopped)
    try:
        while not stopped.done():
            await asyncio.wait([stopped], timeout=receiver.PRINT_EVERY_SECONDS)
            print({**ledger.summary(), **holding.snapshot()}, flush=True)
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="A local webhook receiver that answers late.")
    parser.add_argument("--port", type=int, default=9001, help="port on 127.0.0.1 (0 = any)")
    parser.add_argument(
        "--delay", type=float, default=DEFAULT_DELAY_SECONDS, help="seconds before each answer"
    )
    parser.add_argument("--core", type=int, default=None, help="CPU to pin the receiver to")
    args = parser.parse_args()

    receiver.pin_to_core(args.core)
    receiver.install_fast_loop()
    asyncio.run(serve_standalone(args.port, args.delay))


if __name__ == "__main__":
    main()
