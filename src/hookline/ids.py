"""Identifiers that sort by creation time, so cursors can page through them in order."""

from __future__ import annotations

import os
import threading
import time

_RANDOM_BYTES = 8
_POOL_BYTES = 4096


class _RandomPool(threading.local):
    """Random bytes read from the OS a page at a time, one page per thread.

    One system call per id was measurable on the ingestion path.
    """

    def __init__(self) -> None:
        self.pool = b""
        self.offset = 0

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.pool):
            self.pool = os.urandom(_POOL_BYTES)
            self.offset = 0
        chunk = self.pool[self.offset : self.offset + count]
        self.offset += count
        return chunk


_random = _RandomPool()


def new_id(prefix: str) -> str:
    """Return ``prefix_``, 12 hex digits of milliseconds since the epoch, 16 random hex digits.

    Ids made in a later millisecond sort after earlier ones, which is all that cursor
    pagination needs; the random part keeps ids made in one millisecond, or by several
    processes, apart.
    """
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{millis:012x}{_random.take(_RANDOM_BYTES).hex()}"
