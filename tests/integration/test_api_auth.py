"""API keys: what needs one, what is refused, and the key generated when none is configured."""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import API_KEY, RunningServer, ServerFactory

KEY_FILE_NAME = "api_key.sha256"
GENERATED_KEY = re.compile(r"hl_[A-Za-z0-9_-]{40,}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


async def call(
    server: RunningServer,
    method: str,
    path: str,
    authorization: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, dict[str, str], Any]:
    """Send a request with exactly the Authorization header given (or none)."""
    sent = dict(headers or {})
    if authorization is not None:
        sent["Authorization"] = authorization
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.base_url + path, headers=sent, **kwargs) as response,
    ):
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, dict(response.headers), body


def generated_keys(output: str) -> list[str]:
    return GENERATED_KEY.findall(output)


def logged_output(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err + caplog.text


async def test_missing_key__is_401_json_with_www_authenticate_bearer(
    server: RunningServer,
) -> None:
    status, headers, body = await call(server, "GET", "/api/v1/webhooks")

    assert status == 401
    assert headers["Content-Type"].startswith("application/json")
    assert headers["WWW-Authenticate"] == "Bearer"
    assert body["error"]["code"] == "missing_api_key"
    assert "Bearer" in body["error"]["message"]


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-key",
        "Basic x",
        "Basic dGVzdC1rZXk6",
        "Bearer",
        "Bearer   ",
        API_KEY,
        "Token test-key",
    ],
)
async def test_unusable_authorization__is_401_invalid_api_key(
    server: RunningServer, authorization: str
) -> None:
    status, headers, body = await call(server, "GET", "/api/v1/webhooks", authorization)

    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert body["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("authorization", [f"Bearer {API_KEY}", f"bearer {API_KEY}"])
async def test_valid_key__is_200(server: RunningServer, authorization: str) -> None:
    status, _, body = await call(server, "GET", "/api/v1/webhooks", authorization)

    assert status == 200
    assert body == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/webhooks"),
        ("GET", "/api/v1/webhooks/ep_x"),
        ("DELETE", "/api/v1/webhooks/ep_x"),
        ("GET", "/api/v1/events/evt_x"),
        ("GET", "/api/v1/deliveries"),
        ("POST", "/api/v1/deliveries/dlv_x/retry"),
        ("GET", "/api/v1/dlq"),
        ("POST", "/api/v1/dlq/replay"),
        ("GET", "/api/v1/stats"),
    ],
)
async def test_every_management_route__needs_a_key(
    server: RunningServer, method: str, path: str
) -> None:
    status, _, body = await call(server, method, path, json={})

    assert status == 401
    assert body["error"]["code"] == "missing_api_key"


async def test_event_sent_without_a_key__is_401_and_not_stored(server: RunningServer) -> None:
    event = {"id": "evt-anonymous", "event_type": "user.created", "payload": {}}

    status, _, _ = await call(server, "POST", "/api/v1/events", json=event)

    assert status == 401
    missing_status, _ = await server.request("GET", "/api/v1/events/evt-anonymous")
    assert missing_status == 404


async def test_malformed_json_without_a_key__is_401(server: RunningServer) -> None:
    status, _, _ = await call(
        server,
        "POST",
        "/api/v1/events",
        data=b'{"event_type":',
        headers={"Content-Type": "application/json"},
    )

    assert status == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/health"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("POST", "/test/webhook"),
        ("GET", "/test/webhook"),
    ],
)
async def test_open_routes__need_no_key(server: RunningServer, method: str, path: str) -> None:
    status, _, _ = await call(server, method, path, json={"hello": "world"})

    assert status == 200


async def test_test_receiver__records_what_it_got_without_a_key(server: RunningServer) -> None:
    await call(server, "POST", "/test/webhook", json={"ping": 1})

    status, _, body = await call(server, "GET", "/test/webhook")

    assert status == 200
    assert body["items"][0]["body"] == '{"ping": 1}'


async def test_every_configured_key__is_accepted(start_server: ServerFactory) -> None:
    server = await start_server(api_keys="first-key, second-key")

    first, _, _ = await call(server, "GET", "/api/v1/stats", "Bearer first-key")
    second, _, _ = await call(server, "GET", "/api/v1/stats", "Bearer second-key")
    joined, _, _ = await call(server, "GET", "/api/v1/stats", "Bearer first-key, second-key")

    assert (first, second, joined) == (200, 200, 401)


async def test_configured_keys__leave_no_key_file(server: RunningServer, tmp_path: Path) -> None:
    assert server.settings.data_dir == tmp_path
    assert not (tmp_path / KEY_FILE_NAME).exists()


async def test_without_api_keys__a_key_is_generated_and_only_its_hash_is_stored(
    start_server: ServerFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await start_server(api_keys="")

    [key] = generated_keys(logged_output(capsys, caplog))
    key_file = server.settings.data_dir / KEY_FILE_NAME
    stored = key_file.read_text()
    assert key_file.parent == tmp_path
    assert SHA256_HEX.fullmatch(stored.strip())
    assert stored.strip() == hashlib.sha256(key.encode()).hexdigest()
    assert key not in stored
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with_key, _, _ = await call(server, "GET", "/api/v1/webhooks", f"Bearer {key}")
    with_hash, _, _ = await call(server, "GET", "/api/v1/webhooks", f"Bearer {stored.strip()}")
    with_test_key, _, _ = await call(server, "GET", "/api/v1/webhooks", f"Bearer {API_KEY}")
    assert (with_key, with_hash, with_test_key) == (200, 401, 401)


async def test_restart_on_the_same_data_dir__keeps_the_generated_key(
    start_server: ServerFactory,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = await start_server(api_keys="")
    [key] = generated_keys(logged_output(capsys, caplog))
    key_file = first.settings.data_dir / KEY_FILE_NAME
    stored = key_file.read_text()
    await first.stop()

    second = await start_server(api_keys="")

    assert second.settings.data_dir == first.settings.data_dir
    assert generated_keys(logged_output(capsys, caplog)) == []
    assert key_file.read_text() == stored
    status, _, _ = await call(second, "GET", "/api/v1/webhooks", f"Bearer {key}")
    assert status == 200


async def test_configured_keys_after_a_generated_one__replace_it(
    start_server: ServerFactory,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = await start_server(api_keys="")
    [key] = generated_keys(logged_output(capsys, caplog))
    await first.stop()

    second = await start_server(api_keys=API_KEY)

    old, _, _ = await call(second, "GET", "/api/v1/webhooks", f"Bearer {key}")
    configured, _, _ = await call(second, "GET", "/api/v1/webhooks", f"Bearer {API_KEY}")
    assert (old, configured) == (401, 200)
