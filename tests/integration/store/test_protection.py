"""Rate limits, circuit breakers and automatic disabling, as every store must apply them."""

from __future__ import annotations

import time

from hookline.models import (
    AttemptOutcome,
    AttemptResult,
    AttemptVerdict,
    CircuitState,
    ClaimedDelivery,
    DeliveryStatus,
)
from hookline.protection.breaker import BreakerPolicy
from hookline.store.base import ClaimRules, DeadLetterFilter, HealthRules, Store
from tests.integration.store.test_contract import claim, endpoint, event

BREAKER = BreakerPolicy(failure_threshold=3, cooldown_seconds=60)
HEALTH = HealthRules(BREAKER, disable_after_seconds=5 * 86_400, dead_letter_seconds=3600)


def failed(
    claimed: ClaimedDelivery, at: float, status_code: int = 500, retry_after: float | None = None
) -> AttemptVerdict:
    result = AttemptResult(
        AttemptOutcome.HTTP_ERROR,
        at,
        3.0,
        status_code=status_code,
        error=f"HTTP {status_code}",
        retry_after_seconds=retry_after,
    )
    return AttemptVerdict(claimed, result, DeliveryStatus.PENDING, at)


def succeeded(claimed: ClaimedDelivery, at: float) -> AttemptVerdict:
    result = AttemptResult(AttemptOutcome.SUCCESS, at, 2.0, status_code=200)
    return AttemptVerdict(claimed, result, DeliveryStatus.DELIVERED, None)


async def test_rate_limit_holds_back_what_the_bucket_cannot_pay_for(store: Store) -> None:
    await store.create_endpoint(endpoint(rate_limit=2.0, rate_limit_burst=2.0))
    await store.accept_events([event() for _ in range(10)], None, time.time() - 1)
    now = time.time()

    first = await claim(store, now)
    second = await claim(store, now)
    later = await claim(store, now + 1.0)

    assert (len(first), len(second), len(later)) == (2, 0, 2)
    delivery, _ = await store.get_delivery(first[0].delivery_id)
    assert delivery.attempt_count == 1  # held-back deliveries are not charged an attempt


async def test_global_rate_limit_spans_every_endpoint(store: Store) -> None:
    await store.create_endpoint(endpoint(["a"]))
    await store.create_endpoint(endpoint(["b"]))
    await store.accept_events([event(t) for t in "ab" * 5], None, time.time() - 1)
    limited = ClaimRules(100, 30.0, global_rate_limit=3.0, global_rate_burst=3.0)
    now = time.time()

    assert len(await claim(store, now, rules=limited)) == 3
    assert await claim(store, now, rules=limited) == []


async def test_endpoint_max_in_flight_overrides_the_default(store: Store) -> None:
    await store.create_endpoint(endpoint(max_in_flight=2))
    await store.accept_events([event() for _ in range(5)], None, time.time() - 1)

    assert len(await claim(store)) == 2


async def test_consecutive_failures_open_the_circuit__then_one_probe__then_close(
    store: Store,
) -> None:
    target = await store.create_endpoint(endpoint())
    await store.accept_events([event() for _ in range(5)], None, time.time() - 1)
    now = time.time()

    claimed = await claim(store, now, limit=3)
    recorded = await store.record_verdicts([failed(c, now) for c in claimed], HEALTH)

    assert [(c.before, c.after) for c in recorded.changes] == [
        (CircuitState.CLOSED, CircuitState.OPEN)
    ]
    assert (await store.get_endpoint(target.id)).health.circuit is CircuitState.OPEN
    assert await claim(store, now + 1) == []
    assert (await store.stats(now)).circuits_open == 1

    [probe] = await claim(store, now + BREAKER.cooldown_seconds + 1)
    assert probe.probe is True
    assert await claim(store, now + BREAKER.cooldown_seconds + 2) == []

    recorded = await store.record_verdicts(
        [succeeded(probe, now + BREAKER.cooldown_seconds + 3)], HEALTH
    )
    assert recorded.changes[0].after is CircuitState.CLOSED
    assert len(await claim(store, now + BREAKER.cooldown_seconds + 4)) == 4


async def test_retry_after_postpones_the_whole_endpoint(store: Store) -> None:
    target = await store.create_endpoint(endpoint())
    await store.accept_events([event() for _ in range(3)], None, time.time() - 1)
    now = time.time()
    [first] = await claim(store, now, limit=1)

    await store.record_verdicts([failed(first, now, 429, retry_after=120)], HEALTH)

    assert await claim(store, now + 60) == []
    paused_until = (await store.get_endpoint(target.id)).health.paused_until
    assert paused_until is not None and paused_until >= now + 119
    assert len(await claim(store, now + 121)) == 3


async def test_410_gone_disables_the_endpoint_and_dead_letters_its_backlog(store: Store) -> None:
    target = await store.create_endpoint(endpoint())
    await store.accept_events([event() for _ in range(4)], None, time.time() - 1)
    now = time.time()
    [first] = await claim(store, now, limit=1)

    recorded = await store.record_verdicts([failed(first, now, 410)], HEALTH)

    gone = await store.get_endpoint(target.id)
    assert gone.enabled is False
    assert gone.disabled_reason is not None and "410" in gone.disabled_reason
    assert recorded.changes[-1].disabled_reason == gone.disabled_reason
    letters = (await store.list_dead_letters(DeadLetterFilter(), None, 10)).items
    assert len(letters) == 4
    assert all("410" in letter.failure_reason for letter in letters)
    assert await store.count_pending() == 0


async def test_endpoint_failing_for_days_is_disabled(store: Store) -> None:
    target = await store.create_endpoint(endpoint())
    await store.accept_events([event(), event()], None, time.time() - 10 * 86_400)
    started = time.time() - 6 * 86_400
    first, second = await claim(store, started - 1, limit=2)

    await store.record_verdicts([failed(first, started)], HEALTH)
    assert (await store.get_endpoint(target.id)).enabled is True
    await store.record_verdicts([failed(second, time.time())], HEALTH)

    disabled = await store.get_endpoint(target.id)
    assert disabled.enabled is False
    assert disabled.disabled_reason is not None and "failed since" in disabled.disabled_reason


async def test_enabling_again_resets_the_circuit(store: Store) -> None:
    target = await store.create_endpoint(endpoint())
    await store.accept_events([event() for _ in range(3)], None, time.time() - 1)
    now = time.time()
    claimed = await claim(store, now, limit=3)
    await store.record_verdicts([failed(c, now) for c in claimed], HEALTH)
    await store.update_endpoint(target.id, {"enabled": False}, now)

    enabled = await store.update_endpoint(target.id, {"enabled": True}, now)

    assert enabled.health.circuit is CircuitState.CLOSED
    assert enabled.health.consecutive_failures == 0
    assert len(await claim(store, now + 1)) == 3


async def test_endpoint_health_summarizes_recent_attempts(store: Store) -> None:
    target = await store.create_endpoint(endpoint())
    await store.accept_events([event() for _ in range(4)], None, time.time() - 1)
    now = time.time()
    claimed = await claim(store, now, limit=4)

    await store.record_verdicts(
        [succeeded(c, now) for c in claimed[:3]] + [failed(claimed[3], now)], HEALTH
    )
    window = await store.endpoint_health(target.id, now - 3600, now)

    assert (window.attempts, window.succeeded) == (4, 3)
    assert window.p50_ms == 2.0 and window.p99_ms == 3.0
    assert window.last_error == "HTTP 500"
