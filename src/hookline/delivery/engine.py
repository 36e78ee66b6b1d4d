"""The dispatcher: claim due deliveries in batches and run one attempt task per claim.

Claims run a little ahead of the free slots (see :mod:`hookline.delivery.ready`), so a
finishing attempt hands its slot straight to the next claim for the same endpoint. New work
wakes the dispatcher at once (:meth:`DeliveryEngine.wake`); when nothing is due it sleeps until
the earliest scheduled retry, and at most :data:`IDLE_POLL_SECONDS`, so work added by other
means (another process, an expired lease) is still found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Any

import structlog

from hookline.delivery.ready import ReadyClaims
from hookline.delivery.sender import Sender
from hookline.delivery.verdicts import VerdictWriter, judge
from hookline.errors import StoreError
from hookline.logs import attempt_keys
from hookline.models import AttemptVerdict, ClaimedDelivery, DeliveryStatus
from hookline.observers import Observers
from hookline.retry import RetryPolicies
from hookline.store.base import ClaimRules, HealthRules, Store

CLAIM_BATCH_MAX = 200
CLAIM_AHEAD_FACTOR = 2
"""Claimed deliveries held at most, as a multiple of the worker count (in flight + ready)."""
IDLE_POLL_SECONDS = 1.0
SATURATED_POLL_SECONDS = 0.1
STORE_RETRY_SECONDS = 1.0
VERDICT_DRAIN_SECONDS = 10.0

log = structlog.get_logger(__name__)


class DeliveryEngine:
    """Keeps up to ``worker_count`` attempts in flight, each endpoint within its own cap."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        policies: RetryPolicies,
        *,
        worker_count: int,
        claim_rules: ClaimRules,
        health_rules: HealthRules,
        dlq_retention_days: float,
        observers: Observers,
    ) -> None:
        self._store = store
        self._sender = sender
        self._policies = policies
        self.worker_count = worker_count
        self._claim_rules = claim_rules
        self._dlq_retention_days = dlq_retention_days
        self._verdicts = VerdictWriter(store, health_rules, observers)
        self._wake = asyncio.Event()
        self._stopping = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._attempts: dict[asyncio.Task[None], ClaimedDelivery] = {}
        self._in_flight_to: Counter[str] = Counter()
        self._ready = ReadyClaims()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._attempts)

    @property
    def running(self) -> bool:
        return self._dispatcher is not None and not self._dispatcher.done()

    def sender_problems(self) -> list[str]:
        """What keeps attempts from going out right now, if anything."""
        return self._sender.problems() if self.running else []

    async def start(self) -> None:
        await self._sender.start()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="hookline-dispatcher")

    def wake(self) -> None:
        """Tell the dispatcher there may be new due work."""
        self._wake.set()

    async def stop(self, grace_seconds: float) -> None:
        """Stop claiming, let attempts finish within the grace period, give back the rest."""
        self._stopping = True
        self._wake.set()
        if self._dispatcher is not None:
            await self._dispatcher

        unfinished = self._ready.drain()
        if self._attempts:
            _, pending = await asyncio.wait(list(self._attempts), timeout=grace_seconds)
            unfinished += [self._attempts[task] for task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        try:
            await asyncio.gather(*self._background)
            await asyncio.wait_for(self._verdicts.close(), VERDICT_DRAIN_SECONDS)
            if unfinished:
                await self._store.release(unfinished, time.time())
        except (TimeoutError, StoreError) as exc:
            # Leases we could not give back expire by themselves; nothing is lost.
            log.warning("shutdown could not write everything", action="shutdown", error=str(exc))
        await self._sender.close()
        log.info(
            "delivery engine stopped",
            action="engine_stopped",
            released=len(unfinished),
        )

    async def _dispatch(self) -> None:
        while not self._stopping:
            # Cleared before looking for work, so a wake-up that arrives meanwhile is kept.
            self._wake.clear()
            held = self.in_flight + len(self._ready)
            wanted = min(self.worker_count * CLAIM_AHEAD_FACTOR - held, CLAIM_BATCH_MAX)
            try:
                claimed = await self._claim(wanted)
            except StoreError as exc:
                log.warning("claim failed, retrying", action="claim_failed", error=str(exc))
                await self._sleep(STORE_RETRY_SECONDS)
                continue
            now = time.time()
            for claim in claimed:
                self._ready.add(claim, now)
            self._start_ready()
            if wanted > 0 and len(claimed) == wanted:
                continue  # a full batch: more may be due right now
            # Fewer than asked for: what is due is held back by limits, and a finishing
            # attempt or new work wakes us; asking again at once would only repeat the query.
            await self._sleep(await self._idle_seconds(bool(claimed)))

    async def _claim(self, wanted: int) -> list[ClaimedDelivery]:
        if wanted <= 0:
            return []
        busy = Counter(self._in_flight_to)
        for endpoint_id in self._ready.endpoints():
            busy[endpoint_id] += self._ready.held(endpoint_id)
        return await self._store.claim_due(time.time(), wanted, busy, self._claim_rules)

    def _start_ready(self) -> None:
        """Start waiting claims while there are free slots, overall and per endpoint."""
        stale: list[ClaimedDelivery] = []
        for endpoint_id in self._ready.endpoints():
            while self.in_flight < self.worker_count:
                waiting = self._ready.peek(endpoint_id)
                if waiting is None or self._in_flight_to[endpoint_id] >= waiting[0].max_in_flight:
                    break
                claim, claimed_at = self._ready.pop(endpoint_id)
                if time.time() - claimed_at > self._claim_rules.lease_margin_seconds / 2:
                    # Waited so long that its lease might run out mid-attempt: give it back.
                    stale.append(claim)
                    continue
                self._start_attempt(claim)
        if stale:
            self._run_in_background(self._store.release(stale, time.time()))

    def _run_in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _idle_seconds(self, claimed_some: bool) -> float:
        if self.in_flight >= self.worker_count or claimed_some:
            return IDLE_POLL_SECONDS  # a finishing attempt wakes us sooner
        try:
            next_due = await self._store.next_due_at()
        except StoreError:
            return STORE_RETRY_SECONDS
        if next_due is None:
            return IDLE_POLL_SECONDS
        wait = next_due - time.time()
        # Due work we could not claim belongs to endpoints at their cap; a slot frees soon.
        return min(max(wait, SATURATED_POLL_SECONDS), IDLE_POLL_SECONDS)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _start_attempt(self, claim: ClaimedDelivery) -> None:
        self._in_flight_to[claim.endpoint_id] += 1
        task = asyncio.create_task(self._attempt(claim), name=f"attempt-{claim.delivery_id}")
        self._attempts[task] = claim
        task.add_done_callback(self._attempt_done)

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        claim = self._attempts.pop(task)
        self._in_flight_to[claim.endpoint_id] -= 1
        if self._in_flight_to[claim.endpoint_id] <= 0:
            del self._in_flight_to[claim.endpoint_id]
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "attempt crashed",
                action="attempt_crashed",
                **attempt_keys(claim),
                exc_info=task.exception(),
            )
        if not self._stopping:
            self._start_ready()
        self._wake.set()

    async def _attempt(self, claim: ClaimedDelivery) -> None:
        if claim.probe:
            log.info(
                "circuit half-open: sending one probe",
                action="circuit_probe",
                **attempt_keys(claim),
            )
        if log.is_enabled_for(logging.DEBUG):
            log.debug("attempt starting", action="attempt_started", **attempt_keys(claim))
        result = await self._sender.send(claim)
        verdict = judge(claim, result, self._policies, self._dlq_retention_days, time.time())
        _log_verdict(verdict)
        self._verdicts.add(verdict)


def _log_verdict(verdict: AttemptVerdict) -> None:
    delivered = verdict.status is DeliveryStatus.DELIVERED
    if delivered and not log.is_enabled_for(logging.INFO):
        return  # the common case at WARNING: skip building the keys of a line nobody sees
    claim, result = verdict.claim, verdict.result
    keys = {**attempt_keys(claim), "duration_ms": round(result.duration_ms, 1)}
    if delivered:
        log.info("delivered", action="delivered", status_code=result.status_code, **keys)
    elif verdict.status is DeliveryStatus.PENDING:
        log.warning(
            "attempt failed, will retry",
            action="attempt_failed",
            outcome=str(result.outcome),
            reason=result.error,
            next_attempt_at=verdict.next_attempt_at,
            **keys,
        )
    else:
        log.error(
            "attempts exhausted, moved to the dead-letter queue",
            action="dead_lettered",
            outcome=str(result.outcome),
            reason=result.error,
            **keys,
        )
