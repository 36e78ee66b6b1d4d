"""Running the API server with uvicorn, and shutting it down gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

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
    uvicorn.Server(config).run()
