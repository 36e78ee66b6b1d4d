"""A built-in receiver for trying hookline out: it records what it gets and verifies nothing."""

from __future__ import annotations

import collections
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from hookline.api.render import JSON, iso

RECEIVED_KEPT = 100

router = APIRouter(prefix="/test/webhook", tags=["test receiver"])


def _received(request: Request) -> collections.deque[dict[str, Any]]:
    state = request.app.state
    if not hasattr(state, "received_webhooks"):
        state.received_webhooks = collections.deque(maxlen=RECEIVED_KEPT)
    received: collections.deque[dict[str, Any]] = state.received_webhooks
    return received


@router.post("")
async def receive(request: Request) -> Response:
    """Record the request and answer 200."""
    raw = await request.body()
    _received(request).appendleft(
        {
            "received_at": iso(time.time()),
            "headers": dict(request.headers),
            "body": raw.decode("utf-8", "backslashreplace"),
        }
    )
    return JSON({"received": True})


@router.get("")
async def list_received(request: Request) -> Response:
    """The last 100 requests received, newest first."""
    return JSON({"items": list(_received(request))})
