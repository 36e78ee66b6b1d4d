"""Emitting events: the answer is 202 only once the event and its deliveries are on disk."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Header, status
from starlette.responses import Response

from hookline.api import render
from hookline.api.deps import ServiceDep
from hookline.api.render import JSON
from hookline.api.schemas import (
    EventAccepted,
    EventBatchAccepted,
    EventBatchIn,
    EventIn,
    EventOut,
)
from hookline.errors import InvalidInput
from hookline.ingest import EventRequest, request_hash
from hookline.models import AcceptedEvent
from hookline.store.base import IdempotencyKey

router = APIRouter(prefix="/events", tags=["events"])

IDEMPOTENCY_KEY_MAX_CHARS = 255
IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Repeat a request with the same key to get the first answer back.",
    ),
]


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=EventAccepted)
async def emit_event(
    body: EventIn, service: ServiceDep, idempotency_key: IdempotencyHeader = None
) -> Response:
    """Accept one event and fan it out to every subscribed endpoint."""
    idempotency = _idempotency("single", [body], idempotency_key)
    accepted = await service.intake.accept([_request(body)], idempotency)
    return JSON(_accepted(accepted[0]), status_code=202)


@router.post("/batch", status_code=status.HTTP_202_ACCEPTED, response_model=EventBatchAccepted)
async def emit_events(
    body: EventBatchIn, service: ServiceDep, idempotency_key: IdempotencyHeader = None
) -> Response:
    """Accept several events in one transaction: all of them are stored, or none."""
    limit = service.settings.max_batch_events
    if len(body.events) > limit:
        raise InvalidInput(
            f"A batch holds at most {limit} events (MAX_BATCH_EVENTS); this one has "
            f"{len(body.events)}. Split it into smaller batches."
        )
    max_bytes = service.settings.max_payload_bytes
    for index, event in enumerate(body.events):
        if len(orjson.dumps(event.payload)) > max_bytes:
            raise InvalidInput(
                f"events[{index}].payload is larger than {max_bytes} bytes (MAX_PAYLOAD_BYTES)."
            )
    idempotency = _idempotency("batch", body.events, idempotency_key)
    accepted = await service.intake.accept([_request(e) for e in body.events], idempotency)
    return JSON({"events": [_accepted(item) for item in accepted]}, status_code=202)


@router.get("/{event_id}", response_model=EventOut)
async def get_event(event_id: str, service: ServiceDep) -> Response:
    """The event, its payload, and where each of its deliveries stands."""
    event, deliveries = await service.store.get_event(event_id)
    return JSON(render.event(event, deliveries))


def _request(body: EventIn) -> EventRequest:
    return EventRequest(body.event_type, body.payload, body.id)


def _accepted(item: AcceptedEvent) -> dict[str, object]:
    return {
        "id": item.event_id,
        "deliveries": [render.delivery_summary(d) for d in item.deliveries],
    }


def _idempotency(kind: str, events: list[EventIn], key: str | None) -> IdempotencyKey | None:
    if key is None:
        return None
    if not 0 < len(key) <= IDEMPOTENCY_KEY_MAX_CHARS or not key.isprintable():
        raise InvalidInput(
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} printable characters."
        )
    # Hash what the request means, not its bytes: key order and spacing do not make it new.
    canonical = orjson.dumps([kind, [e.model_dump() for e in events]], option=orjson.OPT_SORT_KEYS)
    return IdempotencyKey(key, request_hash(canonical))
