"""Hooks for whatever wants to watch deliveries happen (metrics, live streams).

The engine and the intake call an observer synchronously on the event loop, so an observer
must be quick and must not raise; anything slow belongs in a task of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hookline.models import AcceptedEvent, AttemptVerdict, NewEvent


class DeliveryObserver(Protocol):
    def on_accepted(self, events: Sequence[NewEvent], accepted: Sequence[AcceptedEvent]) -> None:
        """Events were committed with their deliveries (repeats have ``created`` False)."""

    def on_verdict(self, verdict: AttemptVerdict) -> None:
        """An attempt finished and its delivery's new state was written to the store."""


class Observers:
    """Passes each notification to every registered observer, in order."""

    def __init__(self) -> None:
        self._observers: list[DeliveryObserver] = []

    def add(self, observer: DeliveryObserver) -> None:
        self._observers.append(observer)

    def on_accepted(self, events: Sequence[NewEvent], accepted: Sequence[AcceptedEvent]) -> None:
        for observer in self._observers:
            observer.on_accepted(events, accepted)

    def on_verdict(self, verdict: AttemptVerdict) -> None:
        for observer in self._observers:
            observer.on_verdict(verdict)
