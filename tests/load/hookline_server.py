"""The hookline server under test: starting it, feeding it events, reading its peak memory.

Everything here talks to the real ``python -m hookline serve`` process over its HTTP API on
127.0.0.1; nothing reaches into its code, so the figures are what a client would see.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
from load_stats import HOOK_PATH_PREFIX

LOCALHOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
EVENT_TYPE = "load.test"

SERVER_START_SECONDS = 30.0
SERVER_STOP_SECONDS = 20.0
HEALTH_POLL_SECONDS = 0.1
DEFAULT_RETRY_AFTER_SECONDS = 1.0
MAX_RETRY_AFTER_SECONDS = 30.0
MAX_THROTTLED_RESENDS = 200
STDERR_TAIL_BYTES = 4000
BYTES_PER_KB = 1024
BYTES_PER_MB = 1024 * 1024


class LoadTestError(Exception):
    """Something outside the load test stopped the run; the message says what and where."""


class Deadline:
    """The wall-clock budget of the whole run, shared by every phase.

    Every wait in the run checks it, so cutting it short is how a signal stops the run while
    still letting it report what it measured.
    """

    def __init__(self, seconds: float) -> None:
        self.ends_at = time.monotonic() + seconds
        self.reason = f"the --timeout of {seconds:g} s ran out"

    def cut_short(self, reason: str) -> None:
        self.ends_at = time.monotonic()
        self.reason = reason

    def remaining(self) -> float:
        return max(0.0, self.ends_at - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0.0


def webhook_payload(seq: int) -> dict[str, Any]:
    """The small payload every load-test event carries."""
    return {
        "seq": seq,
        "customer": f"cus_{seq:08d}",
        "amount_cents": 1999,
        "currency": "eur",
        "note": "load test event",
    }


def free_port() -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCALHOST, 0))
        port: int = probe.getsockname()[1]
        return port


def server_environment(
    workdir: Path, port: int, api_key: str, options: argparse.Namespace
) -> dict[str, str]:
    """The server's environment: isolated config, this port, local endpoints allowed."""
    config_dir = workdir / "config"
    config_dir.mkdir()
    database_url = options.database_url or f"sqlite:///{workdir / 'hookline.db'}"
    # The source tree goes first so the run measures this checkout, installed or not.
    python_path = os.pathsep.join(
        filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")])
    )
    return {
        **os.environ,
        "PYTHONPATH": python_path,
        "DATABASE_URL": database_url,
        "HOST": LOCALHOST,
        "PORT": str(port),
        "API_KEYS": api_key,
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "LOG_LEVEL": "WARNING",
        "WEBHOOK_MAX_QUEUE_SIZE": "0",
        # As many attempts in flight, overall and to one endpoint, as the ceiling sender has
        # connections: the same concurrency towards the receiver on both sides.
        "WEBHOOK_WORKER_COUNT": str(options.concurrency),
        "WEBHOOK_ENDPOINT_CONCURRENCY": str(options.concurrency),
        "HOOKLINE_CONFIG_DIR": str(config_dir),
        **options.server_env_map,
    }


