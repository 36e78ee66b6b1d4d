"""Run the performance scenarios several times and print the medians as a Markdown table.

    python tests/load/scenarios.py                 # every scenario, three runs each
    python tests/load/scenarios.py --only throughput fanout --repeat 1
    python tests/load/scenarios.py --backlog 1000000 --only memory

Each scenario is one invocation of ``webhook_load_test.py`` (ceiling and hookline measured
back to back in that run), except ``memory``, which starts the server itself, measures its
resident memory idle, then again with a backlog of pending deliveries that the store holds
(the endpoint's rate limit keeps them from being attempted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psutil

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
LOAD_TEST = HERE / "webhook_load_test.py"
RUN_TIMEOUT_SECONDS = 600
STARTUP_SECONDS = 30.0
BACKLOG_BATCH = 1000
BACKLOG_CONCURRENCY = 4
SETTLE_SECONDS = 3.0
BYTES_PER_MIB = 1024 * 1024

# name -> extra arguments for webhook_load_test.py
SCENARIOS: dict[str, list[str]] = {
    "throughput": ["--deliveries", "50000"],
    "fanout": ["--deliveries", "50000", "--fanout", "10"],
    "latency": ["--deliveries", "20000", "--rate", "1000", "--skip-ceiling"],
    "retries": ["--deliveries", "50000", "--fail-rate", "0.2"],
    "postgres": ["--deliveries", "50000", "--database-url", "{database_url}"],
}
POSTGRES_ADMIN_URL = os.environ.get(
    "HOOKLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REPORTED = ("ceiling_per_s", "hookline_per_s", "ratio", "ingest_per_s", "p50_ms", "p95_ms")
REPORTED += ("p99_ms", "peak_rss_mb")


def run_load_test(name: str, arguments: list[str]) -> dict[str, Any]:
    """One invocation of the load test; returns its JSON figures.

    A PostgreSQL run gets a database of its own, dropped afterwards: runs that shared one would
    fan out to every earlier run's endpoints.
    """
    if "{database_url}" not in arguments:
        return _run(name, arguments)
    database = f"hookline_load_{secrets.token_hex(6)}"
    asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    try:
        url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
        return _run(name, [url if a == "{database_url}" else a for a in arguments])
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


async def _admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _run(name: str, arguments: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "result.json"
        command = [sys.executable, str(LOAD_TEST), *arguments, "--json", str(output)]
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
        )
        if not output.exists():
            raise RuntimeError(f"{name}: no result ({completed.stderr[-2000:]})")
        figures: dict[str, Any] = json.loads(output.read_text())
    print(f"  {name}: {completed.stdout.strip().splitlines()[-1]}", file=sys.stderr)
    return figures


def resident_mib(pid: int) -> dict[str, float]:
    """Memory of the server and its child processes now, in MiB.

    ``rss`` sums each process's resident set, so pages the processes share (the interpreter,
    shared libraries) count once per process; ``pss`` splits shared pages between the
    processes that map them, so it is what the server as a whole costs the machine.
    """
    server = psutil.Process(pid)
    rss = pss = 0
    for process in [server, *server.children(recursive=True)]:
        info = process.memory_full_info()
        rss += info.rss
        pss += info.pss
    return {"rss": rss / BYTES_PER_MIB, "pss": pss / BYTES_PER_MIB}


async def measure_memory(backlog: int, sender_processes: int | None) -> dict[str, Any]:
    """Memory idle, and with ``backlog`` deliveries pending in the store."""
    with tempfile.TemporaryDirectory() as folder:
        port, key = _free_port(), secrets.token_urlsafe(16)
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT / "src"),
            "DATABASE_URL": f"sqlite:///{folder}/hookline.db",
            "HOOKLINE_CONFIG_DIR": folder,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "API_KEYS": key,
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "WEBHOOK_MAX_QUEUE_SIZE": "0",
            "LOG_LEVEL": "WARNING",
        }
        if sender_processes is not None:
            env["WEBHOOK_SENDER_PROCESSES"] = str(sender_processes)
        # Popen returns once the child exists; nothing here waits on it while the loop runs.
        server = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "hookline", "serve"], cwd=folder, env=env
        )
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}"}
        try:
            async with aiohttp.ClientSession(headers=headers) as http:
                await _wait_healthy(http, base)
                # The receiver is "down" in the sense that matters: one attempt a day at most.
                await http.post(
                    f"{base}/api/v1/webhooks",
                    json={"url": "http://127.0.0.1:9/down", "events": ["*"], "rate_limit": 1e-5},
                )
                await asyncio.sleep(SETTLE_SECONDS)
                idle = resident_mib(server.pid)
                started = time.monotonic()
                await _ingest(http, base, backlog)
                ingest_seconds = time.monotonic() - started
                await asyncio.sleep(SETTLE_SECONDS)
                loaded = resident_mib(server.pid)
                async with http.get(f"{base}/api/v1/stats") as answer:
                    pending = (await answer.json())["queue_depth"]
        finally:
            server.terminate()
            server.wait(timeout=60)
    return {
        "sender_processes": "default" if sender_processes is None else sender_processes,
        "idle_rss_mb": round(idle["rss"], 1),
        "idle_pss_mb": round(idle["pss"], 1),
        "backlog_rss_mb": round(loaded["rss"], 1),
        "backlog_pss_mb": round(loaded["pss"], 1),
        "growth_rss_mb": round(loaded["rss"] - idle["rss"], 1),
        "pending": pending,
        "ingest_per_s": round(backlog / ingest_seconds),
    }


async def _wait_healthy(http: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{base}/health") as answer:
                if answer.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the server did not become healthy")


async def _ingest(http: aiohttp.ClientSession, base: str, count: int) -> None:
    batches = asyncio.Queue[int]()
    for start in range(0, count, BACKLOG_BATCH):
        batches.put_nowait(min(BACKLOG_BATCH, count - start))

    async def sender() -> None:
        while not batches.empty():
            size = batches.get_nowait()
            events = [{"event_type": "backlog.test", "payload": {"n": n}} for n in range(size)]
            async with http.post(f"{base}/api/v1/events/batch", json={"events": events}) as r:
                if r.status != 202:
                    raise RuntimeError(f"batch refused: {r.status} {await r.text()}")

    await asyncio.gather(*(sender() for _ in range(BACKLOG_CONCURRENCY)))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def median_table(results: dict[str, list[dict[str, Any]]]) -> str:
    """A Markdown table of the median of each figure per scenario."""
    lines = ["| scenario | runs | " + " | ".join(REPORTED) + " |"]
    lines.append("|---" * (len(REPORTED) + 2) + "|")
    for name, runs in results.items():
        cells = []
        for key in REPORTED:
            values = [run[key] for run in runs if run.get(key) is not None]
            cells.append(f"{statistics.median(values):g}" if values else "n/a")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=[*SCENARIOS, "memory"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args(argv)
    chosen = options.only or [*SCENARIOS, "memory"]

    results: dict[str, list[dict[str, Any]]] = {}
    for name in chosen:
        if name == "memory":
            continue
        results[name] = [run_load_test(name, SCENARIOS[name]) for _ in range(options.repeat)]
    print(median_table(results))

    if "memory" in chosen:
        # The default (sending in the main process until the load calls for a sending
        # process), a sending process from the start, and never one.
        results["memory"] = []
        for sender_processes in (None, 1, 0):
            memory = asyncio.run(measure_memory(options.backlog, sender_processes))
            print(f"\nmemory: {memory}")
            results["memory"].append(memory)
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
