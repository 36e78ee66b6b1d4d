"""Health, readiness and liveness probes, and statistics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from hookline.api.deps import ServiceDep
from hookline.api.render import JSON
from hookline.errors import StoreError
from hookline.service import Service

# Shorter than a probe's usual timeout, so a hung store reads as a reason, not a dead process.
PROBE_STORE_TIMEOUT_SECONDS = 2.0

health_router = APIRouter(tags=["system"])
stats_router = APIRouter(tags=["system"])


@health_router.get("/health", response_model=dict[str, Any])
async def health(service: ServiceDep) -> Response:
    """200 when the store answers and the delivery workers run; 503 with the reasons if not."""
    problems = await _problems(service)
    body = {
        "status": "unhealthy" if problems else "ok",
        "store": "unavailable" if any(p.startswith("store") for p in problems) else "ok",
        "workers": service.engine.worker_count if service.engine.running else 0,
        "problems": problems,
    }
    return JSON(body, status_code=503 if problems else 200)


@health_router.get("/ready", response_model=dict[str, Any])
async def ready(service: ServiceDep) -> Response:
    """200 while this instance should get traffic; 503 with the reasons when it should not."""
    problems = await _problems(service)
    body = {"status": "not_ready" if problems else "ready", "problems": problems}
    return JSON(body, status_code=503 if problems else 200)


@health_router.get("/health/live", response_model=dict[str, Any])
async def live() -> Response:
    """200 whenever the process answers at all.

    For a liveness probe: a store outage is not cured by restarting hookline, so this checks
    nothing else, and readiness (``/ready``) takes the instance out of traffic instead.
    """
    return JSON({"status": "alive"})


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
                "circuit_open": counts.circuits_open,
            },
            "workers": {
                "count": service.engine.worker_count,
                "in_flight_here": service.engine.in_flight,
            },
        }
    )


async def _problems(service: Service) -> list[str]:
    problems = []
    try:
        await asyncio.wait_for(service.store.ping(), PROBE_STORE_TIMEOUT_SECONDS)
    except StoreError as exc:
        problems.append(f"store: {exc}")
    except TimeoutError:
        problems.append(f"store: no answer within {PROBE_STORE_TIMEOUT_SECONDS:g} s")
    if not service.engine.running:
        problems.append("workers: the delivery engine is not running")
    problems += [f"sender: {problem}" for problem in service.engine.sender_problems()]
    if service.shutting_down:
        problems.append("shutting down")
    return problems
