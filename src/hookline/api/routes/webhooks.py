"""Endpoints: where events are delivered and which event types each one wants."""

from __future__ import annotations

import time
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query, status
from starlette.responses import Response

from hookline.api import render
from hookline.api.deps import ServiceDep
from hookline.api.render import JSON
from hookline.api.schemas import (
    EndpointCreate,
    EndpointCreated,
    EndpointHealthOut,
    EndpointOut,
    EndpointUpdate,
)
from hookline.ids import new_id
from hookline.models import Endpoint
from hookline.signing import generate_secret

router = APIRouter(prefix="/webhooks", tags=["endpoints"])

log = structlog.get_logger(__name__)

Limit = Annotated[int, Query(ge=1, le=500)]
HEALTH_WINDOWS = (("1h", 3_600.0), ("24h", 86_400.0))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EndpointCreated)
async def create_endpoint(body: EndpointCreate, service: ServiceDep) -> Response:
    """Register an endpoint. The secret (generated when not given) is shown only here."""
    await service.destinations.check_destination(body.url)
    now = time.time()
    endpoint = Endpoint(
        id=new_id("ep"),
        url=body.url,
        secret=body.secret or generate_secret(),
        events=body.events,
        enabled=True if body.enabled is None else body.enabled,
        max_retries=body.max_retries,
        timeout_seconds=body.timeout or service.settings.webhook_default_timeout,
        description=body.description,
        metadata=body.metadata or {},
        headers=body.headers or {},
        created_at=now,
        updated_at=now,
        rate_limit=body.rate_limit,
        rate_limit_burst=body.rate_limit_burst,
        max_in_flight=body.max_in_flight,
    )
    await service.store.create_endpoint(endpoint)
    # Neither the URL nor the headers are logged: either may carry a credential.
    log.info(
        "endpoint created",
        action="endpoint_created",
        endpoint_id=endpoint.id,
        enabled=endpoint.enabled,
    )
    return JSON(render.endpoint(endpoint, with_secret=True), status_code=201)


@router.get("", response_model=dict[str, Any])
async def list_endpoints(
    service: ServiceDep, limit: Limit = 50, cursor: str | None = None
) -> Response:
    """List endpoints, oldest first, a page at a time."""
    page = await service.store.list_endpoints(cursor, limit)
    return JSON(render.page(page, render.endpoint))


@router.get("/{endpoint_id}", response_model=EndpointOut)
async def get_endpoint(endpoint_id: str, service: ServiceDep) -> Response:
    return JSON(render.endpoint(await service.store.get_endpoint(endpoint_id)))


@router.get("/{endpoint_id}/health", response_model=EndpointHealthOut)
async def endpoint_health(endpoint_id: str, service: ServiceDep) -> Response:
    """Success rate, attempt latency percentiles and the last error, over an hour and a day."""
    endpoint = await service.store.get_endpoint(endpoint_id)
    now = time.time()
    windows = [
        render.health_window(
            label, await service.store.endpoint_health(endpoint_id, now - span, now)
        )
        for label, span in HEALTH_WINDOWS
    ]
    return JSON(
        {
            "endpoint_id": endpoint.id,
            "enabled": endpoint.enabled,
            "circuit": render.circuit(endpoint.health),
            "disabled_reason": endpoint.disabled_reason,
            "windows": windows,
        }
    )


@router.patch("/{endpoint_id}", response_model=EndpointOut)
async def update_endpoint(endpoint_id: str, body: EndpointUpdate, service: ServiceDep) -> Response:
    """Change the fields given; ``"enabled": false`` pauses deliveries to the endpoint."""
    changes = body.model_dump(exclude_unset=True)
    for required in ("url", "events", "enabled"):
        if required in changes and changes[required] is None:
            changes.pop(required)
    if changes.get("url") is not None:
        await service.destinations.check_destination(changes["url"])
    if "timeout" in changes:
        timeout = changes.pop("timeout")
        changes["timeout_seconds"] = timeout or service.settings.webhook_default_timeout
    for optional_map in ("metadata", "headers"):
        if optional_map in changes and changes[optional_map] is None:
            changes[optional_map] = {}
    if "secret" in changes and changes["secret"] is None:
        changes.pop("secret")
    # Read first only to tell whether the enabled flag really flips, for the log line.
    before = await service.store.get_endpoint(endpoint_id) if "enabled" in changes else None
    endpoint = await service.store.update_endpoint(endpoint_id, changes, time.time())
    service.engine.wake()
    _log_update(endpoint, before, changes)
    return JSON(render.endpoint(endpoint))


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_endpoint(endpoint_id: str, service: ServiceDep) -> Response:
    """Delete the endpoint; its pending deliveries are marked failed."""
    await service.store.delete_endpoint(endpoint_id, time.time())
    log.info(
        "endpoint deleted; its pending deliveries were marked failed",
        action="endpoint_deleted",
        endpoint_id=endpoint_id,
    )
    return Response(status_code=204)


def _log_update(endpoint: Endpoint, before: Endpoint | None, changes: dict[str, Any]) -> None:
    # Field names only: the new values may be a secret, a credential in the URL or a header.
    fields = sorted(name for name in changes if name != "enabled")
    if before is not None and before.enabled != endpoint.enabled:
        log.info(
            "endpoint enabled" if endpoint.enabled else "endpoint disabled",
            action="endpoint_enabled" if endpoint.enabled else "endpoint_disabled",
            endpoint_id=endpoint.id,
            fields=fields,
        )
    elif fields:
        log.info(
            "endpoint updated", action="endpoint_updated", endpoint_id=endpoint.id, fields=fields
        )
