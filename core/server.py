"""The core's gRPC server: servicers, health, reflection, interceptor; and the
process around it (database, metrics, signals, graceful stop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common.config import Settings
from common.tls import ServerCertificates
from core import db, embedded
from core.activity import ActivityService, Pruner, Recorder
from core.admin_service import AdminService
from core.auth import Guard
from core.cursors import Cursors
from core.doorbell import Doorbell
from core.groups import GroupService
from core.instrumentation import instrument
from core.notifier import RoleNotifier
from core.ratelimit import RateLimits
from core.role_service import RoleOptions, RoleService
from core.search import SearchService
from core.tokens import Authenticator
from core.users import UserService
from wando.provisioning.v1 import (
    activity_pb2,
    activity_pb2_grpc,
    admin_service_pb2,
    admin_service_pb2_grpc,
    group_service_pb2,
    group_service_pb2_grpc,
    role_service_pb2,
    role_service_pb2_grpc,
    search_service_pb2,
    search_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)

log = logging.getLogger(__name__)


ADMIN_SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"]
USER_SERVICE = user_service_pb2.DESCRIPTOR.services_by_name["UserService"]
GROUP_SERVICE = group_service_pb2.DESCRIPTOR.services_by_name["GroupService"]
ROLE_SERVICE = role_service_pb2.DESCRIPTOR.services_by_name["RoleService"]
SEARCH_SERVICE = search_service_pb2.DESCRIPTOR.services_by_name["SearchService"]
ACTIVITY_SERVICE = activity_pb2.DESCRIPTOR.services_by_name["ActivityService"]
# the services a SCIM gateway calls; a local core (core.local) hosts these alone
SCIM_SERVICE_NAMES = tuple(
    s.full_name for s in (USER_SERVICE, GROUP_SERVICE, SEARCH_SERVICE, ACTIVITY_SERVICE)
)
SERVICE_NAMES = tuple(
    s.full_name
    for s in (
        ADMIN_SERVICE,
        USER_SERVICE,
        GROUP_SERVICE,
        ROLE_SERVICE,
        SEARCH_SERVICE,
        ACTIVITY_SERVICE,
    )
)


@dataclass
class CoreServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    notifier: RoleNotifier
    roles: RoleService
    pruner: Pruner
    doorbell: Doorbell

    async def stop(self, grace: float) -> None:
        """Stop accepting calls, let in-flight ones finish within `grace` seconds."""
        for name in (*SERVICE_NAMES, ""):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.roles.end_watches()  # streams never finish by themselves
        await self.server.stop(grace)
        await self.doorbell.close()
        await self.roles.cache.close()
        await self.pruner.close()
        await self.notifier.close()


@dataclass(frozen=True)
class ActivitySettings:
    """What the core keeps of the gateway's activity records."""

    retention_days: int = 14
    max_per_org: int = 1_000_000


# A client's HTTP/2 connection is closed (GOAWAY, in-flight calls finish) after
# about this long, so that clients reconnect and their connections spread over
# the core processes sharing a port and over replicas added since (gRPC adds
# ±10 % jitter). Streams (WatchRoleChanges) are not cut: no grace limit is set.
MAX_CONNECTION_AGE_MS = 30_000


def build_guard(
    pool: asyncpg.Pool,
    admin_token: str,
    service_token: str | None = None,
    gateway_token: str | None = None,
) -> tuple[Guard, Authenticator]:
    """The credential checks of a core: its token cache (core.tokens; a revoked
    token is refused within AUTH_CACHE_SECONDS) and the fleet's rate limits."""
    authenticator = Authenticator(pool)
    guard = Guard(
        admin_token, authenticator, service_token, RateLimits(pool), gateway_token=gateway_token
    )
    return guard, authenticator


def add_scim_services(
    server: grpc.aio.Server,
    pool: asyncpg.Pool,
    guard: Guard,
    cursors: Cursors,
    doorbell: Doorbell,
    recorder: Recorder | None = None,
) -> None:
    """The services the SCIM gateway calls (users, groups, search, activity),
    instrumented, on `server`: the gRPC server (start_server) or the local core
    of a gateway that hosts them in its own process (core.local, which
    registers like a server, and hands `recorder` its activity directly).
    One place, so the two cannot differ."""
    user_service_pb2_grpc.add_UserServiceServicer_to_server(
        instrument(UserService(pool, guard, cursors), USER_SERVICE, doorbell), server
    )
    group_service_pb2_grpc.add_GroupServiceServicer_to_server(
        instrument(GroupService(pool, guard, cursors), GROUP_SERVICE, doorbell), server
    )
    search_service_pb2_grpc.add_SearchServiceServicer_to_server(
        instrument(SearchService(pool, guard), SEARCH_SERVICE), server
    )
    activity_pb2_grpc.add_ActivityServiceServicer_to_server(
        instrument(ActivityService(recorder or Recorder(pool), guard), ACTIVITY_SERVICE), server
    )


