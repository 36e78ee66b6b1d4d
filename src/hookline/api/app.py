"""The FastAPI application and its lifespan, which starts and stops the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from hookline import __version__
from hookline.api.auth import ApiKeyGuard
from hookline.api.deps import bearer_scheme
from hookline.api.errors import install_error_handlers
from hookline.api.limits import BodySizeLimit
from hookline.api.routes import deliveries, dlq, events, metrics, receiver, system, webhooks
from hookline.config import Settings
from hookline.service import Service

API_PREFIX = "/api/v1"


def create_app(settings: Settings, service: Service | None = None) -> FastAPI:
    """Build the app; the service starts with the app's lifespan and stops with it."""
    running = service or Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await running.start()
        try:
            yield
        finally:
            await running.stop()

    app = FastAPI(
        title="hookline",
        version=__version__,
        description="Webhook delivery: fan-out, signing, retries with backoff, and a DLQ.",
        lifespan=lifespan,
        # hookline reports through its own Prometheus metrics and logs; FastAPI's built-in
        # OpenTelemetry hooks would only add a check to every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.service = running

    # Each router is mounted on the app itself: a nesting level costs route matching on every
    # request. The bearer scheme only documents the key; ApiKeyGuard checks it.
    documented_key = [Depends(bearer_scheme)]
    for router in (
        webhooks.router,
        events.router,
        deliveries.router,
        dlq.router,
        system.stats_router,
    ):
        app.include_router(router, prefix=API_PREFIX, dependencies=documented_key)
    app.include_router(system.health_router)
    app.include_router(metrics.router)
    app.include_router(receiver.router)

    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_payload_bytes,
        max_batch_bytes=settings.max_batch_bytes,
    )
    # Added last, so it is the outermost: no body is read for a request without a valid key.
    app.add_middleware(ApiKeyGuard, prefix=API_PREFIX)
    return app
