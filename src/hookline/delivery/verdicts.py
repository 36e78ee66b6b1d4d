"""Deciding what a finished attempt means for its delivery, and writing verdicts in groups."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from hookline.errors import StoreError
from hookline.logs import attempt_keys
from hookline.models import (
    AttemptOutcome,
    AttemptResult,
    AttemptVerdict,
    ClaimedDelivery,
    DeliveryStatus,
    EndpointChange,
)
from hookline.observers import Observers
from hookline.retry import RetryPolicies
from hookline.store.base import HealthRules, Store

SECONDS_PER_DAY = 86_400
WRITE_RETRY_SECONDS = 1.0

log = structlog.get_logger(__name__)


def judge(
    claim: ClaimedDelivery,
    result: AttemptResult,
    policies: RetryPolicies,
    dlq_retention_days: float,
    now: float,
) -> AttemptVerdict:
    """Return delivered, a retry at a backed-off time, or failed with a dead-letter expiry."""
    if result.succeeded:
        return AttemptVerdict(claim, result, DeliveryStatus.DELIVERED, None)

    max_attempts = policies.max_attempts(claim.event_type, claim.max_retries)
    # A blocked destination will not unblock by waiting; park it for an operator at once.
    if result.outcome is AttemptOutcome.BLOCKED or claim.attempt >= max_attempts:
        expires_at = now + dlq_retention_days * SECONDS_PER_DAY
        return AttemptVerdict(claim, result, DeliveryStatus.FAILED, None, expires_at)

    policy = policies.for_event(claim.event_type)
    delay = policy.delay_after(claim.attempt, result.retry_after_seconds)
    return AttemptVerdict(claim, result, DeliveryStatus.PENDING, now + delay)


class VerdictWriter:
    """Collects verdicts and writes whatever has gathered in one store call (group commit).

    While one write is in progress the next verdicts pile up, so the batch size grows with the
    load by itself, without a timer.
    """

    def __init__(self, store: Store, rules: HealthRules, observers: Observers) -> None:
        self._store = store
        self._rules = rules
        self._observers = observers
        self._waiting: list[AttemptVerdict] = []
        self._flusher: asyncio.Task[None] | None = None
        self.applied = 0
        self.superseded = 0

    def add(self, verdict: AttemptVerdict) -> None:
        self._waiting.append(verdict)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="hookline-verdicts")

    async def drain(self) -> None:
        """Return once every verdict added so far is written."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def close(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.drain()

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                recorded = await self._store.record_verdicts(batch, self._rules)
            except StoreError as exc:
                # The leases are still ours until they expire; try again shortly, and if the
                # store stays away longer than that, another worker repeats the attempt.
                log.warning(
                    "verdicts not written, retrying",
                    action="verdicts_write_failed",
                    count=len(batch),
                    error=str(exc),
                )
                self._waiting[:0] = batch
                await asyncio.sleep(WRITE_RETRY_SECONDS)
                continue
            for change in recorded.changes:
                _log_endpoint_change(change)
            for verdict, applied in zip(batch, recorded.applied, strict=True):
                if applied:
                    self.applied += 1
                    # Only now, so watchers never count a result that was then discarded.
                    self._observers.on_verdict(verdict)
                else:
                    self.superseded += 1
                    log.warning(
                        "attempt result discarded: lease was taken over",
                        action="verdict_superseded",
                        **attempt_keys(verdict.claim),
                    )


def _log_endpoint_change(change: EndpointChange) -> None:
    if change.disabled_reason is not None:
        log.error(
            "endpoint disabled; its pending deliveries moved to the dead-letter queue",
            action="endpoint_disabled",
            endpoint_id=change.endpoint_id,
            reason=change.disabled_reason,
        )
        return
    log.warning(
        f"circuit {change.before} -> {change.after}",
        action="circuit_changed",
        endpoint_id=change.endpoint_id,
        circuit=str(change.after),
        paused_until=change.paused_until,
    )
