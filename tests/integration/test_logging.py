"""The log of a real server process at DEBUG: JSON lines with the delivery keys, no secrets."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from tests.processes import ServerProcess
from tests.receivers import Received, Receiver, Reply

API_KEY = "hl_log-test-api-key-8f3a1c"
SECRET_KEY_BYTES = b"log-test-endpoint-secret-key-01"
ENDPOINT_SECRET = "whsec_" + base64.b64encode(SECRET_KEY_BYTES).decode()
DOWNSTREAM_TOKEN = "Bearer downstream-token-5d9e2b"
PAYLOAD_MARKER = "payload-marker-card-4242"
DELIVERY_KEYS = {"event_id", "delivery_id", "endpoint_id", "attempt"}
IDLE_SECONDS = 3.0


async def call(server: ServerProcess, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.request(method, server.base_url + path, **kwargs) as response,
    ):
        assert response.status < 300, await response.text()
        return await response.json() if response.content_type == "application/json" else None


async def wait_for_status(server: ServerProcess, delivery_id: str, status: str) -> None:
    async with asyncio.timeout(10):
        while True:
            delivery = await call(server, "GET", f"/api/v1/deliveries/{delivery_id}")
            if delivery["status"] == status:
                return
            await asyncio.sleep(0.05)


def flaky_then_fixed(request: Received) -> Reply:
    if request.path == "/down":
        return Reply(status=500)
    first = request.headers["X-Webhook-Attempt"] == "1" and request.path == "/flaky"
    return Reply(status=503) if first else Reply()


async def run_a_small_story(server: ServerProcess, receiver: Receiver) -> dict[str, str]:
    """A retry then a delivery, a dead letter, its replay, and an endpoint disabled."""
    receiver.script = flaky_then_fixed
    flaky = await call(
        server,
        "POST",
        "/api/v1/webhooks",
        json={
            "url": receiver.url("/flaky"),
            "events": ["*"],
            "secret": ENDPOINT_SECRET,
            "headers": {"Authorization": DOWNSTREAM_TOKEN},
        },
    )
    down = await call(
        server,
        "POST",
        "/api/v1/webhooks",
        json={"url": receiver.url("/down"), "events": ["*"], "max_retries": 0},
    )
    accepted = await call(
        server,
        "POST",
        "/api/v1/events",
        json={"event_type": "card.charged", "payload": {"card": PAYLOAD_MARKER}},
    )
    ids = {d["endpoint_id"]: d["id"] for d in accepted["deliveries"]}
    await wait_for_status(server, ids[flaky["id"]], "delivered")
    await wait_for_status(server, ids[down["id"]], "failed")

    [message] = (await call(server, "GET", "/api/v1/dlq"))["items"]
    receiver.script = lambda _: Reply()
    replayed = await call(server, "POST", f"/api/v1/dlq/{message['id']}/replay")
    await wait_for_status(server, replayed["id"], "delivered")
    await call(server, "PATCH", f"/api/v1/webhooks/{flaky['id']}", json={"enabled": False})
    return {"flaky": flaky["id"], "down": down["id"], "replayed": replayed["id"]}


async def test_debug_log_is_json_lines_with_delivery_keys_and_no_secrets(
    tmp_path: Path, receiver: Receiver
) -> None:
    # LOG_FORMAT is left at auto: the log goes to a file, not a terminal, so it must be JSON.
    server = ServerProcess(tmp_path, API_KEYS=API_KEY, LOG_LEVEL="DEBUG")
    try:
        await server.start()
        ids = await run_a_small_story(server, receiver)
        await asyncio.sleep(0.5)  # the last verdict's line is written after the API shows it
        lines_before_idling = len(server.log_path.read_text().splitlines())
        await asyncio.sleep(IDLE_SECONDS)
        lines_after_idling = len(server.log_path.read_text().splitlines())
        assert await server.terminate() == 0
    finally:
        server.ensure_stopped()
    text = server.log_path.read_text()
    records = [json.loads(line) for line in text.splitlines()]

    # Nothing is logged per poll: an idle server writes nothing.
    assert lines_after_idling == lines_before_idling
    actions = Counter(record.get("action") for record in records)
    assert actions["accepted"] == 1
    assert actions["queued"] == 2  # DEBUG: one per delivery the event fanned out to
    assert actions["attempt_failed"] == 1
    assert actions["dead_lettered"] == 1
    assert actions["replayed"] == 1
    assert actions["delivered"] == 2
    assert actions["endpoint_created"] == 2
    assert actions["endpoint_disabled"] == 1

    # DEBUG shows each attempt as it starts: the flaky endpoint's two, the dead-lettered
    # one's, and the replay's.
    assert actions["attempt_started"] == len(receiver.received) == 4
    about_deliveries = [r for r in records if "delivery_id" in r]
    assert len(about_deliveries) >= 11
    for record in about_deliveries:
        assert set(record) >= DELIVERY_KEYS, record
        assert record["action"], record
    [retry] = [r for r in records if r.get("action") == "attempt_failed"]
    assert retry["level"] == "warning"
    assert retry["reason"] == "HTTP 503: Service Unavailable"
    assert retry["next_attempt_at"] > 0
    [replay] = [r for r in records if r.get("action") == "replayed"]
    assert replay["delivery_id"] == ids["replayed"]
    assert replay["endpoint_id"] == ids["down"]

    signatures = [
        signature
        for request in receiver.received
        for signature in (
            request.headers["X-Webhook-Signature"].removeprefix("sha256="),
            request.headers["webhook-signature"].removeprefix("v1,"),
        )
    ]
    assert len(signatures) == 8
    assert all(len(signature) >= 40 for signature in signatures)
    never_logged = [
        API_KEY,
        ENDPOINT_SECRET,
        ENDPOINT_SECRET.removeprefix("whsec_"),
        DOWNSTREAM_TOKEN,
        PAYLOAD_MARKER,
        *signatures,
    ]
    for secret in never_logged:
        assert secret not in text
    assert "authorization" not in text.lower()
