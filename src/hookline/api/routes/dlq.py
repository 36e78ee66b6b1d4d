"""The dead-letter queue: deliveries that ran out of attempts, to inspect and replay."""

from __future__ import annotations

import time
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query, status
from starlette.responses import Response

from hookline.api import render
from hookline.api.deps import ServiceDep
from hookline.api.render import JSON
from hookline.api.schemas import BulkReplayIn, BulkReplayOut, DeadLetterOut, DeliveryOut
from hookline.logs import delivery_keys
from hookline.store.base import DeadLetterFilter

router = APIRouter(prefix="/dlq", tags=["dead-letter queue"])

log = structlog.get_logger(__name__)


@router.get("", response_model=dict[str, Any])
async def list_dead_letters(
    service: ServiceDep,
    endpoint_id: str | None = None,
    event_type: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Response:
    where = DeadLetterFilter(endpoint_id=endpoint_id, event_type=event_type)
    page = await service.store.list_dead_letters(where, cursor, limit)
    return JSON(render.page(page, render.dead_letter))


@router.post("/replay", response_model=BulkReplayOut)
async def replay_dead_letters(body: BulkReplayIn, service: ServiceDep) -> Response:
    """Replay every message matching the filter (up to ``limit``) on enabled endpoints."""
    where = DeadLetterFilter(endpoint_id=body.endpoint_id, event_type=body.event_type)
    deliveries = await service.store.replay_dead_letters(where, body.limit, time.time())
    service.engine.wake()
    for delivery in deliveries:
        log.info("dead letter replayed", action="replayed", **delivery_keys(delivery))
    return JSON(
        {
            "replayed": len(deliveries),
            "deliveries": [render.delivery_summary(d) for d in deliveries],
        }
    )


@router.get("/{dead_letter_id}", response_model=DeadLetterOut)
async def get_dead_letter(dead_letter_id: str, service: ServiceDep) -> Response:
    return JSON(render.dead_letter(await service.store.get_dead_letter(dead_letter_id)))


@router.post(
    "/{dead_letter_id}/replay", status_code=status.HTTP_202_ACCEPTED, response_model=DeliveryOut
)
async def replay_dead_letter(dead_letter_id: str, service: ServiceDep) -> Response:
    """Start a fresh round of attempts; the event keeps its id so receivers can de-duplicate."""
    delivery = await service.store.replay_dead_letter(dead_letter_id, time.time())
    service.engine.wake()
    log.info(
        "dead letter replayed",
        action="replayed",
        dead_letter_id=dead_letter_id,
        **delivery_keys(delivery),
    )
    return JSON(render.delivery(delivery), status_code=202)


@router.delete("/{dead_letter_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_dead_letter(dead_letter_id: str, service: ServiceDep) -> Response:
    await service.store.delete_dead_letter(dead_letter_id)
    log.info("dead letter deleted", action="dead_letter_deleted", dead_letter_id=dead_letter_id)
    return Response(status_code=204)
