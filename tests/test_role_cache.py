"""The role cache and the consistency choice (issue 16 §3), on two core replicas
of one database: writes on one, role lookups on the other.

minimize_latency answers converge to the database's (never asserted by time:
each check waits, with a generous bound, until they do); at_least_as_fresh with
a sequence the caller holds, and fully_consistent, are exact at once. Every
input of an answer invalidates it; fills that raced an invalidation are
refused; concurrent misses share one read; a lost LISTEN connection, lost
notifications and a pruned outbox are survived; the cache stays in bounds."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from common import config
from core import db
from core.role_service import RoleOptions
from core.server import CoreServer, start_server
from tests.scim_client import Scim, okta_user, ops
from tests.support import ADMIN, ADMIN_TOKEN, SERVICE, SERVICE_TOKEN, new_org_with_token, org_id_of
from wando.provisioning.v1 import admin_service_pb2 as apb
from wando.provisioning.v1 import admin_service_pb2_grpc, role_service_pb2_grpc, roles_pb2
from wando.provisioning.v1 import group_service_pb2 as gpb
from wando.provisioning.v1 import role_service_pb2 as rpb
from wando.provisioning.v1 import user_service_pb2 as upb

R = roles_pb2
FAST = RoleOptions(poll_seconds=0.2, ping_seconds=0.2)
CONVERGE_SECONDS = 15.0  # a bound for the tests, not a measurement
LATENCY = rpb.Consistency(minimize_latency=True)
EXACT = rpb.Consistency(fully_consistent=True)


class Replica:
    def __init__(self, core: CoreServer, channel: grpc.aio.Channel) -> None:
        self.core = core
        self.channel = channel
        self.roles = role_service_pb2_grpc.RoleServiceStub(channel)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(channel)

    @property
    def cache(self) -> Any:
        return self.core.roles.cache

    async def role(
        self, user_id: str, consistency: rpb.Consistency = LATENCY, org: str = "acme"
    ) -> rpb.GetEffectiveRoleResponse:
        return await self.roles.GetEffectiveRole(
            rpb.GetEffectiveRoleRequest(
                organization=org, user=rpb.UserSelector(user_id=user_id), consistency=consistency
            ),
            metadata=SERVICE,
        )


@pytest.fixture
async def replicas(database_dsn: str) -> AsyncIterator[list[Replica]]:
    """Two core replicas, each with its own pool, on one database."""
    out: list[Replica] = []
    pools: list[asyncpg.Pool] = []
    try:
        for _ in range(2):
            pool = await db.create_pool(database_dsn, min_size=1, max_size=6)
            pools.append(pool)
            core = await start_server(
                pool, ADMIN_TOKEN, "127.0.0.1:0", SERVICE_TOKEN, role_options=FAST
            )
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{core.port}")
            out.append(Replica(core, channel))
        yield out
    finally:
        for replica in out:
            await replica.channel.close()
            await replica.core.stop(0)
        for pool in pools:
            await pool.close()


@pytest.fixture
async def scim(replicas: list[Replica]) -> Scim:
    _, secret = await new_org_with_token(replicas[0].admin, "acme")
    return Scim(replicas[0].channel, secret)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    async with asyncio.timeout(CONVERGE_SECONDS):
        while not await check():  # noqa: ASYNC110 - the condition is another process's
            await asyncio.sleep(0.02)
    assert await check(), what


async def converged(replica: Replica, user_id: str) -> bool:
    """Whether the replica's minimize_latency answer is the database's."""
    exact = await replica.role(user_id, EXACT)
    fast = await replica.role(user_id, LATENCY)
    return fast.role == exact.role


async def org_id(dsn: str, slug: str = "acme") -> uuid.UUID:
    conn = await asyncpg.connect(dsn)
    try:
        return await org_id_of(conn, slug)
    finally:
        await conn.close()


async def serving(replica: Replica) -> bool:
    return bool(replica.cache.serving)


async def test_deactivation_on_one_replica_reaches_the_others_cache(
    replicas: list[Replica], scim: Scim
) -> None:
    _a, b = replicas
    await eventually(lambda: serving(b), "replica b follows the stream")
    user = await scim.create_user(okta_user("leaver@x.example"))
    first = await b.role(user["id"])
    assert first.role.role == R.ROLE_MEMBER
    assert b.cache.size[0] == 1  # held

    await scim.patch_user(user["id"], {"op": "replace", "value": {"active": False}})

    async def no_role() -> bool:
        answer = await b.role(user["id"])
        return answer.role.role == R.ROLE_UNSPECIFIED and not answer.role.active

    await eventually(no_role, "the deactivation reaches replica b's cache")
    answer = await b.role(user["id"])
    assert answer.role.source == R.ROLE_SOURCE_DEACTIVATED
    assert answer.sequence > first.sequence


async def test_at_least_as_fresh_and_fully_consistent_are_exact_at_once(
    replicas: list[Replica], scim: Scim
) -> None:
    a, b = replicas
    await eventually(lambda: serving(b), "replica b follows the stream")
    user = await scim.create_user(okta_user("mover@x.example"))
    await b.role(user["id"])  # held by b
    b.core.notifier.deaf = True  # b hears of nothing: only the poll backstop is left
    await scim.patch_user(user["id"], {"op": "replace", "value": {"active": False}})
    change = (await a.role(user["id"], EXACT)).sequence  # what a caller that saw it holds
    fresh = await b.role(user["id"], rpb.Consistency(at_least_as_fresh=change))
    assert fresh.role.role == R.ROLE_UNSPECIFIED and fresh.sequence >= change
    exact = await b.role(user["id"], EXACT)
    assert exact.role.role == R.ROLE_UNSPECIFIED and exact.sequence == change


async def test_every_input_of_an_answer_invalidates_it(replicas: list[Replica], scim: Scim) -> None:
    """Not only the role: why (granted_by names groups and values), the userName,
    existence. Each step is checked on replica b's minimize_latency answer,
    which must come to equal the database's whole answer."""
    a, b = replicas
    await eventually(lambda: serving(b), "replica b follows the stream")
    alice = await scim.create_user(okta_user("alice@x.example"))
    bob = await scim.create_user(okta_user("bob@x.example", active=False))
    admins = await scim.create_group({"displayName": "Admins", "members": []})
    bosses = await scim.create_group({"displayName": "Bosses", "members": []})

    async def same(user_id: str) -> bool:
        exact = await b.role(user_id, EXACT)
        fast = await b.role(user_id)
        return fast.role == exact.role

    async def step(what: str, write: Awaitable[Any], *users: str) -> None:
        for user_id in users:
            await b.role(user_id)  # held before the write
        await write
        for user_id in users:
            await eventually(lambda u=user_id: same(u), what)  # type: ignore[misc]

    def set_group_role(group: str, role: int) -> Awaitable[Any]:
        return a.admin.SetGroupRole(
            apb.SetGroupRoleRequest(organization="acme", group=group, role=role),  # type: ignore[arg-type]
            metadata=ADMIN,
        )

    member = {"op": "add", "path": "members", "value": [{"value": alice["id"]}]}
    await step("mapping", set_group_role("Admins", R.ROLE_ADMIN), alice["id"])
    await step("membership", scim.patch_group(admins["id"], member), alice["id"])
    assert (await b.role(alice["id"])).role.role == R.ROLE_ADMIN
    # a second group with the same role: the role stays, granted_by changes
    await step("same-role mapping", set_group_role("Bosses", R.ROLE_ADMIN), alice["id"])
    await step("same-role membership", scim.patch_group(bosses["id"], member), alice["id"])
    assert len((await b.role(alice["id"])).role.granted_by) == 2
    rename = {"op": "replace", "path": "displayName", "value": "Wando Admins"}
    await step("group renamed", scim.patch_group(admins["id"], rename), alice["id"])
    assert "Wando Admins" in [g.display_name for g in (await b.role(alice["id"])).role.granted_by]
    await step("group deleted", scim.delete_group(bosses["id"]), alice["id"])
    default = a.admin.SetDefaultRole(
        apb.SetDefaultRoleRequest(organization="acme", role=R.ROLE_BOSS), metadata=ADMIN
    )
    await step("default role", default, alice["id"], bob["id"])
    value_map = a.admin.SetRoleValueMapping(
        apb.SetRoleValueMappingRequest(organization="acme", value="ops", role=R.ROLE_MEMBER),
        metadata=ADMIN,
    )
    await step("value mapping", value_map, alice["id"])
    values = {"op": "add", "path": "roles", "value": [{"value": "ops"}]}
    await step("roles values", scim.patch_user(alice["id"], values), alice["id"])
    await step(
        "userName",
        scim.patch_user(
            alice["id"], {"op": "replace", "path": "userName", "value": "al@x.example"}
        ),
        alice["id"],
    )
    assert (await b.role(alice["id"])).role.user_name == "al@x.example"
    activate = {"op": "replace", "value": {"active": True}}
    await step("activation", scim.patch_user(bob["id"], activate), bob["id"])
    assert (await b.role(bob["id"])).role.role == R.ROLE_BOSS

    # deletion, also of a user without a role: the answer becomes NOT_FOUND
    await scim.patch_user(bob["id"], {"op": "replace", "value": {"active": False}})
    await eventually(lambda: same(bob["id"]), "deactivation")
    await scim.delete_user(bob["id"])

    async def gone() -> bool:
        try:
            await b.role(bob["id"])
        except grpc.aio.AioRpcError as exc:
            return exc.code() == grpc.StatusCode.NOT_FOUND
        return False

    await eventually(gone, "deletion of a user without a role")


