"""The core's own gauges and histograms: the database pool (in use, waiting)
and the role stream's lag, on a real pool and a real stream."""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import REGISTRY

from core import db
from core.metrics import watch_pool
from tests.scim_client import Scim, okta_user
from tests.support import SERVICE
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import role_service_pb2_grpc


def value(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_pool_gauges_show_connections_in_use_and_callers_waiting(
    database_dsn: str,
) -> None:
    pool = await db.create_pool(database_dsn, min_size=1, max_size=1)
    watcher = asyncio.create_task(watch_pool(pool))
    try:
        async with pool.acquire():
            waiter = asyncio.ensure_future(pool.acquire())  # the pool is full: it waits
            await asyncio.sleep(1.5)  # at least one round of watch_pool
            assert value("wando_db_pool_connections_in_use") == 1
            assert value("wando_db_pool_waiting") == 1
        await pool.release(await waiter)
        await asyncio.sleep(1.5)
        assert value("wando_db_pool_connections_in_use") == 0
        assert value("wando_db_pool_waiting") == 0
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await pool.close()


async def test_each_change_delivered_on_a_stream_is_timed(
    acme: Scim, roles_stub: role_service_pb2_grpc.RoleServiceStub
) -> None:
    before = value("wando_role_stream_lag_seconds_count")
    await acme.create_user(okta_user("lagging@acme.example"))  # its first role is a change
    call = roles_stub.WatchRoleChanges(
        rpb.WatchRoleChangesRequest(organization="acme", after_sequence=0), metadata=SERVICE
    )
    async with asyncio.timeout(20):
        async for _ in call:
            break
    call.cancel()
    assert value("wando_role_stream_lag_seconds_count") == before + 1
