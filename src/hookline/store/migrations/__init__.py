"""Versioned schema migrations, shipped as numbered SQL files per database kind.

A file named ``0002_add_something.sql`` is version 2. Each store applies the versions it has not
recorded, in order, and refuses to start on a database that records a version it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from hookline.errors import SchemaTooNew


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(kind: str) -> list[Migration]:
    """Return the migrations for ``kind`` ("sqlite" or "postgres"), oldest first."""
    folder = resources.files("hookline.store.migrations").joinpath(kind)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda migration: migration.version)


def pending_migrations(known: list[Migration], applied: set[int]) -> list[Migration]:
    """Return the migrations still to apply, or raise if the database is ahead of the code."""
    newest_known = max((m.version for m in known), default=0)
    ahead = sorted(v for v in applied if v > newest_known)
    if ahead:
        raise SchemaTooNew(
            f"The database schema is at version {ahead[-1]}, but this hookline release only "
            f"knows versions up to {newest_known}. Upgrade hookline, or point DATABASE_URL "
            "at a database made by this release."
        )
    return [m for m in known if m.version not in applied]
