"""`wando serve` (a supervisor and its worker processes, cli/supervise.py),
`wando core` (gRPC only), `wando gateway` (the SCIM HTTP gateway only, against
WANDO_CORE) and `wando migrate` (apply migrations and exit).

`wando core --supervised NAME` and `wando gateway --supervised NAME` are how the
supervisor runs its workers (the flag is not in --help): the port is shared
with the other workers (SO_REUSEPORT), migrations are left to the supervisor,
metrics go to the supervisor's /metrics, SIGINT is left to the supervisor, and
the worker says "ready" on its stdout once it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

from cli.worker import READY
from common import config, credentials, eventloop, logs, tls, tracing
from core import auth, db
from core.cursors import Cursors
from core.db import SchemaError
from core.local import LocalCore, start_local_core
from core.metrics import serve_metrics, watch_pool
from core.role_service import RoleOptions
from core.server import ActivitySettings, database, postgres, start_server, stop_signals
from gateway.app import serving

log = logging.getLogger("wando")


def add_commands(commands: Any) -> None:
    text = "run the service on every CPU: core and SCIM gateway worker processes"
    cmd = commands.add_parser("serve", help=text, description=text)
    _listen_arguments(cmd)
    cmd.add_argument(
        "--workers",
        help="core and gateway processes to run, N of each (env WANDO_WORKERS; default: CPUs)",
    )
    cmd.set_defaults(handler=_serve_handler)

    text = "run the core gRPC service only"
    cmd = commands.add_parser("core", help=text, description=text)
    _listen_arguments(cmd)
    _supervised_argument(cmd)
    cmd.set_defaults(handler=_core_handler)

    text = "run the SCIM gateway only, against a running core (WANDO_CORE)"
    cmd = commands.add_parser("gateway", help=text, description=text)
    cmd.add_argument("--http-listen", help="gateway address HOST:PORT (env WANDO_HTTP_LISTEN)")
    cmd.add_argument("--core", help="core address(es) (env WANDO_CORE)")
    _supervised_argument(cmd)
    cmd.set_defaults(handler=_gateway_handler)

    text = "apply pending database migrations and exit (for a deploy job)"
    cmd = commands.add_parser("migrate", help=text, description=text)
    cmd.add_argument("--data-dir", help="data directory (env WANDO_DATA_DIR)")
    cmd.set_defaults(handler=_migrate_handler)


def _supervised_argument(cmd: argparse.ArgumentParser) -> None:
    """--supervised NAME: run as the worker NAME ("core-1") of `wando serve`."""
    cmd.add_argument("--supervised", metavar="NAME", help=argparse.SUPPRESS)


def _listen_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--data-dir", help="data directory (env WANDO_DATA_DIR)")
    cmd.add_argument("--grpc-listen", help="core gRPC address HOST:PORT (env WANDO_GRPC_LISTEN)")
    cmd.add_argument("--http-listen", help="gateway address HOST:PORT (env WANDO_HTTP_LISTEN)")


def _serve_handler(args: argparse.Namespace) -> int:
    from cli import supervise  # the supervisor's own imports stay out of the workers

    settings = config.load(
        data_dir=args.data_dir,
        grpc_listen=args.grpc_listen,
        http_listen=args.http_listen,
        workers=args.workers,
    )
    logs.configure(settings.log_level, settings.log_format)
    return _run_until_stopped(supervise.run(settings))


def _core_handler(args: argparse.Namespace) -> int:
    settings = config.load(
        data_dir=args.data_dir, grpc_listen=args.grpc_listen, http_listen=args.http_listen
    )
    logs.configure(settings.log_level, settings.log_format, args.supervised)
    return _run_until_stopped(run_core(settings, supervised=bool(args.supervised)))


def _gateway_handler(args: argparse.Namespace) -> int:
    settings = config.load(http_listen=args.http_listen, core=args.core)
    if settings.core_is_local and settings.database_url is None:
        raise config.ConfigError(
            "WANDO_CORE=local needs WANDO_DATABASE_URL: the gateway then serves "
            "the core's SCIM services itself, on that (migrated) database"
        )
    logs.configure(settings.log_level, settings.log_format, args.supervised)
    return _run_until_stopped(run_gateway(settings, supervised=bool(args.supervised)))


def _migrate_handler(args: argparse.Namespace) -> int:
    settings = config.load(data_dir=args.data_dir)
    logs.configure(settings.log_level, settings.log_format)
    return _run_until_stopped(migrate(settings))


def _run_until_stopped(main: Any) -> int:
    try:
        code = eventloop.run(main)
    except SchemaError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return code if isinstance(code, int) else 0


def _say_ready() -> None:
    """Tell the supervisor (on stdout) that this worker serves."""
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()


async def run_core(settings: config.Settings, *, supervised: bool = False) -> None:
    # each process its own exporter (a worker of `wando serve` too), from OTEL_* (common.tracing)
    with stop_signals(supervised=supervised) as stop, tracing.exporting("wando-core"):
        log.info("configuration: %s", {**settings.redacted(), "event_loop": _loop_name()})
        certificates = tls.server_certificates(settings)  # or refuses plaintext on the network
        admin_token = auth.load_admin_token(settings.admin_token, settings.data_dir)
        service_token = auth.load_service_token(settings.service_token, settings.data_dir)
        gateway_token = auth.load_gateway_token(settings.gateway_token, settings.data_dir)
        cursors = _cursors(settings)
        # SIGHUP re-reads the certificates: armed before anything serves, so
        # that one sent as soon as the ready line shows cannot end the process
        with tls.reread_on_sighup(certificates):
            async with database(settings, migrate=not supervised) as pool:
                core = await start_server(
                    pool,
                    admin_token,
                    str(settings.grpc_listen),
                    service_token,
                    cursors=cursors,
                    tls=certificates,
                    reuse_port=supervised,
                    role_options=RoleOptions(
                        cache_max_entries=settings.role_cache_max_entries,
                        cache_max_bytes=settings.role_cache_max_bytes,
                        watch_max_lag=settings.watch_max_lag,
                    ),
                    gateway_token=gateway_token,
                    activity=ActivitySettings(
                        settings.activity_retention_days, settings.activity_max_per_org
                    ),
                )
                pool_watch = asyncio.create_task(watch_pool(pool))
                try:
                    if not supervised:
                        serve_metrics(settings.metrics_listen)
                    log.info(
                        "core gRPC listening on %s (%s)",
                        settings.grpc_listen,
                        tls.mode(certificates),
                    )
                    if supervised:
                        _say_ready()
                    await stop.wait()
                    log.info(
                        "shutting down: draining in-flight calls (up to %ss)",
                        settings.shutdown_grace_seconds,
                    )
                finally:
                    pool_watch.cancel()
                    await core.stop(settings.shutdown_grace_seconds)
    log.info("stopped")


async def run_gateway(settings: config.Settings, *, supervised: bool = False) -> None:
    with stop_signals(supervised=supervised) as stop, tracing.exporting("wando-gateway"):
        log.info("configuration: %s", {**settings.redacted(), "event_loop": _loop_name()})
        async with (
            local_core(settings) as core,
            serving(settings, reuse_port=supervised, core=core),
        ):
            if not supervised:
                serve_metrics(settings.metrics_listen)
            if core is None:
                log.info("gateway forwarding to the core at %s", settings.core_address)
            else:
                log.info("gateway serving the core's SCIM services in this process (local)")
            if supervised:
                _say_ready()
            await stop.wait()
            log.info(
                "shutting down: draining in-flight requests (up to %ss)",
                settings.shutdown_grace_seconds,
            )
    log.info("stopped")


@contextlib.asynccontextmanager
async def local_core(settings: config.Settings) -> AsyncIterator[LocalCore | None]:
    """With WANDO_CORE=local, the core's SCIM services in this process
    (core.local) on a pool of its own (WANDO_DB_POOL_MIN/MAX), with the
    cores' cursor key and the gateway credential; never migrates. Else None."""
    if not settings.core_is_local:
        yield None
        return
    gateway_token = credentials.read_credential(
        settings.gateway_token, settings.data_dir, credentials.GATEWAY_TOKEN_FILE
    )
    async with database(settings, migrate=False) as pool:
        core = await start_local_core(pool, _cursors(settings), gateway_token)
        pool_watch = asyncio.create_task(watch_pool(pool))
        try:
            yield core
        finally:
            pool_watch.cancel()
            await core.close()


def _cursors(settings: config.Settings) -> Cursors:
    """The paging cursors' key, shared by the fleet (WANDO_CURSOR_SECRET or in the data dir)."""
    return Cursors(
        auth.load_cursor_secret(settings.cursor_secret, settings.data_dir),
        settings.cursor_timeout_seconds,
    )


async def migrate(settings: config.Settings) -> None:
    """Apply the pending migrations (on the embedded server if no
    WANDO_DATABASE_URL is set) and exit."""
    async with postgres(settings) as dsn:
        done = await db.migrate_at(dsn)
    if done:
        log.info("applied migrations %s", ", ".join(f"{v:04d}" for v in done))
    else:
        log.info("the schema is up to date; nothing to apply")


def _loop_name() -> str:
    """The running loop's kind, as the start-up log shows it: "uvloop" when
    eventloop.run started us (a library embedding run() may use another)."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
