"""A batch of outcomes moves each endpoint's health; only where it ends up is to be written."""

from __future__ import annotations

from hookline.models import (
    AttemptOutcome,
    AttemptResult,
    AttemptVerdict,
    CircuitState,
    ClaimedDelivery,
    DeliveryStatus,
    EndpointHealth,
)
from hookline.protection.breaker import BreakerPolicy
from hookline.protection.health import follow_outcomes
from hookline.store.base import HealthRules

RULES = HealthRules(BreakerPolicy(failure_threshold=3, cooldown_seconds=30), None, 86_400)


def verdict(endpoint_id: str, status_code: int, at: float) -> AttemptVerdict:
    claim = ClaimedDelivery(
        delivery_id=f"dlv_{at}",
        event_id="evt_1",
        event_type="a.b",
        body=b"{}",
        endpoint_id=endpoint_id,
        url=f"https://example.com/{endpoint_id}",
        secret="s",
        timeout_seconds=5,
        headers={},
        max_retries=None,
        attempt=1,
        lease_token="t",
        accepted_at=0,
    )
    ok = status_code < 300
    outcome = AttemptOutcome.SUCCESS if ok else AttemptOutcome.HTTP_ERROR
    result = AttemptResult(outcome, at, 0.0, status_code=status_code)
    status = DeliveryStatus.DELIVERED if ok else DeliveryStatus.PENDING
    return AttemptVerdict(claim, result, status, None if ok else at + 1)


def test_failures_then_a_success__nothing_to_write() -> None:
    loaded = {"ep_a": EndpointHealth()}
    batch = [verdict("ep_a", 500, 1.0), verdict("ep_a", 500, 2.0), verdict("ep_a", 200, 3.0)]

    moves = follow_outcomes(loaded, batch, RULES)

    assert moves.healths["ep_a"] == EndpointHealth()
    assert moves.changed == {}
    assert moves.transitions == []


def test_enough_failures_open_the_circuit_once() -> None:
    batch = [verdict("ep_a", 503, float(n)) for n in range(1, 5)]

    moves = follow_outcomes({"ep_a": EndpointHealth()}, batch, RULES)

    assert moves.changed["ep_a"].circuit is CircuitState.OPEN
    assert [(c.before, c.after) for c in moves.transitions] == [
        (CircuitState.CLOSED, CircuitState.OPEN)
    ]


def test_gone_disables_and_later_outcomes_leave_the_endpoint_alone() -> None:
    batch = [verdict("ep_a", 410, 1.0), verdict("ep_a", 500, 2.0), verdict("ep_a", 500, 3.0)]

    moves = follow_outcomes({"ep_a": EndpointHealth()}, batch, RULES)

    assert list(moves.disabled) == ["ep_a"]
    assert moves.disabled["ep_a"].url == "https://example.com/ep_a"
    assert moves.disabled["ep_a"].at == 1.0
    assert moves.healths["ep_a"].consecutive_failures == 1


def test_an_endpoint_that_was_not_loaded_keeps_its_health() -> None:
    moves = follow_outcomes({}, [verdict("ep_gone", 500, 1.0)], RULES)

    assert moves.healths == {} and moves.changed == {} and moves.transitions == []
