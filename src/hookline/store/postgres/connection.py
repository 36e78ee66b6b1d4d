"""PostgreSQL connections: a pool sized from the settings, driver errors turned into ours, and
schema migrations applied under an advisory lock.

Several hookline instances share one database, so anything that must happen once (applying a
migration, a purge) or must not interleave (deleting an endpoint while events fan out to it) is
guarded by a PostgreSQL advisory lock. Every key lives in :class:`Lock`, so no two uses collide.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import structlog
from asyncpg.pool import PoolConnectionProxy

from hookline.errors import StoreUnavailable
from hookline.store.migrations import load_migrations, pending_migrations

CONNECT_TIMEOUT_SECONDS = 5.0
ACQUIRE_TIMEOUT_SECONDS = 10.0
STATEMENT_TIMEOUT_SECONDS = 30.0
STARTUP_RETRY_SECONDS = 30.0
STARTUP_RETRY_PAUSE_SECONDS = 1.0
APPLICATION_NAME = "hookline"
"""How pooled sessions show in ``pg_stat_activity``."""

# Errors after which the same call may well succeed a moment later: the server is starting,
# shutting down, restarting, out of connection slots, or out of reach.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)
# Everything the driver raises. Like the SQLite store, any driver failure reaches callers as
# StoreUnavailable: the API answers 503, the engine and the verdict writer try again.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# A string, because the driver's proxy class cannot be subscripted at run time.
PooledConnection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

log = structlog.get_logger(__name__)


class Lock(enum.IntEnum):
    """Advisory lock keys, each paired with :data:`LOCK_NAMESPACE`."""

    MIGRATIONS = 1
    PURGE = 2
    FAN_OUT = 3
    """Held shared while deliveries are created, and exclusively while an endpoint is deleted,
    so a delivery is never created for an endpoint that a concurrent delete has just removed."""
    CHANGE_FEED = 4
    """Held from writing delivery changes until commit, so their numbers follow commit order."""


LOCK_NAMESPACE = int.from_bytes(b"hook", "big")
"""The first half of every advisory lock key, so hookline's keys stay clear of other users'."""


def redact(url: str) -> str:
    """Return the URL without its password, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host))


def unavailable(action: str, exc: BaseException) -> StoreUnavailable:
    """Describe a driver failure as ours; the caller raises it ``from exc``."""
    reason = str(exc) or type(exc).__name__
    return StoreUnavailable(f"PostgreSQL could not {action}: {reason}.")


async def _prepare_connection(conn: asyncpg.Connection) -> None:
    # JSONB columns come back as Python values and take them, rather than JSON text.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


class Database:
    """A connection pool on one PostgreSQL database."""

    def __init__(self, url: str, min_size: int, max_size: int) -> None:
        self.url = url
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        """Create the pool, waiting a while for a server that is starting or out of reach."""
        give_up_at = time.monotonic() + STARTUP_RETRY_SECONDS
        while True:
            try:
                self._pool = await asyncpg.create_pool(
                    self.url,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    init=_prepare_connection,
                    timeout=CONNECT_TIMEOUT_SECONDS,
                    command_timeout=STATEMENT_TIMEOUT_SECONDS,
                    server_settings={"application_name": APPLICATION_NAME},
                )
                return
            except TRANSIENT_ERRORS as exc:
                if time.monotonic() >= give_up_at:
                    raise unavailable(f"be reached at {redact(self.url)}", exc) from exc
                log.warning(
                    "PostgreSQL is not answering yet, retrying",
                    action="store_connect_retry",
                    error=str(exc) or type(exc).__name__,
                )
                await asyncio.sleep(STARTUP_RETRY_PAUSE_SECONDS)
            except DRIVER_ERRORS as exc:
                # A wrong password or a missing database will not fix itself by waiting.
                raise unavailable(f"open {redact(self.url)}", exc) from exc

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PooledConnection]:
        """Lend a pooled connection; driver errors inside become :class:`StoreUnavailable`."""
        if self._pool is None:
            raise StoreUnavailable("The PostgreSQL store is closed.")
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn:
                yield conn
        except DRIVER_ERRORS as exc:
            raise unavailable("complete the operation", exc) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PooledConnection]:
        """Lend a connection inside a transaction that commits when the block ends normally."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            return await conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            return await conn.fetchrow(query, *args)


async def take_lock(conn: PooledConnection, lock: Lock, *, shared: bool = False) -> None:
    """Wait for an advisory lock held until the current transaction ends."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await conn.execute(f"SELECT {function}($1, $2)", LOCK_NAMESPACE, int(lock))


async def try_lock(conn: PooledConnection, lock: Lock) -> bool:
    """Take an advisory lock held until the current transaction ends, unless someone has it."""
    taken: bool = await conn.fetchval(
        "SELECT pg_try_advisory_xact_lock($1, $2)", LOCK_NAMESPACE, int(lock)
    )
    return taken


async def migrate(conn: PooledConnection) -> list[int]:
    """Apply the migrations this database lacks; return the versions applied.

    Instances that start together queue on a session advisory lock, so each version is applied
    exactly once and the later instances find the schema already up to date.
    """
    await conn.execute("SELECT pg_advisory_lock($1, $2)", LOCK_NAMESPACE, int(Lock.MIGRATIONS))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        applied = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        todo = pending_migrations(load_migrations("postgres"), applied)
        for migration in todo:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    time.time(),
                )
            log.info(
                "schema migration applied",
                action="migrated",
                version=migration.version,
                name=migration.name,
            )
    finally:
        await conn.execute(
            "SELECT pg_advisory_unlock($1, $2)", LOCK_NAMESPACE, int(Lock.MIGRATIONS)
        )
    return [migration.version for migration in todo]
