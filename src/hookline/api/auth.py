"""API keys for the management API: ``Authorization: Bearer <key>``.

Keys come from ``API_KEYS``. Without it, a key is generated on first start, printed once, and
only its SHA-256 hash is kept in the data directory.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from hookline.api.errors import error_response
from hookline.errors import Unauthorized

KEY_FILE_NAME = "api_key.sha256"
GENERATED_KEY_BYTES = 32

log = structlog.get_logger(__name__)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """Checks bearer tokens against hashes of the configured keys."""

    def __init__(self, hashes: list[str]) -> None:
        self._hashes = hashes

    @classmethod
    def load(cls, configured: list[str], data_dir: Path) -> ApiKeys:
        """Use the configured keys, or the stored generated one, or generate and store one."""
        if configured:
            return cls([_digest(key) for key in configured])
        key_file = data_dir / KEY_FILE_NAME
        if key_file.is_file():
            log.info(
                "API key: using the generated key whose hash is stored here; set API_KEYS to "
                "use your own, or delete the file to generate a new one",
                action="api_key_loaded",
                path=str(key_file),
            )
            return cls([key_file.read_text().strip()])

        key = "hl_" + secrets.token_urlsafe(GENERATED_KEY_BYTES)
        data_dir.mkdir(parents=True, exist_ok=True)
        # Owner-only from the first byte: create with the mode rather than chmod afterwards.
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(_digest(key) + "\n")
        log.warning(
            f"Generated an API key, shown only this once: {key} . Send it as "
            "'Authorization: Bearer <key>' on every /api/v1 request; only its hash is kept in "
            f"{key_file}. Set API_KEYS to use keys of your own.",
            action="api_key_generated",
        )
        return cls([_digest(key)])

    def check(self, authorization: str | None) -> None:
        """Raise :class:`Unauthorized` unless the header carries a known key."""
        if not authorization:
            raise Unauthorized(
                "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "The Authorization header must be 'Bearer <key>'.", code="invalid_api_key"
            )
        presented = _digest(token.strip())
        # compare_digest against every key, so timing does not tell which one nearly matched.
        matched = False
        for stored in self._hashes:
            matched |= hmac.compare_digest(presented, stored)
        if not matched:
            raise Unauthorized("The API key is not valid.", code="invalid_api_key")


class ApiKeyGuard:
    """ASGI middleware: every request under ``prefix`` needs a valid key, checked first."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self._app = app
        self._prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self._prefix):
            keys: ApiKeys | None = scope["app"].state.service.api_keys
            header = dict(scope["headers"]).get(b"authorization")
            try:
                if keys is None:
                    raise Unauthorized("The service is still starting.", code="not_ready")
                keys.check(header.decode("latin-1") if header is not None else None)
            except Unauthorized as exc:
                await _refuse(send, exc)
                return
        await self._app(scope, receive, send)


async def _refuse(send: Send, exc: Unauthorized) -> None:
    response = error_response(exc.status_code, exc.code, exc.message)
    response.headers["WWW-Authenticate"] = "Bearer"
    await send({"type": "http.response.start", "status": 401, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
