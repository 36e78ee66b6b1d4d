"""Claimed deliveries waiting for a free slot, per endpoint, oldest claim first.

Claiming a little ahead means that when an attempt finishes, the next one for that endpoint
starts at once instead of waiting for a round trip to the store.
"""

from __future__ import annotations

from collections import deque

from hookline.models import ClaimedDelivery


class ReadyClaims:
    """A queue of claims per endpoint, each with the time it was claimed."""

    def __init__(self) -> None:
        self._by_endpoint: dict[str, deque[tuple[ClaimedDelivery, float]]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, claim: ClaimedDelivery, claimed_at: float) -> None:
        self._by_endpoint.setdefault(claim.endpoint_id, deque()).append((claim, claimed_at))
        self._count += 1

    def held(self, endpoint_id: str) -> int:
        waiting = self._by_endpoint.get(endpoint_id)
        return len(waiting) if waiting else 0

    def endpoints(self) -> list[str]:
        return list(self._by_endpoint)

    def peek(self, endpoint_id: str) -> tuple[ClaimedDelivery, float] | None:
        """The oldest claim waiting for the endpoint, with when it was claimed, if any."""
        waiting = self._by_endpoint.get(endpoint_id)
        return waiting[0] if waiting else None

    def pop(self, endpoint_id: str) -> tuple[ClaimedDelivery, float]:
        """Take the oldest claim waiting for the endpoint; there must be one."""
        waiting = self._by_endpoint[endpoint_id]
        item = waiting.popleft()
        if not waiting:
            del self._by_endpoint[endpoint_id]
        self._count -= 1
        return item

    def drain(self) -> list[ClaimedDelivery]:
        """Take every waiting claim, to give them back."""
        claims = [claim for waiting in self._by_endpoint.values() for claim, _ in waiting]
        self._by_endpoint.clear()
        self._count = 0
        return claims
