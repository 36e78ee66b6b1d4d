"""Prometheus metrics, open without an API key like the health checks, for the scraper."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from starlette.responses import Response

from hookline.api.deps import ServiceDep

router = APIRouter(tags=["system"])


@router.get("/metrics", response_class=Response)
async def metrics(
    service: ServiceDep, accept: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Response:
    """The Prometheus exposition (OpenMetrics when the scraper asks for it)."""
    body, content_type = await service.metrics.exposition(accept)
    return Response(body, media_type=content_type)
