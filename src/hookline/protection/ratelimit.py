"""Token buckets: how many attempts an endpoint (or the whole service) may start now.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; starting an
attempt takes one token. Attempts beyond the limit are simply not claimed yet: they wait in
the store, are never dropped, and are never charged an attempt. The bucket's level is stored
beside what it limits, so every instance sharing the database draws from the same bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_EPSILON = 1e-9
GLOBAL_BUCKET = "*"
"""The key of the bucket that limits the whole service."""


@dataclass(frozen=True, slots=True)
class Bucket:
    rate: float
    """Tokens added per second."""
    burst: float
    """Most tokens the bucket holds."""
    tokens: float
    updated_at: float

    def refilled(self, now: float) -> Bucket:
        """Return the bucket as it stands at ``now``."""
        elapsed = max(now - self.updated_at, 0.0)
        # Only whole tokens are ever taken, so the bucket keeps a fraction of a token above
        # the burst: capping at the burst itself would throw that fraction away whenever a
        # refill crosses it, and the long-run rate would fall short of the limit.
        level = min(self.burst + 1.0 - _EPSILON, self.tokens + elapsed * self.rate)
        return Bucket(self.rate, self.burst, level, now)

    def available(self, now: float) -> int:
        """Return how many whole tokens can be taken at ``now``, never more than the burst."""
        level = self.refilled(now).tokens
        return min(math.floor(level + _EPSILON), math.floor(self.burst))

    def take(self, count: int, now: float) -> Bucket:
        """Return the bucket after taking ``count`` tokens at ``now``."""
        current = self.refilled(now)
        return Bucket(self.rate, self.burst, current.tokens - count, now)


def default_burst(rate: float) -> float:
    """A burst of a tenth of a second's worth, at least one: smooth, yet never stuck."""
    return max(1.0, math.ceil(rate / 10))


def new_bucket(rate: float, burst: float | None, now: float) -> Bucket:
    """A full bucket for a limit that was just set."""
    size = burst if burst is not None else default_burst(rate)
    return Bucket(rate, size, size, now)
