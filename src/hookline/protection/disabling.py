"""When hookline disables an endpoint by itself, and the reason it records."""

from __future__ import annotations

import datetime

from hookline.models import EndpointHealth

GONE = 410
SECONDS_PER_DAY = 86_400


def disable_reason(
    status_code: int | None,
    health: EndpointHealth,
    disable_after_seconds: float | None,
    now: float,
) -> str | None:
    """Return why the endpoint should be disabled after this attempt, or None to keep it.

    A 410 Gone says the endpoint no longer exists; an endpoint whose every attempt has failed
    for ``disable_after_seconds`` is given up on, as the best-known hosted services do.
    """
    if status_code == GONE:
        return "The endpoint answered 410 Gone, which says it no longer exists."
    failing_since = health.failing_since
    if disable_after_seconds is None or failing_since is None:
        return None
    if now - failing_since < disable_after_seconds:
        return None
    since = datetime.datetime.fromtimestamp(failing_since, datetime.UTC)
    return (
        f"Every attempt has failed since {since:%Y-%m-%d %H:%M} UTC "
        f"({disable_after_seconds / SECONDS_PER_DAY:g} days or more)."
    )
