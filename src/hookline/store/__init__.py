"""Stores: where endpoints, events, deliveries and dead letters live.

Every store implements :class:`~hookline.store.base.Store`; :func:`open_store` picks one from
the ``DATABASE_URL``.
"""

from __future__ import annotations

from hookline.config import Settings
from hookline.store.base import Store
from hookline.store.sqlite import SQLiteStore


def store_for(settings: Settings) -> Store:
    """Return the (not yet opened) store that ``settings.database_url`` names."""
    return SQLiteStore(settings.sqlite_path, settings.sqlite_synchronous)


__all__ = ["Store", "store_for"]
