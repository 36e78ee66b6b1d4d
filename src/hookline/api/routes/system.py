"""Health and statistics."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from hookline.api.deps import ServiceDep
from hookline.api.render import JSON
from hookline.errors import StoreError

health_router = APIRouter(tags=["system"])
stats_router = APIRouter(tags=["system"])


@health_router.get("/health", response_model=dict[str, Any])
async def health(service: ServiceDep) -> Response:
    """200 when the store answers and the delivery workers run; 503 with the reasons if not."""
    problems = []
    try:
        await service.store.ping()
    except StoreError as exc:
        problems.append(f"store: {exc}")
    if not service.engine.running:
        problems.append("workers: the delivery engine is not running")
    if service.shutting_down:
        problems.append("shutting down")
    body = {
        "status": "unhealthy" if problems else "ok",
        "store": "unavailable" if any(p.startswith("store") for p in problems) else "ok",
        "workers": service.engine.worker_count if service.engine.running else 0,
        "problems": problems,
    }
    return JSON(body, status_code=503 if problems else 200)


@stats_router.get("/stats", response_model=dict[str, Any])
async def stats(service: ServiceDep) -> Response:
    """Queue depth, attempts in flight, outcomes so far, DLQ size and endpoint counts."""
    counts = await service.store.stats(time.time())
    return JSON(
        {
            "queue_depth": counts.pending,
            "in_flight": counts.in_flight,
            "delivered": counts.delivered,
            "failed": counts.failed,
            "dlq_size": counts.dead_letters,
            "endpoints": {
                "total": counts.endpoints,
                "enabled": counts.endpoints_enabled,
                "disabled": counts.endpoints - counts.endpoints_enabled,
            },
            "workers": {
                "count": service.engine.worker_count,
                "in_flight_here": service.engine.in_flight,
            },
        }
    )