async def test_a_fill_read_before_an_invalidation_is_refused(
    replicas: list[Replica], scim: Scim, database_dsn: str
) -> None:
    a, b = replicas
    await eventually(lambda: serving(b), "replica b follows the stream")
    user = await scim.create_user(okta_user("race@x.example"))
    await b.role(user["id"])  # b follows the organisation
    org = await org_id(database_dsn)
    ticket = b.cache.ticket(org)
    stale = (await b.role(user["id"], EXACT)).role  # read "before" the invalidation
    stale_sequence = b.cache.applied(org)
    await scim.patch_user(user["id"], {"op": "replace", "value": {"active": False}})
    after = (await a.role(user["id"], EXACT)).sequence

    async def applied() -> bool:
        return bool(b.cache.applied(org) >= after)

    await eventually(applied, "b applies the deactivation")
    assert not b.cache.put(org, ticket, [stale], stale_sequence)
    assert (await b.role(user["id"])).role.role == R.ROLE_UNSPECIFIED


async def test_concurrent_misses_share_one_read(replicas: list[Replica], scim: Scim) -> None:
    a, b = replicas
    await eventually(lambda: serving(b), "replica b follows the stream")
    user = await scim.create_user(okta_user("hot@x.example"))
    answer = (await a.role(user["id"], EXACT)).role
    org = uuid.uuid4()
    reads = 0

    async def load() -> tuple[roles_pb2.EffectiveRole, int]:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)
        return answer, 0

    results = await asyncio.gather(
        *(b.cache.get(org, "user_id", user["id"], load) for _ in range(20))
    )
    assert reads == 1 and all(r == (answer, 0) for r in results)


