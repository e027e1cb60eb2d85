"""The core's gRPC server: servicers, health, reflection, interceptor; and the
process around it (database, metrics, signals, graceful stop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from core import db, embedded
from core.activity import ActivityService, Pruner
from core.admin_service import AdminService
from core.auth import Guard
from core.config import Settings
from core.groups import GroupService
from core.instrumentation import instrument
from core.notifier import RoleNotifier
from core.role_service import RoleService
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
    user_service_pb2,
    user_service_pb2_grpc,
)

log = logging.getLogger(__name__)

ADMIN_SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"]
USER_SERVICE = user_service_pb2.DESCRIPTOR.services_by_name["UserService"]
GROUP_SERVICE = group_service_pb2.DESCRIPTOR.services_by_name["GroupService"]
ROLE_SERVICE = role_service_pb2.DESCRIPTOR.services_by_name["RoleService"]
ACTIVITY_SERVICE = activity_pb2.DESCRIPTOR.services_by_name["ActivityService"]
SERVICE_NAMES = tuple(
    s.full_name
    for s in (ADMIN_SERVICE, USER_SERVICE, GROUP_SERVICE, ROLE_SERVICE, ACTIVITY_SERVICE)
)


@dataclass
class CoreServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    notifier: RoleNotifier
    pruner: Pruner

    async def stop(self, grace: float) -> None:
        """Stop accepting calls, let in-flight ones finish within `grace` seconds."""
        for name in (*SERVICE_NAMES, ""):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)
        await self.pruner.close()
        await self.notifier.close()


@dataclass(frozen=True)
class ActivitySettings:
    """What the core keeps of the gateway's activity records."""

    retention_days: int = 14
    max_per_org: int = 1_000_000


async def start_server(
    pool: asyncpg.Pool,
    admin_token: str,
    listen: str,
    service_token: str | None = None,
    gateway_token: str | None = None,
    activity: ActivitySettings = ActivitySettings(),
) -> CoreServer:
    """Build the server, bind it to `listen` (HOST:PORT, port 0 picks one) and start it."""
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 8 * 1024 * 1024)],
    )
    authenticator = Authenticator(pool)
    guard = Guard(admin_token, authenticator, service_token, gateway_token)
    notifier = RoleNotifier(pool)
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        instrument(AdminService(pool, guard, authenticator), ADMIN_SERVICE), server
    )
    user_service_pb2_grpc.add_UserServiceServicer_to_server(
        instrument(UserService(pool, guard), USER_SERVICE), server
    )
    group_service_pb2_grpc.add_GroupServiceServicer_to_server(
        instrument(GroupService(pool, guard), GROUP_SERVICE), server
    )
    role_service_pb2_grpc.add_RoleServiceServicer_to_server(
        instrument(RoleService(pool, guard, notifier), ROLE_SERVICE), server
    )
    activity_pb2_grpc.add_ActivityServiceServicer_to_server(
        instrument(ActivityService(pool, guard), ACTIVITY_SERVICE), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"could not listen on {listen}")
    await server.start()
    for name in (*SERVICE_NAMES, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    pruner = Pruner(pool, activity.retention_days, activity.max_per_org)
    return CoreServer(server, health_servicer, port, notifier, pruner)


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The migrated pool: on WANDO_DATABASE_URL, else on the embedded server,
    which is stopped again on the way out."""
    pg = None
    dsn = settings.database_url
    if dsn is None:
        pg = await embedded.start(settings.data_dir)
        dsn = pg.dsn
    try:
        pool = await db.connect_and_migrate(
            dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max
        )
        try:
            yield pool
        finally:
            await pool.close()
    finally:
        if pg is not None:
            await pg.stop()


@contextlib.contextmanager
def stop_signals() -> Iterator[asyncio.Event]:
    """An event that SIGTERM or SIGINT sets, from the start of the block. Enter
    it before starting anything: a signal during start-up then asks for a clean
    stop once started, instead of killing the process (the default action)
    and leaving the embedded PostgreSQL running."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
