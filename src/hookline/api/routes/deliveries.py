"""Tracking deliveries: where each one stands and every attempt made for it."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from starlette.responses import Response

from hookline.api import render
from hookline.api.deps import ServiceDep
from hookline.api.render import JSON
from hookline.api.schemas import DeliveryDetail, DeliveryOut
from hookline.models import DeliveryStatus
from hookline.store.base import DeliveryFilter

router = APIRouter(prefix="/deliveries", tags=["deliveries"])


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
    return JSON(render.delivery(delivery), status_code=202)