class ServerProcess:
    """``python -m hookline serve`` in a temporary directory, with its output kept in files."""

    def __init__(self, workdir: Path, options: argparse.Namespace) -> None:
        self.port = free_port()
        self.api_key = secrets.token_urlsafe(24)
        self.base_url = f"http://{LOCALHOST}:{self.port}"
        self.stderr_path = workdir / "server.stderr"
        self.stdout_path = workdir / "server.stdout"
        env = server_environment(workdir, self.port, self.api_key, options)
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            # A session of its own keeps Ctrl-C away from it: this script stops it, with SIGTERM.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hookline", "serve"],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def exited(self) -> bool:
        return self.process.poll() is not None

    def stderr_tail(self) -> str:
        data = self.stderr_path.read_bytes()[-STDERR_TAIL_BYTES:]
        return data.decode("utf-8", "replace").strip() or "(empty)"

    def died_error(self, while_doing: str) -> LoadTestError:
        return LoadTestError(
            f"The server exited with code {self.process.returncode} while {while_doing}."
        )

    async def wait_healthy(self, session: aiohttp.ClientSession, deadline: Deadline) -> None:
        """Poll ``GET /health`` until it answers 200; raise if the server dies or never does."""
        give_up_at = time.monotonic() + min(SERVER_START_SECONDS, deadline.remaining())
        last_problem = "no answer yet"
        while time.monotonic() < give_up_at and not deadline.expired():
            if self.exited():
                raise self.died_error("starting")
            try:
                async with session.get(f"{self.base_url}/health") as response:
                    if response.status == 200:
                        return
                    last_problem = f"status {response.status}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                last_problem = type(exc).__name__
            await asyncio.sleep(HEALTH_POLL_SECONDS)
        raise LoadTestError(
            f"GET /health did not answer 200 within the start limit (last: {last_problem})."
        )

    def peak_rss_mb(self) -> tuple[float | None, int]:
        """VmHWM of the server and any children it started, summed, and how many there were."""
        try:
            root = psutil.Process(self.process.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None, 0
        total_kb = 0
        for proc in tree:
            total_kb += read_vm_hwm_kb(proc.pid) or 0
        return (total_kb * BYTES_PER_KB / BYTES_PER_MB if total_kb else None), len(tree)

    def describe_exit(self, code: int | None) -> str:
        """A reader's account of how the server ended, for the log of the run."""
        if code is None:
            return f"did not exit within {SERVER_STOP_SECONDS:.0f} s of SIGTERM and was killed"
        if code < 0:
            return (
                f"ended by signal {signal.Signals(-code).name} (status {code}) instead of "
                "exiting with 0 after its shutdown"
            )
        return f"exited with code {code}"

    async def stop(self) -> int | None:
        """SIGTERM, then wait a bounded time; a server that will not stop is killed (None)."""
        if not self.exited():
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.process.wait, SERVER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait, SERVER_STOP_SECONDS)
            return None


def read_vm_hwm_kb(pid: int) -> int | None:
    """The peak resident set size of a process in kB, from the kernel's own bookkeeping."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


async def register_endpoints(
    session: aiohttp.ClientSession, server: ServerProcess, receiver_port: int, fanout: int
) -> list[str]:
    """Create ``fanout`` endpoints, one receiver path each, subscribed to every event type."""
    endpoint_ids = []
    for index in range(fanout):
        spec = {
            "url": f"http://{LOCALHOST}:{receiver_port}{HOOK_PATH_PREFIX}{index}",
            "events": ["*"],
        }
        async with session.post(
            f"{server.base_url}/api/v1/webhooks", json=spec, headers=server.auth
        ) as response:
            text = await response.text()
            if response.status != 201:
                raise LoadTestError(
                    f"POST /api/v1/webhooks answered {response.status}, not 201: {text[:500]}"
                )
            endpoint_ids.append(orjson.loads(text)["id"])
    return endpoint_ids


@dataclass(slots=True)
class Ingest:
    """What the client saw while handing events to hookline."""

    accepted_at: dict[str, float] = field(default_factory=dict)
    """When each event's 202 arrived, keyed by event id and by each of its delivery ids."""
    events_accepted: int = 0
    deliveries_reported: int = 0
    throttled: int = 0
    first_send_at: float | None = None
    last_accept_at: float | None = None
    max_send_lag_s: float = 0.0

    def mark_sent(self) -> None:
        if self.first_send_at is None:
            self.first_send_at = time.time()

    def record_accepted(self, event: Any, accepted_at: float) -> None:
        """Remember when one event's 202 arrived; raise if the answer lacks the ids."""
        try:
            self.accepted_at[event["id"]] = accepted_at
            deliveries = event.get("deliveries", [])
            for delivery in deliveries:
                self.accepted_at[delivery["id"]] = accepted_at
        except (KeyError, TypeError, AttributeError) as exc:
            raise LoadTestError(
                f"An accepted event lacks its id or its deliveries' ids: {str(event)[:300]}"
            ) from exc
        self.events_accepted += 1
        self.deliveries_reported += len(deliveries)
        self.last_accept_at = accepted_at


def retry_after_seconds(header: str | None) -> float:
    """How long a 503 asks us to wait; the HTTP-date form is rare enough to treat as default."""
    try:
        seconds = float(header) if header is not None else DEFAULT_RETRY_AFTER_SECONDS
    except ValueError:
        seconds = DEFAULT_RETRY_AFTER_SECONDS
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


