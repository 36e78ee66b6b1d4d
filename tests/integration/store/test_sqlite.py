"""What is particular to the SQLite store: group commit, migrations, durability settings."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from hookline.errors import Conflict, SchemaTooNew
from hookline.store.migrations import load_migrations
from hookline.store.sqlite import SQLiteStore
from tests.integration.store.test_contract import endpoint, event


async def test_concurrent_writes_share_transactions_and_fail_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    await store.open()
    try:
        await store.create_endpoint(endpoint())
        await store.accept_events([event(event_id="evt_dup")], None, time.time())

        results = await asyncio.gather(
            *[store.accept_events([event()], None, time.time()) for _ in range(50)],
            store.accept_events([event(event_id="evt_dup")], None, time.time()),
            return_exceptions=True,
        )

        assert isinstance(results[-1], Conflict)
        assert all(isinstance(r, list) for r in results[:-1])
        assert await store.count_pending() == 51
    finally:
        await store.close()


async def test_database_is_in_wal_mode_with_the_chosen_synchronous_level(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite", synchronous="normal")
    await store.open()
    await store.close()

    conn = sqlite3.connect(tmp_path / "db.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert "synchronous=normal" in store.description


async def test_reopening_applies_no_migration_twice(tmp_path: Path) -> None:
    for _ in range(2):
        store = SQLiteStore(tmp_path / "db.sqlite")
        await store.open()
        await store.close()

    conn = sqlite3.connect(tmp_path / "db.sqlite")
    versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    conn.close()
    assert versions == sorted(set(versions)) == [m.version for m in load_migrations("sqlite")]


async def test_a_schema_newer_than_the_code_stops_startup(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    conn.commit()
    conn.close()

    with pytest.raises(SchemaTooNew, match="version 999"):
        await SQLiteStore(tmp_path / "db.sqlite").open()
