"""Identifiers that sort by creation time, so cursors can page through them in order."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_TIME_CHARS = 10
_RANDOM_BITS = 80
_RANDOM_CHARS = 16


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """Return ``prefix_`` and 26 characters: milliseconds since the epoch, then 80 random bits.

    Ids made in a later millisecond sort after earlier ones, which is all that cursor pagination
    needs; the random part keeps ids from several processes apart.
    """
    millis = time.time_ns() // 1_000_000
    randomness = int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")
    return f"{prefix}_{_base32(millis, _TIME_CHARS)}{_base32(randomness, _RANDOM_CHARS)}"
