"""Structured logging: JSON lines for machines, key=value for people at a terminal.

Every record about a delivery carries ``event_id``, ``delivery_id``, ``endpoint_id`` and
``attempt``, and every record carries a stable ``action``. Secrets, signatures, payloads and
``Authorization`` headers are never passed to a logger in the first place.
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

from hookline.models import ClaimedDelivery, Delivery


def _orjson_dumps(value: object, **_: object) -> str:
    return orjson.dumps(value, default=str).decode()


def configure_logging(level: str, log_format: str) -> None:
    """Route structlog and the standard library (uvicorn, aiohttp) through one formatter."""
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # A call below the level returns at once, before any processor runs: the delivery
        # path logs every attempt, and at thousands per second the skipped lines must cost
        # nothing.
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log would write a line per request; hookline logs what matters itself.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").propagate = True


def attempt_keys(claim: ClaimedDelivery) -> dict[str, object]:
    """The keys every line about a delivery carries, for one about a claimed attempt."""
    return {
        "event_id": claim.event_id,
        "delivery_id": claim.delivery_id,
        "endpoint_id": claim.endpoint_id,
        "attempt": claim.attempt,
    }


def delivery_keys(delivery: Delivery) -> dict[str, object]:
    """The keys every line about a delivery carries, for one outside an attempt.

    ``attempt`` is then the number of attempts made so far (0 for a delivery not yet tried).
    """
    return {
        "event_id": delivery.event_id,
        "delivery_id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "attempt": delivery.attempt_count,
    }