async def test_lost_connection_and_lost_notifications_are_survived(
    replicas: list[Replica], scim: Scim
) -> None:
    _a, b = replicas
    await eventually(lambda: serving(b), "replica b follows the stream")
    user = await scim.create_user(okta_user("net@x.example"))
    await b.role(user["id"])
    # lost notifications: the poll backstop catches up
    b.core.notifier.deaf = True
    await scim.patch_user(user["id"], {"op": "replace", "value": {"active": False}})
    await eventually(lambda: converged(b, user["id"]), "poll backstop")
    b.core.notifier.deaf = False
    # a lost connection: not served from memory until resynced, then exact
    await b.role(user["id"])
    b.core.notifier.drop_connection()
    assert not b.cache.serving
    await scim.patch_user(user["id"], {"op": "replace", "value": {"active": True}})
    answer = await b.role(user["id"])  # from the database meanwhile, or resynced
    assert answer.role.role == R.ROLE_MEMBER
    await eventually(lambda: serving(b), "b reconnects and resyncs")
    assert (await b.role(user["id"])).role.role == R.ROLE_MEMBER


async def test_an_outbox_pruned_past_the_cache_drops_it(
    replicas: list[Replica], scim: Scim, database_dsn: str
) -> None:
    _a, b = replicas
    await eventually(lambda: serving(b), "replica b follows the stream")
    user = await scim.create_user(okta_user("pruned@x.example"))
    await b.role(user["id"])
    assert b.cache.size[0] == 1
    b.core.notifier.deaf = True
    await scim.patch_user(user["id"], {"op": "replace", "value": {"active": False}})
    conn = await asyncpg.connect(database_dsn)
    try:
        await conn.execute("DELETE FROM role_changes")  # retention ran past b's position
    finally:
        await conn.close()

    async def dropped() -> bool:
        return bool(b.cache.size[0] == 0)

    await eventually(dropped, "b drops what it can no longer prove")
    assert (await b.role(user["id"])).role.role == R.ROLE_UNSPECIFIED