async def start_server(
    pool: asyncpg.Pool,
    admin_token: str,
    listen: str,
    service_token: str | None = None,
    *,
    cursors: Cursors | None = None,
    tls: ServerCertificates | None = None,
    reuse_port: bool = False,
    role_options: RoleOptions | None = None,
    gateway_token: str | None = None,
    activity: ActivitySettings = ActivitySettings(),
) -> CoreServer:
    """Build the server, bind it to `listen` (HOST:PORT, port 0 picks one) and
    start it: over TLS with `tls`'s certificate files (re-read when they
    change; client certificates required if it names a client CA), else in
    plaintext. Without `cursors`, paging cursors are signed with a key of this
    server alone. `reuse_port`: share the port with other processes
    (SO_REUSEPORT), for the workers of `wando serve` only; a second `wando
    core` on a taken port must fail to start rather than silently take half
    of its connections."""
    cursors = cursors or Cursors(secrets.token_bytes(32))
    role_options = role_options or RoleOptions()
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        ],
    )
    guard, authenticator = build_guard(pool, admin_token, service_token, gateway_token)
    notifier = RoleNotifier(
        pool, poll_seconds=role_options.poll_seconds, ping_seconds=role_options.ping_seconds
    )
    role_service = RoleService(pool, guard, notifier, role_options)
    doorbell = Doorbell(pool)
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        instrument(AdminService(pool, guard, authenticator), ADMIN_SERVICE, doorbell), server
    )
    add_scim_services(server, pool, guard, cursors, doorbell)
    role_service_pb2_grpc.add_RoleServiceServicer_to_server(
        instrument(role_service, ROLE_SERVICE), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        if tls is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, tls.credentials())
    except RuntimeError:  # grpcio's way of saying the bind failed
        port = 0
    if port == 0:
        raise OSError(f"could not listen on {listen} (address in use, or not this machine's)")
    notifier.start()
    role_service.cache.start()
    await server.start()
    for name in (*SERVICE_NAMES, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    pruner = Pruner(pool, activity.retention_days, activity.max_per_org)
    return CoreServer(server, health_servicer, port, notifier, role_service, pruner, doorbell)


@contextlib.asynccontextmanager
async def postgres(settings: Settings) -> AsyncIterator[str]:
    """The DSN of WANDO_DATABASE_URL, else of the embedded server in the data
    directory, started for the block and stopped again on the way out."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    pg = await embedded.start(settings.data_dir)
    try:
        yield pg.dsn
    finally:
        await pg.stop()


@contextlib.asynccontextmanager
async def database(settings: Settings, *, migrate: bool = True) -> AsyncIterator[asyncpg.Pool]:
    """The migrated pool, on postgres(settings). `migrate=False`: the schema
    must already be current (a worker of `wando serve`, whose supervisor
    migrated; a `wando gateway` with WANDO_CORE=local), which is checked."""
    async with postgres(settings) as dsn:
        sizes = {"min_size": settings.db_pool_min, "max_size": settings.db_pool_max}
        if migrate:
            pool = await db.connect_and_migrate(dsn, **sizes)
        else:
            pool = await db.create_pool(dsn, **sizes)
            try:
                async with pool.acquire() as conn:
                    await db.check_schema(conn)
            except BaseException:
                await pool.close()
                raise
        try:
            yield pool
        finally:
            await pool.close()


@contextlib.contextmanager
def stop_signals(*, supervised: bool = False) -> Iterator[asyncio.Event]:
    """An event that SIGTERM or SIGINT sets, from the start of the block. Enter
    it before starting anything: a signal during start-up then asks for a clean
    stop once started, instead of killing the process (the default action)
    and leaving the embedded PostgreSQL running.

    `supervised` (a worker of `wando serve`): SIGINT is ignored, since Ctrl-C
    reaches every process of the terminal's group and the supervisor stops the
    workers in order (gateways first); the supervisor's SIGTERM stops it, and
    so does the end of its stdin, which the supervisor holds open while it
    lives (a supervisor killed outright leaves no worker behind)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, (lambda: None) if supervised else stop.set)
    if supervised:
        stdin = sys.stdin.fileno()

        def read_stdin() -> None:
            if not os.read(stdin, 4096):
                loop.remove_reader(stdin)
                stop.set()

        loop.add_reader(stdin, read_stdin)
    try:
        yield stop
    finally:
        if supervised:
            loop.remove_reader(sys.stdin.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
