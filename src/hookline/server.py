"""Running the API server with uvicorn, and shutting it down gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
from types import FrameType

import uvicorn

from hookline.api.app import create_app
from hookline.config import Settings
from hookline.runtime import tune_garbage_collector
from hookline.service import Service


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
    tune_garbage_collector()
    _Server(config, app.state.service).run()


class _Server(uvicorn.Server):
    """uvicorn's server, telling the service the moment a shutdown signal arrives.

    uvicorn drains open connections before the app's own shutdown runs; marking the service
    as shutting down here makes /ready answer 503 and ends live streams during that drain.
    """

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self._service = service

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._service.shutting_down = True
        super().handle_exit(sig, frame)


def _already_handled(signum: int, frame: FrameType | None) -> None:
    """Ignore a signal that uvicorn has already acted on."""
