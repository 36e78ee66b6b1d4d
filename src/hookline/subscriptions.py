"""Event types and the patterns endpoints subscribe with.

A pattern is an exact event type (``user.created``), ``*`` for every event, or a prefix ending in
a wildcard segment (``order.*``), which matches every type that starts with ``order.``, at any
depth (``order.created`` and ``order.refund.issued``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from hookline.errors import InvalidInput

EVENT_TYPE_MAX_CHARS = 128
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.\-]+")
_PATTERN = re.compile(r"\*|[A-Za-z0-9_.\-]+(\.\*)?")


def validate_event_type(event_type: str) -> str:
    """Return ``event_type`` unchanged, or raise :class:`InvalidInput` saying what is allowed."""
    if not 0 < len(event_type) <= EVENT_TYPE_MAX_CHARS or not _EVENT_TYPE.fullmatch(event_type):
        raise InvalidInput(
            f"Event type {event_type[:EVENT_TYPE_MAX_CHARS]!r} is not allowed: use 1 to "
            f"{EVENT_TYPE_MAX_CHARS} characters from A-Z, a-z, 0-9, '_', '.' and '-'."
        )
    return event_type


def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` unchanged, or raise :class:`InvalidInput` saying what is allowed."""
    if not 0 < len(pattern) <= EVENT_TYPE_MAX_CHARS or not _PATTERN.fullmatch(pattern):
        raise InvalidInput(
            f"Event pattern {pattern[:EVENT_TYPE_MAX_CHARS]!r} is not allowed: use an event "
            "type such as 'user.created', '*' for every event, or a prefix ending in '.*' "
            "such as 'order.*'. A wildcard may only be the last segment."
        )
    return pattern


class Subscription:
    """The compiled event patterns of one endpoint."""

    __slots__ = ("_everything", "_exact", "_prefixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        self._exact: set[str] = set()
        self._prefixes: list[str] = []
        self._everything = False
        for pattern in patterns:
            if pattern == "*":
                self._everything = True
            elif pattern.endswith(".*"):
                self._prefixes.append(pattern[:-1])
            else:
                self._exact.add(pattern)

    def matches(self, event_type: str) -> bool:
        """Return True when an event of this type goes to the endpoint."""
        if self._everything or event_type in self._exact:
            return True
        return any(event_type.startswith(prefix) for prefix in self._prefixes)
