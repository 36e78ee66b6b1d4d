"""The live delivery stream: every state change, in order, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tests.conftest import API_KEY, RunningServer
from tests.receivers import Received, Receiver, Reply


async def sse_messages(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Parse the SSE stream into {"id", "event", "data"} messages (comments are skipped)."""
    message: dict[str, Any] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "data" in message:
                message["data"] = json.loads(message["data"])
                yield message
            message = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            message[field] = value


async def collect(
    server: RunningServer,
    count: int,
    headers: dict[str, str] | None = None,
    connected: asyncio.Event | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Read ``count`` changes from a fresh stream connection, then hang up.

    ``connected`` is set once the answer's headers arrive: by then the server has fixed where
    the stream starts, so a change made afterwards is sure to be in it.
    """
    received: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http,
        http.get(
            f"{server.base_url}/api/v1/deliveries/stream", params=params, headers=headers
        ) as response,
    ):
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        if connected is not None:
            connected.set()
        async with asyncio.timeout(15):
            async for message in sse_messages(response):
                received.append(message)
                if len(received) == count:
                    break
    return received


def fail_first_attempt(request: Received) -> Reply:
    return Reply(status=503) if request.headers["X-Webhook-Attempt"] == "1" else Reply()


async def small_run(server: RunningServer, receiver: Receiver) -> tuple[str, str, str]:
    """One retried delivery, one dead-lettered and replayed; returns their delivery ids."""
    receiver.script = lambda r: Reply(status=500) if r.path == "/down" else fail_first_attempt(r)
    await server.create_endpoint(receiver.url("/flaky"), events=["order.*"])
    await server.create_endpoint(receiver.url("/down"), events=["user.*"], max_retries=0)

    retried = (await server.emit("order.paid"))["deliveries"][0]["id"]
    dead = (await server.emit("user.created"))["deliveries"][0]["id"]
    await server.wait_for_delivery(retried, "delivered")
    await server.wait_for_delivery(dead, "failed")

    receiver.script = lambda _: Reply()
    _, dlq = await server.request("GET", "/api/v1/dlq")
    _, replayed = await server.request("POST", f"/api/v1/dlq/{dlq['items'][0]['id']}/replay")
    await server.wait_for_delivery(replayed["id"], "delivered")
    return retried, dead, replayed["id"]


async def test_stream_shows_every_change_of_a_small_run_in_order(
    server: RunningServer, receiver: Receiver
) -> None:
    retried, dead, replayed = await small_run(server, receiver)

    messages = await collect(server, 7, since=0)

    assert [int(m["id"]) for m in messages] == sorted(int(m["id"]) for m in messages)
    assert all(m["event"] == "delivery" for m in messages)
    by_delivery: dict[str, list[str]] = {}
    for message in messages:
        by_delivery.setdefault(message["data"]["delivery_id"], []).append(message["data"]["change"])
    assert by_delivery == {
        retried: ["accepted", "attempt_failed", "delivered"],
        dead: ["accepted", "dead_lettered"],
        replayed: ["replayed", "delivered"],
    }
    failed = next(m["data"] for m in messages if m["data"]["change"] == "attempt_failed")
    assert failed["detail"] == "HTTP 503: Service Unavailable"
    assert failed["next_attempt_at"] is not None


async def test_reconnecting_with_last_event_id_misses_nothing(
    server: RunningServer, receiver: Receiver
) -> None:
    await small_run(server, receiver)
    everything = await collect(server, 7, since=0)

    first = await collect(server, 3, since=0)
    rest = await collect(server, 4, headers={"Last-Event-ID": first[-1]["id"]})

    assert [m["id"] for m in first + rest] == [m["id"] for m in everything]


async def test_stream_filters_by_endpoint_and_sees_changes_as_they_happen(
    server: RunningServer, receiver: Receiver
) -> None:
    wanted = await server.create_endpoint(receiver.url("/a"), events=["*"])
    await server.create_endpoint(receiver.url("/b"), events=["*"])
    connected = asyncio.Event()
    reading = asyncio.create_task(collect(server, 2, connected=connected, endpoint_id=wanted["id"]))
    # The stream starts at the end: only what happens once it is open is in it.
    await asyncio.wait_for(connected.wait(), 10)

    accepted = await server.emit()

    messages = await reading
    assert {m["data"]["endpoint_id"] for m in messages} == {wanted["id"]}
    assert [m["data"]["change"] for m in messages] == ["accepted", "delivered"]
    assert messages[0]["data"]["event_id"] == accepted["id"]


async def test_stream_needs_an_api_key(server: RunningServer) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.base_url}/api/v1/deliveries/stream") as response,
    ):
        assert response.status == 401
