"""Stores: where endpoints, events, deliveries and dead letters live.

Every store implements :class:`~hookline.store.base.Store`; :func:`store_for` picks one from
the ``DATABASE_URL``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hookline.store.base import Store
from hookline.store.sqlite import SQLiteStore

if TYPE_CHECKING:  # the settings import the store's rule types, so only for annotations
    from hookline.config import Settings


def store_for(settings: Settings) -> Store:
    """Return the (not yet opened) store that ``settings.database_url`` names."""
    if settings.uses_postgres:
        # Imported here so that a SQLite deployment never loads the PostgreSQL driver.
        from hookline.store.postgres import PostgresStore

        return PostgresStore(
            settings.database_url,
            settings.database_pool_min_size,
            settings.database_pool_max_size,
        )
    return SQLiteStore(settings.sqlite_path, settings.sqlite_synchronous)


__all__ = ["Store", "store_for"]
