"""Tracking deliveries: where each one stands and every attempt made for it."""

from __future__ import annotations

import time
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Query, status
from starlette.responses import Response, StreamingResponse

from hookline.api import render
from hookline.api.deps import ServiceDep
from hookline.api.render import JSON
from hookline.api.schemas import DeliveryDetail, DeliveryOut
from hookline.logs import delivery_keys
from hookline.models import DeliveryStatus
from hookline.store.base import ChangeFilter, DeliveryFilter
from hookline.stream import parse_position, stream_changes

router = APIRouter(prefix="/deliveries", tags=["deliveries"])

log = structlog.get_logger(__name__)


@router.get("", response_model=dict[str, Any])
async def list_deliveries(
    service: ServiceDep,
    event_id: str | None = None,
    endpoint_id: str | None = None,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Response:
    """List deliveries, oldest first, filtered by event, endpoint and status."""
    where = DeliveryFilter(event_id=event_id, endpoint_id=endpoint_id, status=status)
    page = await service.store.list_deliveries(where, cursor, limit)
    now = time.time()
    return JSON(render.page(page, lambda item: render.delivery(item, now)))


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_deliveries(
    service: ServiceDep,
    endpoint_id: str | None = None,
    event_type: str | None = None,
    since: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Every delivery state change as it happens (Server-Sent Events), with a heartbeat.

    Starts with new changes, or after ``since`` (0 for everything retained); a client that
    reconnects with ``Last-Event-ID`` resumes right after the last change it received.
    """
    start = parse_position(last_event_id, since, await service.store.latest_change_seq())
    messages = stream_changes(
        service.store,
        service.changes,
        start,
        ChangeFilter(endpoint_id=endpoint_id, event_type=event_type),
        render.iso,
        lambda: service.shutting_down,
    )
    return StreamingResponse(
        messages,
        media_type="text/event-stream",
        # Proxies must pass each message on as it comes rather than buffer the stream.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{delivery_id}", response_model=DeliveryDetail)
async def get_delivery(delivery_id: str, service: ServiceDep) -> Response:
    delivery, attempts = await service.store.get_delivery(delivery_id)
    body = render.delivery(delivery)
    body["attempts"] = [render.attempt(a) for a in attempts]
    return JSON(body)


@router.post(
    "/{delivery_id}/retry", status_code=status.HTTP_202_ACCEPTED, response_model=DeliveryOut
)
async def retry_delivery(delivery_id: str, service: ServiceDep) -> Response:
    """Attempt a pending delivery now; for a finished one, start a fresh round of attempts.

    A fresh round is a new delivery of the same event (same ``webhook-id``) to the same
    endpoint; the answer is that new delivery.
    """
    delivery = await service.store.retry_delivery(delivery_id, time.time())
    service.engine.wake()
    if delivery.id == delivery_id:
        log.info("delivery made due now", action="retry_requested", **delivery_keys(delivery))
    else:
        log.info(
            "delivery replayed as a fresh round",
            action="replayed",
            replay_of=delivery_id,
            **delivery_keys(delivery),
        )
    return JSON(render.delivery(delivery), status_code=202)
