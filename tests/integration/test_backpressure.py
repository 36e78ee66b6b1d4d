"""Backpressure: once WEBHOOK_MAX_QUEUE_SIZE deliveries are pending, emits answer 503."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import RunningServer, ServerFactory
from tests.receivers import Receiver, Reply

MAX_QUEUE_SIZE = 3
# The intake refreshes its pending count at most once a second and adds its own inserts in
# between, so a few emits past the limit may still be accepted; this bounds how many.
MAX_EMITS_BEFORE_503 = 50
PAUSE_BETWEEN_EMITS_SECONDS = 0.02
# The pending count the intake relies on may be up to a second old.
PENDING_COUNT_MAX_AGE_SECONDS = 1.0
# Failed attempts are retried only after a minute, so deliveries stay pending during the test
# without any request left in flight when the server stops.
SLOW_RETRIES = {"retry_initial_delay": 60.0, "retry_max_delay": 60.0}


async def start_full_queue_server(start_server: ServerFactory, receiver: Receiver) -> Any:
    receiver.script = lambda _: Reply(status=503, body=b"busy")
    server = await start_server(webhook_max_queue_size=MAX_QUEUE_SIZE, **SLOW_RETRIES)
    await server.create_endpoint(receiver.url())
    return server


async def emit_until_refused(server: RunningServer) -> tuple[list[str], Any, dict[str, str]]:
    """Emit numbered events until one is refused; return the accepted ids and the refusal."""
    accepted: list[str] = []
    for number in range(MAX_EMITS_BEFORE_503):
        event = {"id": f"evt-{number}", "event_type": "load.test", "payload": {"n": number}}
        url = server.base_url + "/api/v1/events"
        async with server.http.post(url, json=event) as response:
            body = await response.json()
            if response.status == 503:
                return accepted, body, dict(response.headers)
            assert response.status == 202, body
        accepted.append(body["id"])
        await asyncio.sleep(PAUSE_BETWEEN_EMITS_SECONDS)
    raise AssertionError(f"no 503 after {MAX_EMITS_BEFORE_503} emits")


async def test_full_queue__answers_503_queue_full_with_retry_after(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server = await start_full_queue_server(start_server, receiver)

    accepted, refusal, headers = await emit_until_refused(server)

    assert len(accepted) >= MAX_QUEUE_SIZE
    assert int(headers["Retry-After"]) > 0
    assert headers["Content-Type"].startswith("application/json")
    assert refusal["error"]["code"] == "queue_full"
    assert "WEBHOOK_MAX_QUEUE_SIZE=3" in refusal["error"]["message"]


async def test_full_queue__keeps_every_accepted_event_pending_and_stores_the_refused_one_not(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server = await start_full_queue_server(start_server, receiver)

    accepted, _, _ = await emit_until_refused(server)

    for event_id in accepted:
        status, event = await server.request("GET", f"/api/v1/events/{event_id}")
        assert status == 200, event
        assert [d["status"] for d in event["deliveries"]] == ["pending"]
    refused_id = f"evt-{len(accepted)}"
    status, _ = await server.request("GET", f"/api/v1/events/{refused_id}")
    assert status == 404
    _, stats = await server.request("GET", "/api/v1/stats")
    assert stats["queue_depth"] == len(accepted)


async def test_full_queue__refuses_batches_too(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server = await start_full_queue_server(start_server, receiver)
    await emit_until_refused(server)

    status, body = await server.request(
        "POST",
        "/api/v1/events/batch",
        json={"events": [{"id": "evt-batched", "event_type": "load.test", "payload": {}}]},
    )

    assert status == 503
    assert body["error"]["code"] == "queue_full"
    missing_status, _ = await server.request("GET", "/api/v1/events/evt-batched")
    assert missing_status == 404


async def test_drained_queue__accepts_events_again(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server = await start_full_queue_server(start_server, receiver)
    await emit_until_refused(server)
    _, page = await server.request("GET", "/api/v1/webhooks")
    [endpoint] = page["items"]

    # Deleting the endpoint fails its pending deliveries, which empties the queue.
    deleted, _ = await server.request("DELETE", f"/api/v1/webhooks/{endpoint['id']}")
    await asyncio.sleep(PENDING_COUNT_MAX_AGE_SECONDS + 0.1)
    status, accepted = await server.request(
        "POST", "/api/v1/events", json={"event_type": "load.test", "payload": {}}
    )

    assert deleted == 204
    assert status == 202, accepted
    _, stats = await server.request("GET", "/api/v1/stats")
    assert stats["queue_depth"] == 0


async def test_repeat_of_an_accepted_request_while_the_queue_is_full__gets_the_first_answer(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server = await start_full_queue_server(start_server, receiver)
    event = {"event_type": "load.test", "payload": {"first": True}}
    headers = {"Idempotency-Key": "accepted-before-full"}
    _, first = await server.request("POST", "/api/v1/events", json=event, headers=headers)
    await emit_until_refused(server)

    status, repeated = await server.request("POST", "/api/v1/events", json=event, headers=headers)

    assert status == 202, repeated
    assert repeated["id"] == first["id"]
