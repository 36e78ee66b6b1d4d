"""What the engine needs from whatever makes attempts.

Two implementations: :class:`hookline.delivery.http_sender.HttpSender` makes them in this
process, and :class:`hookline.delivery.process_sender.ProcessSender` hands them to child
processes, so that sending uses another core. Only the first loads aiohttp into the main
process.
"""

from __future__ import annotations

from typing import Protocol

from hookline.models import AttemptResult, ClaimedDelivery


class Sender(Protocol):
    """Makes attempts; ``send`` never raises for anything a receiver does."""

    async def start(self) -> None: ...

    async def send(self, claim: ClaimedDelivery) -> AttemptResult: ...

    def problems(self) -> list[str]:
        """Sentences for the health check about why attempts cannot be made now; [] if none."""

    async def close(self) -> None:
        """Stop; called once no attempt is awaited any more."""
