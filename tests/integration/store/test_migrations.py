"""Schema migrations, the same history for every kind of store: applied once, upgraded in place,
and refused when the database is newer than the code."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import asyncpg
import pytest

from hookline.errors import SchemaTooNew
from hookline.store.base import Store
from hookline.store.migrations import Migration, load_migrations
from hookline.store.postgres import PostgresStore
from hookline.store.sqlite import SQLiteStore
from tests.integration.store.conftest import StoreFactory
from tests.integration.store.test_contract import endpoint

INSTANCES_STARTING_TOGETHER = 4
# A version after every shipped one, standing in for the next release's first migration.
UPGRADE = Migration(9_000, "upgrade_probe", "CREATE TABLE upgrade_probe (id INTEGER PRIMARY KEY);")


def kind_of(store: Store) -> str:
    return "sqlite" if isinstance(store, SQLiteStore) else "postgres"


async def query(store: Store, sql: str) -> list[tuple[object, ...]]:
    """Run SQL on the store's database directly, as an operator would."""
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path)
        try:
            rows = conn.execute(sql).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()
    assert isinstance(store, PostgresStore)
    pg = await asyncpg.connect(store.url)
    try:
        return [tuple(row) for row in await pg.fetch(sql)]
    finally:
        await pg.close()


async def test_instances_starting_together_apply_each_migration_once(
    new_store: StoreFactory,
) -> None:
    stores = [new_store() for _ in range(INSTANCES_STARTING_TOGETHER)]

    await asyncio.gather(*(store.open() for store in stores))
    await asyncio.gather(*(store.close() for store in stores))

    versions = await query(stores[0], "SELECT version FROM schema_migrations ORDER BY version")
    known = [m.version for m in load_migrations(kind_of(stores[0]))]
    assert [row[0] for row in versions] == known


async def test_a_database_made_by_an_older_release_is_upgraded_in_place(
    new_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    older = new_store()
    await older.open()
    kept = await older.create_endpoint(endpoint())
    await older.close()

    # The next release: the same history plus one migration.
    kind = kind_of(older)
    shipped = load_migrations(kind)
    monkeypatch.setattr(
        f"hookline.store.{kind}.connection.load_migrations", lambda _: [*shipped, UPGRADE]
    )
    newer = new_store()
    await newer.open()
    try:
        assert (await newer.get_endpoint(kept.id)).url == kept.url
    finally:
        await newer.close()

    versions = await query(newer, "SELECT version FROM schema_migrations ORDER BY version")
    assert [row[0] for row in versions] == [*(m.version for m in shipped), UPGRADE.version]
    assert await query(newer, "SELECT COUNT(*) FROM upgrade_probe") == [(0,)]


async def test_a_schema_newer_than_the_code_stops_startup(new_store: StoreFactory) -> None:
    first = new_store()
    await first.open()
    await first.close()
    await query(
        first,
        "INSERT INTO schema_migrations (version, name, applied_at) "
        f"VALUES (999, 'future', {time.time()})",
    )

    refused = new_store()
    with pytest.raises(SchemaTooNew, match="version 999"):
        await refused.open()
    await refused.close()
