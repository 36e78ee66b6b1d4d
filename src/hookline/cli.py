"""The ``hookline`` command: ``serve`` runs the service, ``migrate`` brings the schema up."""

from __future__ import annotations

import argparse
import asyncio
import sys

from hookline import __version__
from hookline.config import Settings, load_settings
from hookline.errors import ConfigError, StoreError
from hookline.logs import configure_logging
from hookline.store import store_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hookline", description="Webhook delivery service.")
    parser.add_argument("--version", action="version", version=f"hookline {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the API and the delivery workers (the default)")
    commands.add_parser("migrate", help="apply schema migrations and exit")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"hookline: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)

    try:
        # Migrating first means a schema problem stops startup with one clear line.
        _migrate(settings, quiet=args.command != "migrate")
        if args.command == "migrate":
            return 0
        from hookline.server import serve

        serve(settings)
    except (ConfigError, StoreError) as exc:
        print(f"hookline: {exc}", file=sys.stderr)
        return 1
    return 0


def _migrate(settings: Settings, *, quiet: bool) -> None:
    store = store_for(settings)

    async def run() -> None:
        await store.open()
        await store.close()

    asyncio.run(run())
    if not quiet:
        print(f"hookline: schema is up to date in {store.description}")
