from __future__ import annotations

import random

import pytest

from hookline.retry import EventRetryPolicy, RetryPolicies, RetryPolicy, policy_from_mapping

DEFAULT = RetryPolicy()


def test_default_schedule_doubles_from_one_second() -> None:
    assert DEFAULT.schedule() == [1.0, 2.0, 4.0, 8.0]


def test_schedule_is_capped_by_max_delay() -> None:
    policy = RetryPolicy(initial_delay=100, multiplier=3, max_delay=300, max_attempts=5)

    assert policy.schedule() == [100.0, 300.0, 300.0, 300.0]


def test_jitter_stays_within_a_quarter_either_way() -> None:
    rng = random.Random(7)
    delays = [DEFAULT.delay_after(3, rng=rng) for _ in range(2000)]

    assert min(delays) >= 4.0 * 0.75
    assert max(delays) <= 4.0 * 1.25
    # Spread out, not clumped at one end.
    assert min(delays) < 3.3 and max(delays) > 4.7


def test_retry_after_lengthens_the_delay_but_not_past_max_delay() -> None:
    policy = RetryPolicy(jitter=0.0, max_delay=60)

    assert policy.delay_after(1, retry_after=30) == 30
    assert policy.delay_after(1, retry_after=3600) == 60
    assert policy.delay_after(4, retry_after=0.5) == 8.0


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert RetryPolicy(jitter=0).delay_after(10_000) == 300.0


def test_endpoint_max_retries_counts_retries_after_the_first_attempt() -> None:
    policies = RetryPolicies(DEFAULT)

    assert policies.max_attempts("user.created", None) == 5
    assert policies.max_attempts("user.created", 0) == 1
    assert policies.max_attempts("user.created", 3) == 4


def test_event_policy_applies_to_matching_types_only() -> None:
    critical = policy_from_mapping({"initial_delay": 0.5, "max_attempts": 8}, DEFAULT)
    policies = RetryPolicies(
        DEFAULT, [EventRetryPolicy("critical", ["payment.*", "invoice.paid"], critical)]
    )

    assert policies.for_event("payment.failed") is critical
    assert policies.for_event("invoice.paid") is critical
    assert policies.for_event("invoice.sent") is DEFAULT
    assert policies.max_attempts("payment.success", None) == 8
    assert critical.max_delay == DEFAULT.max_delay


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"speed": 1}, "unknown retry_policy key"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1.5}, "jitter"),
        ({"initial_delay": 10, "max_delay": 1}, "initial_delay"),
    ],
)
def test_bad_policy_values_are_refused_with_a_reason(
    values: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        policy_from_mapping(values, DEFAULT)
