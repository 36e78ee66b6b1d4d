"""Health, readiness and liveness, as a Kubernetes kubelet asks for them: no API key."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import aiohttp
import pytest

from hookline.api.routes import system
from hookline.delivery.process_sender import ProcessSender
from tests.conftest import RunningServer, ServerFactory

PROBES = ("/health", "/ready", "/health/live")


async def probe(server: RunningServer, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(server.base_url + path) as response:
        return response.status, await response.json()


async def test_running_server__every_probe_answers_ok_without_an_api_key(
    server: RunningServer,
) -> None:
    answers = {path: await probe(server, path) for path in PROBES}

    assert answers["/health"] == (
        200,
        {"status": "ok", "store": "ok", "workers": 50, "problems": []},
    )
    assert answers["/ready"] == (200, {"status": "ready", "problems": []})
    assert answers["/health/live"] == (200, {"status": "alive"})


async def test_stopped_workers__not_ready_and_unhealthy_but_still_alive(
    server: RunningServer,
) -> None:
    await server.service.engine.stop(0)

    ready_status, ready = await probe(server, "/ready")
    health_status, health = await probe(server, "/health")
    live_status, _ = await probe(server, "/health/live")

    assert ready_status == 503
    assert ready == {
        "status": "not_ready",
        "problems": ["workers: the delivery engine is not running"],
    }
    assert health_status == 503
    assert health["problems"] == ready["problems"]
    assert health["workers"] == 0
    assert live_status == 200


async def test_sending_process_down__unhealthy_until_it_is_replaced(
    start_server: ServerFactory,
) -> None:
    server = await start_server(webhook_sender_processes=1)
    sender = server.service.engine._sender
    assert isinstance(sender, ProcessSender)
    (pid,) = sender.pids

    os.kill(pid, signal.SIGKILL)
    down = await _wait_for_status(server, 503)
    up = await _wait_for_status(server, 200)

    assert down["problems"] == ["sender: 1 of 1 sending processes not running; restarting"]
    assert up["problems"] == []
    assert sender.pids != [pid]


async def _wait_for_status(server: RunningServer, wanted: int) -> Any:
    async with asyncio.timeout(10):
        while True:
            status, body = await probe(server, "/health")
            if status == wanted:
                return body
            await asyncio.sleep(0.02)


async def test_shutting_down__not_ready_with_the_reason(server: RunningServer) -> None:
    server.service.shutting_down = True

    status, body = await probe(server, "/ready")

    assert status == 503
    assert body["problems"] == ["shutting down"]
    assert (await probe(server, "/health/live"))[0] == 200


async def test_hung_store__not_ready_within_the_timeout_and_says_so(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hung_ping() -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(system, "PROBE_STORE_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(server.service.store, "ping", hung_ping)
    started = time.monotonic()

    status, body = await probe(server, "/ready")

    assert time.monotonic() - started < 2
    assert status == 503
    assert body["problems"] == ["store: no answer within 0.2 s"]
    health_status, health = await probe(server, "/health")
    assert health_status == 503
    assert health["store"] == "unavailable"
    assert (await probe(server, "/health/live"))[0] == 200