async def test_the_cache_is_bounded_and_evicts(database_dsn: str) -> None:
    pool = await db.create_pool(database_dsn, min_size=1, max_size=4)
    small = RoleOptions(cache_max_entries=3, cache_max_bytes=10**9, poll_seconds=0.2)
    core = await start_server(pool, ADMIN_TOKEN, "127.0.0.1:0", SERVICE_TOKEN, role_options=small)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            replica = Replica(core, channel)
            _, secret = await new_org_with_token(replica.admin, "acme")
            scim = Scim(channel, secret)
            await eventually(lambda: serving(replica), "following the stream")
            users = [await scim.create_user(okta_user(f"u{i}@x.example")) for i in range(6)]
            for user in users:
                assert (await replica.role(user["id"])).role.role == R.ROLE_MEMBER
            assert replica.cache.size[0] == 3
            replica.cache.max_bytes = 1  # bytes bound too: everything goes
            await replica.role(users[0]["id"])
            assert replica.cache.size == (0, 0)
    finally:
        await core.stop(0)
        await pool.close()


async def test_a_write_answers_the_sequence_it_produced(
    replicas: list[Replica], scim: Scim
) -> None:
    """The caller of a write can ask any replica for an answer at least that
    fresh; a write that changes no answer produces none (0)."""
    a, b = replicas
    await eventually(lambda: serving(b), "replica b follows the stream")
    created = await scim.users.CreateUser(
        upb.CreateUserRequest(user_json=json.dumps(okta_user("seq@x.example"))),
        metadata=scim.metadata,
    )
    user_id = created.user.id
    assert created.role_sequence > 0  # its first role
    assert (await b.role(user_id)).role.role == R.ROLE_MEMBER  # held by b
    b.core.notifier.deaf = True  # b will hear nothing of what follows

    def patch(*operations: dict[str, Any]) -> Awaitable[upb.PatchUserResponse]:
        return scim.users.PatchUser(
            upb.PatchUserRequest(id=user_id, operations=ops(*operations)),
            metadata=scim.metadata,
        )

    renamed = await patch({"op": "replace", "path": "displayName", "value": "Seq"})
    assert renamed.role_sequence == 0  # no answer of RoleService changed
    fired = await patch({"op": "replace", "path": "active", "value": False})
    assert fired.role_sequence > created.role_sequence
    answer = await b.role(user_id, rpb.Consistency(at_least_as_fresh=fired.role_sequence))
    assert answer.role.role == R.ROLE_UNSPECIFIED and answer.sequence >= fired.role_sequence
    mapped = await a.admin.SetDefaultRole(
        apb.SetDefaultRoleRequest(organization="acme", role=R.ROLE_BOSS), metadata=ADMIN
    )
    assert mapped.sequence == 0  # only the deactivated user, who has no role
    group = await scim.groups.CreateGroup(
        gpb.CreateGroupRequest(group_json=json.dumps({"displayName": "G"})),
        metadata=scim.metadata,
    )
    assert group.role_sequence == 0


