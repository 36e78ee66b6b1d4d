"""A fast local webhook receiver for load tests.

It speaks just enough HTTP/1.1 to be a fair target: keep-alive, pipelined requests, bodies framed
by Content-Length or chunked encoding, and reads split at any byte. Every POST is answered 200
with an empty body, and the time each webhook first arrived is recorded, keyed by the URL path
and the ``webhook-id`` header, so the load test can measure delivery latency per endpoint.

It can fail a fraction of first attempts (``X-Webhook-Attempt: 1``) with 503, so a run also
exercises the retry path. It normally runs in a child process started by
``webhook_load_test.py`` and is driven over a ``multiprocessing`` pipe; run it on its own with
``python tests/load/receiver.py --port 9000`` to point a hand-started server at it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

LISTEN_HOST = "127.0.0.1"
LISTEN_BACKLOG = 4096
MAX_HEAD_BYTES = 64 * 1024
PRINT_EVERY_SECONDS = 5.0

RESPONSE_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
RESPONSE_OK_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
RESPONSE_UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
RESPONSE_UNAVAILABLE_CLOSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)
RESPONSE_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
RESPONSE_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)
RESPONSE_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BadRequest(Exception):
    """The peer sent something this receiver cannot frame; the connection must be closed."""

    def __init__(self, response: bytes) -> None:
        super().__init__("malformed request")
        self.response = response


@dataclass(slots=True)
class Ledger:
    """What the receiver saw: first successful receipt per (path, webhook id) and the oddities."""

    fail_rate: float = 0.0
    first_ok: dict[tuple[str, str], float] = field(default_factory=dict)
    requests: int = 0
    duplicates: int = 0
    failed_first_attempts: int = 0
    unkeyed: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def reset(self, fail_rate: float) -> None:
        """Forget everything seen so far and start failing first attempts at ``fail_rate``."""
        self.fail_rate = fail_rate
        self.first_ok = {}
        self.requests = 0
        self.duplicates = 0
        self.failed_first_attempts = 0
        self.unkeyed = 0

    def should_fail(self, attempt: bytes | None) -> bool:
        """Whether to answer 503: only first attempts fail, so every delivery can still land."""
        return attempt == b"1" and self.fail_rate > 0.0 and self.rng.random() < self.fail_rate

    def record_success(self, path: str, webhook_id: bytes | None, received_at: float) -> None:
        """Note a 2xx answer; a second 2xx for the same path and id is a duplicate delivery."""
        if webhook_id is None:
            self.unkeyed += 1
            return
        key = (path, webhook_id.decode("latin-1"))
        if key in self.first_ok:
            self.duplicates += 1
        else:
            self.first_ok[key] = received_at

    def summary(self) -> dict[str, Any]:
        """The counters without the per-delivery records, cheap to send often."""
        return {
            "delivered": len(self.first_ok),
            "requests": self.requests,
            "duplicates": self.duplicates,
            "failed_first_attempts": self.failed_first_attempts,
            "unkeyed": self.unkeyed,
        }

    def report(self) -> dict[str, Any]:
        """The counters plus every first-receipt time, for latency maths in the parent."""
        return {**self.summary(), "first_ok": self.first_ok}


@dataclass(slots=True)
class RequestHead:
    """The parts of a request line and headers that this receiver acts on."""

    method: bytes
    path: str
    keep_alive: bool
    content_length: int
    chunked: bool
    expects_continue: bool
    webhook_id: bytes | None
    attempt: bytes | None


def parse_head(head: bytes) -> RequestHead:
    """Parse a request head (without its blank line); raise BadRequest if it cannot be framed."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise BadRequest(RESPONSE_BAD_REQUEST)
    method, target, version = parts

    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise BadRequest(RESPONSE_BAD_REQUEST)
        headers[name.strip().lower()] = value.strip()

    connection = headers.get(b"connection", b"").lower()
    # HTTP/1.1 connections persist unless told otherwise; HTTP/1.0 ones only on request.
    if version == b"HTTP/1.1":
        keep_alive = b"close" not in connection
    else:
        keep_alive = b"keep-alive" in connection

    chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
    try:
        content_length = 0 if chunked else int(headers.get(b"content-length", b"0"))
    except ValueError as exc:
        raise BadRequest(RESPONSE_BAD_REQUEST) from exc
    if content_length < 0:
        raise BadRequest(RESPONSE_BAD_REQUEST)

    return RequestHead(
        method=method,
        path=target.split(b"?", 1)[0].decode("latin-1"),
        keep_alive=keep_alive,
        content_length=content_length,
        chunked=chunked,
        expects_continue=headers.get(b"expect", b"").lower() == b"100-continue",
        webhook_id=headers.get(b"webhook-id"),
        attempt=headers.get(b"x-webhook-attempt"),
    )


