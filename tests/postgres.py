"""The machine's PostgreSQL for tests: a fresh database per test, dropped afterwards.

Tests that need PostgreSQL skip, with the reason, when it cannot be reached, except under CI
(``CI=true``) or with ``HOOKLINE_REQUIRE_SERVICES=1``, where they fail instead: a CI run that
quietly skipped them would prove nothing.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

ADMIN_URL = os.environ.get(
    "HOOKLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""A database to connect to for creating and dropping the test databases."""
CONNECT_TIMEOUT_SECONDS = 5.0
RESTART_TIMEOUT_SECONDS = 60
TEST_DATABASE_PREFIX = "hookline_test_"


def services_required() -> bool:
    truthy = {"1", "true", "yes"}
    return (
        os.environ.get("CI", "").lower() in truthy
        or os.environ.get("HOOKLINE_REQUIRE_SERVICES", "").lower() in truthy
    )


async def _unreachable_reason() -> str | None:
    try:
        conn = await asyncpg.connect(ADMIN_URL, timeout=CONNECT_TIMEOUT_SECONDS)
        await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"PostgreSQL at {ADMIN_URL} cannot be reached ({exc or type(exc).__name__})"
    return None


async def require_postgres() -> None:
    """Skip the test when PostgreSQL is away, or fail it where services are required."""
    reason = await _unreachable_reason()
    if reason is None:
        return
    if services_required():
        pytest.fail(f"{reason}; CI and HOOKLINE_REQUIRE_SERVICES=1 need it.", pytrace=False)
    pytest.skip(f"{reason}; start it, or set HOOKLINE_TEST_POSTGRES_URL.")


def database_url(name: str) -> str:
    """The admin URL with its database swapped for ``name``."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database() -> str:
    """Create an empty database of a random name; return its URL."""
    name = TEST_DATABASE_PREFIX + secrets.token_hex(6)
    conn = await asyncpg.connect(ADMIN_URL, timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(name)


async def drop_database(url: str) -> None:
    """Drop a test database, ending whatever sessions still use it."""
    name = urlsplit(url).path.lstrip("/")
    assert name.startswith(TEST_DATABASE_PREFIX), name
    conn = await asyncpg.connect(ADMIN_URL, timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty database for this test alone."""
    await require_postgres()
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


def cluster() -> tuple[str, str]:
    """The version and name of this machine's PostgreSQL cluster, for pg_ctlcluster."""
    versions = sorted(Path("/etc/postgresql").iterdir()) if Path("/etc/postgresql").is_dir() else []
    if not versions:
        pytest.skip("No local PostgreSQL cluster under /etc/postgresql to restart.")
    return versions[-1].name, "main"


def pg_ctlcluster(action: str, *options: str) -> None:
    """Start, stop or restart the machine's PostgreSQL (needs the rights to do so)."""
    version, name = cluster()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action, *options],
        check=True,
        capture_output=True,
        timeout=RESTART_TIMEOUT_SECONDS,
    )
