"""The role doorbell (core.doorbell): every write that advances an
organisation's outbox wakes the replicas after its commit, a burst wakes them
once per organisation, and a ring that cannot be sent is sent later.

A plain LISTEN connection stands in for the other replicas' notifiers."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core import doorbell
from core.cursors import Cursors
from core.doorbell import Doorbell
from core.local import start_local_core
from core.roles import NOTIFY_CHANNEL
from tests.scim_client import Scim
from tests.support import ADMIN, GATEWAY_TOKEN, new_org_with_token, org_id_of
from tests.test_roles import map_group
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import admin_service_pb2_grpc, roles_pb2

OUTBOX = "SELECT coalesce(max(seq), 0) FROM role_changes WHERE org_id = $1"


class Listener:
    """The notifications on the role channel, as a replica receives them."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.rings: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.rings.put_nowait(payload)

    async def next(self, timeout: float = 10) -> str:
        async with asyncio.timeout(timeout):
            return await self.rings.get()

    def drain(self) -> list[str]:
        out = []
        while not self.rings.empty():
            out.append(self.rings.get_nowait())
        return out


@pytest.fixture
async def listener(database_dsn: str) -> AsyncIterator[Listener]:
    conn = await asyncpg.connect(database_dsn)
    heard = Listener(conn)
    await conn.add_listener(NOTIFY_CHANNEL, heard.on_notify)
    yield heard
    await conn.close()


async def test_every_write_that_changes_roles_rings_after_its_commit(
    acme: Scim,
    admin_stub: admin_service_pb2_grpc.AdminServiceStub,
    pool: asyncpg.Pool,
    listener: Listener,
) -> None:
    """Creation (one statement), a membership change of a mapped group (the
    role tracker), and an organisation-wide change (a mapped group renamed):
    each rings for its organisation, and what the ring announces is already
    readable when it arrives."""
    org_id = await org_id_of(pool, "acme")
    user = await acme.create_user({"userName": "ada@acme.example"})
    assert await listener.next() == str(org_id)
    assert await listener.conn.fetchval(OUTBOX, org_id) == 1

    group = await acme.create_group({"displayName": "Admins"})
    await map_group(admin_stub, "Admins", "admin")
    listener.drain()
    await acme.patch_group(
        group["id"], {"op": "add", "path": "members", "value": [{"value": user["id"]}]}
    )
    assert await listener.next() == str(org_id)
    after_patch = await listener.conn.fetchval(OUTBOX, org_id)
    changes = await listener.conn.fetch(
        "SELECT new_role FROM role_changes WHERE org_id = $1 AND seq = $2", org_id, after_patch
    )
    assert [c["new_role"] for c in changes] == ["admin"]

    await acme.patch_group(group["id"], {"op": "replace", "path": "displayName", "value": "Root"})
    assert await listener.next() == str(org_id)
    assert await listener.conn.fetchval(OUTBOX, org_id) == after_patch + 1

    # a write that changes no role rings nothing
    listener.drain()
    await acme.patch_user(user["id"], {"op": "replace", "path": "displayName", "value": "Ada"})
    await acme.create_user({"userName": "bob@acme.example"})  # and then one that does
    assert await listener.next() == str(org_id)
    assert listener.drain() == []


async def test_a_mapping_change_through_the_admin_api_rings(
    acme: Scim,
    admin_stub: admin_service_pb2_grpc.AdminServiceStub,
    pool: asyncpg.Pool,
    listener: Listener,
) -> None:
    org_id = await org_id_of(pool, "acme")
    await acme.create_user({"userName": "ada@acme.example"})
    await listener.next()
    await admin_stub.SetDefaultRole(
        apb.SetDefaultRoleRequest(organization="acme", role=roles_pb2.ROLE_BOSS), metadata=ADMIN
    )
    assert await listener.next() == str(org_id)
    assert await listener.conn.fetchval(OUTBOX, org_id) == 2


async def test_a_burst_rings_each_organisation_once_per_window_and_loses_no_late_ring(
    pool: asyncpg.Pool, listener: Listener
) -> None:
    bell = Doorbell(pool, window=0.3)
    a, b = uuid.uuid4(), uuid.uuid4()
    bell.ring(a)  # after a quiet spell: sent at once
    assert await listener.next() == str(a)
    for org in (b, a, b, a):  # within the window: held, then sent together
        bell.ring(org)
    assert sorted([await listener.next(), await listener.next()]) == sorted([str(a), str(b)])
    await asyncio.sleep(0.5)
    assert listener.drain() == []
    assert bell.sent == 3


async def test_closing_sends_the_rings_the_window_holds(
    pool: asyncpg.Pool, listener: Listener
) -> None:
    bell = Doorbell(pool, window=30)
    a, b = uuid.uuid4(), uuid.uuid4()
    bell.ring(a)
    assert await listener.next() == str(a)
    bell.ring(b)  # held for 30 s
    await asyncio.sleep(0.2)
    assert listener.drain() == []
    await bell.close()
    assert await listener.next(timeout=2) == str(b)


async def test_a_ring_that_cannot_be_sent_is_sent_once_the_database_is_there(
    database_dsn: str,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(doorbell, "ACQUIRE_TIMEOUT_SECONDS", 0.1)
    monkeypatch.setattr(doorbell, "RETRY_SECONDS", 0.1)
    small = await asyncpg.create_pool(database_dsn, min_size=1, max_size=1)
    try:
        bell = Doorbell(small)
        org = uuid.uuid4()
        async with small.acquire():  # the pool has no connection to give
            bell.ring(org)
            await asyncio.sleep(0.5)  # several tries fail meanwhile
            assert listener.drain() == []
        assert await listener.next() == str(org)
        failures = [r for r in caplog.records if "doorbell failed" in r.getMessage()]
        assert len(failures) == 1 and failures[0].levelno == logging.WARNING
        await bell.close()
    finally:
        await small.close()


async def test_the_local_core_rings_for_the_writes_it_hosts(
    pool: asyncpg.Pool,
    admin_stub: admin_service_pb2_grpc.AdminServiceStub,
    listener: Listener,
) -> None:
    core = await start_local_core(pool, Cursors(b"k" * 32), GATEWAY_TOKEN)
    _, secret = await new_org_with_token(admin_stub, "local")
    org_id = await org_id_of(pool, "local")
    scim = Scim(core, secret)  # the gateway's stubs on the local core
    await scim.create_user({"userName": "ada@local.example"})
    assert await listener.next() == str(org_id)
    await core.close()
