"""The delivery session's name resolver, which enforces the destination guard at connect time.

aiohttp connects only to the addresses its resolver returns, so checking them here, on every
lookup and right before the connection, leaves no window for a DNS answer to change between the
check and the connect. That is what defeats DNS rebinding. A host written as an IP address
never reaches a resolver; the sender checks those URLs itself.
"""

from __future__ import annotations

import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from hookline.destinations import DestinationPolicy


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's ThreadedResolver; raises BlockedAddressError for a refused
    address, which aiohttp reports as a failed lookup with that error as its cause."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy
        # ThreadedResolver binds to the running loop when built, so it is built on first use
        # rather than wherever the sender makes this resolver.
        self._inner: aiohttp.ThreadedResolver | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host``, raising BlockedAddressError if any address it has is refused."""
        if self._inner is None:
            self._inner = aiohttp.ThreadedResolver()
        results = await self._inner.resolve(host, port, family)

        for result in results:
            self._policy.check_resolved(host, result["host"])
        return results

    async def close(self) -> None:
        """Release the wrapped resolver."""
        if self._inner is not None:
            await self._inner.close()