async def post_until_accepted(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    server: ServerProcess,
    ingest: Ingest,
    deadline: Deadline,
) -> tuple[Any, float]:
    """POST until 202, resending after a 503's Retry-After; return the JSON and when it came."""
    payload = orjson.dumps(body)
    headers = {**server.auth, "content-type": "application/json"}
    for _ in range(MAX_THROTTLED_RESENDS + 1):
        ingest.mark_sent()
        try:
            async with session.post(url, data=payload, headers=headers) as response:
                text = await response.read()
                received_at = time.time()
                if response.status == 202:
                    return orjson.loads(text), received_at
                if response.status != 503:
                    raise LoadTestError(
                        f"POST {url} answered {response.status}, not 202: {text[:500]!r}"
                    )
                wait = retry_after_seconds(response.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise LoadTestError(f"POST {url} failed: {exc!r}") from exc

        ingest.throttled += 1
        if wait >= deadline.remaining():
            break
        await asyncio.sleep(wait)
    raise LoadTestError(
        f"POST {url} was still answered 503 when the resend budget or --timeout ran out."
    )


def accepted_events(answer: Any, sent: int) -> list[dict[str, Any]]:
    """The per-event entries of a batch answer, checked against what was sent."""
    events = answer.get("events") if isinstance(answer, dict) else None
    if not isinstance(events, list) or len(events) != sent:
        raise LoadTestError(
            f"A batch of {sent} events was answered with something other than {sent} "
            f"accepted events: {str(answer)[:300]}"
        )
    return events


async def ingest_in_batches(
    session: aiohttp.ClientSession,
    server: ServerProcess,
    total_events: int,
    options: argparse.Namespace,
    ingest: Ingest,
    deadline: Deadline,
) -> None:
    """Send every event in batches from a few concurrent tasks, as fast as the server takes them."""
    url = f"{server.base_url}/api/v1/events/batch"
    batch_starts = iter(range(0, total_events, options.batch_size))

    async def send_batches() -> None:
        for start in batch_starts:
            stop = min(start + options.batch_size, total_events)
            events = [
                {"event_type": EVENT_TYPE, "payload": webhook_payload(seq)}
                for seq in range(start, stop)
            ]
            answer, accepted_at = await post_until_accepted(
                session, url, {"events": events}, server, ingest, deadline
            )
            for event in accepted_events(answer, len(events)):
                ingest.record_accepted(event, accepted_at)

    await asyncio.gather(*(send_batches() for _ in range(options.ingest_tasks)))


async def ingest_at_rate(
    session: aiohttp.ClientSession,
    server: ServerProcess,
    total_events: int,
    rate: float,
    ingest: Ingest,
    deadline: Deadline,
) -> None:
    """Send single events on a fixed schedule, never waiting for one answer before the next.

    An open loop keeps queueing delay visible: a closed loop would slow down with the server
    and report flattering latencies.
    """
    url = f"{server.base_url}/api/v1/events"
    loop = asyncio.get_running_loop()
    in_flight: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    async def send_one(seq: int) -> None:
        body = {"event_type": EVENT_TYPE, "payload": webhook_payload(seq)}
        answer, accepted_at = await post_until_accepted(
            session, url, body, server, ingest, deadline
        )
        ingest.record_accepted(answer, accepted_at)

    def note_failure(task: asyncio.Task[None]) -> None:
        in_flight.discard(task)
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            failures.append(failure)

    schedule_start = loop.time()
    for seq in range(total_events):
        if failures or deadline.expired():
            break
        send_at = schedule_start + seq / rate
        delay = send_at - loop.time()
        # When behind schedule, still yield once so the requests already started can progress.
        await asyncio.sleep(max(delay, 0.0))
        ingest.max_send_lag_s = max(ingest.max_send_lag_s, loop.time() - send_at)
        task = asyncio.create_task(send_one(seq))
        in_flight.add(task)
        task.add_done_callback(note_failure)

    if in_flight:
        await asyncio.wait(set(in_flight), timeout=deadline.remaining())
    for task in in_flight:
        task.cancel()
    if failures:
        raise failures[0]
