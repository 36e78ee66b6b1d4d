"""The ``hookline`` command: ``serve`` runs the service, ``migrate`` brings the schema up,
``tail`` follows a running server's deliveries."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from hookline import __version__
from hookline.config import Settings, load_settings
from hookline.errors import ConfigError, StoreError
from hookline.logs import configure_logging
from hookline.store import store_for

DEFAULT_URL = "http://127.0.0.1:8000"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hookline", description="Webhook delivery service.")
    parser.add_argument("--version", action="version", version=f"hookline {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the API and the delivery workers (the default)")
    commands.add_parser("migrate", help="apply schema migrations and exit")
    follow = commands.add_parser("tail", help="print a running server's delivery changes")
    follow.add_argument("--url", default=os.environ.get("HOOKLINE_URL", DEFAULT_URL))
    follow.add_argument(
        "--api-key",
        default=os.environ.get("HOOKLINE_API_KEY"),
        help="default: $HOOKLINE_API_KEY",
    )
    follow.add_argument("--endpoint", dest="endpoint_id")
    follow.add_argument("--event-type")
    follow.add_argument("--since", type=int, help="start after this change (0: all retained)")
    args = parser.parse_args(argv)
    if args.command == "tail":
        return _tail(args)

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


def _tail(args: argparse.Namespace) -> int:
    # Imported only here, so that the server never loads the HTTP client it does not use.
    from hookline.tail import TailOptions, tail

    if not args.api_key:
        print("hookline: tail needs an API key: --api-key or HOOKLINE_API_KEY", file=sys.stderr)
        return 2
    options = TailOptions(args.url, args.api_key, args.endpoint_id, args.event_type, args.since)
    try:
        asyncio.run(tail(options))
    except KeyboardInterrupt:
        return 0
    except PermissionError as exc:
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
