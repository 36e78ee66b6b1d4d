"""Being a good citizen towards receivers, end to end against a real receiver."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import RunningServer, ServerFactory
from tests.receivers import Receiver, Reply


async def wait_for(condition: object, timeout: float = 10.0) -> None:
    """Poll the API until ``condition`` holds; the state lives in another task's writes."""
    async with asyncio.timeout(timeout):
        while not await condition():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_rate_limited_endpoint_waits__nothing_dropped_or_charged(
    server: RunningServer, receiver: Receiver
) -> None:
    endpoint = await server.create_endpoint(receiver.url(), rate_limit=20, rate_limit_burst=2)
    status, _ = await server.request(
        "POST",
        "/api/v1/events/batch",
        json={"events": [{"event_type": "a.b", "payload": {"n": n}} for n in range(30)]},
    )
    assert status == 202
    started = time.monotonic()

    await receiver.wait_for(30, timeout=10)

    # 30 attempts at 20/s with a burst of 2 cannot take less than about 1.4 s.
    assert time.monotonic() - started >= 1.2
    _, page = await server.request(
        "GET", f"/api/v1/deliveries?endpoint_id={endpoint['id']}&limit=100"
    )
    assert all(d["attempt_count"] == 1 for d in page["items"])
    assert len(receiver.received) == 30


async def test_failing_endpoint_opens_its_circuit__probe__closes(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server: RunningServer = await start_server(
        circuit_breaker_failure_threshold=3, circuit_breaker_cooldown_seconds=1.0
    )
    receiver.script = lambda _: Reply(status=500)
    endpoint = await server.create_endpoint(receiver.url())
    for _ in range(3):
        await server.emit()

    async def circuit_is(state: str) -> bool:
        _, body = await server.request("GET", f"/api/v1/webhooks/{endpoint['id']}")
        return bool(body["circuit"]["state"] == state)

    await wait_for(lambda: circuit_is("open"))
    _, stats = await server.request("GET", "/api/v1/stats")
    assert stats["endpoints"]["circuit_open"] == 1
    attempts_while_open = len(receiver.received)
    await asyncio.sleep(0.5)
    assert len(receiver.received) == attempts_while_open  # postponed, not attempted

    receiver.script = lambda _: Reply()
    await wait_for(lambda: circuit_is("closed"), timeout=10)
    _, stats = await server.request("GET", "/api/v1/stats")
    assert stats["endpoints"]["circuit_open"] == 0
    assert stats["delivered"] == 3


async def test_410_gone_disables_at_once__enabling_again_resets(
    server: RunningServer, receiver: Receiver
) -> None:
    receiver.script = lambda _: Reply(status=410)
    endpoint = await server.create_endpoint(receiver.url())
    accepted = await server.emit()

    await server.wait_for_delivery(accepted["deliveries"][0]["id"], "failed")
    _, gone = await server.request("GET", f"/api/v1/webhooks/{endpoint['id']}")
    assert gone["enabled"] is False
    assert "410" in gone["disabled_reason"]
    _, dlq = await server.request("GET", "/api/v1/dlq")
    assert "410" in dlq["items"][0]["failure_reason"]

    status, enabled = await server.request(
        "PATCH", f"/api/v1/webhooks/{endpoint['id']}", json={"enabled": True}
    )
    assert status == 200
    assert enabled["disabled_reason"] is None
    assert enabled["circuit"]["state"] == "closed"


async def test_retry_after_postpones_every_delivery_to_the_endpoint(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server: RunningServer = await start_server(retry_max_delay=5.0)
    answers = iter([Reply(status=429, headers={"Retry-After": "1"})])
    receiver.script = lambda _: next(answers, Reply())
    endpoint = await server.create_endpoint(receiver.url(), max_in_flight=1)
    await server.emit()
    await receiver.wait_for(1)

    await server.emit()  # would go at once, but the endpoint asked for a pause

    received = await receiver.wait_for(3, timeout=5)
    assert received[1].at - received[0].at >= 0.95
    _, body = await server.request("GET", f"/api/v1/webhooks/{endpoint['id']}")
    assert body["circuit"]["state"] == "closed"


async def test_endpoint_health_reports_rates_latency_and_last_error(
    server: RunningServer, receiver: Receiver
) -> None:
    answers = iter([Reply(status=503, body=b"down"), Reply(), Reply()])
    receiver.script = lambda _: next(answers, Reply())
    endpoint = await server.create_endpoint(receiver.url())
    for _ in range(2):
        accepted = await server.emit()
        await server.wait_for_delivery(accepted["deliveries"][0]["id"], "delivered")

    status, health = await server.request("GET", f"/api/v1/webhooks/{endpoint['id']}/health")

    assert status == 200
    hour, day = health["windows"]
    assert (hour["window"], day["window"]) == ("1h", "24h")
    assert (hour["attempts"], hour["succeeded"]) == (3, 2)
    assert hour["success_rate"] == round(2 / 3, 4)
    assert hour["latency_ms"]["p50"] is not None
    assert hour["last_error"] == "HTTP 503: Service Unavailable"
    assert health["circuit"]["state"] == "closed"
    missing, _ = await server.request("GET", "/api/v1/webhooks/ep_missing/health")
    assert missing == 404
