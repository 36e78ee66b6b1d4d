"""The circuit breaker's state machine and the token bucket, driven by a fake clock."""

from __future__ import annotations

import pytest

from hookline.models import CircuitState, EndpointHealth
from hookline.protection import breaker
from hookline.protection.ratelimit import Bucket, default_burst, new_bucket

POLICY = breaker.BreakerPolicy(failure_threshold=3, cooldown_seconds=30)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def fail(health: EndpointHealth, clock: FakeClock) -> EndpointHealth:
    return breaker.after_attempt(health, False, clock.now, POLICY)


def test_circuit_opens_after_the_threshold_of_consecutive_failures() -> None:
    clock = FakeClock()
    health = EndpointHealth()
    for _ in range(2):
        health = fail(health, clock)
        assert health.circuit is CircuitState.CLOSED

    health = fail(health, clock)

    assert health.circuit is CircuitState.OPEN
    assert health.paused_until == clock.now + 30
    assert health.failing_since == 1_000.0


def test_a_success_in_between_resets_the_count() -> None:
    clock = FakeClock()
    health = fail(fail(EndpointHealth(), clock), clock)

    health = breaker.after_attempt(health, True, clock.now, POLICY)
    health = fail(fail(health, clock), clock)

    assert health.circuit is CircuitState.CLOSED
    assert health.consecutive_failures == 2


def test_open_circuit_lets_nothing_through_until_the_cool_down_ends() -> None:
    clock = FakeClock()
    health = fail(fail(fail(EndpointHealth(), clock), clock), clock)

    assert breaker.claim_room(health, clock.advance(29)) == 0
    assert breaker.claim_room(health, clock.advance(2)) == 1


def test_probe_holds_further_attempts_until_its_result() -> None:
    clock = FakeClock()
    health = fail(fail(fail(EndpointHealth(), clock), clock), clock)
    clock.advance(31)

    probing = breaker.probe_started(health, lease_until=clock.now + 60)

    assert probing.circuit is CircuitState.HALF_OPEN
    assert breaker.claim_room(probing, clock.advance(10)) == 0
    # A probe whose worker died lets another one through once its lease ran out.
    assert breaker.claim_room(probing, clock.advance(60)) == 1


@pytest.mark.parametrize(("succeeded", "state"), [(True, "closed"), (False, "open")])
def test_probe_result_closes_or_reopens_the_circuit(succeeded: bool, state: str) -> None:
    clock = FakeClock()
    probing = EndpointHealth(CircuitState.HALF_OPEN, 3, clock.now + 60, 900.0)

    after = breaker.after_attempt(probing, succeeded, clock.advance(1), POLICY)

    assert after.circuit == state
    if not succeeded:
        assert after.paused_until == clock.now + 30
        assert after.failing_since == 900.0


def test_closed_circuit_sets_no_limit() -> None:
    assert breaker.claim_room(EndpointHealth(), 0.0) is None


def test_retry_after_pauses_but_never_shortens_a_pause() -> None:
    health = EndpointHealth(paused_until=500.0)

    assert breaker.paused_by_receiver(health, 10, now=100).paused_until == 500.0
    assert breaker.paused_by_receiver(health, 900, now=100).paused_until == 1_000.0


def test_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = FakeClock()
    bucket = new_bucket(rate=10, burst=5, now=clock.now)

    assert bucket.available(clock.now) == 5
    bucket = bucket.take(5, clock.now)
    assert bucket.available(clock.now) == 0
    assert bucket.available(clock.advance(0.25)) == 2
    assert bucket.available(clock.advance(100)) == 5


def test_bucket_rate_over_a_long_run_is_the_configured_rate() -> None:
    clock = FakeClock()
    bucket = new_bucket(rate=7, burst=default_burst(7), now=clock.now)
    taken = 0
    for _ in range(2_000):  # 20 seconds in steps of 10 ms
        clock.advance(0.01)
        grant = bucket.available(clock.now)
        bucket = bucket.take(grant, clock.now)
        taken += grant

    assert 7 * 20 <= taken <= 7 * 20 + default_burst(7)


def test_default_burst_is_a_tenth_of_the_rate_and_at_least_one() -> None:
    assert default_burst(0.5) == 1
    assert default_burst(100) == 10
    assert Bucket(1, 1, 0.999_999_999_9, 0).available(0) == 1