async def test_the_stream_checkpoints_when_idle_and_cuts_off_laggards(
    replicas: list[Replica], scim: Scim
) -> None:
    a, _ = replicas
    for i in range(3):
        await scim.create_user(okta_user(f"w{i}@x.example"))
    call = a.roles.WatchRoleChanges(
        rpb.WatchRoleChangesRequest(organization="acme", after_sequence=1), metadata=SERVICE
    )
    seen: list[rpb.WatchRoleChangesResponse] = []
    async with asyncio.timeout(CONVERGE_SECONDS):
        async for response in call:
            seen.append(response)
            if not response.HasField("change"):
                break
    call.cancel()
    assert [r.change.sequence for r in seen[:-1]] == [2, 3]
    assert seen[-1].checkpoint_sequence == 3  # idle: nothing more up to 3

    beyond = a.roles.WatchRoleChanges(
        rpb.WatchRoleChangesRequest(organization="acme", after_sequence=4), metadata=SERVICE
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in beyond:
            pass
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE

    a.core.roles._options = RoleOptions(watch_max_lag=2)  # type: ignore[attr-defined]
    behind = a.roles.WatchRoleChanges(
        rpb.WatchRoleChangesRequest(organization="acme", after_sequence=0), metadata=SERVICE
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in behind:
            pass
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "reload" in (caught.value.details() or "")


def test_the_cache_and_stream_settings() -> None:
    """README, "Configuration": defaults, values, and loud failures."""
    defaults = config.load(env={})
    assert (defaults.role_cache_max_entries, defaults.role_cache_max_bytes) == (
        100_000,
        128 * 1024 * 1024,
    )
    assert defaults.watch_max_lag == 100_000
    chosen = config.load(
        env={
            "WANDO_ROLE_CACHE_MAX_ENTRIES": "0",
            "WANDO_ROLE_CACHE_MAX_BYTES": "1048576",
            "WANDO_WATCH_MAX_LAG": "50",
        }
    )
    assert (chosen.role_cache_max_entries, chosen.role_cache_max_bytes) == (0, 1048576)
    assert chosen.watch_max_lag == 50
    for name, value in (
        ("WANDO_ROLE_CACHE_MAX_ENTRIES", "-1"),
        ("WANDO_ROLE_CACHE_MAX_BYTES", "lots"),
        ("WANDO_WATCH_MAX_LAG", "0"),
    ):
        with pytest.raises(config.ConfigError, match=name):
            config.load(env={name: value})


async def test_hits_misses_and_size_are_metrics(replicas: list[Replica], scim: Scim) -> None:
    _a, b = replicas
    await eventually(lambda: serving(b), "replica b follows the stream")
    user = await scim.create_user(okta_user("seen@x.example"))

    def hits() -> float:
        return REGISTRY.get_sample_value("wando_role_cache_lookups_total", {"result": "hit"}) or 0

    await b.role(user["id"])  # a miss, then held
    before = hits()
    await b.role(user["id"])
    assert hits() == before + 1
    assert (REGISTRY.get_sample_value("wando_role_cache_entries") or 0) >= 1


async def test_a_pool_of_one_connection_reads_the_database(database_dsn: str) -> None:
    """No LISTEN connection to starve the calls: the cache stays off, answers are exact."""
    pool = await db.create_pool(database_dsn, min_size=1, max_size=1)
    core = await start_server(pool, ADMIN_TOKEN, "127.0.0.1:0", SERVICE_TOKEN, role_options=FAST)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            replica = Replica(core, channel)
            _, secret = await new_org_with_token(replica.admin, "acme")
            scim = Scim(channel, secret)
            user = await scim.create_user(okta_user("one@x.example"))
            assert (await replica.role(user["id"])).role.role == R.ROLE_MEMBER
            await scim.patch_user(user["id"], {"op": "replace", "value": {"active": False}})
            assert (await replica.role(user["id"])).role.role == R.ROLE_UNSPECIFIED
            assert replica.cache.size == (0, 0) and not replica.cache.serving
    finally:
        await core.stop(0)
        await pool.close()


async def test_a_listener_killed_by_the_server_is_noticed_and_replaced(
    replicas: list[Replica], scim: Scim, database_dsn: str
) -> None:
    """The database ends the LISTEN session (pg_terminate_backend, as a
    failover would): the replica notices, stops answering from memory,
    reconnects, resyncs; a change made meanwhile is not missed."""
    _a, b = replicas
    await eventually(lambda: serving(b), "replica b follows the stream")
    user = await scim.create_user(okta_user("killed@x.example"))
    await b.role(user["id"])
    listener_pid = b.core.notifier._conn.get_server_pid()
    conn = await asyncpg.connect(database_dsn)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", listener_pid)
    finally:
        await conn.close()
    await scim.patch_user(user["id"], {"op": "replace", "value": {"active": False}})

    async def replaced() -> bool:
        new = b.core.notifier._conn
        return bool(b.cache.serving and new is not None and new.get_server_pid() != listener_pid)

    await eventually(replaced, "a new LISTEN connection, caught up")
    await eventually(lambda: converged(b, user["id"]), "the change made meanwhile")
    assert (await b.role(user["id"])).role.role == R.ROLE_UNSPECIFIED


async def test_a_cache_that_cannot_read_the_outbox_is_not_believed(
    replicas: list[Replica], scim: Scim, database_dsn: str
) -> None:
    """Its catch-up fails (here: the outbox is out of reach), so it knows it is
    behind: the database answers until a catch-up succeeds again."""
    _a, b = replicas
    await eventually(lambda: serving(b), "replica b follows the stream")
    user = await scim.create_user(okta_user("blind@x.example"))
    await b.role(user["id"])
    org = await org_id(database_dsn)
    b.core.notifier.deaf = True
    await scim.patch_user(user["id"], {"op": "replace", "value": {"active": False}})
    conn = await asyncpg.connect(database_dsn)
    try:
        await conn.execute("ALTER TABLE role_changes RENAME TO role_changes_away")
        try:

            async def failed() -> bool:
                return bool(b.cache._orgs[org].failed)

            await eventually(failed, "the poll's catch-up fails")
            assert (await b.role(user["id"])).role.role == R.ROLE_UNSPECIFIED  # the database
        finally:
            await conn.execute("ALTER TABLE role_changes_away RENAME TO role_changes")
    finally:
        await conn.close()

    async def recovered() -> bool:
        return not b.cache._orgs[org].failed

    await eventually(recovered, "a later catch-up succeeds")
    assert (await b.role(user["id"])).role.role == R.ROLE_UNSPECIFIED  # from memory again
