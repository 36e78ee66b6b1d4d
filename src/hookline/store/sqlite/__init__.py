"""The embedded SQLite store, hookline's default."""

from hookline.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
