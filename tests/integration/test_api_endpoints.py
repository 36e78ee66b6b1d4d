"""Managing endpoints over the API: create, read, list, update, delete, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RunningServer
from tests.receivers import Receiver

WEBHOOKS = "/api/v1/webhooks"
SECRET = "caller-chosen-secret"


def assert_error(body: Any, code: str) -> str:
    """Check the JSON error shape and code; return the message for further checks."""
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    message: str = body["error"]["message"]
    assert message
    return message


async def test_create_without_secret__is_201_with_a_generated_whsec_secret(
    server: RunningServer, receiver: Receiver
) -> None:
    status, created = await server.request(
        "POST", WEBHOOKS, json={"url": receiver.url(), "events": ["user.*"]}
    )

    assert status == 201
    assert created["id"].startswith("ep_")
    assert created["secret"].startswith("whsec_")
    assert len(created["secret"]) > len("whsec_") + 16
    assert created["url"] == receiver.url()
    assert created["events"] == ["user.*"]
    assert created["enabled"] is True
    assert created["metadata"] == {}
    assert created["headers"] == {}


async def test_two_generated_secrets__differ(server: RunningServer, receiver: Receiver) -> None:
    first = await server.create_endpoint(receiver.url())
    second = await server.create_endpoint(receiver.url())

    assert first["secret"] != second["secret"]


async def test_given_secret__is_echoed_on_creation_and_never_again(
    server: RunningServer, receiver: Receiver
) -> None:
    created = await server.create_endpoint(receiver.url(), secret=SECRET)

    _, fetched = await server.request("GET", f"{WEBHOOKS}/{created['id']}")
    _, patched = await server.request(
        "PATCH", f"{WEBHOOKS}/{created['id']}", json={"description": "renamed"}
    )
    assert created["secret"] == SECRET
    assert "secret" not in fetched
    assert "secret" not in patched


async def test_get__returns_the_endpoint_as_created(
    server: RunningServer, receiver: Receiver
) -> None:
    created = await server.create_endpoint(
        receiver.url(),
        events=["order.*", "user.created"],
        description="orders",
        metadata={"team": "billing"},
        max_retries=3,
        timeout=4.5,
    )

    status, fetched = await server.request("GET", f"{WEBHOOKS}/{created['id']}")

    assert status == 200
    created.pop("secret")
    assert fetched == created
    assert fetched["timeout"] == 4.5
    assert fetched["max_retries"] == 3


async def test_list__holds_every_created_endpoint_without_secrets(
    server: RunningServer, receiver: Receiver
) -> None:
    created = [await server.create_endpoint(receiver.url(f"/{n}")) for n in range(2)]

    status, listed = await server.request("GET", WEBHOOKS)

    assert status == 200
    assert [item["id"] for item in listed["items"]] == [e["id"] for e in created]
    assert listed["next_cursor"] is None
    assert all("secret" not in item for item in listed["items"])


async def test_patch__changes_only_the_given_fields(
    server: RunningServer, receiver: Receiver
) -> None:
    created = await server.create_endpoint(receiver.url(), events=["user.*"], description="old")

    status, patched = await server.request(
        "PATCH", f"{WEBHOOKS}/{created['id']}", json={"description": "new", "max_retries": 1}
    )

    assert status == 200
    assert patched["description"] == "new"
    assert patched["max_retries"] == 1
    assert patched["url"] == created["url"]
    assert patched["events"] == ["user.*"]
    assert patched["updated_at"] >= created["updated_at"]
    _, fetched = await server.request("GET", f"{WEBHOOKS}/{created['id']}")
    assert fetched == patched


async def test_delete__is_204_and_then_the_endpoint_is_404(
    server: RunningServer, receiver: Receiver
) -> None:
    created = await server.create_endpoint(receiver.url())
    path = f"{WEBHOOKS}/{created['id']}"

    deleted_status, deleted_body = await server.request("DELETE", path)
    status, body = await server.request("GET", path)
    again_status, again_body = await server.request("DELETE", path)

    assert (deleted_status, deleted_body) == (204, None)
    assert status == 404
    assert_error(body, "not_found")
    assert again_status == 404
    assert_error(again_body, "not_found")


async def test_patch_enabled_false_then_true__pauses_and_resumes_fan_out(
    server: RunningServer, receiver: Receiver
) -> None:
    created = await server.create_endpoint(receiver.url())
    path = f"{WEBHOOKS}/{created['id']}"

    _, paused = await server.request("PATCH", path, json={"enabled": False})
    while_paused = await server.emit()
    _, resumed = await server.request("PATCH", path, json={"enabled": True})
    after_resume = await server.emit()

    assert paused["enabled"] is False
    assert while_paused["deliveries"] == []
    assert resumed["enabled"] is True
    [delivery] = after_resume["deliveries"]
    await server.wait_for_delivery(delivery["id"], "delivered")
    [request] = receiver.received
    assert request.headers["webhook-id"] == after_resume["id"]


async def test_patch_url_to_a_private_address__is_422_blocked_destination(
    server: RunningServer, receiver: Receiver
) -> None:
    created = await server.create_endpoint(receiver.url())

    status, body = await server.request(
        "PATCH", f"{WEBHOOKS}/{created['id']}", json={"url": "http://10.0.0.1/x"}
    )

    assert status == 422
    message = assert_error(body, "blocked_destination")
    assert "10.0.0.1" in message
    assert "WEBHOOK_ALLOWED_NETWORKS" in message
    _, fetched = await server.request("GET", f"{WEBHOOKS}/{created['id']}")
    assert fetched["url"] == receiver.url()


async def test_create_with_a_private_address__is_422_and_nothing_is_stored(
    server: RunningServer,
) -> None:
    status, body = await server.request(
        "POST", WEBHOOKS, json={"url": "http://192.168.1.20/hook", "events": ["*"]}
    )

    assert status == 422
    assert "WEBHOOK_ALLOWED_NETWORKS" in assert_error(body, "blocked_destination")
    _, listed = await server.request("GET", WEBHOOKS)
    assert listed["items"] == []


async def test_patch_url_to_an_allowed_loopback_address__is_applied(
    server: RunningServer, receiver: Receiver
) -> None:
    created = await server.create_endpoint(receiver.url("/old"))

    status, patched = await server.request(
        "PATCH", f"{WEBHOOKS}/{created['id']}", json={"url": receiver.url("/new")}
    )
    accepted = await server.emit()

    assert status == 200
    assert patched["url"] == receiver.url("/new")
    [request] = await receiver.wait_for(1)
    assert request.path == "/new"
    assert request.headers["webhook-id"] == accepted["id"]


@pytest.mark.parametrize("pattern", ["a.*.b", "order*", "", "*.created", "user created"])
async def test_create_with_an_invalid_pattern__is_422(
    server: RunningServer, receiver: Receiver, pattern: str
) -> None:
    status, body = await server.request(
        "POST", WEBHOOKS, json={"url": receiver.url(), "events": [pattern]}
    )

    assert status == 422
    assert f"pattern {pattern!r}" in assert_error(body, "invalid_input")
    _, listed = await server.request("GET", WEBHOOKS)
    assert listed["items"] == []


@pytest.mark.parametrize("pattern", ["a.*.b", "order*", ""])
async def test_patch_with_an_invalid_pattern__is_422_and_keeps_the_old_patterns(
    server: RunningServer, receiver: Receiver, pattern: str
) -> None:
    created = await server.create_endpoint(receiver.url(), events=["user.*"])

    status, body = await server.request(
        "PATCH", f"{WEBHOOKS}/{created['id']}", json={"events": [pattern]}
    )

    assert status == 422
    assert f"pattern {pattern!r}" in assert_error(body, "invalid_input")
    _, fetched = await server.request("GET", f"{WEBHOOKS}/{created['id']}")
    assert fetched["events"] == ["user.*"]


async def test_create_with_an_empty_pattern_list__is_422(
    server: RunningServer, receiver: Receiver
) -> None:
    status, body = await server.request(
        "POST", WEBHOOKS, json={"url": receiver.url(), "events": []}
    )

    assert status == 422
    assert "events" in assert_error(body, "invalid_input")


async def test_create_with_an_unknown_field__is_422_naming_it(
    server: RunningServer, receiver: Receiver
) -> None:
    status, body = await server.request(
        "POST", WEBHOOKS, json={"url": receiver.url(), "events": ["*"], "retries": 3}
    )

    assert status == 422
    assert "retries" in assert_error(body, "invalid_input")


async def test_patch_with_an_unknown_field__is_422_and_changes_nothing(
    server: RunningServer, receiver: Receiver
) -> None:
    created = await server.create_endpoint(receiver.url(), description="kept")

    status, body = await server.request(
        "PATCH", f"{WEBHOOKS}/{created['id']}", json={"description": "lost", "colour": "red"}
    )

    assert status == 422
    assert "colour" in assert_error(body, "invalid_input")
    _, fetched = await server.request("GET", f"{WEBHOOKS}/{created['id']}")
    assert fetched["description"] == "kept"


@pytest.mark.parametrize("name", ["webhook-signature", "X-Webhook-Signature", "Content-Type"])
async def test_custom_header_with_a_reserved_name__is_422(
    server: RunningServer, receiver: Receiver, name: str
) -> None:
    status, body = await server.request(
        "POST", WEBHOOKS, json={"url": receiver.url(), "events": ["*"], "headers": {name: "x"}}
    )

    assert status == 422
    assert name in assert_error(body, "invalid_input")


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "line\nbreak", "carriage\rreturn"])
async def test_custom_header_value_with_cr_or_lf__is_422(
    server: RunningServer, receiver: Receiver, value: str
) -> None:
    status, body = await server.request(
        "POST",
        WEBHOOKS,
        json={"url": receiver.url(), "events": ["*"], "headers": {"X-Tenant": value}},
    )

    assert status == 422
    assert "CR or LF" in assert_error(body, "invalid_input")


async def test_custom_header_with_an_invalid_name__is_422(
    server: RunningServer, receiver: Receiver
) -> None:
    status, body = await server.request(
        "POST",
        WEBHOOKS,
        json={"url": receiver.url(), "events": ["*"], "headers": {"X Tenant": "acme"}},
    )

    assert status == 422
    assert_error(body, "invalid_input")


async def test_valid_custom_header__is_sent_to_the_receiver(
    server: RunningServer, receiver: Receiver
) -> None:
    created = await server.create_endpoint(receiver.url(), headers={"X-Tenant": "acme"})

    accepted = await server.emit()

    assert created["headers"] == {"X-Tenant": "acme"}
    [request] = await receiver.wait_for(1)
    assert request.headers["X-Tenant"] == "acme"
    assert request.headers["webhook-id"] == accepted["id"]


async def test_patch_headers_to_null__clears_them(
    server: RunningServer, receiver: Receiver
) -> None:
    created = await server.create_endpoint(receiver.url(), headers={"X-Tenant": "acme"})

    status, patched = await server.request(
        "PATCH", f"{WEBHOOKS}/{created['id']}", json={"headers": None}
    )
    await server.emit()

    assert status == 200
    assert patched["headers"] == {}
    [request] = await receiver.wait_for(1)
    assert "X-Tenant" not in request.headers


async def test_listing_seven_endpoints_three_at_a_time__gives_pages_of_3_3_1(
    server: RunningServer, receiver: Receiver
) -> None:
    created = [await server.create_endpoint(receiver.url(f"/{n}")) for n in range(7)]

    sizes, seen, cursors = [], [], []
    cursor: str | None = None
    for _ in range(len(created)):
        params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        status, page = await server.request("GET", WEBHOOKS, params=params)
        assert status == 200
        sizes.append(len(page["items"]))
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        cursors.append(cursor)
        if cursor is None:
            break

    assert sizes == [3, 3, 1]
    assert cursors[-1] is None
    assert all(isinstance(c, str) and c for c in cursors[:-1])
    assert len(seen) == len(set(seen))
    assert sorted(seen) == sorted(e["id"] for e in created)


async def test_listing_exactly_one_full_page__ends_without_a_cursor(
    server: RunningServer, receiver: Receiver
) -> None:
    for n in range(3):
        await server.create_endpoint(receiver.url(f"/{n}"))

    status, page = await server.request("GET", WEBHOOKS, params={"limit": "3"})

    assert status == 200
    assert len(page["items"]) == 3
    assert page["next_cursor"] is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        "////",
        "gA",
        "%%%%",
    ],
)
async def test_listing_with_a_garbage_cursor__is_422_json_error(
    server: RunningServer, receiver: Receiver, cursor: str
) -> None:
    await server.create_endpoint(receiver.url())

    status, body = await server.request("GET", WEBHOOKS, params={"cursor": cursor})

    assert status == 422
    assert "cursor" in assert_error(body, "invalid_input").lower()


@pytest.mark.parametrize("limit", ["0", "501", "many"])
async def test_listing_with_an_out_of_range_limit__is_422_naming_limit(
    server: RunningServer, limit: str
) -> None:
    status, body = await server.request("GET", WEBHOOKS, params={"limit": limit})

    assert status == 422
    assert "limit" in assert_error(body, "invalid_input")


@pytest.mark.parametrize(
    ("method", "payload"), [("GET", None), ("PATCH", {"enabled": False}), ("DELETE", None)]
)
async def test_unknown_endpoint_id__is_404_not_found(
    server: RunningServer, method: str, payload: dict[str, Any] | None
) -> None:
    status, body = await server.request(method, f"{WEBHOOKS}/ep_missing", json=payload)

    assert status == 404
    assert "ep_missing" in assert_error(body, "not_found")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/hook", "not a url", "http://user:pw@127.0.0.1/"])
async def test_create_with_an_unusable_url__is_422_invalid_url(
    server: RunningServer, url: str
) -> None:
    status, body = await server.request("POST", WEBHOOKS, json={"url": url, "events": ["*"]})

    assert status == 422
    message = assert_error(body, "invalid_url")
    assert "pw" not in message
