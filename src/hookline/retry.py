"""When to try a failed delivery again, and when to give up.

The delay before retry ``n`` (``n = 1`` after the first failed attempt) is
``initial_delay * multiplier ** (n - 1)``, spread by a random factor in ``1 ± jitter`` so that
deliveries which failed together do not all come back together, and never longer than
``max_delay``. A ``Retry-After`` from a 429 or 503 answer lengthens the delay to at least what
the receiver asked for, still capped by ``max_delay``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hookline.subscriptions import Subscription

# Event types are open-ended; stop caching their policies past this many to bound memory.
_POLICY_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how far apart a delivery is attempted."""

    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.25
    max_attempts: int = 5
    """Attempts in all, the first one included."""

    def delay_after(
        self,
        attempts_made: int,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Return the seconds to wait before the attempt that follows ``attempts_made``."""
        exponent = max(attempts_made - 1, 0)
        # Cap the exponent so a large attempt count cannot overflow the float.
        base = self.initial_delay * self.multiplier ** min(exponent, 64)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        delay = min(base * (1.0 + spread), self.max_delay)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay))
        return delay

    def schedule(self) -> list[float]:
        """Return the delays between attempts without jitter, for documentation and checks."""
        unjittered = RetryPolicy(
            self.initial_delay, self.multiplier, self.max_delay, 0.0, self.max_attempts
        )
        return [unjittered.delay_after(n) for n in range(1, self.max_attempts)]


@dataclass(frozen=True, slots=True)
class EventRetryPolicy:
    """A policy that applies to the event types its patterns match."""

    name: str
    events: Sequence[str]
    policy: RetryPolicy
    _subscription: Subscription = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_subscription", Subscription(self.events))

    def applies_to(self, event_type: str) -> bool:
        return self._subscription.matches(event_type)


class RetryPolicies:
    """The default policy and the per-event-type ones from ``config/retry.yaml``."""

    def __init__(self, default: RetryPolicy, by_event: Sequence[EventRetryPolicy] = ()) -> None:
        self.default = default
        self._by_event = list(by_event)
        self._cache: dict[str, RetryPolicy] = {}

    def for_event(self, event_type: str) -> RetryPolicy:
        """Return the first event policy matching ``event_type``, or the default."""
        policy = self._cache.get(event_type)
        if policy is None:
            policy = next(
                (p.policy for p in self._by_event if p.applies_to(event_type)), self.default
            )
            if len(self._cache) < _POLICY_CACHE_LIMIT:
                self._cache[event_type] = policy
        return policy

    def max_attempts(self, event_type: str, endpoint_max_retries: int | None) -> int:
        """Return the attempts allowed in all: an endpoint's ``max_retries`` plus the first."""
        if endpoint_max_retries is not None:
            return endpoint_max_retries + 1
        return self.for_event(event_type).max_attempts


def policy_from_mapping(values: Mapping[str, object], base: RetryPolicy) -> RetryPolicy:
    """Return ``base`` with the keys present in ``values`` replaced; unknown keys raise."""
    allowed = {"initial_delay", "multiplier", "max_delay", "jitter", "max_attempts"}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(
            f"unknown retry_policy key(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )
    merged = {
        "initial_delay": base.initial_delay,
        "multiplier": base.multiplier,
        "max_delay": base.max_delay,
        "jitter": base.jitter,
        "max_attempts": base.max_attempts,
        **values,
    }
    policy = RetryPolicy(
        initial_delay=float(merged["initial_delay"]),  # type: ignore[arg-type]
        multiplier=float(merged["multiplier"]),  # type: ignore[arg-type]
        max_delay=float(merged["max_delay"]),  # type: ignore[arg-type]
        jitter=float(merged["jitter"]),  # type: ignore[arg-type]
        max_attempts=int(merged["max_attempts"]),  # type: ignore[call-overload]
    )
    validate_policy(policy)
    return policy


def validate_policy(policy: RetryPolicy) -> None:
    """Raise ValueError with a readable sentence when a policy cannot work."""
    if policy.initial_delay < 0 or policy.max_delay < 0:
        raise ValueError("delays must be zero or more seconds")
    if policy.initial_delay > policy.max_delay:
        raise ValueError("initial_delay must not be larger than max_delay")
    if policy.multiplier < 1:
        raise ValueError("multiplier must be 1.0 or more")
    if not 0 <= policy.jitter < 1:
        raise ValueError("jitter must be at least 0 and below 1 (0.25 means ±25 %)")
    if policy.max_attempts < 1:
        raise ValueError("max_attempts must be 1 or more")
