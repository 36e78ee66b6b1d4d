"""Several server processes on one PostgreSQL database: sharing the work, surviving a kill -9
of one of them, and surviving PostgreSQL itself restarting."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from tests.conftest import API_KEY
from tests.postgres import pg_ctlcluster, postgres_url, require_postgres  # noqa: F401
from tests.processes import ServerProcess

EVENTS = 5_000
BATCH_EVENTS = 100
INGEST_TASKS = 3
KILL_AFTER_BATCHES = 20
WORKERS_PER_INSTANCE = 20
# A sanity bound, not a target: see the assertion. A bug that delivered twice as a rule would
# show hundreds or thousands here, and the overlap check catches concurrent double sends.
DUPLICATES_BOUND = EVENTS // 20
ENDPOINT_TIMEOUT_SECONDS = 2
LEASE_MARGIN_SECONDS = 3
RECEIVER_DELAY_SECONDS = 0.002
DRAIN_SECONDS = 90.0
RESEND_PAUSE_SECONDS = 0.2
RESEND_SECONDS = 60.0

RESTART_EVENTS = 1_500
RESTART_BATCH_EVENTS = 25
DOWN_CHECK_SECONDS = 15.0

pytestmark = pytest.mark.slow


@dataclass
class Window:
    started: float
    finished: float
    event_id: str


class WindowReceiver:
    """Answers 200 after a short delay, noting when each request for a delivery began and ended,
    so that two requests for one delivery in flight at the same time can be seen."""

    def __init__(self) -> None:
        self.windows: dict[str, list[Window]] = defaultdict(list)
        self.event_ids: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
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

    async def _handle(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        await request.read()
        await asyncio.sleep(RECEIVER_DELAY_SECONDS)
        event_id = request.headers["webhook-id"]
        window = Window(started, time.monotonic(), event_id)
        self.windows[request.headers["X-Webhook-Delivery"]].append(window)
        self.event_ids.append(event_id)
        return web.Response(text="ok")

    def duplicates(self) -> int:
        return sum(count - 1 for count in Counter(self.event_ids).values())

    def overlapping(self) -> list[str]:
        """Deliveries that had two requests in flight at once: two instances sending them."""
        found = []
        for delivery_id, windows in self.windows.items():
            ordered = sorted(windows, key=lambda w: w.started)
            if any(b.started < a.finished for a, b in itertools.pairwise(ordered)):
                found.append(delivery_id)
        return found


@pytest.fixture
async def window_receiver() -> AsyncIterator[WindowReceiver]:
    running = WindowReceiver()
    await running.start()
    yield running
    await running.stop()


def instance(tmp_path: Path, number: int, database_url: str) -> ServerProcess:
    return ServerProcess(
        tmp_path / f"instance-{number}",
        DATABASE_URL=database_url,
        LOG_LEVEL="WARNING",
        WEBHOOK_WORKER_COUNT=str(WORKERS_PER_INSTANCE),
        WEBHOOK_ENDPOINT_CONCURRENCY=str(WORKERS_PER_INSTANCE),
        WEBHOOK_LEASE_MARGIN_SECONDS=str(LEASE_MARGIN_SECONDS),
        WEBHOOK_MAX_QUEUE_SIZE="0",
    )


class Client:
    """Sends batches to whichever instance is alive, resending with the same Idempotency-Key
    until one answers 202, as a client behind a load balancer would."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.servers = servers
        self.accepted: set[str] = set()
        self.deliveries = 0
        self.unavailable_answers = 0
        self._http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def close(self) -> None:
        await self._http.close()

    async def send(self, number: int, events: list[dict[str, Any]]) -> None:
        give_up_at = time.monotonic() + RESEND_SECONDS
        attempt = 0
        while time.monotonic() < give_up_at:
            server = self.servers[(number + attempt) % len(self.servers)]
            attempt += 1
            if server.process is None or server.process.poll() is not None:
                continue
            try:
                async with self._http.post(
                    server.base_url + "/api/v1/events/batch",
                    json={"events": events},
                    headers={"Idempotency-Key": f"batch-{number}"},
                ) as response:
                    body = await response.json()
                    if response.status == 202:
                        for item in body["events"]:
                            self.accepted.add(item["id"])
                            self.deliveries += len(item["deliveries"])
                        return
                    assert response.status == 503, body
                    assert body["error"]["code"] in ("store_unavailable", "queue_full"), body
                    self.unavailable_answers += 1
            except (aiohttp.ClientError, TimeoutError):
                pass  # that instance is gone or unreachable; another one takes the batch
            await asyncio.sleep(RESEND_PAUSE_SECONDS)
        raise AssertionError(f"batch {number} was not accepted within {RESEND_SECONDS} s")


async def create_endpoint(server: ServerProcess, url: str) -> None:
    status, body = await server.request(
        "POST",
        "/api/v1/webhooks",
        json={"url": url, "events": ["*"], "timeout": ENDPOINT_TIMEOUT_SECONDS},
    )
    assert status == 201, body


async def wait_until_delivered(server: ServerProcess, expected: int) -> dict[str, Any]:
    """Wait until the shared store says every delivery was delivered; return its stats."""
    stats: dict[str, Any] = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while True:
                _, stats = await server.request("GET", "/api/v1/stats")
                if stats["delivered"] >= expected and stats["queue_depth"] == 0:
                    return stats
                await asyncio.sleep(0.2)
    raise AssertionError(f"not everything was delivered within {DRAIN_SECONDS} s: {stats}")


