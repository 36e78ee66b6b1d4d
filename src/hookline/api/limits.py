"""Refuse request bodies over the size limit, counting the bytes actually received.

A ``Content-Length`` over the limit is refused before reading; a body that lies about its
length, or is chunked, is cut off as soon as the received bytes pass the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hookline.api.errors import error_response
from hookline.errors import PayloadTooLarge

BATCH_PATH_SUFFIX = "/events/batch"


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, max_batch_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes
        self._max_batch_bytes = max_batch_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if scope["path"].endswith(BATCH_PATH_SUFFIX):
            limit, setting = self._max_batch_bytes, "MAX_BATCH_BYTES"
        else:
            limit, setting = self._max_bytes, "MAX_PAYLOAD_BYTES"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_413(send, limit, setting)
            return

        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    # Fail the read, so the app can never act on a truncated body.
                    raise PayloadTooLarge(f"request body over {limit} bytes")
            return message

        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large:
                if not started:
                    started = True
                    await _send_413(send, limit, setting)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, counting_receive, guarded_send)
        except PayloadTooLarge:
            if not started:
                started = True
                await _send_413(send, limit, setting)


async def _send_413(send: Send, limit: int, setting: str) -> None:
    response = error_response(
        413,
        "payload_too_large",
        f"The request body is larger than {limit} bytes ({setting}); send a smaller body.",
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(response.body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": response.body})