def chunked_body_end(buffer: bytearray, start: int) -> int | None:
    """Where a chunked body beginning at ``start`` ends, or None while it is incomplete."""
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size_field = bytes(buffer[position:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError as exc:
            raise BadRequest(RESPONSE_BAD_REQUEST) from exc
        position = line_end + 2
        if size == 0:
            break
        position += size + 2
        if position > len(buffer):
            return None

    # Trailer fields may follow the last chunk; the body ends at the first empty line.
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        if line_end == position:
            return line_end + 2
        position = line_end + 2


class ReceiverProtocol(asyncio.Protocol):
    """One client connection: frames requests out of the byte stream and answers each in order."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending_head: RequestHead | None = None
        self.body_start = 0
        self.continue_sent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        # One clock reading per read: every request completed by these bytes arrived now.
        received_at = time.time()
        self.buffer += data
        responses: list[bytes] = []
        try:
            keep_open = self.answer_complete_requests(received_at, responses)
        except BadRequest as exc:
            responses.append(exc.response)
            keep_open = False

        assert self.transport is not None
        if responses:
            self.transport.write(b"".join(responses))
        if not keep_open:
            self.transport.close()

    def answer_complete_requests(self, received_at: float, responses: list[bytes]) -> bool:
        """Answer every whole request in the buffer; False when the connection should close."""
        while True:
            if self.pending_head is None and not self.take_head(responses):
                return True
            head = self.pending_head
            assert head is not None

            body_end = self.body_end(head)
            if body_end is None:
                return True
            del self.buffer[:body_end]
            self.pending_head = None
            self.continue_sent = False

            responses.append(self.answer(head, received_at))
            if not head.keep_alive:
                return False

    def take_head(self, responses: list[bytes]) -> bool:
        """Parse the next request head if all of it has arrived."""
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise BadRequest(RESPONSE_HEAD_TOO_LARGE)
            return False
        head = parse_head(bytes(self.buffer[:head_end]))
        self.pending_head = head
        self.body_start = head_end + 4
        if head.expects_continue and not self.continue_sent:
            responses.append(RESPONSE_CONTINUE)
            self.continue_sent = True
        return True

    def body_end(self, head: RequestHead) -> int | None:
        """Offset just past the pending request's body, or None while it is incomplete."""
        if head.chunked:
            return chunked_body_end(self.buffer, self.body_start)
        end = self.body_start + head.content_length
        return end if end <= len(self.buffer) else None

    def answer(self, head: RequestHead, received_at: float) -> bytes:
        """Record one complete request and choose its response."""
        ledger = self.ledger
        if head.method != b"POST":
            return RESPONSE_OK if head.keep_alive else RESPONSE_OK_CLOSE

        ledger.requests += 1
        if ledger.should_fail(head.attempt):
            ledger.failed_first_attempts += 1
            return RESPONSE_UNAVAILABLE if head.keep_alive else RESPONSE_UNAVAILABLE_CLOSE
        ledger.record_success(head.path, head.webhook_id, received_at)
        return RESPONSE_OK if head.keep_alive else RESPONSE_OK_CLOSE


async def start_listening(ledger: Ledger, port: int) -> asyncio.Server:
    """Bind the receiver on 127.0.0.1; port 0 picks a free one."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: ReceiverProtocol(ledger),
        LISTEN_HOST,
        port,
        backlog=LISTEN_BACKLOG,
        reuse_address=True,
    )


def install_fast_loop() -> None:
    """Use uvloop when it is installed: the receiver must not be the slowest party."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def pin_to_core(core: int | None) -> int | None:
    """Pin this process to one CPU so its cost is visible and bounded; return that CPU."""
    if core is None:
        return None
    os.sched_setaffinity(0, {core})
    return core


def listening_port(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


def settle(future: asyncio.Future[None]) -> None:
    """Resolve a stop signal once, however many times it is raised."""
    if not future.done():
        future.set_result(None)


def handle_command(ledger: Ledger, command: tuple[Any, ...]) -> tuple[bool, Any]:
    """Carry out one request from the parent; the flag is False when the receiver should stop."""
    name = command[0]
    if name == "summary":
        return True, ledger.summary()
    if name == "report":
        return True, ledger.report()
    if name == "reset":
        ledger.reset(float(command[1]))
        return True, "ok"
    if name == "stop":
        return False, "stopping"
    return True, f"unknown command {name!r}"


async def serve_parent(conn: Connection, port: int, core: int | None, fail_rate: float) -> None:
    """Serve HTTP until the parent says stop or goes away, answering its commands meanwhile."""
    ledger = Ledger(fail_rate=fail_rate)
    server = await start_listening(ledger, port)
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def on_command() -> None:
        # The loop may have made the pipe non-blocking when it started watching it; a report
        # of many thousand receipts must still go out whole.
        os.set_blocking(conn.fileno(), True)
        try:
            command = conn.recv()
        except (EOFError, OSError):
            # The parent died; a receiver nobody reads from has no reason to live.
            settle(stopped)
            return
        keep_running, answer = handle_command(ledger, command)
        conn.send(answer)
        if not keep_running:
            settle(stopped)

    loop.add_reader(conn.fileno(), on_command)
    conn.send(("ready", listening_port(server), core))
    try:
        await stopped
    finally:
        loop.remove_reader(conn.fileno())
        server.close()


def run_child(conn: Connection, port: int, core: int | None, fail_rate: float) -> None:
    """Entry point of the receiver process started by the load test."""
    # Ctrl-C goes to the whole process group; the parent decides when the receiver stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pinned = pin_to_core(core)
    install_fast_loop()
    asyncio.run(serve_parent(conn, port, pinned, fail_rate))
    conn.close()


async def serve_standalone(port: int, fail_rate: float) -> None:
    """Serve until interrupted, printing the counters every few seconds."""
    ledger = Ledger(fail_rate=fail_rate)
    server = await start_listening(ledger, port)
    print(f"receiver listening on http://{LISTEN_HOST}:{listening_port(server)}/", flush=True)

    loop = asyncio.get_running_loop()
    stopped = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, settle, stopped)

    try:
        while not stopped.done():
            await asyncio.wait([stopped], timeout=PRINT_EVERY_SECONDS)
            print(ledger.summary(), flush=True)
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fast local webhook receiver for load tests.")
    parser.add_argument("--port", type=int, default=9000, help="port on 127.0.0.1 (0 = any)")
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, help="fraction of first attempts answered 503"
    )
    parser.add_argument("--core", type=int, default=None, help="CPU to pin the receiver to")
    args = parser.parse_args()

    pinned = pin_to_core(args.core)
    if pinned is not None:
        print(f"receiver pinned to CPU {pinned}", flush=True)
    install_fast_loop()
    asyncio.run(serve_standalone(args.port, args.fail_rate))


if __name__ == "__main__":
    main()
