"""A fresh, opened store per test, for every kind of store hookline ships."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hookline.store.base import Store
from hookline.store.sqlite import SQLiteStore

STORE_KINDS = ["sqlite"]


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: Store = SQLiteStore(tmp_path / "contract.db")
    await opened.open()
    yield opened
    await opened.close()
