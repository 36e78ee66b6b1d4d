"""Running the API server with uvicorn, and shutting it down gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
from types import FrameType

import uvicorn

from hookline.api.app import create_app
from hookline.config import Settings


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; in-flight attempts get the grace period to finish."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",
        http="auto",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 1,
    )
    # uvicorn shuts down gracefully on these signals and then raises them again against the
    # handlers that were installed before it started. With these no-op handlers in place that
    # second delivery changes nothing, so a clean shutdown exits 0 as a service manager expects.
    for handled in (signal.SIGTERM, signal.SIGINT):
        signal.signal(handled, _already_handled)
    uvicorn.Server(config).run()


def _already_handled(signum: int, frame: FrameType | None) -> None:
    """Ignore a signal that uvicorn has already acted on."""
