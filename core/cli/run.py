"""`wando serve` (everything in one process) and `wando core` (gRPC only)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from core import auth, config, logs
from core.db import SchemaTooNewError
from core.metrics import serve_metrics
from core.server import database, start_server, wait_for_signal

log = logging.getLogger("wando")


def add_commands(commands: Any) -> None:
    for name, text in (
        ("serve", "run everything in one process (core and the SCIM gateway)"),
        ("core", "run the core gRPC service only"),
    ):
        cmd = commands.add_parser(name, help=text, description=text)
        cmd.add_argument("--data-dir", help="data directory (env WANDO_DATA_DIR)")
        cmd.add_argument(
            "--grpc-listen", help="core gRPC address HOST:PORT (env WANDO_GRPC_LISTEN)"
        )
        cmd.add_argument("--http-listen", help="gateway address HOST:PORT (env WANDO_HTTP_LISTEN)")
        cmd.set_defaults(handler=_handler, with_gateway=(name == "serve"))


def _handler(args: argparse.Namespace) -> int:
    settings = config.load(
        data_dir=args.data_dir, grpc_listen=args.grpc_listen, http_listen=args.http_listen
    )
    logs.configure(settings.log_level, settings.log_format)
    try:
        asyncio.run(run(settings, with_gateway=args.with_gateway))
    except SchemaTooNewError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


async def run(settings: config.Settings, *, with_gateway: bool) -> None:
    log.info("configuration: %s", settings.redacted())
    admin_token = auth.load_admin_token(settings.admin_token, settings.data_dir)
    async with database(settings) as pool:
        core = await start_server(pool, admin_token, str(settings.grpc_listen))
        serve_metrics(settings.metrics_listen)
        log.info("core gRPC listening on %s", settings.grpc_listen)
        try:
            await wait_for_signal()
            log.info(
                "shutting down: draining in-flight calls (up to %ss)",
                settings.shutdown_grace_seconds,
            )
        finally:
            await core.stop(settings.shutdown_grace_seconds)
    log.info("stopped")
