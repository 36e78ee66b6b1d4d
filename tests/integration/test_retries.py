"""Failed attempts are retried with backoff; exhausted deliveries land in the DLQ."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.receivers import Received, Receiver, Reply


def fail_first(times: int, status: int = 503) -> object:
    def script(request: Received) -> Reply:
        attempt = int(request.headers["X-Webhook-Attempt"])
        return Reply(status=status, body=b"busy") if attempt <= times else Reply()

    return script


@pytest.fixture
def server(server_with_each_sender: RunningServer) -> RunningServer:
    """Every test here runs once per way of sending."""
    return server_with_each_sender


async def test_failed_attempts_are_retried_then_delivered(
    server: RunningServer, receiver: Receiver
) -> None:
    receiver.script = fail_first(2)  # type: ignore[assignment]
    await server.create_endpoint(receiver.url())
    accepted = await server.emit()

    delivery = await server.wait_for_delivery(accepted["deliveries"][0]["id"], "delivered")

    assert [a["status_code"] for a in delivery["attempts"]] == [503, 503, 200]
    assert delivery["attempts"][0]["error"] == "HTTP 503: Service Unavailable"
    assert delivery["attempts"][0]["response_body"] == "busy"
    headers = [r.headers for r in receiver.received]
    assert [h["X-Webhook-Attempt"] for h in headers] == ["1", "2", "3"]
    # The message id stays the same across retries, so receivers can de-duplicate.
    assert len({h["webhook-id"] for h in headers}) == 1


async def test_delivery_exhausts_attempts__lands_in_dlq(
    server: RunningServer, receiver: Receiver
) -> None:
    receiver.script = lambda _: Reply(status=500, body=b"boom")
    endpoint = await server.create_endpoint(receiver.url(), max_retries=2)
    accepted = await server.emit("payment.failed", {"amount": 10})
    delivery_id = accepted["deliveries"][0]["id"]

    delivery = await server.wait_for_delivery(delivery_id, "failed")

    assert delivery["attempt_count"] == 3  # max_retries=2 means three attempts in all
    assert len(receiver.received) == 3
    status, dlq = await server.request("GET", "/api/v1/dlq")
    assert status == 200
    [message] = dlq["items"]
    assert message["delivery_id"] == delivery_id
    assert message["event_id"] == accepted["id"]
    assert message["endpoint_id"] == endpoint["id"]
    assert message["event_type"] == "payment.failed"
    assert message["payload"] == {"amount": 10}
    assert message["endpoint_url"] == receiver.url()
    assert message["failure_reason"] == "HTTP 500: Internal Server Error"
    assert message["attempts"] == 3
    assert message["expires_at"] > message["created_at"]


async def test_dead_letter_replay__delivers_with_the_same_event_id(
    server: RunningServer, receiver: Receiver
) -> None:
    receiver.script = lambda _: Reply(status=500)
    await server.create_endpoint(receiver.url(), max_retries=0)
    accepted = await server.emit()
    await server.wait_for_delivery(accepted["deliveries"][0]["id"], "failed")
    _, dlq = await server.request("GET", "/api/v1/dlq")
    message_id = dlq["items"][0]["id"]

    receiver.script = lambda _: Reply()
    status, replayed = await server.request("POST", f"/api/v1/dlq/{message_id}/replay")

    assert status == 202
    assert replayed["id"] != accepted["deliveries"][0]["id"]
    await server.wait_for_delivery(replayed["id"], "delivered")
    assert receiver.received[-1].headers["webhook-id"] == accepted["id"]
    assert (await server.request("GET", f"/api/v1/dlq/{message_id}"))[0] == 404


async def test_bulk_replay_by_endpoint(server: RunningServer, receiver: Receiver) -> None:
    receiver.script = lambda _: Reply(status=500)
    failing = await server.create_endpoint(receiver.url("/a"), max_retries=0)
    other = await server.create_endpoint(receiver.url("/b"), max_retries=0)
    for _ in range(3):
        accepted = await server.emit()
        for delivery in accepted["deliveries"]:
            await server.wait_for_delivery(delivery["id"], "failed")

    receiver.script = lambda _: Reply()
    status, result = await server.request(
        "POST", "/api/v1/dlq/replay", json={"endpoint_id": failing["id"]}
    )

    assert status == 200
    assert result["replayed"] == 3
    for delivery in result["deliveries"]:
        await server.wait_for_delivery(delivery["id"], "delivered")
    _, left = await server.request("GET", f"/api/v1/dlq?endpoint_id={other['id']}")
    assert len(left["items"]) == 3


async def test_manual_retry_of_a_failed_delivery_starts_a_fresh_round(
    server: RunningServer, receiver: Receiver
) -> None:
    receiver.script = lambda _: Reply(status=400)
    await server.create_endpoint(receiver.url(), max_retries=0)
    accepted = await server.emit()
    first = accepted["deliveries"][0]["id"]
    await server.wait_for_delivery(first, "failed")

    receiver.script = lambda _: Reply()
    status, fresh = await server.request("POST", f"/api/v1/deliveries/{first}/retry")

    assert status == 202
    done = await server.wait_for_delivery(fresh["id"], "delivered")
    assert done["attempts"][0]["number"] == 1
    _, dlq = await server.request("GET", "/api/v1/dlq")
    assert dlq["items"] == []


async def test_dead_letter_can_be_deleted(server: RunningServer, receiver: Receiver) -> None:
    receiver.script = lambda _: Reply(status=500)
    await server.create_endpoint(receiver.url(), max_retries=0)
    accepted = await server.emit()
    await server.wait_for_delivery(accepted["deliveries"][0]["id"], "failed")
    _, dlq = await server.request("GET", "/api/v1/dlq")

    status, _ = await server.request("DELETE", f"/api/v1/dlq/{dlq['items'][0]['id']}")

    assert status == 204
    assert (await server.request("GET", "/api/v1/dlq"))[1]["items"] == []


async def test_slow_receiver_times_out_and_is_retried(
    server: RunningServer, receiver: Receiver
) -> None:
    def slow_first(request: Received) -> Reply:
        first = request.headers["X-Webhook-Attempt"] == "1"
        return Reply(delay_seconds=3.0 if first else 0.0)

    receiver.script = slow_first
    await server.create_endpoint(receiver.url(), timeout=0.3)
    accepted = await server.emit()

    delivery = await server.wait_for_delivery(accepted["deliveries"][0]["id"], "delivered")

    first = delivery["attempts"][0]
    assert first["outcome"] == "timeout"
    assert first["status_code"] is None
    assert 250 <= first["duration_ms"] < 2000


async def test_redirects_are_not_followed(server: RunningServer, receiver: Receiver) -> None:
    receiver.script = lambda r: (
        Reply(status=302, headers={"Location": "/elsewhere"}) if r.path == "/hook" else Reply()
    )
    await server.create_endpoint(receiver.url(), max_retries=0)
    accepted = await server.emit()

    delivery = await server.wait_for_delivery(accepted["deliveries"][0]["id"], "failed")

    assert delivery["attempts"][0]["status_code"] == 302
    assert "not followed" in delivery["attempts"][0]["error"]
    assert [r.path for r in receiver.received] == ["/hook"]


async def test_long_and_binary_response_bodies_are_stored_safely(
    server: RunningServer, receiver: Receiver
) -> None:
    bodies = iter([b"x" * 10_000, b"\xff\xfe not utf-8"])
    receiver.script = lambda _: Reply(status=500, body=next(bodies))
    await server.create_endpoint(receiver.url(), max_retries=1)
    accepted = await server.emit()

    delivery = await server.wait_for_delivery(accepted["deliveries"][0]["id"], "failed")

    long_one, binary = delivery["attempts"]
    assert long_one["response_truncated"] is True
    assert len(long_one["response_body"]) == 4096
    assert binary["response_truncated"] is False
    assert binary["response_body"].startswith("\\xff\\xfe")


async def test_connection_refused_is_a_failed_attempt(
    server: RunningServer, receiver: Receiver
) -> None:
    await server.create_endpoint("http://127.0.0.1:9/closed", max_retries=0)
    accepted = await server.emit()

    delivery = await server.wait_for_delivery(accepted["deliveries"][0]["id"], "failed")

    assert delivery["attempts"][0]["outcome"] == "connection_error"
    assert delivery["last_error"]


async def test_retry_after_on_503_delays_the_next_attempt(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server: RunningServer = await start_server(retry_max_delay=5.0)
    receiver.script = lambda r: (
        Reply(status=503, headers={"Retry-After": "1"})
        if r.headers["X-Webhook-Attempt"] == "1"
        else Reply()
    )
    await server.create_endpoint(receiver.url())
    accepted = await server.emit()

    await server.wait_for_delivery(accepted["deliveries"][0]["id"], "delivered")

    first, second = receiver.received
    assert second.at - first.at >= 0.95


async def test_event_policy_from_retry_yaml_sets_attempts(
    start_server: ServerFactory, receiver: Receiver, tmp_path: object
) -> None:
    from pathlib import Path

    config_dir = Path(str(tmp_path)) / "config"
    config_dir.mkdir()
    (config_dir / "retry.yaml").write_text(
        "event_retry_policies:\n"
        "  critical:\n"
        '    events: ["payment.failed"]\n'
        "    retry_policy: {initial_delay: 0.01, max_delay: 0.05, max_attempts: 4}\n"
    )
    server: RunningServer = await start_server(retry_max_attempts=2)
    receiver.script = lambda _: Reply(status=500)
    await server.create_endpoint(receiver.url())

    critical = await server.emit("payment.failed")
    ordinary = await server.emit("user.created")

    first = await server.wait_for_delivery(critical["deliveries"][0]["id"], "failed")
    second = await server.wait_for_delivery(ordinary["deliveries"][0]["id"], "failed")
    assert first["attempt_count"] == 4
    assert second["attempt_count"] == 2


async def test_slow_endpoint_does_not_hold_up_the_others(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server: RunningServer = await start_server(
        webhook_worker_count=8, webhook_endpoint_concurrency=2
    )
    receiver.script = lambda r: Reply(delay_seconds=5.0 if r.path == "/slow" else 0.0)
    await server.create_endpoint(receiver.url("/slow"), events=["slow.*"])
    await server.create_endpoint(receiver.url("/fast"), events=["fast.*"])
    for _ in range(10):
        await server.emit("slow.thing")

    fast = [await server.emit("fast.thing") for _ in range(10)]

    async with asyncio.timeout(3):
        for accepted in fast:
            await server.wait_for_delivery(accepted["deliveries"][0]["id"], "delivered")
    slow_started = [r for r in receiver.received if r.path == "/slow"]
    assert len(slow_started) <= 2  # the per-endpoint cap held
    assert json.loads(receiver.received[-1].body)["event"] in {"fast.thing", "slow.thing"}
