"""The server as a real process: crash recovery, graceful shutdown and the command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import ServerProcess
from tests.receivers import Receiver, Reply

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS_BEFORE_CRASH = 300
# Sending in the server process, and from a child process that must not outlive it.
SENDING = pytest.mark.parametrize(
    "sender_processes", ["0", "1"], ids=["sending-in-process", "sending-from-child"]
)


@SENDING
async def test_kill_9_mid_delivery__every_accepted_event_arrives_after_restart(
    tmp_path: Path, receiver: Receiver, sender_processes: str
) -> None:
    # A slow receiver keeps deliveries in flight when the process is killed.
    receiver.script = lambda _: Reply(delay_seconds=0.05)
    # Short leases, so the attempts the dead process held are taken over within seconds.
    lease = {"WEBHOOK_LEASE_MARGIN_SECONDS": "1", "WEBHOOK_SENDER_PROCESSES": sender_processes}
    server = ServerProcess(
        tmp_path, WEBHOOK_WORKER_COUNT="20", WEBHOOK_ENDPOINT_CONCURRENCY="20", **lease
    )
    try:
        await server.start()
        status, _ = await server.request(
            "POST",
            "/api/v1/webhooks",
            json={"url": receiver.url(), "events": ["*"], "timeout": 2},
        )
        assert status == 201
        accepted = set()
        for start in range(0, EVENTS_BEFORE_CRASH, 50):
            batch = [
                {"event_type": "crash.test", "payload": {"n": n}} for n in range(start, start + 50)
            ]
            status, body = await server.request(
                "POST", "/api/v1/events/batch", json={"events": batch}
            )
            assert status == 202, body
            accepted.update(item["id"] for item in body["events"])
        await receiver.wait_for(20)

        server.kill()
        delivered_before_restart = {r.headers["webhook-id"] for r in receiver.received}
        assert len(delivered_before_restart) < EVENTS_BEFORE_CRASH, "killed too late to matter"

        restarted = ServerProcess(tmp_path, **lease)
        await restarted.start()
        try:
            # Done when the store, not only the receiver, says every delivery was delivered:
            # that includes the ones whose lease the killed process held.
            async with asyncio.timeout(60):
                while True:
                    _, stats = await restarted.request("GET", "/api/v1/stats")
                    if stats["delivered"] == len(accepted):
                        break
                    await asyncio.sleep(0.2)
            assert stats["queue_depth"] == 0 and stats["failed"] == 0
        finally:
            assert await restarted.terminate() == 0
    finally:
        server.ensure_stopped()

    received_ids = [r.headers["webhook-id"] for r in receiver.received]
    assert set(received_ids) == accepted
    # Only the attempts that were in flight at the kill may arrive twice.
    assert len(received_ids) - len(accepted) <= 20


@SENDING
async def test_sigterm_lets_in_flight_attempts_finish_and_exits_0(
    tmp_path: Path, receiver: Receiver, sender_processes: str
) -> None:
    receiver.script = lambda _: Reply(delay_seconds=0.5)
    server = ServerProcess(
        tmp_path, SHUTDOWN_GRACE_SECONDS="5", WEBHOOK_SENDER_PROCESSES=sender_processes
    )
    try:
        await server.start()
        await server.request(
            "POST", "/api/v1/webhooks", json={"url": receiver.url(), "events": ["*"]}
        )
        status, body = await server.request(
            "POST", "/api/v1/events", json={"event_type": "a.b", "payload": {}}
        )
        assert status == 202
        await receiver.wait_for(1)

        assert await server.terminate() == 0
    finally:
        server.ensure_stopped()

    # The attempt in flight finished and its result was recorded before exit.
    again = ServerProcess(tmp_path)
    try:
        await again.start()
        _, delivery = await again.request(
            "GET", f"/api/v1/deliveries/{body['deliveries'][0]['id']}"
        )
        assert delivery["status"] == "delivered"
        assert len(receiver.received) == 1
    finally:
        assert await again.terminate() == 0


def test_bad_setting_stops_startup_with_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hookline", "serve"],
        env={"PATH": "/usr/bin:/bin", "PORT": "eighty", "HOOKLINE_CONFIG_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "PORT='eighty'" in lines[0] and "1 to 65535" in lines[0]


def test_migrate_command_creates_the_schema(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hookline", "migrate"],
        env={"PATH": "/usr/bin:/bin", "HOOKLINE_CONFIG_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "hookline.db").is_file()


@pytest.mark.parametrize(
    "command",
    [
        ["hookline", "serve"],
        [sys.executable, "-m", "hookline", "serve"],
        [sys.executable, str(REPO_ROOT / "src" / "main.py")],
    ],
    ids=["console-script", "python-m", "src-main"],
)
async def test_every_documented_way_to_start_serves_the_api(
    tmp_path: Path, command: list[str]
) -> None:
    server = ServerProcess(tmp_path)
    try:
        await server.start(*command)
        status, health = await server.request("GET", "/health")
        assert status == 200
        assert health["status"] == "ok"
    finally:
        assert await server.terminate() == 0
    log = server.log_path.read_text()
    started = [json.loads(line) for line in log.splitlines() if '"action":"started"' in line]
    assert started and "delivery workers" in started[0]["event"]
