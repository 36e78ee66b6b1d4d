"""A fresh, opened store per test, for every kind of store hookline ships."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hookline.store.base import Store
from hookline.store.postgres import PostgresStore
from hookline.store.sqlite import SQLiteStore
from tests.postgres import create_database, drop_database, require_postgres

STORE_KINDS = ["sqlite", "postgres"]
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4

StoreFactory = Callable[[], Store]


@pytest.fixture(params=STORE_KINDS)
async def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Make unopened stores, all on the same fresh database of the kind under test."""
    if request.param == "sqlite":
        yield lambda: SQLiteStore(tmp_path / "contract.db")
        return
    await require_postgres()
    url = await create_database()
    try:
        yield lambda: PostgresStore(url, POOL_MIN_SIZE, POOL_MAX_SIZE)
    finally:
        await drop_database(url)


@pytest.fixture
async def store(new_store: StoreFactory) -> AsyncIterator[Store]:
    opened = new_store()
    await opened.open()
    yield opened
    await opened.close()
