from __future__ import annotations

import pytest

from hookline.errors import InvalidInput
from hookline.subscriptions import Subscription, validate_event_type, validate_pattern


@pytest.mark.parametrize(
    ("patterns", "event_type", "expected"),
    [
        (["user.created"], "user.created", True),
        (["user.created"], "user.deleted", False),
        (["*"], "anything.at.all", True),
        (["order.*"], "order.created", True),
        (["order.*"], "order.refund.issued", True),
        (["order.*"], "order", False),
        (["order.*"], "orders.created", False),
        (["a.b", "c.*"], "c.d", True),
        ([], "user.created", False),
    ],
)
def test_subscription_matching(patterns: list[str], event_type: str, expected: bool) -> None:
    assert Subscription(patterns).matches(event_type) is expected


@pytest.mark.parametrize("pattern", ["*", "user.created", "order.*", "a-b_c.D9"])
def test_valid_patterns_pass(pattern: str) -> None:
    assert validate_pattern(pattern) == pattern


@pytest.mark.parametrize("pattern", ["", "a.*.b", "order*", "*.created", "a b", "x" * 129])
def test_invalid_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(InvalidInput, match="wildcard"):
        validate_pattern(pattern)


@pytest.mark.parametrize("event_type", ["", "user.*", "has space", "new\nline", "é", "x" * 129])
def test_invalid_event_types_are_refused(event_type: str) -> None:
    with pytest.raises(InvalidInput, match="A-Z"):
        validate_event_type(event_type)
