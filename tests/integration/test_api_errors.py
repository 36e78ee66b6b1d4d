"""How the API answers requests it cannot serve: always a 4xx with a JSON error, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.receivers import Receiver

EVENTS = "/api/v1/events"
BATCH = "/api/v1/events/batch"
WEBHOOKS = "/api/v1/webhooks"
JSON_HEADERS = {"Content-Type": "application/json"}
SMALL_PAYLOAD_LIMIT_BYTES = 2048
CHUNK_BYTES = 512


async def send(server: RunningServer, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """Send a request and check the answer is no 5xx and, when an error, JSON of our shape."""
    async with server.http.request(method, server.base_url + path, **kwargs) as response:
        text = await response.text()
        assert response.status < 500, text
        if response.status < 400:
            return response.status, json.loads(text) if text else None
        assert response.content_type == "application/json", text
        body = json.loads(text)
        assert set(body) == {"error"}, body
        assert {"code", "message"} <= set(body["error"]), body
        assert isinstance(body["error"]["code"], str)
        assert body["error"]["message"].strip()
        return response.status, body


def code_of(body: Any) -> str:
    code: str = body["error"]["code"]
    return code


def message_of(body: Any) -> str:
    message: str = body["error"]["message"]
    return message


def oversized_event(event_id: str, total_bytes: int) -> bytes:
    """A valid event body of at least ``total_bytes`` bytes."""
    event = {"id": event_id, "event_type": "big.event", "payload": {"blob": "x" * total_bytes}}
    return json.dumps(event).encode()


async def in_chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), CHUNK_BYTES):
        yield body[start : start + CHUNK_BYTES]


@pytest.mark.parametrize(
    "raw",
    [b'{"event_type":', b"{'event_type': 'user.created'}", b'{"event_type": "a",}', b"nope"],
)
@pytest.mark.parametrize("path", [EVENTS, WEBHOOKS])
async def test_malformed_json__is_400_invalid_json(
    server: RunningServer, path: str, raw: bytes
) -> None:
    status, body = await send(server, "POST", path, data=raw, headers=JSON_HEADERS)

    assert status == 400
    assert code_of(body) == "invalid_json"


@pytest.mark.parametrize(
    ("method", "path", "payload", "field"),
    [
        ("POST", EVENTS, {"event_type": 5, "payload": {}}, "event_type"),
        ("POST", EVENTS, {"event_type": "a.b", "payload": {}, "id": 7}, "id"),
        ("POST", BATCH, {"events": {"event_type": "a.b", "payload": {}}}, "events"),
        ("POST", BATCH, {"events": [{"event_type": ["a"], "payload": 1}]}, "events.0.event_type"),
        ("POST", WEBHOOKS, {"url": 5, "events": ["*"]}, "url"),
        ("POST", WEBHOOKS, {"url": "http://127.0.0.1/", "events": "user.created"}, "events"),
        ("POST", WEBHOOKS, {"url": "http://127.0.0.1/", "events": ["*"], "timeout": -1}, "timeout"),
        (
            "POST",
            WEBHOOKS,
            {"url": "http://127.0.0.1/", "events": ["*"], "max_retries": "many"},
            "max_retries",
        ),
        (
            "POST",
            WEBHOOKS,
            {"url": "http://127.0.0.1/", "events": ["*"], "metadata": [1]},
            "metadata",
        ),
        ("POST", "/api/v1/dlq/replay", {"limit": "all"}, "limit"),
    ],
)
async def test_wrong_types__are_422_with_a_message_naming_the_field(
    server: RunningServer, method: str, path: str, payload: Any, field: str
) -> None:
    status, body = await send(server, method, path, json=payload)

    assert status == 422
    assert code_of(body) == "invalid_input"
    assert field in message_of(body)


async def test_patch_with_a_wrong_type__is_422_naming_the_field(
    server: RunningServer, receiver: Receiver
) -> None:
    endpoint = await server.create_endpoint(receiver.url())

    status, body = await send(
        server, "PATCH", f"{WEBHOOKS}/{endpoint['id']}", json={"enabled": "maybe"}
    )

    assert status == 422
    assert "enabled" in message_of(body)
    _, fetched = await send(server, "GET", f"{WEBHOOKS}/{endpoint['id']}")
    assert fetched["enabled"] is True


async def test_body_that_is_not_an_object__is_422(server: RunningServer) -> None:
    status, body = await send(server, "POST", EVENTS, json=[1, 2])

    assert status == 422
    assert code_of(body) == "invalid_input"


@pytest.mark.parametrize(
    "content",
    [
        {"data": '{"event_type": "a.b", "payload": 1}', "headers": {"Content-Type": "text/plain"}},
        {"data": {"event_type": "a.b", "payload": "1"}},
        {
            "data": b'{"event_type": "a.b", "payload": 1}',
            "headers": {"Content-Type": "application/xml"},
        },
    ],
    ids=["text-plain", "form-urlencoded", "xml"],
)
@pytest.mark.parametrize("path", [EVENTS, BATCH, WEBHOOKS])
async def test_non_json_content_type__is_415(
    server: RunningServer, path: str, content: dict[str, Any]
) -> None:
    status, body = await send(server, "POST", path, **content)

    assert status == 415
    assert code_of(body) == "unsupported_media_type"
    assert "application/json" in message_of(body)
    _, deliveries = await send(server, "GET", "/api/v1/deliveries")
    assert deliveries["items"] == []


async def test_json_with_a_charset_parameter__is_accepted(server: RunningServer) -> None:
    status, accepted = await send(
        server,
        "POST",
        EVENTS,
        data=b'{"event_type": "a.b", "payload": "caf\xc3\xa9"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    assert status == 202
    _, event = await send(server, "GET", f"{EVENTS}/{accepted['id']}")
    assert event["payload"] == "café"


async def test_body_over_max_payload_bytes_with_content_length__is_413_and_not_stored(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server = await start_server(max_payload_bytes=SMALL_PAYLOAD_LIMIT_BYTES)
    await server.create_endpoint(receiver.url())
    raw = oversized_event("evt-too-big", SMALL_PAYLOAD_LIMIT_BYTES)

    status, body = await send(server, "POST", EVENTS, data=raw, headers=JSON_HEADERS)

    assert status == 413
    assert code_of(body) == "payload_too_large"
    assert "MAX_PAYLOAD_BYTES" in message_of(body)
    assert str(SMALL_PAYLOAD_LIMIT_BYTES) in message_of(body)
    missing_status, missing = await send(server, "GET", f"{EVENTS}/evt-too-big")
    assert (missing_status, code_of(missing)) == (404, "not_found")
    _, deliveries = await send(server, "GET", "/api/v1/deliveries")
    assert deliveries["items"] == []


async def test_chunked_body_over_max_payload_bytes__is_413_and_not_stored(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server = await start_server(max_payload_bytes=SMALL_PAYLOAD_LIMIT_BYTES)
    await server.create_endpoint(receiver.url())
    raw = oversized_event("evt-chunked", 2 * SMALL_PAYLOAD_LIMIT_BYTES)

    async with server.http.post(
        server.base_url + EVENTS, data=in_chunks(raw), headers=JSON_HEADERS
    ) as response:
        sent_headers = response.request_info.headers
        status, body = response.status, await response.json()

    assert "Content-Length" not in sent_headers
    assert sent_headers.get("Transfer-Encoding") == "chunked"
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"
    missing_status, _ = await send(server, "GET", f"{EVENTS}/evt-chunked")
    assert missing_status == 404
    _, deliveries = await send(server, "GET", "/api/v1/deliveries")
    assert deliveries["items"] == []


async def test_chunked_body_under_max_payload_bytes__is_accepted(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    server = await start_server(max_payload_bytes=SMALL_PAYLOAD_LIMIT_BYTES)
    await server.create_endpoint(receiver.url())
    raw = oversized_event("evt-chunked-small", SMALL_PAYLOAD_LIMIT_BYTES // 2)

    status, accepted = await send(server, "POST", EVENTS, data=in_chunks(raw), headers=JSON_HEADERS)

    assert status == 202
    assert accepted["id"] == "evt-chunked-small"
    [request] = await receiver.wait_for(1)
    assert json.loads(request.body)["data"] == json.loads(raw)["payload"]


async def test_server_keeps_answering_after_a_413(start_server: ServerFactory) -> None:
    server = await start_server(max_payload_bytes=SMALL_PAYLOAD_LIMIT_BYTES)
    raw = oversized_event("evt-refused", SMALL_PAYLOAD_LIMIT_BYTES)
    await send(server, "POST", EVENTS, data=in_chunks(raw), headers=JSON_HEADERS)

    status, accepted = await send(
        server, "POST", EVENTS, json={"event_type": "after.refusal", "payload": {}}
    )

    assert status == 202
    assert accepted["id"].startswith("evt_")


async def test_batch_body_over_max_batch_bytes__is_413_naming_the_setting(
    start_server: ServerFactory,
) -> None:
    server = await start_server(max_batch_bytes=4096)
    events = [{"event_type": "a.b", "payload": {"blob": "x" * 1500}} for _ in range(3)]

    status, body = await send(server, "POST", BATCH, json={"events": events})

    assert status == 413
    assert "MAX_BATCH_BYTES" in message_of(body)


async def test_batch_with_one_payload_over_max_payload_bytes__is_422_naming_the_event(
    start_server: ServerFactory,
) -> None:
    server = await start_server(max_payload_bytes=SMALL_PAYLOAD_LIMIT_BYTES)
    events = [
        {"event_type": "a.b", "payload": {}},
        {"event_type": "a.b", "payload": {"blob": "x" * SMALL_PAYLOAD_LIMIT_BYTES}},
    ]

    status, body = await send(server, "POST", BATCH, json={"events": events})

    assert status == 422
    assert "events[1].payload" in message_of(body)
    assert "MAX_PAYLOAD_BYTES" in message_of(body)


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v1/events/a/b", "/api"])
async def test_unknown_route__is_404_json(server: RunningServer, path: str) -> None:
    status, body = await send(server, "GET", path)

    assert status == 404
    assert code_of(body) == "not_found"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", EVENTS),
        ("PUT", WEBHOOKS),
        ("PUT", f"{WEBHOOKS}/ep_x"),
        ("POST", "/health"),
        ("DELETE", "/test/webhook"),
    ],
)
async def test_wrong_method__is_405_json_with_an_allow_header(
    server: RunningServer, method: str, path: str
) -> None:
    async with server.http.request(method, server.base_url + path) as response:
        status, allow = response.status, response.headers.get("Allow", "")
        body = await response.json()

    assert status == 405
    assert body["error"]["code"] == "method_not_allowed"
    assert method not in allow
    assert allow


@pytest.mark.parametrize(
    ("path", "served"),
    [(WEBHOOKS, {"GET", "POST"}), (f"{WEBHOOKS}/ep_x", {"GET", "PATCH", "DELETE"})],
)
async def test_405_allow_header__lists_every_method_the_resource_serves(
    server: RunningServer, path: str, served: set[str]
) -> None:
    async with server.http.put(server.base_url + path) as response:
        allow = {method.strip() for method in response.headers.get("Allow", "").split(",")}

    assert response.status == 405
    assert served <= allow


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/api/v1/deliveries", {"params": {"status": "lost"}}),
        ("GET", "/api/v1/deliveries", {"params": {"limit": "-1"}}),
        ("GET", "/api/v1/deliveries/dlv_missing", {}),
        ("POST", "/api/v1/deliveries/dlv_missing/retry", {}),
        ("GET", "/api/v1/dlq/dlq_missing", {}),
        ("POST", "/api/v1/dlq/dlq_missing/replay", {}),
        ("DELETE", "/api/v1/dlq/dlq_missing", {}),
        ("GET", "/api/v1/dlq", {"params": {"cursor": "////"}}),
        ("POST", "/api/v1/dlq/replay", {"json": {"limit": 0}}),
        ("POST", EVENTS, {"json": {"event_type": "a.b", "payload": 1, "extra": True}}),
        ("POST", EVENTS, {"data": b"", "headers": JSON_HEADERS}),
        ("POST", EVENTS, {"data": b"[" * 5000, "headers": JSON_HEADERS}),
        ("PATCH", f"{WEBHOOKS}/ep_missing", {"json": {"description": "x"}}),
        ("POST", WEBHOOKS, {"json": {"url": "http://[::1", "events": ["*"]}}),
        ("POST", WEBHOOKS, {"json": {"url": "http://no-such-host.invalid/", "events": ["*"]}}),
    ],
)
async def test_assorted_bad_requests__get_a_4xx_json_error(
    server: RunningServer, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    status, body = await send(server, method, path, **kwargs)

    assert 400 <= status < 500
    assert code_of(body)
