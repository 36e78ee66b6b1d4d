"""An event emitted over the API reaches a real receiver, signed both ways."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
import standardwebhooks

from tests.conftest import RunningServer
from tests.receivers import Receiver


@pytest.fixture
def server(server_with_each_sender: RunningServer) -> RunningServer:
    """Every test here runs once per way of sending."""
    return server_with_each_sender


async def test_event_is_delivered_with_body_and_headers(
    server: RunningServer, receiver: Receiver
) -> None:
    endpoint = await server.create_endpoint(receiver.url(), events=["user.*"])
    accepted = await server.emit("user.created", {"user_id": 42})

    [request] = await receiver.wait_for(1)
    body = json.loads(request.body)
    assert body["id"] == accepted["id"]
    assert body["event"] == "user.created"
    assert body["data"] == {"user_id": 42}
    assert body["timestamp"].endswith("Z")
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("hookline/")
    assert request.headers["X-Webhook-Event"] == "user.created"
    assert request.headers["X-Webhook-Delivery"] == accepted["deliveries"][0]["id"]
    assert request.headers["X-Webhook-Attempt"] == "1"
    assert request.headers["webhook-id"] == accepted["id"]
    assert accepted["deliveries"][0]["endpoint_id"] == endpoint["id"]

    delivery = await server.wait_for_delivery(accepted["deliveries"][0]["id"], "delivered")
    assert delivery["attempt_count"] == 1
    assert delivery["attempts"][0]["status_code"] == 200
    assert delivery["attempts"][0]["response_body"] == "ok"


async def test_hex_signature_verifies_with_the_compare_digest_recipe(
    server: RunningServer, receiver: Receiver
) -> None:
    endpoint = await server.create_endpoint(receiver.url(), secret="plain-text-secret")
    await server.emit()

    [request] = await receiver.wait_for(1)
    expected = hmac.new(b"plain-text-secret", request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Webhook-Signature"], f"sha256={expected}")
    assert "secret" not in endpoint or endpoint["secret"] == "plain-text-secret"


async def test_generated_secret_verifies_with_the_standardwebhooks_library(
    server: RunningServer, receiver: Receiver
) -> None:
    endpoint = await server.create_endpoint(receiver.url())
    assert endpoint["secret"].startswith("whsec_")
    await server.emit("order.paid", {"amount": 1250})

    [request] = await receiver.wait_for(1)
    verifier = standardwebhooks.Webhook(endpoint["secret"])
    verified = verifier.verify(request.body, request.headers)
    assert verified["data"] == {"amount": 1250}


async def test_secret_is_never_shown_after_creation(
    server: RunningServer, receiver: Receiver
) -> None:
    endpoint = await server.create_endpoint(receiver.url())

    _, fetched = await server.request("GET", f"/api/v1/webhooks/{endpoint['id']}")
    _, listed = await server.request("GET", "/api/v1/webhooks")
    assert "secret" not in fetched
    assert all("secret" not in item for item in listed["items"])
    assert endpoint["secret"] not in json.dumps([fetched, listed])


async def test_fan_out_reaches_only_matching_endpoints(
    server: RunningServer, receiver: Receiver
) -> None:
    everything = await server.create_endpoint(receiver.url("/all"), events=["*"])
    orders = await server.create_endpoint(receiver.url("/orders"), events=["order.*"])
    await server.create_endpoint(receiver.url("/users"), events=["user.deleted"])

    accepted = await server.emit("order.refund.issued")

    assert {d["endpoint_id"] for d in accepted["deliveries"]} == {everything["id"], orders["id"]}
    received = await receiver.wait_for(2)
    assert sorted(r.path for r in received) == ["/all", "/orders"]


async def test_disabled_endpoint_gets_no_new_deliveries(
    server: RunningServer, receiver: Receiver
) -> None:
    endpoint = await server.create_endpoint(receiver.url())
    status, _ = await server.request(
        "PATCH", f"/api/v1/webhooks/{endpoint['id']}", json={"enabled": False}
    )
    assert status == 200

    accepted = await server.emit()

    assert accepted["deliveries"] == []


async def test_event_resource_shows_payload_and_deliveries(
    server: RunningServer, receiver: Receiver
) -> None:
    await server.create_endpoint(receiver.url())
    accepted = await server.emit("user.created", {"name": "Ada"})
    await server.wait_for_delivery(accepted["deliveries"][0]["id"], "delivered")

    status, event = await server.request("GET", f"/api/v1/events/{accepted['id']}")

    assert status == 200
    assert event["payload"] == {"name": "Ada"}
    assert [d["status"] for d in event["deliveries"]] == ["delivered"]
