"""Turning domain records into API JSON, with times as ISO 8601 UTC strings."""

from __future__ import annotations

import datetime
import time
from typing import Any

import orjson
from starlette.responses import Response

from hookline.models import (
    Attempt,
    DeadLetter,
    Delivery,
    Endpoint,
    EndpointHealth,
    Event,
    HealthWindow,
    Page,
)


class JSON(Response):
    """A JSON response serialized with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    stamp = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def endpoint(item: Endpoint, *, with_secret: bool = False) -> dict[str, Any]:
    rendered = {
        "id": item.id,
        "url": item.url,
        "events": item.events,
        "enabled": item.enabled,
        "max_retries": item.max_retries,
        "timeout": item.timeout_seconds,
        "description": item.description,
        "metadata": item.metadata,
        "headers": item.headers,
        "rate_limit": item.rate_limit,
        "rate_limit_burst": item.rate_limit_burst,
        "max_in_flight": item.max_in_flight,
        "circuit": circuit(item.health),
        "disabled_reason": item.disabled_reason,
        "disabled_at": iso(item.disabled_at),
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
    }
    if with_secret:
        rendered["secret"] = item.secret
    return rendered


def circuit(health: EndpointHealth) -> dict[str, Any]:
    return {
        "state": str(health.circuit),
        "consecutive_failures": health.consecutive_failures,
        "paused_until": iso(health.paused_until),
        "failing_since": iso(health.failing_since),
    }


def health_window(label: str, window: HealthWindow) -> dict[str, Any]:
    rate = window.succeeded / window.attempts if window.attempts else None
    return {
        "window": label,
        "attempts": window.attempts,
        "succeeded": window.succeeded,
        "success_rate": None if rate is None else round(rate, 4),
        "latency_ms": {"p50": window.p50_ms, "p95": window.p95_ms, "p99": window.p99_ms},
        "last_error": window.last_error,
        "last_error_at": iso(window.last_error_at),
    }


def delivery_summary(item: Delivery) -> dict[str, Any]:
    return {"id": item.id, "endpoint_id": item.endpoint_id, "status": str(item.status)}


def delivery(item: Delivery, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    in_flight = item.leased and (item.next_attempt_at or 0) > now
    return {
        "id": item.id,
        "event_id": item.event_id,
        "endpoint_id": item.endpoint_id,
        "event_type": item.event_type,
        "status": str(item.status),
        "attempt_count": item.attempt_count,
        "in_flight": in_flight,
        # While leased, the stored time is the lease expiry, not a scheduled attempt.
        "next_attempt_at": None if in_flight else iso(item.next_attempt_at),
        "last_error": item.last_error,
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
        "delivered_at": iso(item.delivered_at),
    }


def attempt(item: Attempt) -> dict[str, Any]:
    return {
        "number": item.number,
        "started_at": iso(item.started_at),
        "duration_ms": round(item.duration_ms, 3),
        "outcome": str(item.outcome),
        "status_code": item.status_code,
        "error": item.error,
        "response_body": item.response_body,
        "response_truncated": item.response_truncated,
    }


def event(item: Event, deliveries: list[Delivery]) -> dict[str, Any]:
    return {
        "id": item.id,
        "event_type": item.event_type,
        "created_at": iso(item.created_at),
        "payload": orjson.loads(item.body)["data"],
        "deliveries": [delivery(d) for d in deliveries],
    }


def dead_letter(item: DeadLetter) -> dict[str, Any]:
    return {
        "id": item.id,
        "delivery_id": item.delivery_id,
        "event_id": item.event_id,
        "endpoint_id": item.endpoint_id,
        "event_type": item.event_type,
        "payload": item.payload,
        "endpoint_url": item.endpoint_url,
        "failure_reason": item.failure_reason,
        "attempts": item.attempts,
        "created_at": iso(item.created_at),
        "expires_at": iso(item.expires_at),
    }


def page(result: Page, render_item: Any) -> dict[str, Any]:
    return {
        "items": [render_item(item) for item in result.items],
        "next_cursor": result.next_cursor,
    }
