"""`wando serve` (everything in one process), `wando core` (gRPC only) and
`wando gateway` (the SCIM HTTP gateway only, against WANDO_CORE)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

from core import auth, config, eventloop, logs
from core.db import SchemaTooNewError
from core.metrics import serve_metrics
from core.server import ActivitySettings, database, start_server, stop_signals
from gateway.app import serving

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
    text = "run the SCIM gateway only, against a running core (WANDO_CORE)"
    cmd = commands.add_parser("gateway", help=text, description=text)
    cmd.add_argument("--http-listen", help="gateway address HOST:PORT (env WANDO_HTTP_LISTEN)")
    cmd.add_argument("--core", help="core address HOST:PORT (env WANDO_CORE)")
    cmd.set_defaults(handler=_gateway_handler)


def _handler(args: argparse.Namespace) -> int:
    settings = config.load(
        data_dir=args.data_dir, grpc_listen=args.grpc_listen, http_listen=args.http_listen
    )
    logs.configure(settings.log_level, settings.log_format)
    return _run_until_stopped(run(settings, with_gateway=args.with_gateway))


def _gateway_handler(args: argparse.Namespace) -> int:
    settings = config.load(http_listen=args.http_listen, core=args.core)
    logs.configure(settings.log_level, settings.log_format)
    return _run_until_stopped(run_gateway(settings))


def _run_until_stopped(main: Any) -> int:
    try:
        eventloop.run(main)
    except SchemaTooNewError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


def _loopback(listen: config.HostPort, port: int) -> str:
    """How a client in this process reaches a server listening on `listen`."""
    if listen.host in ("0.0.0.0", "", "localhost"):  # noqa: S104 - not binding, mapping
        return f"127.0.0.1:{port}"
    if listen.host == "::":
        return f"[::1]:{port}"
    return str(config.HostPort(listen.host, port))


async def run(settings: config.Settings, *, with_gateway: bool) -> None:
    with stop_signals() as stop:
        await _run(settings, stop, with_gateway=with_gateway)


async def _run(settings: config.Settings, stop: asyncio.Event, *, with_gateway: bool) -> None:
    log.info("configuration: %s", {**settings.redacted(), "event_loop": _loop_name()})
    admin_token = auth.load_admin_token(settings.admin_token, settings.data_dir)
    service_token = auth.load_service_token(settings.service_token, settings.data_dir)
    gateway_token = auth.load_gateway_token(settings.gateway_token, settings.data_dir)
    activity = ActivitySettings(settings.activity_retention_days, settings.activity_max_per_org)
    async with database(settings) as pool:
        core = await start_server(
            pool, admin_token, str(settings.grpc_listen), service_token, gateway_token, activity
        )
        try:
            serve_metrics(settings.metrics_listen)
            log.info("core gRPC listening on %s", settings.grpc_listen)
            async with contextlib.AsyncExitStack() as stack:
                if with_gateway:
                    # the gateway reaches the in-process core over real gRPC on loopback
                    in_process = _loopback(settings.grpc_listen, core.port)
                    own = dataclasses.replace(
                        settings, core_address=in_process, gateway_token=gateway_token
                    )
                    await stack.enter_async_context(serving(own))
                await stop.wait()
                log.info(
                    "shutting down: draining in-flight requests and calls (up to %ss)",
                    settings.shutdown_grace_seconds,
                )
            # leaving the stack drained the gateway first; it still needed the core
        finally:
            await core.stop(settings.shutdown_grace_seconds)
    log.info("stopped")


async def run_gateway(settings: config.Settings) -> None:
    with stop_signals() as stop:
        log.info("configuration: %s", {**settings.redacted(), "event_loop": _loop_name()})
        async with serving(settings):
            serve_metrics(settings.metrics_listen)  # the gateway's own (activity drops)
            log.info("gateway forwarding to the core at %s", settings.core_address)
            await stop.wait()
            log.info(
                "shutting down: draining in-flight requests (up to %ss)",
                settings.shutdown_grace_seconds,
            )
    log.info("stopped")


def _loop_name() -> str:
    """The running loop's kind, as the start-up log shows it: "uvloop" when
    eventloop.run started us (a library embedding run() may use another)."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