def batches(count: int, size: int) -> list[list[dict[str, Any]]]:
    return [
        [{"event_type": "scale.test", "payload": {"n": n}} for n in range(start, start + size)]
        for start in range(0, count, size)
    ]


async def test_three_instances_one_killed__every_event_arrives_and_never_twice_at_once(
    tmp_path: Path,
    window_receiver: WindowReceiver,
    postgres_url: str,  # noqa: F811
) -> None:
    servers = [instance(tmp_path, n, postgres_url) for n in range(3)]
    client = Client(servers)
    try:
        await servers[0].start()  # the first one migrates; the others find the schema ready
        await asyncio.gather(*(server.start() for server in servers[1:]))
        await create_endpoint(servers[0], window_receiver.url)

        queue: asyncio.Queue[tuple[int, list[dict[str, Any]]]] = asyncio.Queue()
        for number, batch in enumerate(batches(EVENTS, BATCH_EVENTS)):
            queue.put_nowait((number, batch))
        sent = 0

        async def ingest() -> None:
            nonlocal sent
            while not queue.empty():
                number, batch = queue.get_nowait()
                await client.send(number, batch)
                sent += 1
                if sent == KILL_AFTER_BATCHES:
                    # Mid-load: work is queued, claimed and in flight on every instance.
                    servers[2].kill()

        started = time.monotonic()
        await asyncio.gather(*(ingest() for _ in range(INGEST_TASKS)))
        stats = await wait_until_delivered(servers[0], client.deliveries)
        elapsed = time.monotonic() - started
    finally:
        await client.close()
        for server in servers:
            server.ensure_stopped()

    duplicates = window_receiver.duplicates()
    overlapping = window_receiver.overlapping()
    report = (
        f"{len(client.accepted)} events accepted, {len(window_receiver.event_ids)} requests "
        f"received, {duplicates} duplicates, {len(overlapping)} deliveries in flight on two "
        f"instances at once, {elapsed:.1f} s; store: {stats}"
    )
    print(report)
    assert len(client.accepted) == EVENTS, report
    assert set(window_receiver.event_ids) == client.accepted, report
    assert overlapping == [], report
    # Only deliveries the killed instance had sent may arrive a second time: those in flight
    # and those answered 2xx whose results were still queued for writing. How many results
    # were queued depends on how slow PostgreSQL was at that moment on this shared machine
    # (19 to 133 seen), so the bound is loose; the figure is reported above either way.
    assert duplicates <= DUPLICATES_BOUND, report


async def test_postgres_restarting_mid_load__nothing_accepted_is_lost(
    tmp_path: Path,
    window_receiver: WindowReceiver,
    postgres_url: str,  # noqa: F811
) -> None:
    servers = [instance(tmp_path, n, postgres_url) for n in range(2)]
    client = Client(servers)
    try:
        for server in servers:
            await server.start()
        await create_endpoint(servers[0], window_receiver.url)

        async def ingest() -> None:
            for number, batch in enumerate(batches(RESTART_EVENTS, RESTART_BATCH_EVENTS)):
                await client.send(number, batch)
                await asyncio.sleep(0.02)  # a steady stream, so the outage falls mid-load

        load = asyncio.create_task(ingest())
        await asyncio.sleep(0.5)
        try:
            await asyncio.to_thread(pg_ctlcluster, "stop", "-m", "fast")
            await expect_unavailable(servers[0])
        finally:
            await asyncio.to_thread(pg_ctlcluster, "start")
        await load
        stats = await wait_until_delivered(servers[1], client.deliveries)
    finally:
        await client.close()
        for server in servers:
            server.ensure_stopped()
        await ensure_postgres_running()

    report = (
        f"{len(client.accepted)} events accepted, {client.unavailable_answers} answers 503 "
        f"while PostgreSQL was down, {window_receiver.duplicates()} duplicates; store: {stats}"
    )
    print(report)
    assert len(client.accepted) == RESTART_EVENTS, report
    assert set(window_receiver.event_ids) == client.accepted, report


async def expect_unavailable(server: ServerProcess) -> None:
    """While the database is down, /health and ingestion answer 503, and the process lives."""
    async with asyncio.timeout(DOWN_CHECK_SECONDS):
        while True:
            health_status, health = await server.request("GET", "/health")
            ingest_status, ingest = await server.request(
                "POST", "/api/v1/events", json={"event_type": "down.test", "payload": {}}
            )
            if health_status == 503 and ingest_status == 503:
                break
            await asyncio.sleep(0.05)
    assert health["store"] == "unavailable", health
    assert ingest["error"]["code"] == "store_unavailable", ingest
    assert server.process is not None and server.process.poll() is None


async def ensure_postgres_running() -> None:
    """Leave PostgreSQL up for the tests that follow, whatever happened here."""
    try:
        await require_postgres()
    except (pytest.skip.Exception, pytest.fail.Exception):
        await asyncio.to_thread(pg_ctlcluster, "start")


async def test_migrate_command_on_postgres__and_a_newer_schema_stops_serve(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOOKLINE_CONFIG_DIR": str(tmp_path)}
    env["DATABASE_URL"] = postgres_url

    migrated = await asyncio.to_thread(hookline, "migrate", env, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "schema is up to date" in migrated.stdout

    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)"
        )
    finally:
        await conn.close()
    refused = await asyncio.to_thread(hookline, "serve", env, tmp_path)

    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert "version 999" in line and "Upgrade hookline" in line


def hookline(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookline", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
