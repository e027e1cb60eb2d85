"""Two core replicas on one database, as production runs them (issue #15, part 3).

Each replica has its own pool, notifier and token cache; nothing passes
between them but PostgreSQL. These tests hold the README's cross-replica
promises to their words: a role change reaches a watcher on the other
replica through NOTIFY (not the polling backstop), and a token revoked
through one replica stops working on the other within a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from core import db, notifier
from core.server import CoreServer, start_server
from tests.scim_client import Scim
from tests.support import ADMIN, ADMIN_TOKEN, SERVICE, SERVICE_TOKEN
from wando.provisioning.v1 import (
    admin_service_pb2 as apb,
)
from wando.provisioning.v1 import (
    admin_service_pb2_grpc,
    role_service_pb2_grpc,
    roles_pb2,
)
from wando.provisioning.v1 import (
    role_service_pb2 as rpb,
)

# README, "Onboarding an organisation": a revoked token "stops working within a second"
REVOCATION_PROMISE_SECONDS = 1.0


@pytest.fixture
async def other_core(database_dsn: str) -> AsyncIterator[CoreServer]:
    """A second replica: its own pool and server on the same database."""
    pool = await db.create_pool(database_dsn, min_size=1, max_size=5)
    server = await start_server(pool, ADMIN_TOKEN, "127.0.0.1:0", SERVICE_TOKEN)
    yield server
    await server.stop(0)
    await pool.close()


@pytest.fixture
async def other_channel(other_core: CoreServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{other_core.port}") as channel:
        yield channel


async def test_a_change_on_one_replica_reaches_a_watcher_on_the_other_by_notify(
    acme: Scim, other_channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with the backstop a minute away, only a notification can be in time
    monkeypatch.setattr(notifier, "POLL_SECONDS", 60.0)
    stub = role_service_pb2_grpc.RoleServiceStub(other_channel)
    call = stub.WatchRoleChanges(
        rpb.WatchRoleChangesRequest(organization="acme", after_sequence=0), metadata=SERVICE
    )
    stream = call.__aiter__()
    try:
        first = await acme.create_user({"userName": "first@acme.example"})
        async with asyncio.timeout(20):
            change = (await anext(stream)).change
        assert change.user_id == first["id"] and change.new_role == roles_pb2.ROLE_MEMBER

        await asyncio.sleep(0.5)  # the watcher is waiting for its next wake-up now
        second = await acme.create_user({"userName": "second@acme.example"})
        async with asyncio.timeout(20):  # a third of the backstop
            change = (await anext(stream)).change
        assert change.user_id == second["id"]
        assert change.sequence == 2
    finally:
        call.cancel()


async def test_a_token_revoked_on_one_replica_is_refused_by_the_other_within_a_second(
    acme: Scim,
    admin_stub: admin_service_pb2_grpc.AdminServiceStub,
    other_channel: grpc.aio.Channel,
) -> None:
    on_other = Scim(other_channel, acme.metadata[0][1].removeprefix("Bearer "))
    await on_other.list_users()  # the other replica has just accepted (and cached) it
    tokens = await admin_stub.ListScimTokens(
        apb.ListScimTokensRequest(organization="acme"), metadata=ADMIN
    )
    await admin_stub.RevokeScimToken(
        apb.RevokeScimTokenRequest(organization="acme", token_id=tokens.tokens[0].id),
        metadata=ADMIN,
    )
    await asyncio.sleep(REVOCATION_PROMISE_SECONDS)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await on_other.list_users()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_both_replicas_serve_one_organisation_as_one(
    acme: Scim, other_channel: grpc.aio.Channel
) -> None:
    """A write through one is read through the other at once: no replica
    keeps a copy of SCIM data."""
    on_other = Scim(other_channel, acme.metadata[0][1].removeprefix("Bearer "))
    user = await acme.create_user({"userName": "ada@acme.example"})
    patched = await on_other.patch_user(
        user["id"], {"op": "replace", "path": "active", "value": False}
    )
    assert patched["active"] is False
    assert (await acme.get_user(user["id"]))["active"] is False


async def test_a_core_shutting_down_ends_its_watch_streams_for_the_watcher_to_resume_elsewhere(
    acme: Scim, database_dsn: str
) -> None:
    """A watch stream never ends by itself: left alone it would hold the
    core's drain for the whole grace period, and then end as CANCELLED. The
    core ends it at once with UNAVAILABLE, which tells the watcher to resume
    on another core (tests/drills/test_fleet.py does, under load)."""
    await acme.create_user({"userName": "first@acme.example"})
    pool = await db.create_pool(database_dsn, min_size=1, max_size=5)
    server = await start_server(pool, ADMIN_TOKEN, "127.0.0.1:0", SERVICE_TOKEN)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = role_service_pb2_grpc.RoleServiceStub(channel)
            call = stub.WatchRoleChanges(
                rpb.WatchRoleChangesRequest(organization="acme", after_sequence=0),
                metadata=SERVICE,
            )
            stream = call.__aiter__()
            assert (await anext(stream)).change.sequence == 1
            stopping = asyncio.create_task(server.stop(grace=600))
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                await anext(stream)
            await stopping
    finally:
        await pool.close()
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE, cut.value
    assert "shutting down" in (cut.value.details() or "")
