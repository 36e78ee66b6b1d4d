"""Fixtures shared by every tier: a real receiver, and a real hookline server on a free port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn

from hookline.api.app import create_app
from hookline.config import Settings, load_settings
from tests.receivers import Receiver

API_KEY = "test-key"
SERVER_START_SECONDS = 10.0

# Fast retries so that exhaustion takes well under a second in tests.
FAST_RETRIES = {
    "retry_initial_delay": 0.05,
    "retry_max_delay": 0.2,
    "retry_multiplier": 2.0,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "database_url": f"sqlite:///{tmp_path}/hookline.db",
        "hookline_config_dir": str(tmp_path / "config"),
        "api_keys": API_KEY,
        "webhook_allowed_networks": "127.0.0.0/8,::1/128",
        "log_level": "WARNING",
        "shutdown_grace_seconds": 2.0,
        # Scenarios that fail on purpose must not trip the breaker unless they test it.
        "circuit_breaker_failure_threshold": 1000,
        **FAST_RETRIES,
    }
    values.update(overrides)
    return load_settings(**values)


class RunningServer:
    """A hookline app served by uvicorn inside the test's event loop, plus a client for it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.service = self.app.state.service
        self.base_url = f"http://127.0.0.1:{settings.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=settings.port, log_config=None, access_log=False
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task: asyncio.Task[None] | None = None
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"})

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(SERVER_START_SECONDS):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        await self.http.close()
        self._server.should_exit = True
        if self._task is not None:
            await self._task

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """Send a request to the API and return the status and the decoded JSON (or None)."""
        async with self.http.request(method, self.base_url + path, **kwargs) as response:
            text = await response.text()
            body = None
            if text and response.content_type == "application/json":
                body = await response.json()
            return response.status, body

    async def create_endpoint(self, url: str, **fields: Any) -> dict[str, Any]:
        status, body = await self.request(
            "POST", "/api/v1/webhooks", json={"url": url, "events": ["*"], **fields}
        )
        assert status == 201, body
        return dict(body)

    async def emit(self, event_type: str = "user.created", payload: Any = None) -> dict[str, Any]:
        status, body = await self.request(
            "POST",
            "/api/v1/events",
            json={"event_type": event_type, "payload": payload or {"n": 1}},
        )
        assert status == 202, body
        return dict(body)

    async def wait_for_delivery(
        self, delivery_id: str, status: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Poll the delivery until it reaches ``status``; fail the test after ``timeout``."""
        async with asyncio.timeout(timeout):
            while True:
                code, body = await self.request("GET", f"/api/v1/deliveries/{delivery_id}")
                assert code == 200, body
                if body["status"] == status:
                    return dict(body)
                await asyncio.sleep(0.02)


ServerFactory = Callable[..., Any]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = Receiver()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start servers with setting overrides; all are stopped when the test ends."""
    started: list[RunningServer] = []

    async def start(**overrides: Any) -> RunningServer:
        server = RunningServer(make_settings(tmp_path, **overrides))
        await server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        await server.stop()


@pytest.fixture(params=[0, 1], ids=["sending-in-process", "sending-from-child"])
async def server_with_each_sender(
    request: pytest.FixtureRequest, start_server: ServerFactory
) -> RunningServer:
    """A server per way of sending: in the main process, and from a child process."""
    running: RunningServer = await start_server(webhook_sender_processes=request.param)
    return running


@pytest.fixture
async def server(start_server: ServerFactory) -> RunningServer:
    running: RunningServer = await start_server()
    return running
