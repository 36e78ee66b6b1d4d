"""``hookline tail``: follow a running server's delivery stream in the terminal.

It reads ``GET /api/v1/deliveries/stream`` and prints one line per change. When the
connection drops it reconnects with the last change it printed as ``Last-Event-ID``, so a
restart of the server loses no line that the server still keeps.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp
import orjson

RECONNECT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class TailOptions:
    url: str
    api_key: str
    endpoint_id: str | None = None
    event_type: str | None = None
    since: int | None = None


def format_change(change: dict[str, Any]) -> str:
    """One readable line: time, change, delivery, event, endpoint, attempt, detail."""
    parts = [
        str(change.get("at")),
        f"{change.get('change', ''):<14}",
        f"delivery={change.get('delivery_id')}",
        f"event={change.get('event_id')}",
        f"endpoint={change.get('endpoint_id')}",
        f"attempt={change.get('attempt')}",
    ]
    if change.get("detail"):
        parts.append(f"detail={change['detail']!r}")
    if change.get("next_attempt_at"):
        parts.append(f"next={change['next_attempt_at']}")
    return " ".join(parts)


async def tail(options: TailOptions, out: TextIO = sys.stdout) -> None:
    """Print changes until cancelled, reconnecting after every drop."""
    last_seen: str | None = None
    params = {
        key: str(value)
        for key, value in (
            ("endpoint_id", options.endpoint_id),
            ("event_type", options.event_type),
            ("since", options.since),
        )
        if value is not None
    }
    stream_url = options.url.rstrip("/") + "/api/v1/deliveries/stream"
    # No total timeout: the stream is meant to stay open; heartbeats keep it alive.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while True:
            headers = {"Authorization": f"Bearer {options.api_key}"}
            if last_seen is not None:
                headers["Last-Event-ID"] = last_seen
            try:
                async with http.get(stream_url, params=params, headers=headers) as response:
                    if response.status == 401:
                        raise PermissionError("the API key was refused (401)")
                    response.raise_for_status()
                    async for seq, change in _messages(response):
                        last_seen = seq
                        print(format_change(change), file=out, flush=True)
            except (TimeoutError, aiohttp.ClientError) as exc:
                print(f"# connection lost ({exc}); reconnecting", file=sys.stderr)
            await asyncio.sleep(RECONNECT_SECONDS)


async def _messages(response: aiohttp.ClientResponse) -> Any:
    """Yield (id, data) for each SSE message; comments and other fields are skipped."""
    seq: str | None = None
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data and seq is not None:
                yield seq, orjson.loads("\n".join(data))
            seq, data = None, []
        elif line.startswith("id:"):
            seq = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
