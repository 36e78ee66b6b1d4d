"""Running hookline as a real process, the way an operator does."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import API_KEY, free_port

STARTUP_SECONDS = 20.0


class ServerProcess:
    """``python -m hookline serve`` on a free port with a data directory of its own."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATABASE_URL": f"sqlite:///{data_dir}/hookline.db",
            "HOOKLINE_CONFIG_DIR": str(data_dir / "config"),
            "API_KEYS": API_KEY,
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "LOG_LEVEL": "INFO",
            "RETRY_INITIAL_DELAY": "0.05",
            "RETRY_MAX_DELAY": "0.5",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"server-{self.port}.log"

    async def start(self, *command: str) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = list(command) or [sys.executable, "-m", "hookline", "serve"]
        with self.log_path.open("ab") as log:
            # Popen returns once the child exists; it does not wait for it to run.
            self.process = subprocess.Popen(  # noqa: ASYNC220
                args, env=self.env, stdout=log, stderr=log
            )
        await self.wait_healthy()

    async def wait_healthy(self) -> None:
        async with aiohttp.ClientSession() as http, asyncio.timeout(STARTUP_SECONDS):
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited early:\n{self.log_path.read_text()}")
                try:
                    async with http.get(self.base_url + "/health") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """Kill the server the hard way: no shutdown code runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    async def terminate(self, timeout: float = 30.0) -> int:
        """Send SIGTERM and return the exit code, keeping the test's event loop running
        (a receiver in the test may still have to answer the attempts being finished)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, timeout)

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.request(method, self.base_url + path, **kwargs) as response,
        ):
            json_body = response.content_type == "application/json"
            return response.status, (await response.json() if json_body else None)
