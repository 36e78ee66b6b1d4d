"""The shared PostgreSQL store, for running several hookline instances on one database."""

from hookline.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
