"""Emitting events over the API: answers, caller ids, idempotency, batches and payloads."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import RunningServer
from tests.receivers import Receiver

EVENTS = "/api/v1/events"
BATCH = "/api/v1/events/batch"
JSON_HEADERS = {"Content-Type": "application/json"}
# Long enough for a wrongly created delivery to reach the receiver, short enough for a test.
SETTLE_SECONDS = 0.3


def assert_error(body: Any, code: str) -> str:
    """Check the JSON error shape and code; return the message for further checks."""
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    message: str = body["error"]["message"]
    assert message
    return message


async def deliveries_of(server: RunningServer, event_id: str) -> list[dict[str, Any]]:
    status, page = await server.request("GET", "/api/v1/deliveries", params={"event_id": event_id})
    assert status == 200, page
    items: list[dict[str, Any]] = page["items"]
    return items


async def all_deliveries(server: RunningServer) -> list[dict[str, Any]]:
    status, page = await server.request("GET", "/api/v1/deliveries")
    assert status == 200, page
    items: list[dict[str, Any]] = page["items"]
    return items


async def test_emit__answers_202_with_the_event_id_and_a_pending_delivery_per_endpoint(
    server: RunningServer, receiver: Receiver
) -> None:
    first = await server.create_endpoint(receiver.url("/a"))
    second = await server.create_endpoint(receiver.url("/b"), events=["user.*"])
    await server.create_endpoint(receiver.url("/c"), events=["order.*"])

    status, accepted = await server.request(
        "POST", EVENTS, json={"event_type": "user.created", "payload": {"n": 1}}
    )

    assert status == 202
    assert set(accepted) == {"id", "deliveries"}
    assert accepted["id"].startswith("evt_")
    assert {d["endpoint_id"] for d in accepted["deliveries"]} == {first["id"], second["id"]}
    for delivery in accepted["deliveries"]:
        assert set(delivery) == {"id", "endpoint_id", "status"}
        assert delivery["id"].startswith("dlv_")
        assert delivery["status"] == "pending"
    _, event = await server.request("GET", f"{EVENTS}/{accepted['id']}")
    assert event["event_type"] == "user.created"
    assert {d["id"] for d in event["deliveries"]} == {d["id"] for d in accepted["deliveries"]}


async def test_emit_with_no_endpoints__is_accepted_with_no_deliveries(
    server: RunningServer,
) -> None:
    accepted = await server.emit()

    status, event = await server.request("GET", f"{EVENTS}/{accepted['id']}")
    assert accepted["deliveries"] == []
    assert status == 200
    assert event["deliveries"] == []


async def test_caller_chosen_id__is_the_event_id_and_the_webhook_id(
    server: RunningServer, receiver: Receiver
) -> None:
    await server.create_endpoint(receiver.url())

    status, accepted = await server.request(
        "POST", EVENTS, json={"id": "order-1234:v2", "event_type": "order.paid", "payload": {}}
    )

    assert status == 202
    assert accepted["id"] == "order-1234:v2"
    [request] = await receiver.wait_for(1)
    assert request.headers["webhook-id"] == "order-1234:v2"
    assert json.loads(request.body)["id"] == "order-1234:v2"
    _, event = await server.request("GET", f"{EVENTS}/order-1234:v2")
    assert event["id"] == "order-1234:v2"


async def test_same_caller_id_again_without_idempotency_key__is_409_event_exists(
    server: RunningServer, receiver: Receiver
) -> None:
    await server.create_endpoint(receiver.url())
    event = {"id": "evt-once", "event_type": "user.created", "payload": {"n": 1}}
    first_status, _ = await server.request("POST", EVENTS, json=event)

    status, body = await server.request("POST", EVENTS, json=event)

    assert first_status == 202
    assert status == 409
    assert "evt-once" in assert_error(body, "event_exists")
    assert len(await deliveries_of(server, "evt-once")) == 1


@pytest.mark.parametrize("event_id", ["has space", "slash/inside", "é", ""])
async def test_caller_id_with_disallowed_characters__is_422(
    server: RunningServer, event_id: str
) -> None:
    status, body = await server.request(
        "POST", EVENTS, json={"id": event_id, "event_type": "user.created", "payload": {}}
    )

    assert status == 422
    assert "id" in assert_error(body, "invalid_input")


async def test_repeat_with_the_same_idempotency_key__returns_the_first_answer_and_sends_once(
    server: RunningServer, receiver: Receiver
) -> None:
    await server.create_endpoint(receiver.url())
    event = {"event_type": "user.created", "payload": {"n": 1}}
    headers = {"Idempotency-Key": "signup-42"}
    _, first = await server.request("POST", EVENTS, json=event, headers=headers)
    await server.wait_for_delivery(first["deliveries"][0]["id"], "delivered")

    status, repeated = await server.request("POST", EVENTS, json=event, headers=headers)
    await asyncio.sleep(SETTLE_SECONDS)

    assert status == 202
    assert repeated["id"] == first["id"]
    assert [d["id"] for d in repeated["deliveries"]] == [d["id"] for d in first["deliveries"]]
    assert len(await deliveries_of(server, first["id"])) == 1
    assert len(await all_deliveries(server)) == 1
    assert len(receiver.received) == 1


async def test_same_idempotency_key_with_other_body__is_409(
    server: RunningServer, receiver: Receiver
) -> None:
    await server.create_endpoint(receiver.url())
    headers = {"Idempotency-Key": "signup-43"}
    await server.request(
        "POST", EVENTS, json={"event_type": "user.created", "payload": {"n": 1}}, headers=headers
    )

    status, body = await server.request(
        "POST", EVENTS, json={"event_type": "user.created", "payload": {"n": 2}}, headers=headers
    )

    assert status == 409
    assert "Idempotency-Key" in assert_error(body, "idempotency_key_reused")
    assert len(await all_deliveries(server)) == 1


async def test_same_idempotency_key_with_reordered_keys_and_spacing__is_the_same_request(
    server: RunningServer, receiver: Receiver
) -> None:
    await server.create_endpoint(receiver.url())
    headers = {**JSON_HEADERS, "Idempotency-Key": "reordered"}
    compact = b'{"event_type":"user.created","payload":{"a":1,"b":{"c":[1,2],"d":null}}}'
    spaced = b'{ "payload" : { "b" : { "d" : null, "c" : [ 1, 2 ] },\n "a" : 1 },\n' + (
        b'  "event_type" : "user.created" }'
    )

    first_status, first = await server.request("POST", EVENTS, data=compact, headers=headers)
    status, repeated = await server.request("POST", EVENTS, data=spaced, headers=headers)

    assert (first_status, status) == (202, 202)
    assert repeated["id"] == first["id"]
    assert len(await all_deliveries(server)) == 1


async def test_idempotency_key_of_a_single_event_reused_for_a_batch__is_409(
    server: RunningServer,
) -> None:
    event = {"event_type": "user.created", "payload": {"n": 1}}
    headers = {"Idempotency-Key": "shared"}
    await server.request("POST", EVENTS, json=event, headers=headers)

    status, body = await server.request("POST", BATCH, json={"events": [event]}, headers=headers)

    assert status == 409
    assert_error(body, "idempotency_key_reused")


@pytest.mark.parametrize("key", ["x" * 256, "tab\there"])
async def test_unusable_idempotency_key__is_422_and_stores_nothing(
    server: RunningServer, key: str
) -> None:
    status, body = await server.request(
        "POST",
        EVENTS,
        json={"id": "evt-keyed", "event_type": "user.created", "payload": {}},
        headers={"Idempotency-Key": key},
    )

    assert status == 422
    assert "Idempotency-Key" in assert_error(body, "invalid_input")
    missing_status, _ = await server.request("GET", f"{EVENTS}/evt-keyed")
    assert missing_status == 404


async def test_batch_of_three__is_202_with_three_items_all_delivered(
    server: RunningServer, receiver: Receiver
) -> None:
    await server.create_endpoint(receiver.url())
    events = [{"event_type": f"user.step{n}", "payload": {"n": n}} for n in range(3)]

    status, accepted = await server.request("POST", BATCH, json={"events": events})

    assert status == 202
    assert len(accepted["events"]) == 3
    assert len({item["id"] for item in accepted["events"]}) == 3
    for item in accepted["events"]:
        [delivery] = item["deliveries"]
        await server.wait_for_delivery(delivery["id"], "delivered")
    received = await receiver.wait_for(3)
    bodies = sorted((json.loads(r.body) for r in received), key=lambda b: b["data"]["n"])
    assert [b["event"] for b in bodies] == ["user.step0", "user.step1", "user.step2"]
    assert [b["id"] for b in bodies] == [item["id"] for item in accepted["events"]]


async def test_batch_over_max_batch_events__is_422_naming_the_setting(
    start_server: Any, receiver: Receiver
) -> None:
    server = await start_server(max_batch_events=2)
    await server.create_endpoint(receiver.url())
    events = [{"event_type": "user.created", "payload": {"n": n}} for n in range(3)]

    status, body = await server.request("POST", BATCH, json={"events": events})

    assert status == 422
    assert "MAX_BATCH_EVENTS" in assert_error(body, "invalid_input")
    assert await all_deliveries(server) == []


async def test_batch_at_max_batch_events__is_accepted(
    start_server: Any, receiver: Receiver
) -> None:
    server = await start_server(max_batch_events=2)
    events = [{"event_type": "user.created", "payload": {"n": n}} for n in range(2)]

    status, accepted = await server.request("POST", BATCH, json={"events": events})

    assert status == 202
    assert len(accepted["events"]) == 2


async def test_empty_batch__is_422(server: RunningServer) -> None:
    status, body = await server.request("POST", BATCH, json={"events": []})

    assert status == 422
    assert "events" in assert_error(body, "invalid_input")


async def test_batch_with_one_invalid_event_type__is_422_and_stores_nothing(
    server: RunningServer, receiver: Receiver
) -> None:
    await server.create_endpoint(receiver.url())
    events = [
        {"id": "evt-good-1", "event_type": "user.created", "payload": {}},
        {"id": "evt-bad", "event_type": "user created", "payload": {}},
        {"id": "evt-good-2", "event_type": "user.deleted", "payload": {}},
    ]

    status, body = await server.request("POST", BATCH, json={"events": events})
    await asyncio.sleep(SETTLE_SECONDS)

    assert status == 422
    assert "user created" in assert_error(body, "invalid_input")
    assert await all_deliveries(server) == []
    assert receiver.received == []
    for event_id in ("evt-good-1", "evt-bad", "evt-good-2"):
        missing_status, _ = await server.request("GET", f"{EVENTS}/{event_id}")
        assert missing_status == 404


async def test_batch_repeating_an_id_within_itself__is_409_and_stores_nothing(
    server: RunningServer, receiver: Receiver
) -> None:
    await server.create_endpoint(receiver.url())
    events = [
        {"id": "evt-twice", "event_type": "user.created", "payload": {"n": 1}},
        {"id": "evt-twice", "event_type": "user.created", "payload": {"n": 2}},
    ]

    status, body = await server.request("POST", BATCH, json={"events": events})
    await asyncio.sleep(SETTLE_SECONDS)

    assert status == 409
    assert_error(body, "event_exists")
    assert await all_deliveries(server) == []
    assert receiver.received == []
    missing_status, _ = await server.request("GET", f"{EVENTS}/evt-twice")
    assert missing_status == 404


async def test_batch_reusing_a_stored_id__is_409_and_stores_none_of_the_batch(
    server: RunningServer, receiver: Receiver
) -> None:
    await server.create_endpoint(receiver.url())
    await server.request(
        "POST", EVENTS, json={"id": "evt-old", "event_type": "user.created", "payload": {}}
    )
    events = [
        {"id": "evt-new", "event_type": "user.created", "payload": {}},
        {"id": "evt-old", "event_type": "user.created", "payload": {}},
    ]

    status, body = await server.request("POST", BATCH, json={"events": events})

    assert status == 409
    assert "evt-old" in assert_error(body, "event_exists")
    missing_status, _ = await server.request("GET", f"{EVENTS}/evt-new")
    assert missing_status == 404
    assert len(await all_deliveries(server)) == 1


@pytest.mark.parametrize(
    "event_type",
    ["order.*", "*", "user created", "user\tcreated", "x" * 200, "", "café.opened"],
)
async def test_unusable_event_type__is_422(
    server: RunningServer, receiver: Receiver, event_type: str
) -> None:
    await server.create_endpoint(receiver.url())

    status, body = await server.request(
        "POST", EVENTS, json={"event_type": event_type, "payload": {}}
    )

    assert status == 422
    assert "Event type" in assert_error(body, "invalid_input")
    assert await all_deliveries(server) == []


async def test_event_type_of_128_characters__is_accepted(server: RunningServer) -> None:
    status, accepted = await server.request(
        "POST", EVENTS, json={"event_type": "e" * 128, "payload": {}}
    )

    assert status == 202
    _, event = await server.request("GET", f"{EVENTS}/{accepted['id']}")
    assert event["event_type"] == "e" * 128


@pytest.mark.parametrize(
    "payload",
    [
        {"nested": {"list": [1, {"deep": None}], "flag": True}},
        [1, "two", None, 3.25],
        "just a string",
        'ünïcødé ✓ \u2028 "quoted"',
        42,
        -7.5,
        0,
        True,
        False,
        {},
        [],
        "",
        None,
    ],
    ids=repr,
)
async def test_payload_of_any_json_type__is_delivered_intact(
    server: RunningServer, receiver: Receiver, payload: Any
) -> None:
    await server.create_endpoint(receiver.url())

    status, accepted = await server.request(
        "POST", EVENTS, json={"event_type": "thing.happened", "payload": payload}
    )

    assert status == 202
    [request] = await receiver.wait_for(1)
    delivered = json.loads(request.body)
    assert "data" in delivered
    assert delivered["data"] == payload
    assert type(delivered["data"]) is type(payload)
    _, event = await server.request("GET", f"{EVENTS}/{accepted['id']}")
    assert event["payload"] == payload


async def test_missing_payload__is_422_naming_payload(server: RunningServer) -> None:
    status, body = await server.request("POST", EVENTS, json={"event_type": "user.created"})

    assert status == 422
    assert "payload" in assert_error(body, "invalid_input")


@pytest.mark.parametrize(
    "raw_payload",
    [
        pytest.param(b"18446744073709551616", id="integer-beyond-64-bits"),
        pytest.param(b'"\\ud800"', id="lone-surrogate"),
        pytest.param(b"[" * 300 + b"]" * 300, id="nested-300-deep"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"[Infinity]", id="infinity"),
        pytest.param(b"1e400", id="overflowing-float"),
    ],
)
async def test_payload_that_cannot_be_sent_as_json__is_422_and_stores_nothing(
    server: RunningServer, receiver: Receiver, raw_payload: bytes
) -> None:
    await server.create_endpoint(receiver.url())
    body = b'{"id": "evt-odd", "event_type": "odd.value", "payload": ' + raw_payload + b"}"

    status, answer = await server.request("POST", EVENTS, data=body, headers=JSON_HEADERS)
    batch_status, batch_answer = await server.request(
        "POST",
        BATCH,
        data=b'{"events": [' + body + b"]}",
        headers={**JSON_HEADERS, "Idempotency-Key": "odd"},
    )

    assert status == 422
    assert "payload" in assert_error(answer, "invalid_input")
    assert batch_status == 422
    assert "payload" in assert_error(batch_answer, "invalid_input")
    missing_status, _ = await server.request("GET", f"{EVENTS}/evt-odd")
    assert missing_status == 404


async def test_unknown_event__is_404_not_found(server: RunningServer) -> None:
    status, body = await server.request("GET", f"{EVENTS}/evt_missing")

    assert status == 404
    assert "evt_missing" in assert_error(body, "not_found")
