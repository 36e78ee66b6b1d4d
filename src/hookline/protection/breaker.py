"""The circuit breaker that stops hammering an endpoint that keeps failing.

    closed ──N consecutive failures──▶ open ──cool-down over──▶ half_open (one probe)
      ▲                                 ▲                            │
      └───────── probe succeeds ────────┼──────── probe fails ───────┘

While the circuit is open, deliveries to the endpoint are postponed: not attempted, and not
charged an attempt. The state lives on the endpoint in the store, so every instance sharing a
database sees the same circuit; this module only decides the transitions, as pure functions
of the state, the outcome and the time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hookline.models import CircuitState, EndpointHealth


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 5
    """Consecutive failed attempts that open the circuit."""
    cooldown_seconds: float = 30.0
    """How long an open circuit waits before letting one probe through."""


def after_attempt(
    health: EndpointHealth, succeeded: bool, now: float, policy: BreakerPolicy
) -> EndpointHealth:
    """Return the endpoint's health after an attempt finished."""
    if succeeded:
        return EndpointHealth()

    failures = health.consecutive_failures + 1
    failing_since = health.failing_since if health.failing_since is not None else now
    opens = health.circuit is CircuitState.HALF_OPEN or (
        health.circuit is CircuitState.CLOSED and failures >= policy.failure_threshold
    )
    if opens:
        return EndpointHealth(
            CircuitState.OPEN, failures, now + policy.cooldown_seconds, failing_since
        )
    return replace(health, consecutive_failures=failures, failing_since=failing_since)


def claim_room(health: EndpointHealth, now: float) -> int | None:
    """Return how many attempts the breaker lets start now; None when it sets no limit.

    An open circuit whose cool-down is over, or a half-open one whose probe went quiet (its
    worker died and the lease ran out), lets exactly one probe through.
    """
    if health.paused_until is not None and health.paused_until > now:
        return 0
    if health.circuit is not CircuitState.CLOSED:
        return 1
    return None


def probe_started(health: EndpointHealth, lease_until: float) -> EndpointHealth:
    """Hold further attempts until the probe's result arrives or its lease runs out."""
    return replace(health, circuit=CircuitState.HALF_OPEN, paused_until=lease_until)


def paused_by_receiver(health: EndpointHealth, retry_after: float, now: float) -> EndpointHealth:
    """A 429 or 503 with Retry-After postpones every delivery to the endpoint, not just one."""
    until = now + retry_after
    if health.paused_until is not None and health.paused_until >= until:
        return health
    return replace(health, paused_until=until)
