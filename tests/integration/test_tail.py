"""``hookline tail`` follows a running server's deliveries, one line per change."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import API_KEY
from tests.processes import ServerProcess
from tests.receivers import Receiver

LINES_EXPECTED = 2


async def test_tail_prints_each_change_of_a_delivery(tmp_path: Path, receiver: Receiver) -> None:
    server = ServerProcess(tmp_path)
    try:
        await server.start()
        await server.request(
            "POST", "/api/v1/webhooks", json={"url": receiver.url(), "events": ["*"]}
        )
        status, accepted = await server.request(
            "POST", "/api/v1/events", json={"event_type": "user.created", "payload": {}}
        )
        assert status == 202

        follower = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hookline",
            "tail",
            "--url",
            server.base_url,
            "--since",
            "0",
            env={**os.environ, "HOOKLINE_API_KEY": API_KEY},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert follower.stdout is not None
        lines = []
        try:
            async with asyncio.timeout(20):
                while len(lines) < LINES_EXPECTED:
                    lines.append((await follower.stdout.readline()).decode())
        finally:
            follower.terminate()
            await follower.wait()
    finally:
        assert await server.terminate() == 0

    assert "accepted" in lines[0] and "delivered" in lines[1]
    assert all(f"event={accepted['id']}" in line for line in lines)
    assert f"delivery={accepted['deliveries'][0]['id']}" in lines[1]


async def test_tail_without_an_api_key_says_how_to_give_one() -> None:
    env = {key: value for key, value in os.environ.items() if key != "HOOKLINE_API_KEY"}
    follower = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hookline",
        "tail",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(follower.communicate(), 30)

    assert follower.returncode == 2
    assert b"HOOKLINE_API_KEY" in stderr
