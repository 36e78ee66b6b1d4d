"""A real local HTTP receiver for tests: records every request and answers as scripted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


class Receiver:
    """An aiohttp server on 127.0.0.1; ``script`` decides the reply for each request."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: Callable[[Received], Reply] = lambda _: Reply()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._arrivals = asyncio.Condition()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = Received(request.path, dict(request.headers), await request.read(), time.time())
        async with self._arrivals:
            self.received.append(record)
            self._arrivals.notify_all()
        reply = self.script(record)
        if reply.delay_seconds:
            await asyncio.sleep(reply.delay_seconds)
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least ``count`` requests arrived; fail the test after ``timeout``."""
        async with asyncio.timeout(timeout):
            async with self._arrivals:
                await self._arrivals.wait_for(lambda: len(self.received) >= count)
        return self.received
